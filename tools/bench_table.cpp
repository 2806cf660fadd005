// bench_table: `mustdrop bench`'s comparison table without the video and pipeline modules, for
// machines that have LibTorch (a GPU, say) but neither libav nor oneTBB. The frames come
// preprocessed, as a tensor file made where video can be read (`mustdrop probe VIDEO --frames 8
// --save-frames FILE`); each pipeline encodes them, remembers them and answers one question in a
// session of its own, with the same accounting and the same table code as `mustdrop bench`.
#include <CLI/CLI.hpp>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "config/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/sysinfo.h"
#include "core/timing.h"
#include "model/device.h"
#include "model/presets.h"
#include "model/safetensors.h"
#include "model/vlm.h"
#include "session/comparison.h"

namespace {

using namespace mustdrop;
using nlohmann::json;

// The "pixels" tensor of a frames file: [frames, 3, S, S] float32 with S the model's input size.
at::Tensor read_frames(const std::string& path, int64_t image_size) {
  model::SafetensorsFile file(path);
  for (const model::TensorView& v : file.tensors()) {
    if (v.name != "pixels") continue;
    if (v.dtype != model::DType::kF32 || v.shape.size() != 4 || v.shape[1] != 3 || v.shape[2] != image_size ||
        v.shape[3] != image_size || v.shape[0] < 1) {
      throw InputError(path + ": 'pixels' must be float32 [frames, 3, " + std::to_string(image_size) + ", " +
                       std::to_string(image_size) + "] for this model (make it with `mustdrop probe VIDEO --size " +
                       std::to_string(image_size) + " --save-frames FILE`)");
    }
    return at::from_blob(const_cast<uint8_t*>(v.data), v.shape, at::kFloat).clone();
  }
  throw InputError(path + ": no tensor named 'pixels'");
}

// One pipeline over the frames: encoded, projected and remembered in order, then one answer. A
// cold prefill (no prefix cache), as `mustdrop bench` measures.
session::Measure measure_once(const model::VisionLanguageModel& model, const prune::Chain& chain, const at::Tensor& frames,
                              const std::string& question, const model::GenerationOptions& gen,
                              const model::ModelConfig* full) {
  const c10::Device device = model.llm().device();
  reset_peak_rss();
  const model::TransferStats moved = model::transfer_stats();
  session::Measure m;
  config::MemoryConfig cold;
  cold.prefix_cache = false;
  session::Session s(model, &chain, cold);
  auto t0 = Clock::now();
  for (int64_t i = 0; i < frames.size(0); ++i) {
    prune::EncodedFrame f = s.encode_frame(frames.narrow(0, i, 1), i, static_cast<double>(i));
    at::Tensor tokens = model.project(f.features);
    s.add_frame(session::frame_tokens(std::move(f), tokens, i, static_cast<double>(i), model::Media::kVideo));
  }
  model::synchronize(device);
  m.vit_ms = ms_since(t0);
  session::AnswerStats a = s.answer(question, gen, nullptr);
  session::measure_answer(m, *s.snapshot(), s.vision_records(), model.config(), a, full);
  m.peak_rss = peak_rss_bytes();
  m.transfers = model::transfer_stats() - moved;
  return m;
}

int run(int argc, char** argv) {
  CLI::App cli{"bench_table: pipelines side by side on preprocessed frames (mustdrop bench's table, no video modules)"};
  std::string dir, preset, frames_path, question = "What is happening in this video?", json_path, markdown_path;
  std::string device = "cpu", dtype = "auto", log_level = "warn";
  std::vector<std::string> pipelines;
  int llm_layers = 0, vision_layers = 0, repeats = 1, warmup = 1, max_new_tokens = 16;
  cli.add_option("--model", dir, "Hugging Face model directory");
  auto* preset_opt = cli.add_option("--preset", preset, "instead of --model: a published shape with random weights "
                                                        "(llava-1.5-7b, llava-1.5-13b, video-llava-7b); adds full-depth FLOPs");
  cli.add_option("--llm-layers", llm_layers, "with --preset: decoder layers (default: the preset's)")->needs(preset_opt);
  cli.add_option("--vision-layers", vision_layers, "with --preset: vision layers")->needs(preset_opt);
  cli.add_option("--frames", frames_path, "preprocessed frames: a safetensors file with 'pixels' [N, 3, S, S] float32 "
                                          "(mustdrop probe VIDEO --save-frames FILE)")
      ->required();
  cli.add_option("--question,-q", question, "the question every pipeline answers");
  cli.add_option("--pipelines", pipelines, "pipeline YAMLs, comma-separated (none is added if missing)")
      ->delimiter(',')
      ->required();
  cli.add_option("--device", device, "cpu, cuda or cuda:N (default cpu)");
  cli.add_option("--dtype", dtype, "auto (bf16 on a GPU or a CPU with native bf16, else f32), f32, bf16, f16 (GPU)")
      ->check(CLI::IsMember({"auto", "f32", "bf16", "f16"}));
  cli.add_option("--repeats", repeats, "timed runs per pipeline; the median is reported (default 1)")->check(CLI::Range(1, 1000));
  cli.add_option("--warmup", warmup, "untimed runs of none over the first frame with 2 tokens first (default 1)")
      ->check(CLI::Range(0, 1000));
  cli.add_option("--max-new-tokens", max_new_tokens, "tokens generated per answer (default 16)")->check(CLI::Range(1, 100000));
  cli.add_option("--json", json_path, "write every row (and per-stage records) as JSON here");
  cli.add_option("--markdown", markdown_path, "also write the table here");
  cli.add_option("--log-level", log_level, "trace|debug|info|warn|error|off (default warn)");
  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return cli.exit(e) == 0 ? 0 : 2;
  }
  if (dir.empty() == preset.empty()) throw ConfigError("bench_table: give exactly one of --model DIR or --preset NAME");
  log::set_level(log::parse_level(log_level));
  tune_allocator();
  c10::InferenceMode guard;

