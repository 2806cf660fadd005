// mustdrop.dual_attention: after chosen LLM layers, each vision token is scored by the
// head-mean attention it receives from the text tokens (everything after the vision block):
// globally (sum over the text rows, as a share of the total) and locally (largest single row).
// A token is dropped only if BOTH are low (share < gamma AND max < alpha); S is always kept.
// Budget mode (target_tokens_per_frame) keeps an exact count, ranked by max(share/gamma,
// max/alpha): the same rule, so a token the thresholds keep ranks at or above one they drop.
#pragma once

#include <memory>

#include "config/pipeline_config.h"
#include "prune/pruner.h"

namespace mustdrop::prune {

class DualAttention : public TokenPruner {
 public:
  explicit DualAttention(const config::DualAttentionOptions& options) : o_(options) {}
  std::string name() const override { return "mustdrop.dual_attention"; }
  Stage stage() const override { return Stage::Prefill; }
  Needs needs(int n_layers) const override;
  std::vector<int64_t> attention_rows(const View& view) const override;
  KeepPlan decide(const View& view) override;
  int64_t max_kept(const View& view) const override;
  std::unique_ptr<TokenPruner> clone() const override { return std::make_unique<DualAttention>(*this); }

 private:
  config::DualAttentionOptions o_;
};

std::unique_ptr<TokenPruner> make_dual_attention(const config::PipelineConfig& config);

}  // namespace mustdrop::prune
