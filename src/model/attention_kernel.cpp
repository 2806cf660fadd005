#include "model/attention_kernel.h"

#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

// Everything between push_options and pop_options is compiled for AVX-512 and runs only after
// supported() said yes (the AVX512-BF16 instructions only where the CPU has them too). Nothing in it is an inline function or template shared with other
// translation units (they are all in the anonymous namespace), so no AVX-512 code can be picked
// by the linker for a caller elsewhere.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,fma")
// GCC 12 warns inside its own intrinsic headers (the deliberately undefined source operand of
// _mm512_undefined_*), not about code here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include "model/avx512_util.h"

namespace mustdrop::model::kernel {
namespace {

constexpr int64_t kBlockRows = 64;  // query rows per tile
constexpr int64_t kBlockKeys = 64;  // keys per tile: four 16-float vectors
constexpr int64_t kPackRows = 8;    // from this many query rows on, keys are packed per kv head

// e^x for each lane, about 2 ulp: x = n ln2 + r with |r| <= ln2/2, a degree-6 polynomial for
// e^r, then a scale by 2^n. Inputs below -104 give 0 (so -inf does too).
inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.7f)), _mm512_set1_ps(-104.0f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// q . k for one query row (float32, already scaled) and `nk` consecutive keys.
template <typename T>
void dot_keys(const float* q, const T* k, int64_t k_stride, int64_t nk, int64_t hd, float* s) {
  int64_t j = 0;
  for (; j + 4 <= nk; j += 4) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const T* k0 = k + j * k_stride;
    for (int64_t d = 0; d < hd; d += 16) {
      __m512 qv = _mm512_loadu_ps(q + d);
      a0 = _mm512_fmadd_ps(qv, load16(k0 + d), a0);
      a1 = _mm512_fmadd_ps(qv, load16(k0 + k_stride + d), a1);
      a2 = _mm512_fmadd_ps(qv, load16(k0 + 2 * k_stride + d), a2);
      a3 = _mm512_fmadd_ps(qv, load16(k0 + 3 * k_stride + d), a3);
    }
    s[j] = _mm512_reduce_add_ps(a0);
    s[j + 1] = _mm512_reduce_add_ps(a1);
    s[j + 2] = _mm512_reduce_add_ps(a2);
    s[j + 3] = _mm512_reduce_add_ps(a3);
  }
  for (; j < nk; ++j) {
    __m512 a = _mm512_setzero_ps();
    for (int64_t d = 0; d < hd; d += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(q + d), load16(k + j * k_stride + d), a);
    s[j] = _mm512_reduce_add_ps(a);
  }
}

// Scores of R query rows against one packed key block ([hd][kBlockKeys] floats).
template <int R>
void packed_scores(const float* q, int64_t hd, const float* kt, float* s) {
  __m512 acc[R][4];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_setzero_ps();
  }
  for (int64_t d = 0; d < hd; ++d) {
    const float* row = kt + d * kBlockKeys;
    __m512 k0 = _mm512_loadu_ps(row), k1 = _mm512_loadu_ps(row + 16), k2 = _mm512_loadu_ps(row + 32),
           k3 = _mm512_loadu_ps(row + 48);
    for (int r = 0; r < R; ++r) {
      __m512 b = _mm512_set1_ps(q[r * hd + d]);
      acc[r][0] = _mm512_fmadd_ps(b, k0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(b, k1, acc[r][1]);
      acc[r][2] = _mm512_fmadd_ps(b, k2, acc[r][2]);
      acc[r][3] = _mm512_fmadd_ps(b, k3, acc[r][3]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < 4; ++c) _mm512_storeu_ps(s + r * kBlockKeys + 16 * c, acc[r][c]);
  }
}

// bfloat16 with vdpbf16ps (pairs multiplied exactly, summed in float32), twice the work per
// instruction of float32 FMA. Keys are packed per block as [hd/2][kBlockKeys][2]: one 32-bit lane
// holds a key's two adjacent dimensions, so a broadcast pair of the query meets 16 keys at once.
template <int R>
void pair_scores(const uint16_t* q, int64_t q_stride, int64_t hd, const uint16_t* kp, float scale, float* s) {
  __m512 acc[R][4];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < hd / 2; ++p) {
    const uint16_t* row = kp + p * 2 * kBlockKeys;
    __m512bh k[4];
    for (int c = 0; c < 4; ++c) k[c] = (__m512bh)_mm512_loadu_si512(row + 32 * c);
    for (int r = 0; r < R; ++r) {
      uint32_t pair;
      std::memcpy(&pair, q + r * q_stride + 2 * p, sizeof pair);
      const __m512bh b = (__m512bh)_mm512_set1_epi32(static_cast<int>(pair));
      for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], b, k[c]);
    }
  }
  const __m512 sv = _mm512_set1_ps(scale);
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < 4; ++c) _mm512_storeu_ps(s + r * kBlockKeys + 16 * c, _mm512_mul_ps(acc[r][c], sv));
  }
}

