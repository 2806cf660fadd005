// SparseVLM (v1): text raters chosen once from the prompt embeddings; at each pruning layer
// the raters' attention scores the vision tokens, the relation matrix's rank sets how many
// survive, and the best of the dropped tokens are recycled as cluster centres (DPC-kNN).
#pragma once

#include <memory>

#include "config/decode.h"
#include "prune/pruner.h"

namespace mustdrop::prune {

// sparsevlm: text raters, rank-adaptive keep counts, recycling of dropped tokens.
struct SparseVlmOptions {
  std::vector<int> layers = {2, 6, 15, 19};  // LLM layers (0-based) after which it sparsifies
  double scale = 13.5;                       // keep min(rank * scale + bias, n_v - 1) tokens
  double bias = 0;
  double recycle_ratio = 0.3;                // share of the dropped tokens (best scored) recycled into clusters
  double cluster_ratio = 0.1;                // clusters per recycled token (int(n * ratio) + 1 clusters)
  int target_tokens_per_frame = 0;           // > 0: keep this many per frame instead of the rank rule

  template <class V>
  void visit(V& v) {
    v("layers", layers, config::range(0, 10000));
    v("scale", scale, config::range(0, 1e6));
    v("bias", bias, config::range(-1e6, 1e6));
    v("recycle_ratio", recycle_ratio, config::range(0, 1));
    v("cluster_ratio", cluster_ratio, config::range(0, 1));
    v("target_tokens_per_frame", target_tokens_per_frame, config::range(0, 1e6));
  }
};

class SparseVlm : public TokenPruner {
 public:
  explicit SparseVlm(const SparseVlmOptions& options) : o_(options) {}
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
  SparseVlmOptions o_;
  // Raters depend only on the prompt: computed once per prefill.
  mutable int64_t raters_prefill_ = 0;
  mutable std::vector<int64_t> raters_;
};

}  // namespace mustdrop::prune
