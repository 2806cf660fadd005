// ToMe (Bolya et al., token merging): bipartite soft matching after every ViT layer up to the
// feature layer, size-weighted merging, proportional attention (log-size bias in the tower).
#pragma once

#include <memory>

#include "config/decode.h"
#include "prune/pruner.h"

namespace mustdrop::prune {

// tome: bipartite soft matching in every ViT layer up to the feature layer.
struct TomeOptions {
  int r = 16;                        // tokens merged per layer (at most half the mergeable tokens)
  int target_tokens_per_frame = 0;   // > 0: choose r per layer to end with this many patch tokens
  bool proportional_attention = true;  // add log(size) to the attention logits

  template <class V>
  void visit(V& v) {
    v("r", r, config::range(0, 1e6));
    v("target_tokens_per_frame", target_tokens_per_frame, config::range(0, 1e6));
    v("proportional_attention", proportional_attention, config::any());
  }
};

class Tome : public TokenPruner {
 public:
  explicit Tome(const TomeOptions& options) : o_(options) {}
  std::string name() const override { return "tome"; }
  Stage stage() const override { return Stage::VisionLayer; }
  // Lists every tower layer; the chain runs it only up to the feature layer (past it the tower
  // computes CLS rows only).
  Needs needs(int n_layers) const override;
  KeepPlan decide(const View& view) override;
  int64_t max_kept(const View& view) const override;
  std::unique_ptr<TokenPruner> clone() const override { return std::make_unique<Tome>(*this); }
  // Tokens merged after `layer` when `n_tokens` (CLS included) enter it (r, or the share of the
  // target budget left for this layer), at most half the mergeable tokens.
  int64_t merges_at(const View& view) const;

 private:
  TomeOptions o_;
};

}  // namespace mustdrop::prune
