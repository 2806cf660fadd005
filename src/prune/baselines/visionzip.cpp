#include "prune/baselines/visionzip.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "core/error.h"
#include "model/device.h"

namespace mustdrop::prune {
namespace {

// Dominant patches as indices into the frame's tokens (CLS is 0): S plus the best CLS-attended
// others up to `dominant`, ascending.
std::vector<int64_t> dominant_tokens(const View& v, int64_t dominant) {
  const std::vector<TokenInfo>& tokens = *v.tokens;
  std::vector<TokenInfo> patches(tokens.begin() + 1, tokens.end());
  std::vector<int64_t> out = keep_top_with_s(v.cls_attention, dominant, patches);
  for (int64_t& i : out) ++i;
  return out;
}

}  // namespace

Needs VisionZip::needs(int n_layers) const {
  return acting_after_with_cls(o_.layer, n_layers);
}

KeepPlan VisionZip::decide(const View& v) {
  const std::vector<TokenInfo>& tokens = *v.tokens;
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (!v.cls_attention.defined()) {
    throw InternalError("visionzip: no CLS attention at ViT layer " + std::to_string(v.layer));
  }
  if (v.cls_attention.numel() != n - 1) {
    throw InternalError("visionzip: CLS attention over " + std::to_string(v.cls_attention.numel()) + " tokens, " +
                        std::to_string(n - 1) + " patches shown");
  }
  KeepPlan plan;
  plan.keep.push_back(0);  // CLS
  if (n <= 1) return plan;
  std::vector<int64_t> dominant = dominant_tokens(v, o_.dominant);
  plan.keep.insert(plan.keep.end(), dominant.begin(), dominant.end());

  // The rest, in order; targets every floor(R / contextual)-th of them, the first `contextual`.
  std::vector<char> is_dominant(static_cast<size_t>(n), 0);
  for (int64_t i : dominant) is_dominant[static_cast<size_t>(i)] = 1;
  std::vector<int64_t> rest;
  for (int64_t i = 1; i < n; ++i) {
    if (!is_dominant[static_cast<size_t>(i)]) rest.push_back(i);
  }
  const int64_t r = static_cast<int64_t>(rest.size());
  if (r == 0 || o_.contextual <= 0) return plan;
  const int64_t step = std::max<int64_t>(1, r / o_.contextual);
  std::vector<int64_t> targets, others;
  for (int64_t j = 0; j < r; ++j) {
    bool target = j % step == 0 && static_cast<int64_t>(targets.size()) < o_.contextual;
    (target ? targets : others).push_back(rest[static_cast<size_t>(j)]);
  }
  plan.keep.insert(plan.keep.end(), targets.begin(), targets.end());
  if (others.empty()) return plan;

  // Each other token goes to its most cosine-similar target (ties: the first target).
  at::Tensor x = v.hidden.to(at::kFloat);
  at::Tensor unit = x / x.norm(2, 1, true).clamp_min(1e-12);
  const c10::Device device = unit.device();
  at::Tensor sim = at::matmul(unit.index_select(0, model::index_tensor(others, device)),
                              unit.index_select(0, model::index_tensor(targets, device)).t());  // [others, targets]
  at::Tensor best = model::to_host(sim.argmax(1)).contiguous();  // computed where the tokens live, read here
  const int64_t* b = best.data_ptr<int64_t>();
  std::vector<std::vector<int64_t>> assigned(targets.size());
  for (size_t k = 0; k < others.size(); ++k) assigned[static_cast<size_t>(b[k])].push_back(others[k]);
  for (size_t t = 0; t < targets.size(); ++t) {
    const std::vector<int64_t>& a = assigned[t];
    if (a.empty()) continue;  // the target alone (the official code adds a mean of nothing: 0)
    MergeGroup g;
    g.into = targets[t];
    g.members.push_back(targets[t]);
    g.members.insert(g.members.end(), a.begin(), a.end());
    switch (o_.merge) {
      case VisionZipMerge::kTargetPlusMean:
        g.weights.assign(g.members.size(), 1.0 / static_cast<double>(a.size()));
        g.weights[0] = 1.0;
        g.normalize = false;
        break;
      case VisionZipMerge::kMean:
        break;  // sizes
    }
    plan.merges.push_back(std::move(g));
  }
  return plan;
}

int64_t VisionZip::max_kept(const View& v) const {
  const int64_t n = static_cast<int64_t>(v.tokens->size());
  if (n <= 1) return n;
  std::vector<TokenInfo> patches(v.tokens->begin() + 1, v.tokens->end());
  const int64_t dominant = std::min(n - 1, at_least_s(o_.dominant, patches));
  const int64_t contextual = std::min<int64_t>(n - 1 - dominant, std::max(0, o_.contextual));
  return 1 + dominant + contextual;
}

}  // namespace mustdrop::prune
