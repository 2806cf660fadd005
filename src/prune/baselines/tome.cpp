#include "prune/baselines/tome.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <numeric>

#include "model/device.h"

namespace mustdrop::prune {

Needs Tome::needs(int n_layers) const {
  Needs n;
  n.layers.resize(static_cast<size_t>(std::max(0, n_layers)));
  std::iota(n.layers.begin(), n.layers.end(), 0);
  n.proportional_attention = o_.proportional_attention;
  return n;
}

int64_t Tome::merges_at(const View& v) const {
  const int64_t n = static_cast<int64_t>(v.tokens->size());
  // Set A is every other token starting with CLS (token 0, protected): ceil(n/2) - 1 candidates.
  const int64_t cap = std::max<int64_t>(0, (n + 1) / 2 - 1);
  int64_t r = o_.r;
  if (o_.target_tokens_per_frame > 0) {
    int64_t excess = std::max<int64_t>(0, (n - 1) - o_.target_tokens_per_frame);
    int64_t layers_left = std::max(1, v.feature_layer - v.layer + 1);
    r = (excess + layers_left - 1) / layers_left;
  }
  return std::min(r, cap);
}

KeepPlan Tome::decide(const View& v) {
  const std::vector<TokenInfo>& tokens = *v.tokens;
  const int64_t n = static_cast<int64_t>(tokens.size());
  int64_t r = merges_at(v);
  if (r <= 0 || n < 3) return KeepPlan::keep_all(n);

  // Bipartite soft matching: A = even indices, B = odd indices; each A token's best B partner
  // by cosine similarity; the r best-matched A tokens merge into their partners.
  at::Tensor x = v.hidden.to(at::kFloat);
  at::Tensor unit = x / x.norm(2, 1, true).clamp_min(1e-8);
  std::vector<int64_t> a_idx, b_idx;
  for (int64_t i = 0; i < n; ++i) (i % 2 == 0 ? a_idx : b_idx).push_back(i);
  at::Tensor scores = at::matmul(unit.index_select(0, model::index_tensor(a_idx, unit.device())),
                                 unit.index_select(0, model::index_tensor(b_idx, unit.device())).t());  // [|A|, |B|]
  // Each A token's best match, computed where the tokens live, read on the host.
  auto best = scores.max(1);
  at::Tensor node_max = model::to_host(std::get<0>(best)).to(at::kDouble).contiguous();
  at::Tensor node_idx = model::to_host(std::get<1>(best)).contiguous();
  double* mx = node_max.data_ptr<double>();
  const int64_t* arg = node_idx.data_ptr<int64_t>();
  for (size_t i = 0; i < a_idx.size(); ++i) {
    // CLS and S never move.
    if (a_idx[i] == 0 || tokens[size_t(a_idx[i])].in_s) mx[i] = -std::numeric_limits<double>::infinity();
  }
  std::vector<int64_t> order(a_idx.size());
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(), [&](int64_t p, int64_t q) { return mx[p] > mx[q]; });

  std::vector<char> moved(size_t(n), 0);
  std::map<int64_t, std::vector<int64_t>> into;  // B token -> A tokens merged into it
  for (int64_t k = 0; k < r && k < static_cast<int64_t>(order.size()); ++k) {
    int64_t a = order[size_t(k)];
    if (mx[a] == -std::numeric_limits<double>::infinity()) break;
    int64_t src = a_idx[size_t(a)], dst = b_idx[size_t(arg[a])];
    into[dst].push_back(src);
    moved[size_t(src)] = 1;
  }
  KeepPlan plan;
  for (int64_t i = 0; i < n; ++i) {
    if (!moved[size_t(i)]) plan.keep.push_back(i);
  }
  for (auto& [dst, srcs] : into) {
    MergeGroup g;
    g.into = dst;
    g.members.push_back(dst);
    g.members.insert(g.members.end(), srcs.begin(), srcs.end());
    plan.merges.push_back(std::move(g));  // size-weighted mean
  }
  return plan;
}

int64_t Tome::max_kept(const View& v) const { return static_cast<int64_t>(v.tokens->size()) - merges_at(v); }

}  // namespace mustdrop::prune
