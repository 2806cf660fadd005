// FastV (Chen et al.): after layer K-1, rank the vision tokens by the head-mean attention they
// get from the last prompt token and keep the top R (count or ratio); layers >= K run on the
// kept tokens, which keep their original positions. S, when a chain has one, is kept too.
#pragma once

#include <memory>

#include "config/decode.h"
#include "prune/pruner.h"

namespace mustdrop::prune {

// fastv: after layer K-1, keep the vision tokens the last prompt token attends to most.
struct FastvOptions {
  int k = 2;                       // K: layers >= K run on the kept tokens
  double keep_ratio = 0.5;         // share of vision tokens kept (when keep_tokens_per_frame is 0)
  int keep_tokens_per_frame = 0;   // > 0: keep exactly this many per frame

  template <class V>
  void visit(V& v) {
    v("k", k, config::range(1, 10000));
    v("keep_ratio", keep_ratio, config::range(0, 1));
    v("keep_tokens_per_frame", keep_tokens_per_frame, config::range(0, 1e6));
  }
};

class Fastv : public TokenPruner {
 public:
  explicit Fastv(const FastvOptions& options) : o_(options) {}
  std::string name() const override { return "fastv"; }
  Stage stage() const override { return Stage::Prefill; }
  Needs needs(int n_layers) const override;
  std::vector<int64_t> attention_rows(const View& view) const override;
  KeepPlan decide(const View& view) override;
  int64_t max_kept(const View& view) const override;
  std::unique_ptr<TokenPruner> clone() const override { return std::make_unique<Fastv>(*this); }

 private:
  FastvOptions o_;
};

}  // namespace mustdrop::prune
