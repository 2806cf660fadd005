#include "model/attention.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <string>

#include "core/error.h"
#include "model/attention_kernel.h"

namespace mustdrop::model {

namespace {

// Multiply-adds below which a kernel call stays on the calling thread.
constexpr int64_t kParallelWork = int64_t{1} << 20;

at::ScalarType score_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

void check_shapes(const AttentionInput& in) {
  auto fail = [](const std::string& what) { throw InternalError("attention: " + what); };
  if (in.q.dim() != 3 || in.keys.dim() != 3 || in.values.dim() != 3) fail("q, keys and values must be 3-d");
  const int64_t heads = in.q.size(0), n = in.q.size(1), hd = in.q.size(2);
  const int64_t kv_heads = in.keys.size(0), n_keys = in.keys.size(1);
  if (in.keys.sizes() != in.values.sizes() || in.keys.size(2) != hd) fail("keys and values do not match q");
  if (kv_heads == 0 || heads % kv_heads != 0) {
    fail(std::to_string(heads) + " query heads cannot share " + std::to_string(kv_heads) + " kv heads");
  }
  if (static_cast<int64_t>(in.visible.size()) != n) fail("one visible count per query row is needed");
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = in.visible[static_cast<size_t>(i)];
    if (v < 1 || v > n_keys || (i > 0 && v < in.visible[static_cast<size_t>(i - 1)])) {
      fail("row " + std::to_string(i) + " sees " + std::to_string(v) + " of " + std::to_string(n_keys) +
           " keys (counts must be 1..n_keys and nondecreasing)");
    }
  }
  for (int64_t r : in.prob_rows) {
    if (r < 0 || r >= n) fail("probability row " + std::to_string(r) + " outside the " + std::to_string(n) + " rows");
  }
}

AttentionOutput attend_reference(const AttentionInput& in) {
  const int64_t heads = in.q.size(0), n = in.q.size(1), hd = in.q.size(2);
  const int64_t kv_heads = in.keys.size(0), s = in.keys.size(1), group = heads / kv_heads;
  const at::ScalarType acc = score_type(in.q.scalar_type());
  at::Tensor keys = in.keys, values = in.values;
  if (group > 1) {
    keys = keys.unsqueeze(1).expand({kv_heads, group, s, hd}).reshape({heads, s, hd});
    values = values.unsqueeze(1).expand({kv_heads, group, s, hd}).reshape({heads, s, hd});
  }
  at::Tensor kt = keys.to(acc).transpose(1, 2);
  at::Tensor vals = values.to(acc);
  at::Tensor visible = at::tensor(in.visible, at::kLong);
  at::Tensor key_index = at::arange(s, at::kLong).unsqueeze(0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  const int64_t block = 256;  // query rows per score matrix [heads, block, S]
  std::vector<at::Tensor> outs;
  std::vector<at::Tensor> row_probs(in.prob_rows.size());
  for (int64_t r0 = 0; r0 < n; r0 += block) {
    const int64_t nr = std::min(block, n - r0);
    at::Tensor scores = at::bmm(in.q.narrow(1, r0, nr).to(acc), kt).mul_(scale);  // [heads, nr, S]
    at::Tensor masked = key_index >= visible.narrow(0, r0, nr).unsqueeze(1);     // [nr, S]
    scores.masked_fill_(masked, -std::numeric_limits<double>::infinity());
    at::Tensor probs = at::softmax(scores, -1);
    for (size_t k = 0; k < in.prob_rows.size(); ++k) {
      const int64_t r = in.prob_rows[k];
      if (r >= r0 && r < r0 + nr) row_probs[k] = probs.select(1, r - r0).mean(0);
    }
    outs.push_back(at::bmm(probs, vals));  // [heads, nr, hd]
  }
  AttentionOutput o;
  if (!in.prob_rows.empty()) o.probs = at::stack(row_probs, 0).to(at::kFloat);
  at::Tensor out = outs.size() == 1 ? outs[0] : at::cat(outs, 1);
  o.out = out.transpose(0, 1).reshape({n, heads * hd}).to(in.q.scalar_type());
  return o;
}

kernel::Elem kernel_elem(at::ScalarType t) { return t == at::kBFloat16 ? kernel::Elem::kBf16 : kernel::Elem::kF32; }

AttentionOutput attend_blocked(const AttentionInput& in) {
  const at::Tensor& q = in.q;
  at::Tensor keys = in.keys, values = in.values;
  if (keys.stride(2) != 1 || values.strides() != keys.strides()) {
    keys = keys.contiguous();
    values = values.contiguous();
  }
  at::Tensor qc = q.stride(2) == 1 ? q : q.contiguous();
  kernel::AttentionArgs a;
  a.elem = kernel_elem(q.scalar_type());
  a.heads = q.size(0);
  a.n = q.size(1);
  a.head_dim = q.size(2);
  a.kv_heads = keys.size(0);
  a.n_keys = keys.size(1);
  a.q = qc.data_ptr();
  a.q_head_stride = qc.stride(0);
  a.q_row_stride = qc.stride(1);
  a.keys = keys.data_ptr();
  a.values = values.data_ptr();
  a.kv_head_stride = keys.stride(0);
  a.kv_row_stride = keys.stride(1);
  AttentionOutput o;
  o.out = at::empty({a.n, a.heads * a.head_dim}, q.options());
  a.out = o.out.data_ptr();
  a.visible = in.visible.data();
  a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(a.head_dim)));
  at::Tensor probs;
  if (!in.prob_rows.empty()) {
    probs = at::empty({static_cast<int64_t>(in.prob_rows.size()), a.heads, a.n_keys}, at::kFloat);
    a.prob_rows = in.prob_rows.data();
    a.n_prob_rows = static_cast<int64_t>(in.prob_rows.size());
    a.probs = probs.data_ptr<float>();
  }
  const int64_t scratch = kernel::scratch_floats(a);
  // Heads in parallel only when there is work to share: a parallel region costs microseconds,
  // and each thread that opens one keeps an OpenMP pool (tiny models never need one).
  const int64_t work = a.heads * a.n * a.n_keys * a.head_dim;
  const int64_t grain = work < kParallelWork ? a.heads : 1;
  at::parallel_for(0, a.heads, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> buffer(static_cast<size_t>(scratch));
    for (int64_t h = begin; h < end; ++h) kernel::attend_head(a, h, buffer.data());
  });
  if (probs.defined()) o.probs = probs.mean(1);
  return o;
}

}  // namespace

