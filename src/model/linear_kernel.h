// Matrix-vector products for decode steps, where a layer's whole weight matrix is read for one
// or a few rows and the speed is the memory bandwidth: y[r] = W x[r] for W [n_out, n_in] in the
// stored row-major layout (no transpose, no copy). Plain pointers: the AVX-512 code stays in its
// translation unit.
#pragma once

#include <cstdint>

namespace mustdrop::model::kernel {

// Rows of x one call serves at most.
constexpr int64_t kMatvecMaxRows = 4;

// Whether matvec runs here for bfloat16 (needs AVX512-BF16) or float32 (AVX-512F) tensors.
bool matvec_supported(bool bf16);
// y[r][o] = sum_k x[r][k] * w[o][k] for r < rows (<= kMatvecMaxRows), o in [o_begin, o_end):
// x [rows][n_in], w [n_out][n_in], y [rows][n_out], all contiguous and of one dtype (bf16 as
// uint16_t bits); float32 accumulation, y rounded to nearest even for bf16.
void matvec(bool bf16, const void* x, int64_t rows, const void* w, int64_t n_in, int64_t n_out, int64_t o_begin,
            int64_t o_end, void* y);

}  // namespace mustdrop::model::kernel
