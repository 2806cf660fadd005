#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "app/exit_codes.h"
#include "app/signals.h"
#include "core/error.h"
#include "core/log.h"
#include "core/sysinfo.h"
#include "model/flops.h"
#include "model/presets.h"
#include "pipeline/pipeline.h"
#include "session/session.h"
#include "video/source.h"

namespace mustdrop::app {
namespace {

using nlohmann::json;

std::string resolve_model_dir(const RunArgs& args, const config::Config& config) {
  if (!args.model_dir.empty()) return args.model_dir;
  if (const char* env = std::getenv("MUSTDROP_MODEL"); env && *env) return env;
  if (!config.model.dir.empty()) return config.model.dir;
  throw ConfigError(
      "no model: pass --model DIR, set MUSTDROP_MODEL, or set model.dir in the config. A Hugging Face "
      "llava-1.5 or Video-LLaVA directory works; for a tiny random one (meaningless answers) run "
      "build/make_tiny_model build/tiny-model");
}

// Writes `j` to `path` through a temporary file, so a reader never sees half a report.
void write_report(const std::string& path, const json& j) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump(2) << "\n";
    if (!out) throw InputError(path + ": cannot write the report");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw InputError(path + ": cannot write the report (" + ec.message() + ")");
}

double mean(const std::vector<int64_t>& v) {
  if (v.empty()) return 0;
  double s = 0;
  for (int64_t x : v) s += static_cast<double>(x);
  return s / static_cast<double>(v.size());
}

}  // namespace

json stages_json(const session::Session& session, const session::AnswerStats* answer) {
  std::vector<prune::StageRecord> records = session.chain().vision_records();
  std::vector<std::vector<int64_t>> per_frame;
  for (const auto& f : session.frames()) per_frame.push_back(f.tokens_per_vision_layer);
  prune::attribute_flops(records, session.model().config(), per_frame, {}, 0);
  if (answer) records.insert(records.end(), answer->stages.begin(), answer->stages.end());
  json out = json::array();
  for (const auto& r : records) {
    out.push_back({{"name", r.name},
                   {"stage", prune::stage_name(r.stage)},
                   {"layer", r.layer},
                   {"calls", r.calls},
                   {"n_in", r.n_in},
                   {"n_out", r.n_out},
                   {"ms", r.ms},
                   {"flops", r.flops}});
  }
  return out;
}

