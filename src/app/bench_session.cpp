// `mustdrop bench session`: what the long-running session machinery buys, per pipeline, measured
// side by side in one process: time to first token on a warm session (cached prefix) against a
// cold prefill, the cost of one more frame against re-prefilling everything, and memory over an
// accelerated stream many times the budget.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cstdio>
#include <thread>

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
#include "pipeline/runtime.h"
#include "video/preprocess.h"

namespace mustdrop::app {
namespace {

using nlohmann::json;

struct Row {
  std::string pipeline;
  int64_t memory_tokens = 0;
  double cold_ttft_ms = 0, warm_ttft_ms = 0;   // the second question on a warm session
  double vit_ms = 0, add_frame_ms = 0, reprefill_ms = 0;
  int64_t stream_frames = 0, budget_bytes = 0, max_bytes = 0, evictions = 0, evicted_tokens = 0;
  int64_t rss_warm = 0, rss_end = 0;
  bool same_answer = false;                    // warm answer ids == cold answer ids
};

// Feeds `frames` through a lane into `s`; ms. Throws what the source failed with.
double perceive(pipeline::Runtime& rt, session::Session& s, const Sampled& frames, int repeats,
                const std::function<void()>& poll = {}) {
  pipeline::SourceOptions every;
  every.every_frame = true;
  auto t0 = Clock::now();
  std::shared_ptr<pipeline::SourceRun> run = rt.add_source(replay(frames, repeats), s, every);
  while (!run->wait_for(std::chrono::milliseconds(20))) {
    if (poll) poll();
  }
  if (poll) poll();
  if (run->error()) std::rethrow_exception(run->error());
  model::synchronize(s.model().llm().device());  // on a GPU the last frame's work may still be queued
  return ms_since(t0);
}

Row measure(pipeline::Runtime& rt, const model::VisionLanguageModel& model, const prune::Chain& chain,
            const Sampled& frames, const BenchSessionArgs& args, const config::Config& config) {
  Row row;
  row.pipeline = chain.name();
  model::GenerationOptions gen;
  gen.max_new_tokens = args.max_new_tokens;
  // 1. A warm session: the frames in memory, the prefix built as they arrived.
  session::Session s(model, &chain);
  perceive(rt, s, frames, 1);
  std::shared_ptr<const session::MemorySnapshot> memory = s.snapshot();
  row.memory_tokens = memory->n_tokens;
  {
    c10::InferenceMode guard;
    // Both on this thread, one after the other, so only the prefix differs.
    session::AnswerStats cold = s.answer(*memory, args.question, gen, nullptr, {}, false);
    s.answer(*memory, "What is in the picture?", gen, nullptr, {}, true);
    session::AnswerStats warm = s.answer(*memory, args.question, gen, nullptr, {}, true);
    row.cold_ttft_ms = cold.ttft_ms;
    row.warm_ttft_ms = warm.ttft_ms;
    row.reprefill_ms = cold.prefill_ms;
    row.same_answer = warm.ids == cold.ids;
  }
  // 2. One more frame: the tower (the same for both ways), then joining the memory with the
  // prefix extended by the new tokens only.
  {
    c10::InferenceMode guard;
    config::PreprocessConfig pre = config.video.preprocess;
    pre.size = model.image_size();
    video::Preprocessor preprocess(pre);
    video::ImageTensor px = preprocess(frames.frames.back());
    at::Tensor pixels = at::from_blob(px.data.data(), {1, px.channels, px.height, px.width}, at::kFloat);
    const int64_t seq = static_cast<int64_t>(memory->frames.back()->seq) + 1;
    const double t = memory->t_last_sec + 1;
    auto t0 = Clock::now();
    prune::EncodedFrame f = s.encode_frame(pixels, seq, t);
    at::Tensor tokens = model.project(f.features);
    model::synchronize(model.llm().device());
    row.vit_ms = ms_since(t0);
    auto t1 = Clock::now();
    s.add_frame(session::frame_tokens(std::move(f), tokens, seq, t));
    model::synchronize(model.llm().device());
    row.add_frame_ms = ms_since(t1);
  }
  // 3. An accelerated stream many times the budget: bytes after every poll, RSS after warm-up
  // (the budget first reached) and at the end.
  config::MemoryConfig budget = config.memory;
  budget.max_tokens = args.budget_tokens;
  session::Session live(model, &chain, budget);
  // The budget in bytes: the empty memory (the system part's prefix) plus every token it may hold.
  row.budget_bytes = live.snapshot()->bytes + live.memory().bytes_per_token() * live.memory().token_capacity();
  const int repeats = std::max<int>(1, static_cast<int>((args.stream_frames + frames.frames.size() - 1) / frames.frames.size()));
  perceive(rt, live, frames, repeats, [&] {
    std::shared_ptr<const session::MemorySnapshot> now = live.snapshot();
    row.max_bytes = std::max(row.max_bytes, now->bytes);
    if (row.rss_warm == 0 && now->n_evictions > 0) row.rss_warm = rss_bytes();
  });
  std::shared_ptr<const session::MemorySnapshot> end = live.snapshot();
  row.stream_frames = static_cast<int64_t>(end->version);
  row.evictions = end->n_evictions;
  row.evicted_tokens = end->n_evicted_tokens;
  row.rss_end = rss_bytes();
  return row;
}

}  // namespace

int run_bench_session(const BenchSessionArgs& args, config::Config config) {
  if (args.video.empty()) throw ConfigError("bench session: give --video");
  if (args.pipelines.empty()) throw ConfigError("bench session: give --pipelines a.yaml,b.yaml,...");
  std::string model_dir = model_source(args.model, config, "bench session");
  if (args.frames > 0) config.video.sampler.frames = args.frames;
  std::vector<std::unique_ptr<prune::Chain>> chains;
  for (const auto& p : args.pipelines) chains.push_back(prune::Chain::build(config::load_pipeline(p), p));
  auto model = load_model(args.model, model_dir, config);
  Sampled frames = sample_frames(args.video, config, *model);
  pipeline::Runtime runtime(config.threads);
  MD_LOG_INFO("bench", model_dir << ": " << frames.frames.size() << " frames, " << chains.size() << " pipelines");
  std::vector<Row> rows;
  for (const auto& chain : chains) {
    rows.push_back(measure(runtime, *model, *chain, frames, args, config));
    MD_LOG_INFO("bench", chain->name() << " done");
  }
  std::printf("| pipeline | memory tokens | cold TTFT ms | warm TTFT ms | warm / cold | same answer | ViT ms/frame | "
              "add frame ms | re-prefill ms | add / re-prefill | stream frames | evictions | max bytes / budget | "
              "RSS end / warm |\n");
  std::printf("|---|---:|---:|---:|---:|:-:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  json out = json::array();
  for (const Row& r : rows) {
    double rss_ratio = r.rss_warm > 0 ? static_cast<double>(r.rss_end) / static_cast<double>(r.rss_warm) : 0;
    std::printf("| %s | %lld | %.0f | %.0f | %.3f | %s | %.0f | %.1f | %.0f | %.3f | %lld | %lld | %.3f | %.3f |\n",
                r.pipeline.c_str(), static_cast<long long>(r.memory_tokens), r.cold_ttft_ms, r.warm_ttft_ms,
                r.warm_ttft_ms / r.cold_ttft_ms, r.same_answer ? "yes" : "no", r.vit_ms, r.add_frame_ms,
                r.reprefill_ms, r.add_frame_ms / r.reprefill_ms, static_cast<long long>(r.stream_frames),
                static_cast<long long>(r.evictions),
                static_cast<double>(r.max_bytes) / static_cast<double>(r.budget_bytes), rss_ratio);
    out.push_back({{"pipeline", r.pipeline},
                   {"memory_tokens", r.memory_tokens},
                   {"cold_ttft_ms", r.cold_ttft_ms},
                   {"warm_ttft_ms", r.warm_ttft_ms},
                   {"same_answer", r.same_answer},
                   {"vit_ms", r.vit_ms},
                   {"add_frame_ms", r.add_frame_ms},
                   {"reprefill_ms", r.reprefill_ms},
                   {"stream_frames", r.stream_frames},
                   {"evictions", r.evictions},
                   {"evicted_tokens", r.evicted_tokens},
                   {"budget_bytes", r.budget_bytes},
                   {"max_bytes", r.max_bytes},
                   {"rss_warm_bytes", r.rss_warm},
                   {"rss_end_bytes", r.rss_end}});
  }
  std::printf("\nwarm: the second question on a session whose prefix was built as frames arrived; cold: the "
              "same memory prefilled from scratch. add frame: joining the memory (prefix extended by the new "
              "tokens); the tower's cost is the same either way. Stream: %d frames per pass, budget %lld tokens.\n",
              static_cast<int>(frames.frames.size()), static_cast<long long>(args.budget_tokens));
  std::fflush(stdout);
  if (!args.json_path.empty()) write_report(args.json_path, json{{"model", model_dir}, {"rows", out}});
  return kExitOk;
}

}  // namespace mustdrop::app
