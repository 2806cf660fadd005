#include "prune/baselines/sparsevlm.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "model/device.h"

namespace mustdrop::prune {
namespace {

// Numerical rank of `m` (float32, as the reference computes it): singular values above
// max(sv) * max(rows, cols) * eps(float32).
int64_t matrix_rank(const at::Tensor& m) {
  if (m.numel() == 0) return 0;
  at::Tensor sv = at::linalg_svdvals(m.to(at::kFloat)).to(at::kDouble);
  double top = sv.max().item<double>();
  double tol = top * static_cast<double>(std::max(m.size(0), m.size(1))) * std::numeric_limits<float>::epsilon();
  return (sv > tol).sum().item<int64_t>();
}

// Density-peak clustering over the rows of `x` ([n, C]), as SparseVLM v1 does it: local
// density from the distances to the `n_centers` nearest rows (the row itself included),
// distance to the nearest denser row, centres = the largest density * distance. Returns the
// centres (indices) and each row's centre (index into the centres). Computes where `x_in` lives
// (hidden states: the model's device); only the centre scores and assignments come to the host.
void dpc_knn(const at::Tensor& x_in, int64_t n_centers, std::vector<int64_t>& centers, std::vector<int64_t>& assign) {
  at::Tensor x = x_in.to(at::kDouble);
  const int64_t n = x.size(0);
  at::Tensor dist = at::cdist(x, x) / std::sqrt(static_cast<double>(x.size(1)));  // [n, n]
  const int64_t k = std::max<int64_t>(1, std::min(n_centers, n));
  at::Tensor knn = std::get<0>(dist.topk(k, 1, /*largest=*/false));
  at::Tensor density = at::exp(-knn.pow(2).mean(1));
  // Ties broken by a tiny index-dependent amount (the lower index is denser), so equal
  // densities still order.
  density = density - at::arange(n, x.options()) * 1e-12;
  at::Tensor higher = density.unsqueeze(0) > density.unsqueeze(1);  // [i, j]: j denser than i
  double dmax = model::to_host(dist.max()).item<double>();
  at::Tensor parent = at::where(higher, dist, at::full_like(dist, dmax)).amin(1);
  at::Tensor score = parent * density;
  centers = top_k_ascending(model::to_host(score), n_centers);
  at::Tensor to_centers = dist.index_select(1, model::index_tensor(centers, dist.device()));
  at::Tensor a = model::to_host(to_centers.argmin(1)).contiguous();
  assign.assign(a.data_ptr<int64_t>(), a.data_ptr<int64_t>() + n);
  for (size_t c = 0; c < centers.size(); ++c) assign[size_t(centers[c])] = static_cast<int64_t>(c);
}

}  // namespace

Needs SparseVlm::needs(int) const { return acting_after(o_.layers); }

std::vector<int64_t> SparseVlm::raters(const View& v) const {
  if (v.prefill_id != 0 && v.prefill_id == raters_prefill_) return raters_;
  raters_ = compute_raters(v);
  raters_prefill_ = v.prefill_id;
  return raters_;
}

std::vector<int64_t> SparseVlm::compute_raters(const View& v) const {
  const at::Tensor& emb = v.prompt_embeddings;
  int64_t text_begin = v.prompt_vision_begin + v.prompt_n_vision;
  int64_t n_text = emb.size(0) - text_begin;
  if (n_text <= 0 || v.prompt_n_vision == 0) return {};
  at::Tensor vis = emb.narrow(0, v.prompt_vision_begin, v.prompt_n_vision).to(at::kDouble);
  at::Tensor txt = emb.narrow(0, text_begin, n_text).to(at::kDouble);
  // Embeddings live on the model's device: reduce there, read the [T] relevance on the host.
  at::Tensor r = model::to_host(at::softmax(at::matmul(vis, txt.t()), 1).mean(0)).contiguous();  // [T]
  double mean = r.mean().item<double>();
  std::vector<int64_t> out;
  for (int64_t i = 0; i < n_text; ++i) {
    if (r.data_ptr<double>()[i] > mean) out.push_back(i);
  }
  if (out.empty()) {  // every text token alike: all of them rate
    out.resize(size_t(n_text));
    std::iota(out.begin(), out.end(), int64_t(0));
  }
  return out;
}

std::vector<int64_t> SparseVlm::attention_rows(const View& v) const {
  std::vector<int64_t> rows;
  int64_t text_begin = v.vision_begin + v.n_vision;
  for (int64_t i : raters(v)) {
    if (text_begin + i < v.n_tokens) rows.push_back(text_begin + i);
  }
  return rows;
}

KeepPlan SparseVlm::decide(const View& v) {
  const std::vector<TokenInfo>& tokens = *v.tokens;
  const int64_t n = v.n_vision;
  std::vector<int64_t> rows = attention_rows(v);
  if (n < 2 || rows.empty()) return KeepPlan::keep_all(n);
  at::Tensor relation = text_to_vision(v, rows);  // [raters, n_v]
  at::Tensor scores = relation.mean(0);
  int64_t keep_n;
  if (o_.target_tokens_per_frame > 0) {
    keep_n = frame_budget(o_.target_tokens_per_frame, v.n_frames, n);
  } else {
    int64_t rank = matrix_rank(relation);
    if (n - rank == 0) return KeepPlan::keep_all(n);  // no sparsification
    keep_n = std::min<int64_t>(static_cast<int64_t>(static_cast<double>(rank) * o_.scale + o_.bias), n - 1);
  }
  keep_n = std::max<int64_t>(0, keep_n);
  KeepPlan plan;
  plan.keep = keep_top_with_s(scores, keep_n, tokens);
  if (static_cast<int64_t>(plan.keep.size()) >= n || o_.recycle_ratio <= 0) return plan;

  // Recycling: the best-scored share of the dropped tokens, clustered, one token per cluster.
  std::vector<char> kept(size_t(n), 0);
  for (int64_t i : plan.keep) kept[size_t(i)] = 1;
  std::vector<int64_t> dropped;
  for (int64_t i = 0; i < n; ++i) {
    if (!kept[size_t(i)]) dropped.push_back(i);
  }
  at::Tensor s = scores.contiguous();
  const double* sp = s.data_ptr<double>();
  std::stable_sort(dropped.begin(), dropped.end(), [&](int64_t a, int64_t b) { return sp[a] > sp[b]; });
  int64_t n_rec = std::min<int64_t>(static_cast<int64_t>(dropped.size()),
                                    static_cast<int64_t>(static_cast<double>(dropped.size()) * o_.recycle_ratio) + 1);
  dropped.resize(size_t(n_rec));
  std::sort(dropped.begin(), dropped.end());
  int64_t n_clusters = std::min<int64_t>(n_rec, static_cast<int64_t>(static_cast<double>(n_rec) * o_.cluster_ratio) + 1);
  at::Tensor feats =
      v.hidden.narrow(0, v.vision_begin, n).index_select(0, model::index_tensor(dropped, v.hidden.device()));
  std::vector<int64_t> centers, assign;
  dpc_knn(feats, n_clusters, centers, assign);
  std::vector<MergeGroup> groups(centers.size());
  for (size_t c = 0; c < centers.size(); ++c) groups[c].into = dropped[size_t(centers[c])];
  for (size_t i = 0; i < dropped.size(); ++i) {
    MergeGroup& g = groups[size_t(assign[i])];
    g.members.push_back(dropped[i]);
    g.weights.push_back(1.0);  // a plain mean of the cluster, as the reference does
  }
  for (auto& g : groups) {
    plan.keep.push_back(g.into);
    plan.merges.push_back(std::move(g));
  }
  std::sort(plan.keep.begin(), plan.keep.end());  // a recycled token sits at its centre's position
  return plan;
}

int64_t SparseVlm::max_kept(const View& v) const {
  int64_t n = v.n_vision;
  if (o_.target_tokens_per_frame <= 0) return n;
  int64_t keep_n = at_least_s(frame_budget(o_.target_tokens_per_frame, v.n_frames, n), *v.tokens);
  int64_t dropped = n - keep_n;
  if (dropped <= 0 || o_.recycle_ratio <= 0) return std::min(n, keep_n);
  int64_t n_rec = std::min<int64_t>(dropped, static_cast<int64_t>(static_cast<double>(dropped) * o_.recycle_ratio) + 1);
  return keep_n + std::min<int64_t>(n_rec, static_cast<int64_t>(static_cast<double>(n_rec) * o_.cluster_ratio) + 1);
}

}  // namespace mustdrop::prune
