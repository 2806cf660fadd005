// Causal attention of a layer's new query rows against its cached keys and values, the one core
// every decoder layer calls. On a CPU with AVX-512 it runs a blocked kernel (queries x keys tiles,
// online softmax, float32 accumulation for float32 and bfloat16 tensors; no full score matrix).
// Elsewhere (a GPU, another CPU, other dtypes) it runs LibTorch's fused scaled-dot-product
// attention where the LibTorch built against has one (2.1 and later), else a reference made of
// ATen operations. The probability rows a pruner asks for are always computed explicitly, for
// those rows only, and returned on the host.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace mustdrop::model {

struct AttentionInput {
  at::Tensor q;       // [heads, n, head_dim], rotated
  at::Tensor keys;    // [kv_heads, n_keys, head_dim]; heads is a multiple of kv_heads
  at::Tensor values;  // [kv_heads, n_keys, head_dim]
  std::vector<int64_t> visible;    // per query row: it sees keys [0, visible[i]); nondecreasing, >= 1
  std::vector<int64_t> prob_rows;  // query rows whose head-mean attention probabilities are wanted
};

struct AttentionOutput {
  at::Tensor out;    // [n, heads * head_dim], q's dtype
  at::Tensor probs;  // [prob_rows, n_keys] float32 on the host, zero past each row's visible keys; undefined if none
};

enum class AttentionPath {
  kAuto,       // the blocked kernel where it runs, else the fused kernel where built, else the reference
  kBlocked,    // the blocked kernel; InternalError where it does not run
  kReference,  // ATen operations, query rows in blocks, full key rows
  kFused,      // LibTorch's scaled_dot_product_attention; InternalError where the build has none
};

// The head-mean probabilities of in.prob_rows alone, computed explicitly: [prob_rows, n_keys]
// float32 on the host. What the fused path returns beside its outputs (it has no probabilities).
at::Tensor probability_rows(const AttentionInput& in);
// Whether this build's LibTorch has the fused scaled-dot-product attention (2.1 and later).
bool attention_fused_built();

// Computes softmax(q k^T / sqrt(head_dim)) v under the `visible` mask. InternalError on shapes
// that do not fit together.
AttentionOutput attend(const AttentionInput& in, AttentionPath path = AttentionPath::kAuto);
// The path kAuto stands for in this process (benchmarks compare paths with it); kAuto by default.
void set_default_attention_path(AttentionPath path);
// Whether the blocked kernel runs for this dtype and head size on this CPU (host tensors only).
bool blocked_attention_runs(at::ScalarType dtype, int64_t head_dim);
// Visible-key counts for `n` new queries at cache indices past..past+n-1 over `n_keys` keys whose
// cache indices are `read` (ascending int64) or, when undefined, 0..n_keys-1.
std::vector<int64_t> causal_visible(int64_t past, int64_t n, const at::Tensor& read, int64_t n_keys);

}  // namespace mustdrop::model
