// random: after one LLM layer keep a uniformly random subset of the vision tokens (S kept),
// the same subset for the same seed. The floor any scoring method should beat.
#pragma once

#include <memory>

#include "config/pipeline_config.h"
#include "prune/pruner.h"

namespace mustdrop::prune {

class RandomDrop : public TokenPruner {
 public:
  explicit RandomDrop(const config::RandomOptions& options) : o_(options) {}
  std::string name() const override { return "random"; }
  Stage stage() const override { return Stage::Prefill; }
  Needs needs(int n_layers) const override;
  KeepPlan decide(const View& view) override;
  int64_t max_kept(const View& view) const override;
  std::unique_ptr<TokenPruner> clone() const override { return std::make_unique<RandomDrop>(*this); }

 private:
  config::RandomOptions o_;
};

std::unique_ptr<TokenPruner> make_random(const config::PipelineConfig& config);

}  // namespace mustdrop::prune