// acc[r][dims] += sum over key pairs t of (p[r][2t], p[r][2t+1]) . (v[2t][d], v[2t+1][d]), with
// the probabilities in bfloat16 ([R][kBlockKeys]) and values packed per block as
// [kBlockKeys/2][hd][2].
template <int R, int C>
void pair_values(const uint16_t* p, const uint16_t* vp, int64_t n_pairs, int64_t c0, float* acc, int64_t hd) {
  __m512 a[R][C];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) a[r][c] = _mm512_loadu_ps(acc + r * hd + (c0 + c) * 16);
  }
  for (int64_t t = 0; t < n_pairs; ++t) {
    __m512bh vv[C];
    for (int c = 0; c < C; ++c) vv[c] = (__m512bh)_mm512_loadu_si512(vp + (t * hd + (c0 + c) * 16) * 2);
    for (int r = 0; r < R; ++r) {
      uint32_t pair;
      std::memcpy(&pair, p + r * kBlockKeys + 2 * t, sizeof pair);
      const __m512bh b = (__m512bh)_mm512_set1_epi32(static_cast<int>(pair));
      for (int c = 0; c < C; ++c) a[r][c] = _mm512_dpbf16_ps(a[r][c], b, vv[c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) _mm512_storeu_ps(acc + r * hd + (c0 + c) * 16, a[r][c]);
  }
}

template <int R>
void pair_value_rows(const uint16_t* p, const uint16_t* vp, int64_t n_pairs, float* acc, int64_t hd) {
  const int64_t chunks = hd / 16;
  int64_t c0 = 0;
  for (; c0 + 4 <= chunks; c0 += 4) pair_values<R, 4>(p, vp, n_pairs, c0, acc, hd);
  for (; c0 < chunks; ++c0) pair_values<R, 1>(p, vp, n_pairs, c0, acc, hd);
}

// The block's probabilities (float32 rows of kBlockKeys, the first nk live) as bfloat16, zero
// past nk so an odd last pair adds nothing.
void probs_to_bf16(const float* s, int64_t rows, int64_t nk, uint16_t* p) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < kBlockKeys; j += 16) {
      const __m512 x = _mm512_maskz_loadu_ps(tail_mask(nk - j), s + r * kBlockKeys + j);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + r * kBlockKeys + j), (__m256i)_mm512_cvtneps_pbh(x));
    }
  }
}

// acc[r][c0*16 .. (c0+C)*16) += sum_j p[r][j] * v[j][same dims], for R rows and `nk` keys.
template <int R, int C, typename T>
void accumulate_values(const float* p, const T* v, int64_t v_stride, int64_t nk, int64_t c0, float* acc, int64_t hd) {
  __m512 a[R][C];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) a[r][c] = _mm512_loadu_ps(acc + r * hd + (c0 + c) * 16);
  }
  for (int64_t j = 0; j < nk; ++j) {
    __m512 vv[C];
    for (int c = 0; c < C; ++c) vv[c] = load16(v + j * v_stride + (c0 + c) * 16);
    for (int r = 0; r < R; ++r) {
      __m512 b = _mm512_set1_ps(p[r * kBlockKeys + j]);
      for (int c = 0; c < C; ++c) a[r][c] = _mm512_fmadd_ps(b, vv[c], a[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) _mm512_storeu_ps(acc + r * hd + (c0 + c) * 16, a[r][c]);
  }
}

template <int R, typename T>
void accumulate_rows(const float* p, const T* v, int64_t v_stride, int64_t nk, float* acc, int64_t hd) {
  const int64_t chunks = hd / 16;
  int64_t c0 = 0;
  for (; c0 + 4 <= chunks; c0 += 4) accumulate_values<R, 4>(p, v, v_stride, nk, c0, acc, hd);
  for (; c0 < chunks; ++c0) accumulate_values<R, 1>(p, v, v_stride, nk, c0, acc, hd);
}

template <typename T>
void accumulate(const float* p, int64_t rows, const T* v, int64_t v_stride, int64_t nk, float* acc, int64_t hd) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) accumulate_rows<4>(p + r * kBlockKeys, v, v_stride, nk, acc + r * hd, hd);
  for (; r < rows; ++r) accumulate_rows<1>(p + r * kBlockKeys, v, v_stride, nk, acc + r * hd, hd);
}