int run_run(const RunArgs& args, config::Config config) {
  if (args.questions.empty()) throw ConfigError("run: give at least one --question");
  config::PipelineConfig pipeline_cfg;
  if (!args.pipeline.empty()) pipeline_cfg = config::load_pipeline(args.pipeline);
  std::unique_ptr<prune::Chain> chain = prune::Chain::build(pipeline_cfg, args.pipeline);
  if (args.frames > 0) config.video.sampler.frames = args.frames;
  if (args.max_new_tokens > 0) config.generation.max_new_tokens = args.max_new_tokens;
  if (args.temperature >= 0) config.generation.temperature = args.temperature;
  if (args.seed >= 0) config.generation.seed = args.seed;
  if (!args.preset.empty() && !args.model_dir.empty()) throw ConfigError("run: give --model or --preset, not both");
  std::string model_dir = args.preset.empty() ? resolve_model_dir(args, config) : "preset:" + args.preset;

  // Cheap checks first: a bad video fails before the model loads.
  std::unique_ptr<video::Source> source = video::open_source(args.video, config.video);
  if (source->info().live && config.video.sampler.kind == "uniform") config.video.sampler.kind = "interval";
  model::LoadOptions load;
  load.dtype = config.model.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  auto model = args.preset.empty()
                   ? model::VisionLanguageModel::load(model_dir, load)
                   : model::VisionLanguageModel::random(
                         model::preset_config(args.preset, args.llm_layers, args.vision_layers), 1, load);
  MD_LOG_INFO("run", "model " << model_dir << " (" << model->config().architecture << "), pipeline "
                              << pipeline_cfg.name);

  session::Session session(*model, chain.get());
  pipeline::Pipeline pipe(config, *model, session);
  install_stop_handlers([&pipe] { pipe.stop(); });

  pipeline::PerceptionStats perception = pipe.perceive(std::move(source));
  std::vector<session::AnswerStats> answers;
  if (!pipe.error() && !pipe.stopped()) {
    for (const auto& q : args.questions) {
      std::printf("Q: %s\nA:", q.c_str());
      std::fflush(stdout);
      session::AnswerStats a = pipe.ask(q, [](const std::string& piece) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);  // stream: one flush per token
      });
      std::printf("\n");
      std::fflush(stdout);
      answers.push_back(std::move(a));
      if (pipe.error() || pipe.stopped()) break;
    }
  }

  // The report: what ran, what it cost, and every answer produced (also after Ctrl-C).
  const model::ModelConfig& mc = model->config();
  int64_t tokens_in = 0, tokens_to_llm = session.n_vision_tokens();
  double vision_flops = 0, vision_flops_full = 0;
  for (const auto& f : session.frames()) {
    tokens_in += f.n_tower_tokens;
    vision_flops += model::vision_flops(mc.vision, 1, f.tokens_per_vision_layer);
    std::vector<int64_t> full(f.tokens_per_vision_layer.size(),
                              f.tokens_per_vision_layer.empty() ? 0 : f.tokens_per_vision_layer.front());
    vision_flops_full += model::vision_flops(mc.vision, 1, full);
  }
  double flops = vision_flops, flops_full = vision_flops_full;
  json jans = json::array();
  int64_t kv_peak = 0;
  for (const auto& a : answers) {
    flops += a.flops_prefill + a.flops_decode;
    flops_full += a.flops_prefill_unpruned + a.flops_decode_unpruned;
    kv_peak = std::max(kv_peak, a.kv_bytes_peak);
    jans.push_back({{"question", a.question},
                    {"answer", a.answer},
                    {"n_generated", a.n_generated},
                    {"stopped_by_eos", a.stopped_by_eos},
                    {"interrupted", a.interrupted},
                    {"ttft_ms", a.ttft_ms},
                    {"prefill_ms", a.prefill_ms},
                    {"decode_ms_per_token", a.decode_ms_per_token}});
  }
  json timings = json::object();
  for (const auto& t : pipe.timings()) timings[t.name] = t.ms;
  const session::AnswerStats* first = answers.empty() ? nullptr : &answers.front();
  json stages = stages_json(session, first);
  json report{{"video", args.video},
              {"model", {{"dir", model_dir}, {"architecture", mc.architecture}}},
              {"pipeline", pipeline_cfg.name},
              {"answers", jans},
              {"n_frames_decoded", perception.source.n_frames_decoded},
              {"n_frames_sampled", perception.n_frames_sampled},
              {"n_frames_encoded", perception.n_frames_encoded},
              {"n_frames_dropped", perception.n_frames_dropped},
              {"n_vision_tokens_in", tokens_in},
              {"n_vision_tokens_to_llm", tokens_to_llm},
              {"n_vision_tokens_layer_avg", first ? mean(first->vision_per_layer) : 0.0},
              {"n_vision_kv_after_decode", first ? first->n_vision_kv_after_decode : 0},
              {"stages", stages},
              {"flops_total", flops},
              {"flops_unpruned", flops_full},
              {"flops_vision", vision_flops},
              {"ttft_ms", first ? first->ttft_ms : 0.0},
              {"prefill_ms", first ? first->prefill_ms : 0.0},
              {"decode_ms_per_token", first ? first->decode_ms_per_token : 0.0},
              {"kv_bytes_peak", kv_peak},
              {"peak_rss_bytes", peak_rss_bytes()},
              {"timings_ms", timings},
              {"source", {{"n_packets", perception.source.n_packets},
                          {"n_corrupt_packets", perception.source.n_corrupt_packets},
                          {"truncated", perception.source.truncated},
                          {"damage", perception.source.damage}}},
              {"interrupted", pipe.stopped()}};
  std::exception_ptr err = pipe.error();
  if (err) {
    try {
      std::rethrow_exception(err);
    } catch (const std::exception& e) {
      report["error"] = e.what();
    }
  }
  if (!args.json_path.empty()) write_report(args.json_path, report);
  if (err) std::rethrow_exception(err);
  if (pipe.stopped()) {
    MD_LOG_WARN("run", "interrupted: " << answers.size() << " answer(s) kept");
    return 130;
  }
  if (perception.n_frames_encoded == 0) throw InputError(args.video + ": no frame could be decoded");
  return kExitOk;
}

}  // namespace mustdrop::app
