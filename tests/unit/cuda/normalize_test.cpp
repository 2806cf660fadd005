// The CUDA normalisation kernel against the CPU formula; skipped where no GPU can run it.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "cuda/normalize.h"

namespace mustdrop {
namespace {

TEST(CudaNormalise, MatchesTheCpuFormula) {
  std::string reason;
  if (!cuda::device_available(&reason)) GTEST_SKIP() << "no usable CUDA device: " << reason;
  const int n = 2, h = 5, w = 7;
  std::vector<uint8_t> rgb(n * h * w * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<uint8_t>((i * 37) % 256);
  const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
  const float stddev[3] = {0.26862954f, 0.26130258f, 0.27577711f};
  std::vector<float> out(n * 3 * h * w);
  cuda::normalise_rgb(rgb.data(), n, h, w, mean, stddev, out.data());
  for (int b = 0; b < n; ++b) {
    for (int c = 0; c < 3; ++c) {
      for (int p = 0; p < h * w; ++p) {
        double want = (rgb[(b * h * w + p) * 3 + c] / 255.0 - mean[c]) / stddev[c];
        ASSERT_NEAR(out[(b * 3 + c) * h * w + p], want, 1e-5) << b << " " << c << " " << p;
      }
    }
  }
}

}  // namespace
}  // namespace mustdrop
