// The mustdrop executable: parses the command line, loads the configuration, runs one
// subcommand and maps errors to exit codes (0 ok, 1 internal, 2 usage/config, 3 input, 4 model).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include "app/commands.h"
#include "app/exit_codes.h"
#include "core/error.h"
#include "core/log.h"
#include "core/sysinfo.h"
#include "model/device.h"

namespace mustdrop::app {

int exit_code_for(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInput:
    case ErrorKind::kStream:
      return kExitInput;
    case ErrorKind::kConfig:
      return kExitUsage;
    case ErrorKind::kModel:
      return kExitModel;
    case ErrorKind::kInternal:
      return kExitInternal;
  }
  return kExitInternal;
}

namespace {

// What this binary was built against, one fact a line, each line starting with `prefix`.
std::string build_facts(const std::string& prefix) {
  return prefix + "build: " + model::torch_version() + "\n" + prefix + "attention: " + model::attention_backends() + "\n";
}

void print_version() { std::cout << "mustdrop " << MUSTDROP_VERSION << "\n" << build_facts(""); }

// --model / --preset / --llm-layers / --vision-layers / --device, shared by every command that
// loads a model. --device is model.device (one string for all: one subcommand runs).
void add_model_options(CLI::App* cmd, ModelArgs& m, const std::string& preset_extra, std::string& device) {
  cmd->add_option("--device", device, "where the model computes: cpu, cuda or cuda:N (model.device; default cpu)");
  cmd->add_option("--model", m.dir, "Hugging Face model directory (default: $MUSTDROP_MODEL, then model.dir)");
  auto* preset = cmd->add_option("--preset", m.preset,
                                 "instead of --model: a published shape with random weights and no tokenizer "
                                 "(llava-1.5-7b, llava-1.5-13b, video-llava-7b; for benchmarks)" +
                                     preset_extra);
  cmd->add_option("--llm-layers", m.llm_layers, "with --preset: decoder layers")->needs(preset);
  cmd->add_option("--vision-layers", m.vision_layers, "with --preset: vision tower layers")->needs(preset);
}

int run(int argc, char** argv) {
  CLI::App cli{"mustdrop: answers questions about video with a LLaVA-style model, dropping redundant vision tokens"};
  cli.require_subcommand(1);
  // --config, --set and --log-level also work after the subcommand ("mustdrop run ... --set k=v").
  cli.fallthrough();
  std::string config_path;
  std::vector<std::string> overrides;
  std::string log_level;
  std::string device;
  cli.add_option("--config", config_path, "YAML configuration file (defaults: configs/default.yaml documents every key)");
  cli.add_option("--set", overrides, "override one configuration key, e.g. --set video.sampler.frames=16 (repeatable)");
  cli.add_option("--log-level", log_level, "trace|debug|info|warn|error|off (default: the config's log_level)");

  ProbeArgs probe;
  CLI::App* probe_cmd = cli.add_subcommand("probe", "print stream facts and the timestamps of the sampled frames");
  probe_cmd->add_option("input", probe.input, "video file, image directory, http(s):// or rtsp:// URL")->required();
  probe_cmd->add_option("--sampler", probe.sampler, "uniform|fps|interval (default: video.sampler.kind)")
      ->check(CLI::IsMember({"uniform", "fps", "interval"}));
  probe_cmd->add_option("--frames", probe.frames, "uniform: frames to take; fps/interval: stop after this many (0 = no limit)")
      ->check(CLI::Range(0, 1000000));
  probe_cmd->add_option("--fps", probe.fps, "fps sampler: frames per second")->check(CLI::PositiveNumber);
  probe_cmd->add_option("--interval", probe.interval_sec, "interval sampler: seconds between frames")
      ->check(CLI::PositiveNumber);
  probe_cmd->add_option("--size", probe.size, "side of the preprocessed square (default: video.preprocess.size)")
      ->check(CLI::Range(8, 8192));
  probe_cmd->add_flag("--json", probe.json, "print one JSON object instead of text");
  probe_cmd->add_option("--dump", probe.dump_dir, "write each sampled frame, preprocessed, as DIR/frame_NNNN.png");
  probe_cmd->add_option("--save-frames", probe.save_frames,
                        "write the sampled frames, preprocessed as the model sees them, to this safetensors file "
                        "('pixels' [N, 3, S, S] float32: bench_table's --frames)");

  RunArgs run;
  CLI::App* run_cmd = cli.add_subcommand("run", "answer questions about a video, streaming the answers to stdout");
  run_cmd->add_option("video", run.video, "video file, image directory, http(s):// or rtsp:// URL")->required();
  add_model_options(run_cmd, run.model, "", device);
  run_cmd->add_option("--question,-q", run.questions, "a question (repeatable; the video is encoded once)")->required();
  run_cmd->add_option("--pipeline", run.pipeline, "token-dropping pipeline YAML (default: none)");
  run_cmd->add_option("--frames", run.frames, "frames to sample (default: video.sampler.frames)")->check(CLI::Range(1, 100000));
  run_cmd->add_option("--max-new-tokens", run.max_new_tokens, "answer length limit (default: generation.max_new_tokens)")
      ->check(CLI::Range(1, 100000));
  run_cmd->add_option("--temperature", run.temperature, "0 = greedy (default: generation.temperature)")
      ->check(CLI::Range(0.0, 100.0));
  run_cmd->add_option("--seed", run.seed, "sampling seed (default: generation.seed)")->check(CLI::Range(0, 2147483647));
  run_cmd->add_option("--json", run.json_path, "write a JSON report (tokens, FLOPs, timings, memory) to this path");

  InspectArgs inspect;
  CLI::App* inspect_cmd = cli.add_subcommand(
      "inspect", "draw what each stage kept over every sampled frame (merged windows, temporal merges, S, prefill "
                 "drops, decode evictions): OUT/overlay_NNNN.png, OUT/index.html and OUT/inspect.json (docs/pruning.md)");
  inspect_cmd->add_option("video", inspect.video, "video file, image directory, http(s):// or rtsp:// URL")->required();
  add_model_options(inspect_cmd, inspect.model, "", device);
  inspect_cmd->add_option("--pipeline", inspect.pipeline, "token-dropping pipeline YAML")->required();
  inspect_cmd->add_option("--question,-q", inspect.question,
                          "the question answered, so the prefill and decode stages act (without: vision stages only)");
  inspect_cmd->add_option("--out", inspect.out_dir, "output directory (created)")->required();
  inspect_cmd->add_option("--frames", inspect.frames, "frames to sample (default: video.sampler.frames)")
      ->check(CLI::Range(1, 100000));
  inspect_cmd->add_option("--max-new-tokens", inspect.max_new_tokens,
                          "answer length limit (default: generation.max_new_tokens)")
      ->check(CLI::Range(1, 100000));
  inspect_cmd->add_option("--scale", inspect.scale, "overlay pixels per pixel of the tower's input (default 2)")
      ->check(CLI::Range(1, 8));

  BenchArgs bench;
  CLI::App* bench_cmd = cli.add_subcommand(
      "bench", "run pipelines side by side on the same frames and question; print a markdown table "
               "(tokens, FLOPs, times, memory, answer agreement with none); `bench ingest` measures video input");
  bench_cmd->require_subcommand(0, 1);
  add_model_options(bench_cmd, bench.model, "; adds FLOPs at the preset's full depth", device);
  bench_cmd->add_option("--video", bench.video, "video file, image directory or URL to sample frames from");
  bench_cmd->add_option("--question,-q", bench.question, "the question every pipeline answers");
  bench_cmd->add_option("--pipelines", bench.pipelines, "pipeline YAMLs, comma-separated (none is added if missing)")
      ->delimiter(',');
  bench_cmd->add_option("--repeats", bench.repeats, "timed runs per pipeline; the median is reported (default 3)")
      ->check(CLI::Range(1, 1000));
  bench_cmd->add_option("--warmup", bench.warmup, "untimed warm-up runs first: none over the first frame, 2 tokens (default 1)")->check(CLI::Range(0, 1000));
  bench_cmd->add_option("--frames", bench.frames, "frames to sample (default: video.sampler.frames)")
      ->check(CLI::Range(1, 100000));
  bench_cmd->add_option("--max-new-tokens", bench.max_new_tokens, "tokens generated per answer (default 16)")
      ->check(CLI::Range(1, 100000));
  bench_cmd->add_option("--json", bench.json_path, "also write every row (and per-stage records) as JSON here");
  BenchIngestArgs ingest;
  CLI::App* ingest_cmd = bench_cmd->add_subcommand(
      "ingest", "decode, sample and preprocess every frame of a 1080p clip; compare with the ffmpeg CLI");
  ingest_cmd->add_option("--input", ingest.input, "clip to use (default: generate a 1080p30 H.264 clip)");
  ingest_cmd->add_option("--seconds", ingest.seconds, "length of the generated clip")->check(CLI::Range(1.0, 3600.0));
  ingest_cmd->add_option("--size", ingest.size, "side of the preprocessed square")->check(CLI::Range(8, 8192));
  ingest_cmd->add_option("--work-dir", ingest.work_dir, "where to write the generated clip (default: a temp dir)");

  BenchSessionArgs bsession;
  CLI::App* session_cmd = bench_cmd->add_subcommand(
      "session", "long-running sessions: warm vs cold time to first token, one more frame vs re-prefilling, "
                 "memory over a stream many times the budget");
  add_model_options(session_cmd, bsession.model, "", device);
  session_cmd->add_option("--video", bsession.video, "video to sample the frames from")->required();
  session_cmd->add_option("--question,-q", bsession.question, "the question asked on warm and cold sessions");
  session_cmd->add_option("--pipelines", bsession.pipelines, "pipeline YAMLs, comma-separated")->delimiter(',')->required();
  session_cmd->add_option("--frames", bsession.frames, "frames in the warm memory (default: video.sampler.frames)")
      ->check(CLI::Range(1, 100000));
  session_cmd->add_option("--max-new-tokens", bsession.max_new_tokens, "tokens per answer (default 8)")
      ->check(CLI::Range(1, 100000));
  session_cmd->add_option("--stream-frames", bsession.stream_frames, "frames fed to the budgeted memory (default 120)")
      ->check(CLI::Range(1, 10000000));
  session_cmd->add_option("--budget-tokens", bsession.budget_tokens, "memory budget of the stream, tokens (default 1024)")
      ->check(CLI::Range(1, 100000000));
  session_cmd->add_option("--json", bsession.json_path, "also write the rows as JSON here");

  MonitorArgs mon;
  CLI::App* monitor_cmd = cli.add_subcommand(
      "monitor", "watch cameras (RTSP, HTTP, files played in real time, image directories) with one model: "
                 "questions on a schedule, on scene changes, typed on stdin and over a local OpenAI-compatible "
                 "HTTP API; answers streamed and written to an events file (docs/monitor.md)");
  monitor_cmd->add_option("config", mon.config, "monitor YAML (configs/monitor.yaml; --set applies to it)")->required();
  add_model_options(monitor_cmd, mon.model, "", device);
  auto* interactive = monitor_cmd->add_flag("--interactive", mon.interactive,
                                            "read questions from stdin (the default when stdin is a terminal): a line "
                                            "asks the first source, '@id question' another");
  monitor_cmd->add_flag("--no-interactive", mon.no_interactive, "never read stdin")->excludes(interactive);
  monitor_cmd->add_option("--duration", mon.duration_sec, "stop after this many seconds (default: until SIGINT/SIGTERM, "
                                                          "or until every source has ended)")
      ->check(CLI::Range(0.0, 1e9));
  monitor_cmd->add_option("--grace", mon.grace_sec, "at a stop, seconds answers in flight may take to finish before "
                                                    "they are cut (default 10)")
      ->check(CLI::Range(0.0, 3600.0));
  monitor_cmd->add_option("--warmup-frames", mon.warmup_frames, "frames encoded before the warm RSS is recorded (default 60)")
      ->check(CLI::Range(1, 1000000000));

  BatchArgs batch;
  CLI::App* batch_cmd = cli.add_subcommand(
      "batch", "answer a video-QA dataset with one or more pipelines (configs/jobs/*.yaml): preflight, "
               "predictions appended to OUTPUT_DIR/predictions.jsonl, resumable, shardable, scored; "
               "`batch merge` combines shards");
  batch_cmd->require_subcommand(0, 1);
  batch_cmd->add_option("job", batch.job, "job YAML (--set applies to it, e.g. --set workers=2)");
  add_model_options(batch_cmd, batch.model, "", device);
  batch_cmd->add_option("--shard", batch.shard,
                        "answer only shard i of N (0-based, by a stable hash of the question id); output goes "
                        "to OUTPUT_DIR/shard-i-of-N");
  auto* resume = batch_cmd->add_flag("--resume", "continue the predictions already written (the default when "
                                                 "they exist and the config hash matches)");
  batch_cmd->add_flag("--fresh", batch.fresh, "move earlier output aside (*.old-<time>) and start over")->excludes(resume);
  batch_cmd->add_option("--limit", batch.limit, "answer at most this many questions (of the shard)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  BatchMergeArgs merge;
  CLI::App* merge_cmd = batch_cmd->add_subcommand(
      "merge", "combine the shards of one job; fails naming every question missing or answered twice");
  merge_cmd->add_option("dirs", merge.dirs, "shard directories, or an output directory holding shard-*-of-* ones")
      ->required();
  merge_cmd->add_option("--out", merge.out, "where the merged predictions and summary go (default: OUTPUT_DIR/merged)");

  CLI::App* config_cmd = cli.add_subcommand("config", "print the effective configuration as YAML");

  cli.add_flag_callback("--version", [] {
    print_version();
    throw CLI::Success();
  }, "print the version, the LibTorch built against, its GPUs and the attention paths, and exit");

  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return cli.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  if (!device.empty()) overrides.push_back("model.device=" + device);

  if (*merge_cmd) {
    log::set_level(log::parse_level(log_level.empty() ? "info" : log_level));
    return run_batch_merge(merge);
  }
  if (*monitor_cmd) {
    if (!config_path.empty()) throw ConfigError("monitor: the monitor YAML is the configuration; drop --config");
    mon.overrides = overrides;
    mon.log_level = log_level;
    return run_monitor(mon);
  }
  if (*batch_cmd) {
    if (batch.job.empty()) throw ConfigError("batch: give the job YAML (e.g. configs/jobs/sample.yaml)");
    if (!config_path.empty()) throw ConfigError("batch: the job YAML is the configuration; drop --config");
    batch.overrides = overrides;
    batch.log_level = log_level;
    return run_batch(batch);
  }
  config::Config config = config_path.empty() ? config::defaults_with(overrides) : config::load(config_path, overrides);
  log::set_level(log::parse_level(log_level.empty() ? config.log_level : log_level));

  if (*probe_cmd) return run_probe(probe, config);
  if (*run_cmd) return run_run(run, config);
  if (*inspect_cmd) return run_inspect(inspect, config);
  if (*ingest_cmd) return run_bench_ingest(ingest, config);
  if (*session_cmd) return run_bench_session(bsession, config);
  if (*bench_cmd) {
    if (bench.video.empty() || bench.question.empty()) throw ConfigError("bench: give --video and --question");
    return run_bench(bench, config);
  }
  if (*config_cmd) {
    std::cout << config::to_yaml(config) << build_facts("# ");
    return kExitOk;
  }
  return kExitUsage;
}

}  // namespace
}  // namespace mustdrop::app

int main(int argc, char** argv) {
  using namespace mustdrop;
  tune_allocator();
  try {
    return app::run(argc, argv);
  } catch (const Error& e) {
    std::fflush(stdout);
    std::cerr << "mustdrop: " << error_kind_name(e.kind()) << " error: " << e.what() << "\n";
    return app::exit_code_for(e.kind());
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::cerr << "mustdrop: internal error: " << e.what() << "\n";
    return app::kExitInternal;
  }
}