// One row of the online softmax over this block's scores: folds them into the running max m and
// sum l, rescales the row's accumulator, and leaves the probabilities (unnormalized) in s.
void online_softmax_row(float* s, int64_t visible, int64_t nk, float* m, float* l, float* acc, int64_t hd) {
  const int64_t cnt = visible < nk ? visible : nk;
  if (cnt <= 0) {  // the row sees nothing of this block
    for (int64_t j = 0; j < nk; j += 16) _mm512_mask_storeu_ps(s + j, tail_mask(nk - j), _mm512_setzero_ps());
    return;
  }
  __m512 mx = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < cnt; j += 16) {
    mx = _mm512_mask_max_ps(mx, tail_mask(cnt - j), mx, _mm512_loadu_ps(s + j));
  }
  const float m_new = std::fmax(*m, _mm512_reduce_max_ps(mx));
  const __m512 mv = _mm512_set1_ps(m_new);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < nk; j += 16) {
    __mmask16 live = tail_mask(cnt - j);
    __m512 e = _mm512_maskz_mov_ps(live, exp16(_mm512_sub_ps(_mm512_loadu_ps(s + j), mv)));
    sum = _mm512_add_ps(sum, e);
    _mm512_mask_storeu_ps(s + j, tail_mask(nk - j), e);
  }
  const float corr = std::isinf(*m) ? 0.0f : std::exp(*m - m_new);
  *l = *l * corr + _mm512_reduce_add_ps(sum);
  if (corr != 1.0f) {
    const __m512 cv = _mm512_set1_ps(corr);
    for (int64_t d = 0; d < hd; d += 16) _mm512_storeu_ps(acc + d, _mm512_mul_ps(_mm512_loadu_ps(acc + d), cv));
  }
  *m = m_new;
}

// A head's keys (and values) repacked once for many query rows; all null: read in place.
struct Packed {
  const float* kt = nullptr;     // float32 keys, [blocks][hd][kBlockKeys]
  const uint16_t* kp = nullptr;  // bfloat16 key pairs, [blocks][hd/2][kBlockKeys][2]
  const uint16_t* vp = nullptr;  // bfloat16 value pairs, [blocks][kBlockKeys/2][hd][2]
};

