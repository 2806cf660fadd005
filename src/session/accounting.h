// Token and FLOP accounting of answers over a session's memory: what `run`, `bench`, `inspect`,
// `batch` and the model-only comparison tool report, from one routine.
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/device.h"
#include "model/hf_config.h"
#include "prune/pruner.h"
#include "session/session.h"

namespace mustdrop::session {

struct Accounting {
  int64_t n_vision_tokens_in = 0;        // out of the tower without dropping
  int64_t n_vision_tokens_to_llm = 0;    // entering the LLM
  double n_vision_tokens_layer_avg = 0;  // sum over LLM layers of vision tokens present / layers
  int64_t n_vision_kv_after_decode = 0;  // per layer, mean over layers
  int64_t n_vision_tokens_in_s = 0;      // remembered tokens in the important set S
  double flops_vision = 0;
  double flops_total = 0;     // vision + prefill + decode of every answer
  double flops_unpruned = 0;  // the same frames and prompts without any dropping
  nlohmann::json stages;      // per-stage records (vision stages summed over frames, then the first answer's)
};

// Token counts and per-stage records of the first answer over `memory` (whose frames the vision
// stages recorded in `vision_records` encoded); FLOPs of all of them.
Accounting account(const MemorySnapshot& memory, const std::vector<prune::StageRecord>& vision_records,
                   const model::ModelConfig& config, const std::vector<AnswerStats>& answers);

double mean(const std::vector<int64_t>& v);
// Host <-> device crossings as a report shows them (counts and bytes each way).
nlohmann::json transfers_json(const model::TransferStats& t);

}  // namespace mustdrop::session
