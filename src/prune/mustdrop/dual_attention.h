// mustdrop.dual_attention: after chosen LLM layers, each vision token is scored by the
// head-mean attention it receives from the text tokens (everything after the vision block):
// globally (sum over the text rows, as a share of the total) and locally (largest single row).
// A token is dropped only if BOTH are low (share < gamma AND max < alpha); S is always kept.
// Budget mode (target_tokens_per_frame) keeps an exact count, ranked by max(share/gamma,
// max/alpha): the same rule, so a token the thresholds keep ranks at or above one they drop.
#pragma once

#include <memory>

#include "config/decode.h"
#include "prune/pruner.h"

namespace mustdrop::prune {

// mustdrop.dual_attention: drop a vision token only if both its global and local text->vision
// attention are low. Thresholds default to the official TextVQA-192 script's (the official code's
// own defaults, 1.0 / 0.0, drop nothing; docs/pruning.md).
struct DualAttentionOptions {
  std::vector<int> layers = {2, 6, 10, 14};  // LLM layers (0-based) after which the filter runs
  double global_threshold = 0.001;           // gamma: drop candidate if its share of the summed attention < gamma
  double local_threshold = 0.001;            // alpha: ... and its largest single-row attention < alpha
  int target_tokens_per_frame = 0;           // > 0: budget mode, keep exactly this many per frame (ranked), thresholds unused

  template <class V>
  void visit(V& v) {
    v("layers", layers, config::range(0, 10000));
    v("global_threshold", global_threshold, config::range(0, 1));
    v("local_threshold", local_threshold, config::range(0, 1));
    v("target_tokens_per_frame", target_tokens_per_frame, config::range(0, 1e6));
  }
};

class DualAttention : public TokenPruner {
 public:
  explicit DualAttention(const DualAttentionOptions& options) : o_(options) {}
  std::string name() const override { return "mustdrop.dual_attention"; }
  Stage stage() const override { return Stage::Prefill; }
  Needs needs(int n_layers) const override;
  std::vector<int64_t> attention_rows(const View& view) const override;
  KeepPlan decide(const View& view) override;
  int64_t max_kept(const View& view) const override;
  std::unique_ptr<TokenPruner> clone() const override { return std::make_unique<DualAttention>(*this); }

 private:
  DualAttentionOptions o_;
};

}  // namespace mustdrop::prune
