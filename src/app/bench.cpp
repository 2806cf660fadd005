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
#include "model/flops.h"
#include "model/presets.h"
#include "pipeline/runtime.h"
#include "video/preprocess.h"
#include "video/sampler.h"
#include "video/source.h"

namespace mustdrop::app {
namespace {

using nlohmann::json;

constexpr size_t kMatchTokens = 16;  // answers are compared on their first 16 tokens

// One pipeline's measurements (one repeat).
struct Measure {
  Accounting acc;
  double vit_ms = 0, prefill_ms = 0, ttft_ms = 0, decode_ms_per_token = 0;
  int64_t kv_bytes_peak = 0, peak_rss = 0;
  std::vector<int> ids;
  double flops_full_depth = 0;  // preset runs: the same token counts extended to the full depth
};

// FLOPs of vision + prefill at `full`'s depth, from the per-layer counts that ran: layers past
// the depth that ran keep the last count (stages configured deeper are not counted: this
// understates what deeper stages would save). The tower runs up to its feature layer, plus the
// CLS-row passes that ran.
double full_depth_flops(const model::ModelConfig& full, const session::MemorySnapshot& memory,
                        const std::vector<int64_t>& llm_tokens_per_layer) {
  const int n = full.vision.num_hidden_layers, index = full.vision_feature_layer;
  const int tower_layers = index < 0 ? n + 1 + index : index;  // hidden_states[index] = output of layer index-1
  auto extend = [](const std::vector<int64_t>& v, int depth) {
    std::vector<int64_t> out(static_cast<size_t>(depth), v.empty() ? 0 : v.back());
    for (size_t i = 0; i < v.size() && i < out.size(); ++i) out[i] = v[i];
    return out;
  };
  double total = 0;
  for (const auto& f : memory.frames) {
    total += model::vision_flops(full.vision, 1, extend(f->tokens_per_vision_layer, tower_layers));
    for (int64_t t : f->cls_only_tokens) total += model::cls_row_flops(full.vision, t);
  }
  return total + model::prefill_flops(full.text, extend(llm_tokens_per_layer, full.text.num_hidden_layers));
}

// One pipeline over the sampled frames on the runtime: perception through a lane, one answer
// through the answering branch. A cold prefill (no prefix cache): the table compares methods.
Measure measure_once(pipeline::Runtime& runtime, const model::VisionLanguageModel& model, const prune::Chain& chain,
                     const Sampled& frames, const std::string& question, const model::GenerationOptions& gen,
                     const model::ModelConfig* full) {
  reset_peak_rss();
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
  m.vit_ms = ms_since(t0);
  pipeline::Ask ask;
  ask.question = question;
  ask.options = gen;
  session::AnswerStats a = runtime.ask(s, std::move(ask)).get();
  std::shared_ptr<const session::MemorySnapshot> memory = s.snapshot();
  m.acc = account(*memory, s.vision_records(), model.config(), {a});
  m.prefill_ms = a.prefill_ms;
  m.ttft_ms = a.ttft_ms;
  m.decode_ms_per_token = a.decode_ms_per_token;
  m.kv_bytes_peak = a.kv_bytes_peak;
  m.ids = a.ids;
  m.peak_rss = peak_rss_bytes();
  if (full) {
    std::vector<int64_t> llm;
    int64_t n_text = a.n_prompt_tokens - a.n_vision_tokens;
    for (int64_t v : a.vision_per_layer) llm.push_back(v + n_text);
    m.flops_full_depth = full_depth_flops(*full, *memory, llm);
  }
  return m;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n == 0 ? 0 : (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

int run_bench(const BenchArgs& args, config::Config config) {
  std::string model_dir = model_source(args.model, config, "bench");
  if (args.pipelines.empty()) throw ConfigError("bench: give --pipelines a.yaml,b.yaml,...");
  if (args.frames > 0) config.video.sampler.frames = args.frames;
  // Pipelines first: a bad YAML fails before the model loads.
  struct Entry {
    std::string path;
    config::PipelineConfig config;
    std::unique_ptr<prune::Chain> chain;
  };
  std::vector<Entry> entries;
  for (const auto& path : args.pipelines) {
    Entry e{path, config::load_pipeline(path), nullptr};
    e.chain = prune::Chain::build(e.config, path);
    entries.push_back(std::move(e));
  }
  auto is_none = [](const Entry& e) { return e.config.chain.empty(); };
  if (std::none_of(entries.begin(), entries.end(), is_none)) {
    Entry e{"(built in)", config::PipelineConfig{}, nullptr};
    e.chain = prune::Chain::build(e.config, e.path);
    entries.insert(entries.begin(), std::move(e));  // the reference every ratio is against
  }
  size_t ref = static_cast<size_t>(std::find_if(entries.begin(), entries.end(), is_none) - entries.begin());

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
  std::vector<Measure> result;
  for (auto& e : entries) {
    std::vector<Measure> runs;
    for (int r = 0; r < args.repeats; ++r) {
      runs.push_back(measure_once(runtime, *model, *e.chain, frames, args.question, gen, full.get()));
    }
    Measure m = runs.back();  // counts and answers are the same every repeat (greedy, fixed seed)
    auto med = [&](double Measure::*field) {
      std::vector<double> v;
      for (const auto& r : runs) v.push_back(r.*field);
      return median(v);
    };
    m.vit_ms = med(&Measure::vit_ms);
    m.prefill_ms = med(&Measure::prefill_ms);
    m.ttft_ms = med(&Measure::ttft_ms);
    m.decode_ms_per_token = med(&Measure::decode_ms_per_token);
    result.push_back(std::move(m));
    MD_LOG_INFO("bench", e.config.name << " done");
  }

  // The table.
  const Measure& none = result[ref];
  const size_t n_match = std::min(kMatchTokens, static_cast<size_t>(args.max_new_tokens));
  auto match = [&](const Measure& m) {
    size_t n = std::min(n_match, std::max(m.ids.size(), none.ids.size()));
    bool same = m.ids.size() >= n && none.ids.size() >= n && std::equal(m.ids.begin(), m.ids.begin() + n, none.ids.begin());
    return same ? "yes" : "no";
  };
  std::printf("| pipeline | tokens in | to LLM | layer avg | KV after decode | FLOPs | FLOPs vs none | ViT ms | prefill ms | "
              "prefill vs none | TTFT ms | decode ms/tok | KV MB | peak RSS MB | first %zu tokens = none |%s\n",
              n_match, full ? " full-depth FLOPs | full-depth vs none |" : "");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|%s\n", full ? "---:|---:|" : "");
  json rows = json::array();
  for (size_t i = 0; i < entries.size(); ++i) {
    const Measure& m = result[i];
    double fr = m.acc.flops_total / none.acc.flops_total, pr = m.prefill_ms / none.prefill_ms;
    std::printf("| %s | %lld | %lld | %.1f | %lld | %.3g | %.3f | %.0f | %.0f | %.3f | %.0f | %.1f | %.1f | %.0f | %s |",
                entries[i].config.name.c_str(), static_cast<long long>(m.acc.n_vision_tokens_in),
                static_cast<long long>(m.acc.n_vision_tokens_to_llm), m.acc.n_vision_tokens_layer_avg,
                static_cast<long long>(m.acc.n_vision_kv_after_decode), m.acc.flops_total, fr, m.vit_ms, m.prefill_ms,
                pr, m.ttft_ms, m.decode_ms_per_token, static_cast<double>(m.kv_bytes_peak) / 1e6,
                static_cast<double>(m.peak_rss) / 1e6, match(m));
    if (full) {
      std::printf(" %s | %s |", fmt("%.3g", m.flops_full_depth).c_str(),
                  fmt("%.3f", m.flops_full_depth / none.flops_full_depth).c_str());
    }
    std::printf("\n");
    json row{{"pipeline", entries[i].config.name},
             {"file", entries[i].path},
             {"n_vision_tokens_in", m.acc.n_vision_tokens_in},
             {"n_vision_tokens_to_llm", m.acc.n_vision_tokens_to_llm},
             {"n_vision_tokens_layer_avg", m.acc.n_vision_tokens_layer_avg},
             {"n_vision_kv_after_decode", m.acc.n_vision_kv_after_decode},
             {"flops_total", m.acc.flops_total},
             {"flops_ratio_vs_none", fr},
             {"vit_ms", m.vit_ms},
             {"prefill_ms", m.prefill_ms},
             {"prefill_ratio_vs_none", pr},
             {"ttft_ms", m.ttft_ms},
             {"decode_ms_per_token", m.decode_ms_per_token},
             {"kv_bytes_peak", m.kv_bytes_peak},
             {"peak_rss_bytes", m.peak_rss},
             {"answer_ids", m.ids},
             {"first_tokens_match_none", std::string(match(m)) == "yes"},
             {"stages", m.acc.stages}};
    if (full) {
      row["flops_full_depth"] = m.flops_full_depth;
      row["flops_full_depth_ratio_vs_none"] = m.flops_full_depth / none.flops_full_depth;
    }
    rows.push_back(row);
  }
  std::printf("\nFLOPs: vision + prefill + decode (analytic, src/model/flops.h); layer avg: vision tokens summed "
              "over LLM layers / layers; times: median of %d run(s), computing in %s.%s\n",
              args.repeats, dtype_name(model->llm().dtype()),
              full ? " Full depth: vision + prefill at the preset's full depth (layers past the ones run hold the "
                     "last count)."
                   : "");
  std::fflush(stdout);
  if (!args.json_path.empty()) {
    json report{{"video", args.video},
                {"model", model_dir},
                {"dtype", dtype_name(model->llm().dtype())},
                {"question", args.question},
                {"n_frames", frames.frames.size()},
                {"repeats", args.repeats},
                {"warmup", args.warmup},
                {"max_new_tokens", args.max_new_tokens},
                {"pipelines", rows}};
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
