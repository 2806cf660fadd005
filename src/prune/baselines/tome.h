// ToMe (Bolya et al., token merging): bipartite soft matching after every ViT layer up to the
// feature layer, size-weighted merging, proportional attention (log-size bias in the tower).
#pragma once

#include <memory>

#include "config/pipeline_config.h"
#include "prune/pruner.h"

namespace mustdrop::prune {

class Tome : public TokenPruner {
 public:
  explicit Tome(const config::TomeOptions& options) : o_(options) {}
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
  config::TomeOptions o_;
};

std::unique_ptr<TokenPruner> make_tome(const config::PipelineConfig& config);

}  // namespace mustdrop::prune
