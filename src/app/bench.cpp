// `mustdrop bench`: the same sampled frames and question through every pipeline, side by side
// in one process: tokens, FLOPs, times, memory, and whether the answer starts like `none`'s.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "app/exit_codes.h"
#include "app/report.h"
#include "config/pipeline_config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/sysinfo.h"
#include "core/timing.h"
#include "model/device.h"
#include "model/presets.h"
#include "pipeline/runtime.h"
#include "session/comparison.h"
#include "video/preprocess.h"
#include "video/sampler.h"
#include "video/source.h"

namespace mustdrop::app {
namespace {

using nlohmann::json;

using session::Measure;

// One pipeline over the sampled frames on the runtime: perception through a lane, one answer
// through the answering branch. A cold prefill (no prefix cache): the table compares methods.
Measure measure_once(pipeline::Runtime& runtime, const model::VisionLanguageModel& model, const prune::Chain& chain,
                     const Sampled& frames, const std::string& question, const model::GenerationOptions& gen,
                     const model::ModelConfig* full) {
  reset_peak_rss();
  const model::TransferStats moved = model::transfer_stats();
  Measure m;
  config::MemoryConfig cold;
  cold.prefix_cache = false;
  session::Session s(model, &chain, cold);
  pipeline::SourceOptions every;
  every.every_frame = true;
  auto t0 = Clock::now();
  std::shared_ptr<pipeline::SourceRun> run = runtime.add_source(replay(frames), s, every);
  run->wait();
  if (run->error()) std::rethrow_exception(run->error());
  model::synchronize(model.llm().device());  // on a GPU the last frame's work may still be queued
  m.vit_ms = ms_since(t0);
  pipeline::Ask ask;
  ask.question = question;
  ask.options = gen;
  session::AnswerStats a = runtime.ask(s, std::move(ask)).get();
  session::measure_answer(m, *s.snapshot(), s.vision_records(), model.config(), a, full);
  m.peak_rss = peak_rss_bytes();
  m.transfers = model::transfer_stats() - moved;
  return m;
}

}  // namespace

int run_bench(const BenchArgs& args, config::Config config) {
  std::string model_dir = model_source(args.model, config, "bench");
  if (args.pipelines.empty()) throw ConfigError("bench: give --pipelines a.yaml,b.yaml,...");
  if (args.frames > 0) config.video.sampler.frames = args.frames;
  size_t ref = 0;
  std::vector<session::PipelineEntry> entries = session::load_compared_pipelines(args.pipelines, &ref);

  auto model = load_model(args.model, model_dir, config);
  std::unique_ptr<model::ModelConfig> full;
  if (!args.model.preset.empty()) {
    full = std::make_unique<model::ModelConfig>(model::preset_config(args.model.preset, 0, 0));
  }
  Sampled frames = sample_frames(args.video, config, *model);
  pipeline::Runtime runtime(config.threads);
  MD_LOG_INFO("bench", model_dir << ": " << frames.frames.size() << " frames, " << entries.size() << " pipelines, "
                                 << args.repeats << " repeat(s) after " << args.warmup << " warm-up run(s)");
  model::GenerationOptions gen;
  gen.max_new_tokens = args.max_new_tokens;
  gen.temperature = 0;  // greedy: answers compare token by token

  // Warm-up: the reference pipeline over the first frame with a short answer touches every
  // code path (thread pools, allocator, weights' pages) at a fraction of a full run's cost.
  Sampled first;
  first.info = frames.info;
  first.frames.push_back(frames.frames.front().clone());
  model::GenerationOptions short_answer = gen;
  short_answer.max_new_tokens = std::min(2, gen.max_new_tokens);
  for (int w = 0; w < args.warmup; ++w) measure_once(runtime, *model, *entries[ref].chain, first, args.question, short_answer, nullptr);
  std::vector<session::ComparisonRow> result;
  for (auto& e : entries) {
    std::vector<Measure> runs;
    for (int r = 0; r < args.repeats; ++r) {
      runs.push_back(measure_once(runtime, *model, *e.chain, frames, args.question, gen, full.get()));
    }
    result.push_back({e.config.name, e.path, session::summarize(runs)});
    MD_LOG_INFO("bench", e.config.name << " done");
  }

  const session::Comparison table =
      session::compare(result, ref, args.max_new_tokens, args.repeats,
                       std::string(model::compute_dtype_name(model->llm().dtype())) + " on " + model->llm().device().str(),
                       full != nullptr);
  std::fputs(table.table.c_str(), stdout);
  std::fflush(stdout);
  if (!args.json_path.empty()) {
    json report{{"video", args.video},
                {"model", model_dir},
                {"dtype", model::compute_dtype_name(model->llm().dtype())},
                {"device", model->llm().device().str()},
                {"question", args.question},
                {"n_frames", frames.frames.size()},
                {"repeats", args.repeats},
                {"warmup", args.warmup},
                {"max_new_tokens", args.max_new_tokens},
                {"pipelines", table.rows}};
    if (full) {
      report["full_depth"] = {{"llm_layers", full->text.num_hidden_layers},
                              {"vision_layers", full->vision.num_hidden_layers},
                              {"rule", "per-layer counts that ran, deeper layers hold the last count"}};
    }
    write_report(args.json_path, report);
  }
  return kExitOk;
}

}  // namespace mustdrop::app