  size_t ref = 0;
  std::vector<session::PipelineEntry> entries = session::load_compared_pipelines(pipelines, &ref);
  const config::Config config = config::defaults_with({"model.device=" + device, "model.dtype=" + dtype});
  const model::LoadOptions load = model::load_options(config.model);
  std::unique_ptr<model::ModelConfig> full;
  auto t_load = Clock::now();
  std::unique_ptr<model::VisionLanguageModel> m;
  if (preset.empty()) {
    m = model::VisionLanguageModel::load(dir, load);
  } else {
    m = model::VisionLanguageModel::random(model::preset_config(preset, llm_layers, vision_layers), 1, load);
    full = std::make_unique<model::ModelConfig>(model::preset_config(preset, 0, 0));
  }
  model::synchronize(load.device);
  const double load_ms = ms_since(t_load);
  const at::Tensor frames = read_frames(frames_path, m->image_size());
  std::fprintf(stderr, "bench_table: %s loaded in %.0f ms on %s (%s); %lld frames, %zu pipelines\n",
               preset.empty() ? dir.c_str() : preset.c_str(), load_ms, load.device.str().c_str(),
               model::compute_dtype_name(load.dtype), static_cast<long long>(frames.size(0)), entries.size());

  model::GenerationOptions gen;
  gen.max_new_tokens = max_new_tokens;
  gen.temperature = 0;  // greedy: answers compare token by token
  model::GenerationOptions short_answer = gen;
  short_answer.max_new_tokens = std::min(2, max_new_tokens);
  for (int w = 0; w < warmup; ++w) measure_once(*m, *entries[ref].chain, frames.narrow(0, 0, 1), question, short_answer, nullptr);
  std::vector<session::ComparisonRow> rows;
  for (auto& e : entries) {
    std::vector<session::Measure> runs;
    for (int r = 0; r < repeats; ++r) runs.push_back(measure_once(*m, *e.chain, frames, question, gen, full.get()));
    rows.push_back({e.config.name, e.path, session::summarize(runs)});
    std::fprintf(stderr, "bench_table: %s done\n", e.config.name.c_str());
  }

  const session::Comparison table = session::compare(
      rows, ref, max_new_tokens, repeats,
      std::string(model::compute_dtype_name(load.dtype)) + " on " + load.device.str() + ", " + model::torch_version(),
      full != nullptr);
  std::fputs(table.table.c_str(), stdout);
  std::fflush(stdout);
  if (!markdown_path.empty()) {
    std::ofstream f(markdown_path);
    f << table.table;
    if (!f) throw InputError(markdown_path + ": cannot write the table");
  }
  if (!json_path.empty()) {
    json report{{"model", preset.empty() ? dir : "preset:" + preset},
                {"device", load.device.str()},
                {"dtype", model::compute_dtype_name(load.dtype)},
                {"torch", model::torch_version()},
                {"attention", model::attention_backends()},
                {"load_ms", load_ms},
                {"frames_file", frames_path},
                {"n_frames", frames.size(0)},
                {"question", question},
                {"repeats", repeats},
                {"max_new_tokens", max_new_tokens},
                {"llm_layers", m->config().text.num_hidden_layers},
                {"vision_layers", m->config().vision.num_hidden_layers},
                {"pipelines", table.rows}};
    std::ofstream f(json_path);
    f << report.dump(2) << "\n";
    if (!f) throw InputError(json_path + ": cannot write the report");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const mustdrop::Error& e) {
    std::fflush(stdout);
    std::cerr << "bench_table: " << mustdrop::error_kind_name(e.kind()) << " error: " << e.what() << "\n";
    switch (e.kind()) {
      case mustdrop::ErrorKind::kConfig:
        return 2;
      case mustdrop::ErrorKind::kInput:
      case mustdrop::ErrorKind::kStream:
        return 3;
      case mustdrop::ErrorKind::kModel:
        return 4;
      case mustdrop::ErrorKind::kInternal:
        return 1;
    }
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "bench_table: internal error: " << e.what() << "\n";
    return 1;
  }
}
