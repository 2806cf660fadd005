#include "prune/mustdrop/dual_attention.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <map>


namespace mustdrop::prune {

Needs DualAttention::needs(int) const { return acting_after(o_.layers); }

std::vector<int64_t> DualAttention::attention_rows(const View& v) const {
  std::vector<int64_t> rows;
  for (int64_t r = v.vision_begin + v.n_vision; r < v.n_tokens; ++r) rows.push_back(r);
  return rows;
}

KeepPlan DualAttention::decide(const View& v) {
  const std::vector<TokenInfo>& tokens = *v.tokens;
  const int64_t n = v.n_vision;
  if (n == 0) return KeepPlan{};
  std::vector<int64_t> text = attention_rows(v);
  if (text.empty()) return KeepPlan::keep_all(n);
  at::Tensor m = text_to_vision(v, text);          // [T, n_v]
  at::Tensor global = m.sum(0);                    // [n_v]
  // Share of its own frame's total: for one image the published rule; over several frames the
  // thresholds keep their single-image meaning instead of shrinking with the frame count.
  std::vector<int64_t> frame_of(static_cast<size_t>(n));
  std::map<int64_t, int64_t> frame_index;
  for (int64_t i = 0; i < n; ++i) {
    auto it = frame_index.emplace(tokens[size_t(i)].frame_seq, static_cast<int64_t>(frame_index.size())).first;
    frame_of[size_t(i)] = it->second;
  }
  at::Tensor group = at::tensor(frame_of, at::TensorOptions().dtype(at::kLong));
  at::Tensor totals = at::zeros({static_cast<int64_t>(frame_index.size())}, global.options()).index_add_(0, group, global);
  at::Tensor denom = totals.index_select(0, group);
  at::Tensor share = at::where(denom > 0, global / denom, at::zeros_like(global));
  at::Tensor local = std::get<0>(m.max(0));
  KeepPlan plan;
  if (o_.target_tokens_per_frame > 0) {
    at::Tensor rank = o_.global_threshold > 0 ? share / o_.global_threshold : share;
    if (o_.local_threshold > 0) rank = at::maximum(rank, local / o_.local_threshold);
    plan.keep = keep_top_with_s(rank, frame_budget(o_.target_tokens_per_frame, v.n_frames, n), tokens);
    return plan;
  }
  // Kept unless both scores are below their thresholds.
  at::Tensor keep = (share >= o_.global_threshold).logical_or(local >= o_.local_threshold).contiguous();
  const bool* k = keep.data_ptr<bool>();
  for (int64_t i = 0; i < n; ++i) {
    if (k[i] || tokens[size_t(i)].in_s) plan.keep.push_back(i);
  }
  return plan;
}

int64_t DualAttention::max_kept(const View& v) const {
  if (o_.target_tokens_per_frame <= 0) return v.n_vision;
  return at_least_s(frame_budget(o_.target_tokens_per_frame, v.n_frames, v.n_vision), *v.tokens);
}

}  // namespace mustdrop::prune
