// FastV (Chen et al.): after layer K-1, rank the vision tokens by the head-mean attention they
// get from the last prompt token and keep the top R (count or ratio); layers >= K run on the
// kept tokens, which keep their original positions. S, when a chain has one, is kept too.
#pragma once

#include <memory>

#include "config/pipeline_config.h"
#include "prune/pruner.h"

namespace mustdrop::prune {

class Fastv : public TokenPruner {
 public:
  explicit Fastv(const config::FastvOptions& options) : o_(options) {}
  std::string name() const override { return "fastv"; }
  Stage stage() const override { return Stage::Prefill; }
  Needs needs(int n_layers) const override;
  std::vector<int64_t> attention_rows(const View& view) const override;
  KeepPlan decide(const View& view) override;
  int64_t max_kept(const View& view) const override;
  std::unique_ptr<TokenPruner> clone() const override { return std::make_unique<Fastv>(*this); }

 private:
  config::FastvOptions o_;
};

std::unique_ptr<TokenPruner> make_fastv(const config::PipelineConfig& config);

}  // namespace mustdrop::prune
