#include "model/attention.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <string>

#include "core/error.h"
#include "model/attention_kernel.h"
#include "model/device.h"

// LibTorch's fused attention: at::scaled_dot_product_attention with a boolean mask arrived in 2.0
// and is stable from 2.1 on (Debian's LibTorch is 1.13: the reference runs there instead).
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
#define MUSTDROP_HAVE_SDPA 1
#else
#define MUSTDROP_HAVE_SDPA 0
#endif

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

// Keys or values of kv_heads repeated for the query heads that share them: [heads, S, hd].
at::Tensor per_query_head(const at::Tensor& kv, int64_t heads) {
  const int64_t kv_heads = kv.size(0), group = heads / kv_heads;
  if (group == 1) return kv;
  return kv.unsqueeze(1).expand({kv_heads, group, kv.size(1), kv.size(2)}).reshape({heads, kv.size(1), kv.size(2)});
}

// True where query row i (of `rows`, a [R] index on the keys' device) may not see key j: [R, S].
at::Tensor hidden_keys(const AttentionInput& in, const at::Tensor& visible_rows, int64_t s) {
  at::Tensor key_index = at::arange(s, in.keys.options().dtype(at::kLong)).unsqueeze(0);
  return key_index >= visible_rows.unsqueeze(1);
}

// probability_rows without the shape check (attend has made it).
at::Tensor rows_alone(const AttentionInput& in) {
  const int64_t heads = in.q.size(0), hd = in.q.size(2), s = in.keys.size(1);
  const at::ScalarType acc = score_type(in.q.scalar_type());
  const c10::Device dev = in.q.device();
  std::vector<int64_t> visible;
  for (int64_t r : in.prob_rows) visible.push_back(in.visible[static_cast<size_t>(r)]);
  at::Tensor q = in.q.index_select(1, index_tensor(in.prob_rows, dev)).to(acc);  // [heads, R, hd]
  at::Tensor scores = at::bmm(q, per_query_head(in.keys, heads).to(acc).transpose(1, 2));
  scores.mul_(1.0 / std::sqrt(static_cast<double>(hd)));
  scores.masked_fill_(hidden_keys(in, index_tensor(visible, dev), s), -std::numeric_limits<double>::infinity());
  return to_host(at::softmax(scores, -1).mean(0).to(at::kFloat));
}

AttentionOutput attend_reference(const AttentionInput& in) {
  const int64_t heads = in.q.size(0), n = in.q.size(1), hd = in.q.size(2);
  const int64_t s = in.keys.size(1);
  const at::ScalarType acc = score_type(in.q.scalar_type());
  at::Tensor kt = per_query_head(in.keys, heads).to(acc).transpose(1, 2);
  at::Tensor vals = per_query_head(in.values, heads).to(acc);
  at::Tensor visible = index_tensor(in.visible, in.q.device());
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  const int64_t block = 256;  // query rows per score matrix [heads, block, S]
  std::vector<at::Tensor> outs;
  std::vector<at::Tensor> row_probs(in.prob_rows.size());
  for (int64_t r0 = 0; r0 < n; r0 += block) {
    const int64_t nr = std::min(block, n - r0);
    at::Tensor scores = at::bmm(in.q.narrow(1, r0, nr).to(acc), kt).mul_(scale);  // [heads, nr, S]
    scores.masked_fill_(hidden_keys(in, visible.narrow(0, r0, nr), s), -std::numeric_limits<double>::infinity());
    at::Tensor probs = at::softmax(scores, -1);
    for (size_t k = 0; k < in.prob_rows.size(); ++k) {
      const int64_t r = in.prob_rows[k];
      if (r >= r0 && r < r0 + nr) row_probs[k] = probs.select(1, r - r0).mean(0);
    }
    outs.push_back(at::bmm(probs, vals));  // [heads, nr, hd]
  }
  AttentionOutput o;
  if (!in.prob_rows.empty()) o.probs = to_host(at::stack(row_probs, 0).to(at::kFloat));
  at::Tensor out = outs.size() == 1 ? outs[0] : at::cat(outs, 1);
  o.out = out.transpose(0, 1).reshape({n, heads * hd}).to(in.q.scalar_type());
  return o;
}

#if MUSTDROP_HAVE_SDPA
// The fused kernel for the outputs; the asked probability rows beside it, explicitly. A prompt
// with no past (row i sees keys 0..i) is plain causal, which lets LibTorch pick its fastest
// kernel; anything else (past entries, a subset read) passes the mask.
AttentionOutput attend_fused(const AttentionInput& in) {
  const int64_t heads = in.q.size(0), n = in.q.size(1), hd = in.q.size(2), s = in.keys.size(1);
  bool causal = n == s, all_visible = true;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = in.visible[static_cast<size_t>(i)];
    causal = causal && v == i + 1;
    all_visible = all_visible && v == s;
  }
  const at::Tensor q = in.q.unsqueeze(0), k = per_query_head(in.keys, heads).unsqueeze(0),
                   v = per_query_head(in.values, heads).unsqueeze(0);
  // The mask goes as a tensor or as {}: either converts to the optional of any LibTorch 2.x.
  at::Tensor out = causal || all_visible
                       ? at::scaled_dot_product_attention(q, k, v, {}, 0.0, causal && !all_visible)
                       : at::scaled_dot_product_attention(
                             q, k, v, hidden_keys(in, index_tensor(in.visible, in.q.device()), s).logical_not(), 0.0,
                             false);  // [1, heads, n, hd]
  AttentionOutput o;
  o.out = out.squeeze(0).transpose(0, 1).reshape({n, heads * hd});
  if (!in.prob_rows.empty()) o.probs = rows_alone(in);
  return o;
}
#endif

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

at::Tensor probability_rows(const AttentionInput& in) {
  check_shapes(in);
  return rows_alone(in);
}

bool attention_fused_built() { return MUSTDROP_HAVE_SDPA != 0; }

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
  const bool blocked_runs = in.q.device().is_cpu() && blocked_attention_runs(in.q.scalar_type(), in.q.size(2)) &&
                            in.keys.scalar_type() == in.q.scalar_type() &&
                            in.values.scalar_type() == in.q.scalar_type();
  switch (path) {
    case AttentionPath::kAuto:
      if (blocked_runs) return attend_blocked(in);
#if MUSTDROP_HAVE_SDPA
      return attend_fused(in);
#else
      return attend_reference(in);
#endif
    case AttentionPath::kFused:
#if MUSTDROP_HAVE_SDPA
      return attend_fused(in);
#else
      throw InternalError("attention: this build's LibTorch (" TORCH_VERSION ") has no fused scaled-dot-product attention");
#endif
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
  at::Tensor r = to_host(read).to(at::kLong).contiguous();
  const int64_t* idx = r.data_ptr<int64_t>();
  const int64_t count = r.numel();
  for (int64_t i = 0; i < n; ++i) {  // entries at cache index <= the query's own
    visible[static_cast<size_t>(i)] = std::upper_bound(idx, idx + count, past + i) - idx;
  }
  return visible;
}

}  // namespace mustdrop::model
