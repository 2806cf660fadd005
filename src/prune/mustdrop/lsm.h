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

#include "config/pipeline_config.h"
#include "prune/pruner.h"

namespace mustdrop::prune {

class Lsm : public TokenPruner {
 public:
  explicit Lsm(const config::LsmOptions& options) : o_(options) {}
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
  config::LsmOptions o_;
  // Per grid cell, the earlier token that stands for it (temporal windows).
  struct Memory {
    int grid = 0;
    std::vector<int64_t> anchor_id;     // -1: none
    std::vector<int64_t> anchor_frame;  // frame the anchor came from
    at::Tensor reference;               // [cells, D] size-weighted mean of the cell's features
    std::vector<double> reference_size;
  } memory_;
};

std::unique_ptr<TokenPruner> make_lsm(const config::PipelineConfig& config);

}  // namespace mustdrop::prune
