// Pipelines side by side on the same frames and question: one pipeline's measurements, the
// medians over repeats, and the table and JSON rows that `mustdrop bench` and the model-only
// `bench_table` tool print from the same code.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/pipeline_config.h"
#include "model/device.h"
#include "model/hf_config.h"
#include "prune/chain.h"
#include "session/accounting.h"
#include "session/session.h"

namespace mustdrop::session {

// One pipeline's measurements (one repeat).
struct Measure {
  Accounting acc;
  double vit_ms = 0, prefill_ms = 0, ttft_ms = 0, decode_ms_per_token = 0;
  int64_t kv_bytes_peak = 0, peak_rss = 0;
  std::vector<int> ids;
  double flops_full_depth = 0;     // preset runs: the same token counts extended to the full depth
  model::TransferStats transfers;  // host <-> device crossings of the whole run (zero on the host)
};

// Fills the counts, times and answer of `m` from one answer over `memory`; with `full`, also the
// FLOPs at that configuration's depth.
void measure_answer(Measure& m, const MemorySnapshot& memory, const std::vector<prune::StageRecord>& vision_records,
                    const model::ModelConfig& config, const AnswerStats& answer, const model::ModelConfig* full);
// FLOPs of vision + prefill at `full`'s depth, from the per-layer counts that ran: layers past
// the depth that ran keep the last count (this understates what deeper stages would save).
double full_depth_flops(const model::ModelConfig& full, const MemorySnapshot& memory,
                        const std::vector<int64_t>& llm_tokens_per_layer);
double median(std::vector<double> v);
// The last repeat's counts and answer with the medians of the times over `runs` (not empty).
Measure summarize(const std::vector<Measure>& runs);

// One compared pipeline, loaded.
struct PipelineEntry {
  std::string path;
  config::PipelineConfig config;
  std::unique_ptr<prune::Chain> chain;
};
// Loads every pipeline YAML (so a bad one fails before the model loads) and puts `none` in front
// when none of them is it; *ref is none's index.
std::vector<PipelineEntry> load_compared_pipelines(const std::vector<std::string>& paths, size_t* ref);

struct ComparisonRow {
  std::string name;  // the pipeline's name
  std::string file;  // where it came from
  Measure m;
};
// Prints the markdown table (header included) to `out` and returns the rows as JSON. rows[ref]
// is `none`, the reference of every ratio; answers are compared on their first `n_match` tokens;
// `full_depth` adds the full-depth FLOPs columns. A column of host <-> device traffic appears
// when any row moved data.
nlohmann::json print_comparison(std::FILE* out, const std::vector<ComparisonRow>& rows, size_t ref, size_t n_match,
                                bool full_depth);

}  // namespace mustdrop::session