template <typename T>
void attend_tiles(const AttentionArgs& a, int64_t h, const T* q, const T* k, const T* v, const Packed& packed,
                  float* scratch) {
  const int64_t hd = a.head_dim;
  float* qf = scratch;                     // [kBlockRows][hd]
  float* acc = qf + kBlockRows * hd;       // [kBlockRows][hd]
  float* s = acc + kBlockRows * hd;        // [kBlockRows][kBlockKeys]
  float* m = s + kBlockRows * kBlockKeys;  // [kBlockRows]
  float* l = m + kBlockRows;               // [kBlockRows]
  uint16_t* pb = reinterpret_cast<uint16_t*>(l + kBlockRows);  // [kBlockRows][kBlockKeys] bf16
  T* out = static_cast<T*>(a.out);
  for (int64_t r0 = 0; r0 < a.n; r0 += kBlockRows) {
    const int64_t nr = a.n - r0 < kBlockRows ? a.n - r0 : kBlockRows;
    for (int64_t i = 0; i < nr; ++i) {
      const T* qi = q + (r0 + i) * a.q_row_stride;
      for (int64_t d = 0; d < hd; ++d) qf[i * hd + d] = to_float(qi[d]) * a.scale;
      m[i] = -std::numeric_limits<float>::infinity();
      l[i] = 0.0f;
    }
    std::memset(acc, 0, sizeof(float) * static_cast<size_t>(nr * hd));
    const int64_t k_end = a.visible[r0 + nr - 1];
    for (int64_t j0 = 0; j0 < k_end; j0 += kBlockKeys) {
      const int64_t nk = k_end - j0 < kBlockKeys ? k_end - j0 : kBlockKeys;
      const int64_t block = j0 / kBlockKeys;
      if constexpr (std::is_same_v<T, uint16_t>) {
        if (packed.kp) {
          const uint16_t* kb = packed.kp + block * hd * kBlockKeys;
          const T* qr = q + r0 * a.q_row_stride;
          int64_t i = 0;
          for (; i + 4 <= nr; i += 4) pair_scores<4>(qr + i * a.q_row_stride, a.q_row_stride, hd, kb, a.scale, s + i * kBlockKeys);
          for (; i < nr; ++i) pair_scores<1>(qr + i * a.q_row_stride, a.q_row_stride, hd, kb, a.scale, s + i * kBlockKeys);
        }
      }
      if (packed.kt) {
        const float* kb = packed.kt + block * hd * kBlockKeys;
        int64_t i = 0;
        for (; i + 4 <= nr; i += 4) packed_scores<4>(qf + i * hd, hd, kb, s + i * kBlockKeys);
        for (; i < nr; ++i) packed_scores<1>(qf + i * hd, hd, kb, s + i * kBlockKeys);
      } else if (!packed.kp) {
        for (int64_t i = 0; i < nr; ++i) {
          dot_keys(qf + i * hd, k + j0 * a.kv_row_stride, a.kv_row_stride, nk, hd, s + i * kBlockKeys);
        }
      }
      for (int64_t i = 0; i < nr; ++i) {
        online_softmax_row(s + i * kBlockKeys, a.visible[r0 + i] - j0, nk, m + i, l + i, acc + i * hd, hd);
      }
      if (packed.vp) {
        probs_to_bf16(s, nr, nk, pb);
        const uint16_t* vb = packed.vp + block * hd * kBlockKeys;
        const int64_t pairs = (nk + 1) / 2;
        int64_t i = 0;
        for (; i + 4 <= nr; i += 4) pair_value_rows<4>(pb + i * kBlockKeys, vb, pairs, acc + i * hd, hd);
        for (; i < nr; ++i) pair_value_rows<1>(pb + i * kBlockKeys, vb, pairs, acc + i * hd, hd);
      } else {
        accumulate(s, nr, v + j0 * a.kv_row_stride, a.kv_row_stride, nk, acc, hd);
      }
    }
    for (int64_t i = 0; i < nr; ++i) {
      const float inv = 1.0f / l[i];
      T* o = out + (r0 + i) * a.heads * hd + h * hd;
      for (int64_t d = 0; d < hd; ++d) store(acc[i * hd + d] * inv, o + d);
    }
    // Probability rows asked for in this tile: recomputed with the row's final max and sum.
    for (int64_t pk = 0; pk < a.n_prob_rows; ++pk) {
      const int64_t row = a.prob_rows[pk];
      if (row < r0 || row >= r0 + nr) continue;
      const int64_t i = row - r0, vis = a.visible[row];
      float* dst = a.probs + (pk * a.heads + h) * a.n_keys;
      dot_keys(qf + i * hd, k, a.kv_row_stride, vis, hd, dst);
      const __m512 mv = _mm512_set1_ps(m[i]), inv = _mm512_set1_ps(1.0f / l[i]);
      for (int64_t j = 0; j < vis; j += 16) {
        __mmask16 mask = tail_mask(vis - j);
        __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, dst + j), mv));
        _mm512_mask_storeu_ps(dst + j, mask, _mm512_mul_ps(e, inv));
      }
      for (int64_t j = vis; j < a.n_keys; ++j) dst[j] = 0.0f;
    }
  }
}

int64_t n_blocks(int64_t n_keys) { return (n_keys + kBlockKeys - 1) / kBlockKeys; }

