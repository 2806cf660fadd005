// mustdrop.lsm: local spatial merging. After one ViT layer the patch grid is cut into
// non-overlapping k x k windows; a window whose tokens are alike (mean pairwise cosine,
// self-pairs excluded, >= tau) becomes one token, their mean. Only full windows count: a grid
// k does not divide keeps its right and bottom edges as they are.
//
// Temporal extension (temporal_frames t > 1): a window of a later frame whose tokens match the
// same cells of an earlier frame (mean co-located cosine >= tau_t, earlier token at most t-1
// frames back) is folded into the earlier tokens: removed from this frame before the rest of
// the ViT runs, while the earlier tokens grow (size, frame span). It only looks backwards, so
// it works on live streams.
//
// Order: the merged token takes the place of its window's top-left cell; every token keeps
// raster order (CLS first), so the order is the order of the patches' positions.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "config/decode.h"
#include "prune/pruner.h"

namespace mustdrop::prune {

// mustdrop.lsm: local spatial merging in k x k windows, optionally reaching back in time.
struct LsmOptions {
  int layer = 0;                    // ViT layer (0-based) after which windows are checked
  int window = 3;                   // k: non-overlapping k x k windows; a grid k does not divide keeps its edges
  double threshold = 0.8;           // tau: a window whose mean pairwise cosine is >= tau becomes one token
  int temporal_frames = 1;          // t: a window also covers the same cells of up to t-1 earlier frames (1: off)
  double temporal_threshold = 0.9;  // tau_t: mean co-located cosine at which a later frame's window joins the earlier tokens

  template <class V>
  void visit(V& v) {
    v("layer", layer, config::range(0, 1000));
    v("window", window, config::range(1, 64));
    v("threshold", threshold, config::range(-1, 2));
    v("temporal_frames", temporal_frames, config::range(1, 1000));
    v("temporal_threshold", temporal_threshold, config::range(-1, 2));
  }
};

class Lsm : public TokenPruner {
 public:
  explicit Lsm(const LsmOptions& options) : o_(options) {}
  const LsmOptions& options() const { return o_; }
  Lsm(const Lsm& other);
  std::string name() const override { return "mustdrop.lsm"; }
  Stage stage() const override { return Stage::VisionLayer; }
  Needs needs(int n_layers) const override;
  KeepPlan decide(const View& view) override;
  std::unique_ptr<TokenPruner> clone() const override { return std::make_unique<Lsm>(*this); }
  void reset() override;
  void frame_done(const std::vector<TokenInfo>& tokens) override;
  void forget(const std::vector<int64_t>& ids) override;

 private:
  LsmOptions o_;
  // Per grid cell, the earlier token that stands for it (temporal windows).
  struct Memory {
    int grid = 0;
    std::vector<int64_t> anchor_id;     // -1: none
    std::vector<int64_t> anchor_frame;  // frame the anchor came from
    at::Tensor reference;               // [cells, D] size-weighted mean of the cell's features (model's device)
    std::vector<double> reference_size;
  } memory_;
};

}  // namespace mustdrop::prune
