// The one routine that carries out every KeepPlan, whatever the stage: it checks the plan
// (S and CLS kept, indices valid), merges and gathers the token rows of the given tensors,
// updates the ledger, and removes KV entries; plus the per-stage record it feeds.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "model/kv_cache.h"
#include "prune/pruner.h"

namespace mustdrop::prune {

// Where a plan's tokens live: rows [offset, offset + n) of each tensor, n = ledger size.
struct PlanTarget {
  std::vector<at::Tensor*> merged;    // rows merged (weighted mean) then gathered: hidden states
  std::vector<at::Tensor*> gathered;  // rows gathered only: positions, patch indices
  at::Tensor* size = nullptr;         // rows holding token sizes (summed on merge), optional
  int64_t offset = 0;
  std::vector<TokenInfo>* ledger = nullptr;  // required
  bool protect_first = false;         // row 0 (CLS) must be kept
  model::KvCache* cache = nullptr;    // Decode: remove the dropped entries of `cache_layer`
  int cache_layer = 0;
};

// A ledger entry that grew because a later frame's token was folded into it.
struct Growth {
  int64_t id = 0;        // the earlier token
  double size = 0;       // added size
  int64_t last_frame = 0;
  double t_last_sec = 0;
};

// Checks `plan` of pruner `who` over the tokens of `ledger` (indices valid, nothing kept twice,
// merge targets kept, S kept, CLS kept when `protect_first`). Throws InternalError naming `who`.
void check_plan(const KeepPlan& plan, const std::vector<TokenInfo>& ledger, bool protect_first, const std::string& who);

// Carries out `plan` of pruner `who` on `target`. Returns the growths of earlier tokens
// (absorptions). Throws InternalError naming `who` for an invalid plan (e.g. S dropped).
std::vector<Growth> apply_plan(const KeepPlan& plan, PlanTarget& target, const std::string& who);

// What one stage did (summed over its calls: frames, layers).
struct StageRecord {
  std::string name;       // pruner registry name
  Stage stage = Stage::VisionLayer;
  int layer = 0;
  int64_t calls = 0;
  int64_t n_in = 0;       // tokens shown to it (summed over calls)
  int64_t n_out = 0;      // tokens left after its plan
  double ms = 0;          // deciding and applying
  double flops = 0;       // model FLOPs of the layers its output fed, up to the next stage (see chain.h)
};

// Adds one call to the record of (name, stage, layer) in `records` (created in call order).
void record_stage(std::vector<StageRecord>& records, const std::string& name, Stage stage, int layer, int64_t n_in,
                  int64_t n_out, double ms);

}  // namespace mustdrop::prune