// Keys of one kv head as float32 blocks of [hd][kBlockKeys] (zero past the last key).
template <typename T>
void pack_keys(const T* k, int64_t stride, int64_t n_keys, int64_t hd, float* kt) {
  for (int64_t b = 0; b < n_blocks(n_keys); ++b) {
    float* block = kt + b * hd * kBlockKeys;
    for (int64_t jj = 0; jj < kBlockKeys; ++jj) {
      const int64_t j = b * kBlockKeys + jj;
      if (j >= n_keys) {
        for (int64_t d = 0; d < hd; ++d) block[d * kBlockKeys + jj] = 0.0f;
        continue;
      }
      const T* row = k + j * stride;
      for (int64_t d = 0; d < hd; ++d) block[d * kBlockKeys + jj] = to_float(row[d]);
    }
  }
}

// bfloat16 keys as [blocks][hd/2][kBlockKeys][2] and values as [blocks][kBlockKeys/2][hd][2]
// (zero past the last key).
void pack_pairs(const uint16_t* k, const uint16_t* v, int64_t stride, int64_t n_keys, int64_t hd, uint16_t* kp,
                uint16_t* vp) {
  for (int64_t b = 0; b < n_blocks(n_keys); ++b) {
    uint16_t* kb = kp + b * hd * kBlockKeys;
    uint16_t* vb = vp + b * hd * kBlockKeys;
    for (int64_t jj = 0; jj < kBlockKeys; ++jj) {
      const int64_t j = b * kBlockKeys + jj;
      const uint16_t* krow = j < n_keys ? k + j * stride : nullptr;
      const uint16_t* vrow = j < n_keys ? v + j * stride : nullptr;
      for (int64_t d = 0; d < hd; ++d) {
        kb[((d / 2) * kBlockKeys + jj) * 2 + d % 2] = krow ? krow[d] : 0;
        vb[((jj / 2) * hd + d) * 2 + jj % 2] = vrow ? vrow[d] : 0;
      }
    }
  }
}

bool cpu_has_bf16_pairs() {
  static const bool has = __builtin_cpu_supports("avx512bf16");
  return has;
}

template <typename T>
void attend_one_head(const AttentionArgs& a, int64_t h, float* scratch) {
  const int64_t g = h / (a.heads / a.kv_heads);
  const T* k = static_cast<const T*>(a.keys) + g * a.kv_head_stride;
  const T* v = static_cast<const T*>(a.values) + g * a.kv_head_stride;
  Packed packed;
  if (a.n >= kPackRows) {  // packing costs n_keys*hd, the scores n*n_keys*hd: worth it for many rows
    const int64_t floats = n_blocks(a.n_keys) * kBlockKeys * a.head_dim;
    if constexpr (std::is_same_v<T, uint16_t>) {
      if (cpu_has_bf16_pairs()) {
        uint16_t* kp = reinterpret_cast<uint16_t*>(scratch);
        pack_pairs(k, v, a.kv_row_stride, a.n_keys, a.head_dim, kp, kp + floats);
        packed.kp = kp;
        packed.vp = kp + floats;
      }
    }
    if (!packed.kp) {
      pack_keys(k, a.kv_row_stride, a.n_keys, a.head_dim, scratch);
      packed.kt = scratch;
    }
    scratch += floats;
  }
  attend_tiles(a, h, static_cast<const T*>(a.q) + h * a.q_head_stride, k, v, packed, scratch);
}

}  // namespace
}  // namespace mustdrop::model::kernel

#pragma GCC diagnostic pop
#pragma GCC pop_options

namespace mustdrop::model::kernel {

bool supported(int64_t head_dim) {
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return avx512 && head_dim > 0 && head_dim % 16 == 0 && head_dim <= 256;
}

int64_t scratch_floats(const AttentionArgs& a) {
  // q, acc; scores; max, sum; bf16 probabilities (half a float each).
  int64_t tile = 2 * kBlockRows * a.head_dim + kBlockRows * kBlockKeys + 2 * kBlockRows + kBlockRows * kBlockKeys / 2;
  int64_t packed = a.n >= kPackRows ? (a.n_keys + kBlockKeys - 1) / kBlockKeys * kBlockKeys * a.head_dim : 0;
  return tile + packed;
}

void attend_head(const AttentionArgs& a, int64_t h, float* scratch) {
  switch (a.elem) {
    case Elem::kF32:
      attend_one_head<float>(a, h, scratch);
      return;
    case Elem::kBf16:
      attend_one_head<uint16_t>(a, h, scratch);
      return;
  }
}

}  // namespace mustdrop::model::kernel
