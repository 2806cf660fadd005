// model::dense against a float64 matrix product: the decode matrix-vector kernel (1-4 rows,
// float32 and bfloat16, sizes that are not multiples of the vector width) and the matrix path.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "model/linear.h"
#include "model/linear_kernel.h"

namespace mustdrop::model {
namespace {

TEST(Dense, MatchesAFloat64ProductForFewAndManyRows) {
  at::manual_seed(11);
  for (at::ScalarType t : {at::kFloat, at::kBFloat16}) {
    for (int64_t n_in : {16, 100, 4096}) {
      for (int64_t n_out : {1, 7, 300}) {
        for (int64_t rows : {1, 2, 3, 4, 9}) {
          at::Tensor x = at::randn({rows, n_in}).to(t), w = (at::randn({n_out, n_in}) * 0.05).to(t);
          at::Tensor b = at::randn({n_out}).to(t);
          // The operands as stored (bf16 values exactly), multiplied in float64.
          at::Tensor want = at::mm(x.to(at::kDouble), w.to(at::kDouble).t());
          at::Tensor got = dense(x, w);
          ASSERT_EQ(got.scalar_type(), t);
          ASSERT_EQ(got.sizes(), want.sizes());
          // float32: summation order; bfloat16: the result's own rounding (2^-8 relative).
          const double scale = want.abs().max().item<double>() + 1e-12;
          const double tol = t == at::kBFloat16 ? 8e-3 : 1e-5;
          EXPECT_LT((got.to(at::kDouble) - want).abs().max().item<double>() / scale, tol)
              << "rows " << rows << " n_in " << n_in << " n_out " << n_out << (t == at::kBFloat16 ? " bf16" : " f32");
          at::Tensor with_bias = dense(x, w, b).to(at::kDouble);
          EXPECT_LT((with_bias - want - b.to(at::kDouble)).abs().max().item<double>() / (scale + 1), 2 * tol);
        }
      }
    }
  }
}

TEST(Dense, KernelRunsWhereTheCpuHasIt) {
  // Guards the dispatch: on an AVX-512 CPU the decode rows must take the kernel, so the test above
  // exercised it.
  if (!__builtin_cpu_supports("avx512f")) GTEST_SKIP() << "no AVX-512 here";
  EXPECT_TRUE(kernel::matvec_supported(false));
  EXPECT_EQ(kernel::matvec_supported(true), static_cast<bool>(__builtin_cpu_supports("avx512bf16")));
}

}  // namespace
}  // namespace mustdrop::model
