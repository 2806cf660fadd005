// Pipelines side by side on the same frames and question: one pipeline's measurements, the
// medians over repeats, and the table and JSON rows that `mustdrop bench` and the model-only
// `bench_table` tool print from the same code.
#pragma once

#include <cstdint>
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

// Answers are compared with `none`'s on their first this many tokens.
constexpr size_t kMatchTokens = 16;

struct ComparisonRow {
  std::string name;  // the pipeline's name
  std::string file;  // where it came from
  Measure m;
};
// The markdown table (header, rows, and a note on how to read it) and the rows as JSON. rows[ref]
// is `none`, the reference of every ratio; answers are compared on their first kMatchTokens
// tokens (at most max_new_tokens); `computing` says in what and where ("bf16 on cpu");
// `full_depth` adds the full-depth FLOPs columns. A column of host <-> device traffic appears
// when any row moved data.
struct Comparison {
  std::string table;
  nlohmann::json rows;
};
Comparison compare(const std::vector<ComparisonRow>& rows, size_t ref, int max_new_tokens, int repeats,
                   const std::string& computing, bool full_depth);

}  // namespace mustdrop::session
