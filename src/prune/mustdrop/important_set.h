// mustdrop.important_set: the set S of each frame, from the CLS->patch attention of one ViT
// layer (the last by default), averaged over heads: the top ceil(rho * N_v) tokens. It drops
// nothing; every later stage must keep S (apply_plan enforces it), across frames included.
#pragma once

#include <memory>

#include "config/decode.h"
#include "prune/pruner.h"

namespace mustdrop::prune {

// mustdrop.important_set: the set S from the CLS attention of one ViT layer.
struct ImportantSetOptions {
  int layer = -1;       // ViT layer whose CLS->patch attention ranks tokens (-1: the last layer)
  double ratio = 0.08;  // rho: S holds the top ceil(rho * N_v) tokens of each frame

  template <class V>
  void visit(V& v) {
    v("layer", layer, config::range(-1000, 1000));
    v("ratio", ratio, config::range(0, 1));
  }
};

class ImportantSet : public TokenPruner {
 public:
  explicit ImportantSet(const ImportantSetOptions& options) : o_(options) {}
  std::string name() const override { return "mustdrop.important_set"; }
  Stage stage() const override { return Stage::VisionLayer; }
  Needs needs(int n_layers) const override;
  KeepPlan decide(const View& view) override;
  std::unique_ptr<TokenPruner> clone() const override { return std::make_unique<ImportantSet>(*this); }
  // |S| for a frame of n_v vision tokens.
  int64_t set_size(int64_t n_vision) const;

 private:
  ImportantSetOptions o_;
};

}  // namespace mustdrop::prune
