#include "prune/pruner.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "model/device.h"

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
  at::Tensor s = model::to_host(scores).to(at::kDouble).contiguous();  // scores are read here, on the host
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

at::Tensor text_to_vision(const View& v, const std::vector<int64_t>& rows_wanted) {
  if (!v.attention.defined()) throw InternalError("prefill stage at layer " + std::to_string(v.layer) + ": no attention");
  std::vector<int64_t> at_rows;
  for (int64_t r : rows_wanted) {
    auto it = std::find(v.rows.begin(), v.rows.end(), r);
    if (it == v.rows.end()) throw InternalError("prefill stage: attention row " + std::to_string(r) + " missing");
    at_rows.push_back(it - v.rows.begin());
  }
  at::Tensor a = v.attention.index_select(0, model::index_tensor(at_rows, v.attention.device()));
  // Scores are bookkeeping: the block comes back on the host, wherever the rows were computed.
  return model::to_host(a.narrow(1, v.vision_begin, v.n_vision)).to(at::kDouble);
}

std::vector<int64_t> keep_top_with_s(const at::Tensor& scores, int64_t budget, const std::vector<TokenInfo>& tokens) {
  at::Tensor s = model::to_host(scores).to(at::kDouble).clone();  // written element by element: on the host
  std::vector<int64_t> important = important_indices(tokens);
  for (int64_t i : important) s[i] = -std::numeric_limits<double>::infinity();  // taken anyway
  int64_t others = std::max<int64_t>(0, budget - static_cast<int64_t>(important.size()));
  return with_important(top_k_ascending(s, others), tokens);
}

int64_t at_least_s(int64_t budget, const std::vector<TokenInfo>& tokens) {
  return std::max(budget, static_cast<int64_t>(important_indices(tokens).size()));
}

Needs acting_after_with_cls(int layer, int n_layers) {
  const int l = layer < 0 ? n_layers + layer : layer;
  Needs n;
  n.layers = {l};
  n.vision_cls_attention = {l};
  return n;
}

Needs acting_after(std::vector<int> layers) {
  Needs n;
  n.layers = std::move(layers);
  return n;
}

}  // namespace mustdrop::prune
