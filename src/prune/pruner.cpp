#include "prune/pruner.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace mustdrop::prune {

const char* stage_name(Stage stage) {
  switch (stage) {
    case Stage::VisionLayer:
      return "VisionLayer";
    case Stage::VisionOutput:
      return "VisionOutput";
    case Stage::Prefill:
      return "Prefill";
    case Stage::Decode:
      return "Decode";
  }
  return "?";
}

KeepPlan KeepPlan::keep_all(int64_t n) {
  KeepPlan p;
  p.keep.resize(static_cast<size_t>(std::max<int64_t>(0, n)));
  std::iota(p.keep.begin(), p.keep.end(), int64_t(0));
  return p;
}

std::vector<int64_t> TokenPruner::attention_rows(const View&) const { return {}; }
bool TokenPruner::acts_at_step(int) const { return false; }
int64_t TokenPruner::max_kept(const View& view) const {
  return view.tokens ? static_cast<int64_t>(view.tokens->size()) : 0;
}

std::vector<int64_t> top_k_ascending(const at::Tensor& scores, int64_t k) {
  at::Tensor s = scores.to(at::kDouble).contiguous();
  int64_t n = s.numel();
  k = std::max<int64_t>(0, std::min(k, n));
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), int64_t(0));
  const double* p = s.data_ptr<double>();
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
  idx.resize(static_cast<size_t>(k));
  std::sort(idx.begin(), idx.end());
  return idx;
}

int64_t frame_budget(int64_t per_frame, int64_t n_frames, int64_t n) {
  return std::min(n, per_frame * std::max<int64_t>(1, n_frames));
}

int64_t count_or_ratio(int64_t per_frame, double ratio, const View& v) {
  if (per_frame > 0) return frame_budget(per_frame, v.n_frames, v.n_vision);
  return std::llround(ratio * static_cast<double>(v.n_vision));
}

std::vector<int64_t> important_indices(const std::vector<TokenInfo>& tokens) {
  std::vector<int64_t> out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i].in_s) out.push_back(static_cast<int64_t>(i));
  }
  return out;
}

std::vector<int64_t> with_important(std::vector<int64_t> keep, const std::vector<TokenInfo>& tokens) {
  for (int64_t i : important_indices(tokens)) keep.push_back(i);
  std::sort(keep.begin(), keep.end());
  keep.erase(std::unique(keep.begin(), keep.end()), keep.end());
  return keep;
}

}  // namespace mustdrop::prune
