// VisionZip (Yang et al., dvlab-research/VisionZip): text-agnostic, after the tower's feature
// layer. Dominant tokens: the patches with the most CLS attention (head mean) at that layer.
// Contextual tokens: the other patches, `contextual` uniformly spaced targets among them, every
// remaining patch merged into its most cosine-similar target (output states, L2-normalised).
// Kept: CLS, the dominant patches (original order), then the contextual tokens (target order).
// Tokens in S are always among the dominant ones.
#pragma once

#include <memory>
#include <vector>

#include "config/decode.h"
#include "prune/pruner.h"

namespace mustdrop::prune {

// How a contextual token is made from its target and the patches assigned to it.
enum class VisionZipMerge {
  kTargetPlusMean,  // target + mean of the assigned patches (the official code; about twice a token's norm)
  kMean,            // size-weighted mean of the target and its assigned patches (ToMe-style)
};
inline std::vector<const char*> enum_names(VisionZipMerge) { return {"target_plus_mean", "mean"}; }

// visionzip: dominant + contextual tokens per frame.
struct VisionZipOptions {
  int layer = -2;        // ViT layer it reads (CLS attention, output states) and acts after; < 0: from the end (-2: LLaVA's feature layer)
  int dominant = 54;     // patches kept by CLS attention (S counts among them); 162 / 108 / 54 for 192 / 128 / 64
  int contextual = 10;   // tokens merged from the rest around uniformly spaced targets; 30 / 20 / 10 for 192 / 128 / 64
  VisionZipMerge merge = VisionZipMerge::kTargetPlusMean;  // target_plus_mean (official) | mean

  template <class V>
  void visit(V& v) {
    v("layer", layer, config::range(-1000, 1000));
    v("dominant", dominant, config::range(0, 1e6));
    v("contextual", contextual, config::range(0, 1e6));
    v("merge", merge, config::any());
  }
};

class VisionZip : public TokenPruner {
 public:
  explicit VisionZip(const VisionZipOptions& options) : o_(options) {}
  std::string name() const override { return "visionzip"; }
  Stage stage() const override { return Stage::VisionLayer; }
  // Acts after (and reads the CLS attention of) options.layer.
  Needs needs(int n_layers) const override;
  // Throws InternalError when the view has no CLS attention.
  KeepPlan decide(const View& view) override;
  // CLS + max(dominant, |S|) + contextual, at most every token.
  int64_t max_kept(const View& view) const override;
  std::unique_ptr<TokenPruner> clone() const override { return std::make_unique<VisionZip>(*this); }

 private:
  VisionZipOptions o_;
};

}  // namespace mustdrop::prune
