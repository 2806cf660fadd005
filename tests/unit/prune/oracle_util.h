// Small checks shared by the hand-worked pruner tests.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace mustdrop::prune::test_util {

// Row `row` of `t` equals `want` (to 1e-5).
inline void expect_row(const at::Tensor& t, int64_t row, const std::vector<double>& want) {
  at::Tensor got = t[row].to(at::kDouble).contiguous();
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size()));
  for (size_t j = 0; j < want.size(); ++j) {
    EXPECT_NEAR(got[int64_t(j)].item<double>(), want[j], 1e-5) << "row " << row << " col " << j;
  }
}

}  // namespace mustdrop::prune::test_util
