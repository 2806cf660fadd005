// random: after one LLM layer keep a uniformly random subset of the vision tokens (S kept),
// the same subset for the same seed. The floor any scoring method should beat.
#pragma once

#include <memory>

#include "config/decode.h"
#include "prune/pruner.h"

namespace mustdrop::prune {

// random: drop vision tokens uniformly at random after one LLM layer (a floor for the others).
struct RandomOptions {
  int layer = 1;                   // LLM layer after which tokens are dropped
  double keep_ratio = 0.5;         // share kept (when keep_tokens_per_frame is 0)
  int keep_tokens_per_frame = 0;   // > 0: keep exactly this many per frame
  int seed = 0;                    // same seed, same choice

  template <class V>
  void visit(V& v) {
    v("layer", layer, config::range(0, 10000));
    v("keep_ratio", keep_ratio, config::range(0, 1));
    v("keep_tokens_per_frame", keep_tokens_per_frame, config::range(0, 1e6));
    v("seed", seed, config::range(0, 2147483647));
  }
};

class RandomDrop : public TokenPruner {
 public:
  explicit RandomDrop(const RandomOptions& options) : o_(options) {}
  std::string name() const override { return "random"; }
  Stage stage() const override { return Stage::Prefill; }
  Needs needs(int n_layers) const override;
  KeepPlan decide(const View& view) override;
  int64_t max_kept(const View& view) const override;
  std::unique_ptr<TokenPruner> clone() const override { return std::make_unique<RandomDrop>(*this); }

 private:
  RandomOptions o_;
};

}  // namespace mustdrop::prune
