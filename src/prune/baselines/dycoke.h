// DyCoke (Tao et al., CVPR 2025, KD-TAO/DyCoke), two pruners:
//
// dycoke.ttm (VisionOutput): temporal token merging, which is positional pruning across frames.
// The stream is cut into groups of 4 frames; the first of a group (the anchor) stays whole, and
// each other frame keeps the int((1-k)*N) patch tokens least cosine-similar to the same grid
// position of an earlier frame: frame 1 and 2 of a group against the anchor, frame 3 against
// frame 2 (its full features, as before it was pruned). CLS and S are kept; kept tokens stay in
// ascending order.
//
// dycoke.kv (Decode): dynamic KV pruning. At every decode step, layer L-1's attention from the
// new token (head mean) ranks the vision entries; when it is unlike the previous step's (cosine
// below the threshold, or at the first step), layers >= L read only the top int(n*(1-p)) vision
// entries (S too) and every other entry in that step. It evicts nothing: the cache keeps every
// entry. The chain runs it through Chain::decode_layer_hook().
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "config/decode.h"
#include "prune/pruner.h"

namespace mustdrop::prune {

// dycoke.ttm: temporal token merging over groups of 4 frames.
struct DyCokeTtmOptions {
  double merging_ratio = 0.7;  // k: a non-anchor frame keeps int((1 - k) * N) of its N patch tokens (0: keeps all)

  template <class V>
  void visit(V& v) {
    v("merging_ratio", merging_ratio, config::range(0, 1));
  }
};

// What dycoke.kv does at a step whose attention is like the previous step's.
enum class DyCokeWhenSimilar {
  kReadAll,  // read every entry in that step (the official code: its selection is reset every step)
  kReuse,    // read the previous step's selection again (the evident intent)
};
inline std::vector<const char*> enum_names(DyCokeWhenSimilar) { return {"read_all", "reuse"}; }

// dycoke.kv: dynamic vision-KV selection at each decode step.
struct DyCokeKvOptions {
  int layer = 3;                      // L: layers >= L read the selection; layer L-1's attention of the new token ranks the vision entries
  double pruning_ratio = 0.8;         // p: a selecting step reads int(n_v * (1 - p)) vision entries (S too, when it has more)
  double similarity_threshold = 0.9;  // a step selects anew when the cosine of its attention with the previous step's is below this
  DyCokeWhenSimilar when_similar = DyCokeWhenSimilar::kReadAll;  // read_all (official) | reuse

  template <class V>
  void visit(V& v) {
    v("layer", layer, config::range(1, 10000));
    v("pruning_ratio", pruning_ratio, config::range(0, 1));
    v("similarity_threshold", similarity_threshold, config::range(-1, 2));
    v("when_similar", when_similar, config::any());
  }
};

class DyCokeTtm : public TokenPruner {
 public:
  explicit DyCokeTtm(const DyCokeTtmOptions& options) : o_(options) {}
  std::string name() const override { return "dycoke.ttm"; }
  Stage stage() const override { return Stage::VisionOutput; }
  Needs needs(int n_layers) const override;
  // Remembers the frame's full features for the next frames of its group.
  KeepPlan decide(const View& view) override;
  // Every token for an anchor, else CLS + max(int((1-k) * N), |S|).
  int64_t max_kept(const View& view) const override;
  std::unique_ptr<TokenPruner> clone() const override { return std::make_unique<DyCokeTtm>(*this); }
  void reset() override;

 private:
  // Features by grid position (patch index) of one frame, before pruning.
  struct Frame {
    std::vector<int64_t> patch;  // patch index of each row
    at::Tensor unit;             // [rows, D] L2-normalised features, on the model's device
  };
  DyCokeTtmOptions o_;
  int64_t seen_ = 0;  // frames decided since the stream began (position in the group: seen_ % 4)
  Frame anchor_;      // the group's first frame
  Frame previous_;    // the frame before this one
};

class DyCokeKv : public TokenPruner {
 public:
  explicit DyCokeKv(const DyCokeKvOptions& options) : o_(options) {}
  std::string name() const override { return "dycoke.kv"; }
  Stage stage() const override { return Stage::Decode; }
  // layers = {L}; decode_read_after = L - 1.
  Needs needs(int n_layers) const override;
  // `view`: layer L-1's vision entries and the new token's attention row there (View::attention
  // [1, n_tokens], View::rows {n_tokens - 1}); keep = the entries layers >= L read in this step.
  // Remembers the attention vector (and the selection) for the next step. Throws InternalError
  // without attention.
  KeepPlan decide(const View& view) override;
  int64_t max_kept(const View& view) const override;
  std::unique_ptr<TokenPruner> clone() const override { return std::make_unique<DyCokeKv>(*this); }
  void reset() override;
  // Whether a step with this view selects anew (first step, or attention unlike the previous step's).
  bool selects(const View& view) const;

 private:
  at::Tensor vision_attention(const View& view) const;  // [n_v] float64, on the host
  DyCokeKvOptions o_;
  at::Tensor previous_;                 // the previous step's vision attention (undefined: none yet)
  std::vector<int64_t> selected_ids_;   // kReuse: the last selection, by token id
  bool have_selection_ = false;
};

}  // namespace mustdrop::prune
