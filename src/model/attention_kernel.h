// The CPU attention kernel behind model::attend: causal attention in blocks of queries x keys with
// an online softmax, so no full score matrix is ever held, and float32 accumulation whatever the
// stored dtype (float32 or bfloat16). Plain pointers only: this header and its translation unit
// know nothing of ATen, so the AVX-512 code there cannot leak into other objects.
#pragma once

#include <cstdint>

namespace mustdrop::model::kernel {

enum class Elem { kF32, kBf16 };

struct AttentionArgs {
  Elem elem = Elem::kF32;  // dtype of q, keys, values and out
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
  int64_t n = 0;       // query rows
  int64_t n_keys = 0;  // key (and value) entries
  const void* q = nullptr;  // element (h, i, d) at q + h*q_head_stride + i*q_row_stride + d
  int64_t q_head_stride = 0, q_row_stride = 0;
  const void* keys = nullptr;  // element (g, j, d) at keys + g*kv_head_stride + j*kv_row_stride + d
  const void* values = nullptr;
  int64_t kv_head_stride = 0, kv_row_stride = 0;
  void* out = nullptr;            // [n, heads * head_dim], contiguous
  const int64_t* visible = nullptr;  // [n]: row i sees keys [0, visible[i]); nondecreasing, >= 1
  float scale = 1.0f;               // applied to q.k
  // Probability rows: for each k < n_prob_rows, row prob_rows[k] of head h gets its
  // probabilities written to probs + (k*heads + h)*n_keys (zero past its visible keys).
  const int64_t* prob_rows = nullptr;
  int64_t n_prob_rows = 0;
  float* probs = nullptr;
};

// Whether this CPU runs the kernel (AVX-512F) and head_dim suits it (a multiple of 16, <= 256).
bool supported(int64_t head_dim);
// Floats of scratch one call of attend_head needs.
int64_t scratch_floats(const AttentionArgs& a);
// Computes the outputs (and asked probability rows) of query head `h`. `scratch` holds
// scratch_floats(a) floats, owned by the calling thread.
void attend_head(const AttentionArgs& a, int64_t h, float* scratch);

}  // namespace mustdrop::model::kernel
