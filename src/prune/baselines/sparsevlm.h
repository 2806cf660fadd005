// SparseVLM (v1): text raters chosen once from the prompt embeddings; at each pruning layer
// the raters' attention scores the vision tokens, the relation matrix's rank sets how many
// survive, and the best of the dropped tokens are recycled as cluster centres (DPC-kNN).
#pragma once

#include <memory>

#include "config/pipeline_config.h"
#include "prune/pruner.h"

namespace mustdrop::prune {

class SparseVlm : public TokenPruner {
 public:
  explicit SparseVlm(const config::SparseVlmOptions& options) : o_(options) {}
  std::string name() const override { return "sparsevlm"; }
  Stage stage() const override { return Stage::Prefill; }
  Needs needs(int n_layers) const override;
  std::vector<int64_t> attention_rows(const View& view) const override;
  KeepPlan decide(const View& view) override;
  int64_t max_kept(const View& view) const override;
  std::unique_ptr<TokenPruner> clone() const override { return std::make_unique<SparseVlm>(*this); }
  // Prompt-relative indices of the text raters (text tokens whose mean relevance to the vision
  // tokens, softmax over text, is above the mean), from the prompt embeddings.
  std::vector<int64_t> raters(const View& view) const;

 private:
  std::vector<int64_t> compute_raters(const View& view) const;
  config::SparseVlmOptions o_;
  // Raters depend only on the prompt: computed once per prefill.
  mutable int64_t raters_prefill_ = 0;
  mutable std::vector<int64_t> raters_;
};

std::unique_ptr<TokenPruner> make_sparsevlm(const config::PipelineConfig& config);

}  // namespace mustdrop::prune
