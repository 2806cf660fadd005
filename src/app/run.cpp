#include <cstdio>

#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "app/exit_codes.h"
#include "app/report.h"
#include "app/signals.h"
#include "core/error.h"
#include "core/log.h"
#include "core/sysinfo.h"
#include "model/device.h"
#include "pipeline/runtime.h"
#include "session/session.h"
#include "video/source.h"

namespace mustdrop::app {

using nlohmann::json;

int run_run(const RunArgs& args, config::Config config) {
  if (args.questions.empty()) throw ConfigError("run: give at least one --question");
  config::PipelineConfig pipeline_cfg;
  if (!args.pipeline.empty()) pipeline_cfg = config::load_pipeline(args.pipeline);
  std::unique_ptr<prune::Chain> chain = prune::Chain::build(pipeline_cfg, args.pipeline);
  if (args.frames > 0) config.video.sampler.frames = args.frames;
  if (args.max_new_tokens > 0) config.generation.max_new_tokens = args.max_new_tokens;
  if (args.temperature >= 0) config.generation.temperature = args.temperature;
  if (args.seed >= 0) config.generation.seed = args.seed;
  std::string model_dir = model_source(args.model, config, "run");

  // Cheap checks first: a bad video fails before the model loads.
  std::unique_ptr<video::Source> source = video::open_source(args.video, config.video);
  if (source->info().live && config.video.sampler.kind == config::SamplerKind::kUniform) {
    config.video.sampler.kind = config::SamplerKind::kInterval;
  }
  auto model = load_model(args.model, model_dir, config);
  const model::TransferStats moved = model::transfer_stats();  // crossings of this run, not of the load
  MD_LOG_INFO("run", "model " << model_dir << " (" << model->config().architecture << "), pipeline "
                              << pipeline_cfg.name);

  session::Session session(*model, chain.get(), config.memory);
  pipeline::Runtime runtime(config.threads);
  install_stop_handlers([&runtime] { runtime.stop(); });

  pipeline::SourceOptions source_options;
  source_options.video = config.video;
  source_options.frames_in_flight = config.threads.frames_in_flight;
  std::shared_ptr<pipeline::SourceRun> perceiving = runtime.add_source(std::move(source), session, source_options);
  pipeline::PerceptionStats perception = perceiving->wait();
  std::exception_ptr err = perceiving->error();
  model::GenerationOptions generation = generation_options(config);
  std::vector<session::AnswerStats> answers;
  if (!err && !runtime.stopped() && perception.n_frames_encoded > 0) {
    for (const auto& q : args.questions) {
      std::printf("Q: %s\nA:", q.c_str());
      std::fflush(stdout);
      pipeline::Ask ask;
      ask.question = q;
      ask.options = generation;
      ask.on_text = [](const std::string& piece) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);  // stream: one flush per token
      };
      try {
        session::AnswerStats a = runtime.ask(session, std::move(ask)).get();
        a.question = q;
        answers.push_back(std::move(a));
      } catch (const pipeline::Stopped&) {
        // Ctrl-C came before this answer started: nothing to keep.
      } catch (...) {
        err = std::current_exception();
      }
      std::printf("\n");
      std::fflush(stdout);
      if (err || runtime.stopped()) break;
    }
  }

  // The report: what ran, what it cost, and every answer produced (also after Ctrl-C).
  const model::ModelConfig& mc = model->config();
  const session::AnswerStats* first = answers.empty() ? nullptr : &answers.front();
  std::shared_ptr<const session::MemorySnapshot> memory = session.snapshot();
  Accounting acc = account(*memory, session.vision_records(), mc, answers);
  json jans = json::array();
  int64_t kv_peak = 0;
  for (const auto& a : answers) {
    kv_peak = std::max(kv_peak, a.kv_bytes_peak);
    jans.push_back({{"question", a.question},
                    {"answer", a.answer},
                    {"ids", a.ids},
                    {"n_generated", a.n_generated},
                    {"stopped_by_eos", a.stopped_by_eos},
                    {"interrupted", a.interrupted},
                    {"ttft_ms", a.ttft_ms},
                    {"prefill_ms", a.prefill_ms},
                    {"decode_ms_per_token", a.decode_ms_per_token},
                    {"memory", memory_use_json(a)}});
  }
  json timings = json::object();
  for (const auto& t : runtime.timings()) timings[t.name] = t.ms;
  json report{{"video", args.video},
              {"model",
               {{"dir", model_dir},
                {"architecture", mc.architecture},
                {"dtype", model::compute_dtype_name(model->llm().dtype())},
                {"device", model->llm().device().str()}}},
              {"pipeline", pipeline_cfg.name},
              {"media", memory->media() == model::Media::kImage ? "image" : "video"},
              {"answers", jans},
              {"n_frames_decoded", perception.source.n_frames_decoded},
              {"n_frames_sampled", perception.n_frames_sampled},
              {"n_frames_encoded", perception.n_frames_encoded},
              {"n_frames_dropped", perception.n_frames_dropped},
              {"n_vision_tokens_in", acc.n_vision_tokens_in},
              {"n_vision_tokens_to_llm", acc.n_vision_tokens_to_llm},
              {"n_vision_tokens_layer_avg", acc.n_vision_tokens_layer_avg},
              {"n_vision_kv_after_decode", acc.n_vision_kv_after_decode},
              {"n_vision_tokens_in_s", acc.n_vision_tokens_in_s},
              {"stages", acc.stages},
              {"flops_total", acc.flops_total},
              {"flops_unpruned", acc.flops_unpruned},
              {"flops_vision", acc.flops_vision},
              {"ttft_ms", first ? first->ttft_ms : 0.0},
              {"prefill_ms", first ? first->prefill_ms : 0.0},
              {"decode_ms_per_token", first ? first->decode_ms_per_token : 0.0},
              {"kv_bytes_peak", kv_peak},
              {"peak_rss_bytes", peak_rss_bytes()},
              {"transfers", transfers_json(model::transfer_stats() - moved)},
              {"timings_ms", timings},
              {"source", {{"n_packets", perception.source.n_packets},
                          {"n_corrupt_packets", perception.source.n_corrupt_packets},
                          {"truncated", perception.source.truncated},
                          {"damage", perception.source.damage}}},
              {"memory", memory_json(*memory, session)},
              {"interrupted", runtime.stopped()}};
  if (err) {
    try {
      std::rethrow_exception(err);
    } catch (const std::exception& e) {
      report["error"] = e.what();
    }
  }
  if (!args.json_path.empty()) write_report(args.json_path, report);
  if (err) std::rethrow_exception(err);
  if (runtime.stopped()) {
    MD_LOG_WARN("run", "interrupted: " << answers.size() << " answer(s) kept");
    return 130;
  }
  if (perception.n_frames_encoded == 0) throw InputError(args.video + ": no frame could be decoded");
  return kExitOk;
}

}  // namespace mustdrop::app
