// Token generation after a prefill: greedy or temperature/top-p sampling with a seed, stopping
// at EOS or after max_new_tokens, with a callback per token so answers can stream.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/kv_cache.h"
#include "model/llama.h"

namespace mustdrop::model {

struct GenerationOptions {
  int max_new_tokens = 128;  // stop after this many generated tokens
  double temperature = 0.0;  // 0: greedy (argmax); > 0: sample from softmax(logits / temperature)
  double top_p = 1.0;        // nucleus: sample among the smallest set of tokens whose mass reaches top_p
  uint64_t seed = 0;         // sampling seed (same seed, same tokens)
  std::vector<int> stop_ids; // end of sequence ids (usually EOS)
  int vocab_limit = 0;       // > 0: only ids below this may be picked (the tokenizer's vocabulary;
                             // checkpoints pad their embedding table past it)
};

// Called with each new token id; return false to stop early.
using TokenCallback = std::function<bool(int id)>;
// Called after each decode step with the step number (1-based) and the cache (eviction policies).
using StepHook = std::function<void(int step, KvCache& cache)>;
// The layer hook for the forward of decode step `step` (1-based: the step's forward runs before
// StepHook sees the same number), or nullptr (the step runs without one).
using StepLayerHook = std::function<LayerHook*(int step)>;

struct GenerationResult {
  std::vector<int> ids;       // generated tokens (a stop id is not included)
  bool stopped_by_eos = false;
  double decode_ms = 0;       // wall time of the decode steps
};

// Picks the next token from `logits` [vocab] (float32) with the options' rule; `gen` is the
// sampling generator (unused when greedy).
int pick_token(const at::Tensor& logits, const GenerationOptions& options, at::Generator& gen);

// Continues from `first_logits` ([1, vocab], the prefill's last row): picks a token, feeds it at
// position `next_position` (then +1 per step) through `llm` with `cache`, until a stop id,
// max_new_tokens or the callback says stop. `step_layers` gives each step's forward a layer hook
// (decode-time reading policies); empty: none.
GenerationResult generate(const LlamaModel& llm, KvCache& cache, const at::Tensor& first_logits, int64_t next_position,
                          const GenerationOptions& options, const TokenCallback& on_token, const StepHook& on_step = {},
                          const StepLayerHook& step_layers = {});

}  // namespace mustdrop::model