bool blocked_attention_runs(at::ScalarType dtype, int64_t head_dim) {
  return (dtype == at::kFloat || dtype == at::kBFloat16) && kernel::supported(head_dim);
}

namespace {
std::atomic<AttentionPath> default_path{AttentionPath::kAuto};
}  // namespace

void set_default_attention_path(AttentionPath path) { default_path.store(path); }

AttentionOutput attend(const AttentionInput& in, AttentionPath path) {
  check_shapes(in);
  if (in.q.size(1) == 0) {  // no new rows: nothing to attend
    AttentionOutput o;
    o.out = at::empty({0, in.q.size(0) * in.q.size(2)}, in.q.options());
    return o;
  }
  if (path == AttentionPath::kAuto) path = default_path.load();
  const bool blocked_runs = blocked_attention_runs(in.q.scalar_type(), in.q.size(2)) &&
                            in.keys.scalar_type() == in.q.scalar_type() &&
                            in.values.scalar_type() == in.q.scalar_type();
  switch (path) {
    case AttentionPath::kAuto:
      return blocked_runs ? attend_blocked(in) : attend_reference(in);
    case AttentionPath::kBlocked:
      if (!blocked_runs) {
        throw InternalError("attention: the blocked kernel does not run here (needs AVX-512, float32 or bfloat16, "
                            "head_dim a multiple of 16 up to 256)");
      }
      return attend_blocked(in);
    case AttentionPath::kReference:
      return attend_reference(in);
  }
  throw InternalError("attention: unknown path");
}

std::vector<int64_t> causal_visible(int64_t past, int64_t n, const at::Tensor& read, int64_t n_keys) {
  std::vector<int64_t> visible(static_cast<size_t>(n));
  if (!read.defined()) {
    for (int64_t i = 0; i < n; ++i) visible[static_cast<size_t>(i)] = std::min(n_keys, past + i + 1);
    return visible;
  }
  at::Tensor r = read.to(at::kLong).contiguous();
  const int64_t* idx = r.data_ptr<int64_t>();
  const int64_t count = r.numel();
  for (int64_t i = 0; i < n; ++i) {  // entries at cache index <= the query's own
    visible[static_cast<size_t>(i)] = std::upper_bound(idx, idx + count, past + i) - idx;
  }
  return visible;
}

}  // namespace mustdrop::model
