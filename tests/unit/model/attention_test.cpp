// model::attend against a naive float64 attention written here with plain loops: every path
// (blocked kernel, ATen reference, LibTorch's fused kernel where the build has it, and a GPU
// where one is visible), float32 and bfloat16, grouped-query heads, decode rows, prefill tiles
// with a cached past, read subsets, probability rows and strided cache views.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <vector>

#include "model/attention.h"
#include "model/device.h"

namespace mustdrop::model {
namespace {

struct Naive {
  at::Tensor out;    // [n, heads*hd] float64
  at::Tensor probs;  // [rows, S] float64
};

Naive naive_attention(const AttentionInput& in) {
  at::Tensor q = in.q.to(at::kDouble).contiguous(), k = in.keys.to(at::kDouble).contiguous(),
             v = in.values.to(at::kDouble).contiguous();
  const int64_t heads = q.size(0), n = q.size(1), hd = q.size(2), kv = k.size(0), s = k.size(1);
  auto qa = q.accessor<double, 3>();
  auto ka = k.accessor<double, 3>();
  auto va = v.accessor<double, 3>();
  Naive r;
  r.out = at::zeros({n, heads * hd}, at::kDouble);
  r.probs = at::zeros({static_cast<int64_t>(in.prob_rows.size()), s}, at::kDouble);
  auto oa = r.out.accessor<double, 2>();
  auto pa = r.probs.accessor<double, 2>();
  for (int64_t h = 0; h < heads; ++h) {
    const int64_t g = h / (heads / kv);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t vis = in.visible[static_cast<size_t>(i)];
      std::vector<double> p(static_cast<size_t>(vis));
      double mx = -std::numeric_limits<double>::infinity(), sum = 0;
      for (int64_t j = 0; j < vis; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < hd; ++d) dot += qa[h][i][d] * ka[g][j][d];
        p[static_cast<size_t>(j)] = dot / std::sqrt(static_cast<double>(hd));
        mx = std::max(mx, p[static_cast<size_t>(j)]);
      }
      for (double& x : p) sum += (x = std::exp(x - mx));
      for (int64_t j = 0; j < vis; ++j) {
        const double w = p[static_cast<size_t>(j)] / sum;
        for (int64_t d = 0; d < hd; ++d) oa[i][h * hd + d] += w * va[g][j][d];
        for (size_t k2 = 0; k2 < in.prob_rows.size(); ++k2) {
          if (in.prob_rows[k2] == i) pa[static_cast<int64_t>(k2)][j] += w / static_cast<double>(heads);
        }
      }
    }
  }
  return r;
}

struct Case {
  int64_t heads, kv_heads, hd, n, past;
  at::ScalarType dtype;
};

// Keys/values as a view into a larger "cache" buffer (capacity beyond the live entries), like
// DenseKvCache hands out.
AttentionInput make_input(const Case& c, uint64_t seed) {
  at::manual_seed(seed);
  const int64_t s = c.past + c.n;
  AttentionInput in;
  // Query layout as the decoder makes it: [n, heads, hd] transposed to [heads, n, hd].
  in.q = (at::randn({c.n, c.heads, c.hd}) * 1.5).to(c.dtype).transpose(0, 1);
  at::Tensor kbuf = at::randn({c.kv_heads, s + 13, c.hd}).to(c.dtype);
  at::Tensor vbuf = at::randn({c.kv_heads, s + 13, c.hd}).to(c.dtype);
  in.keys = kbuf.narrow(1, 0, s);
  in.values = vbuf.narrow(1, 0, s);
  in.visible = causal_visible(c.past, c.n, at::Tensor(), s);
  return in;
}

void expect_close(const AttentionOutput& got, const Naive& want, at::ScalarType dtype, const char* what) {
  // float32: accumulation-order noise. bfloat16: the output's own rounding (8 bits of mantissa)
  // on values of magnitude <~ 3.
  const double tol_out = dtype == at::kBFloat16 ? 2e-2 : 1e-4;
  const double err = (to_host(got.out).to(at::kDouble) - want.out).abs().max().item<double>();
  EXPECT_LT(err, tol_out) << what;
  if (want.probs.size(0) > 0) {
    ASSERT_TRUE(got.probs.defined()) << what;
    const double perr = (got.probs.to(at::kDouble) - want.probs).abs().max().item<double>();
    EXPECT_LT(perr, dtype == at::kBFloat16 ? 1e-3 : 1e-5) << what;
  }
}

class AttentionPaths : public ::testing::TestWithParam<AttentionPath> {
 protected:
  void SetUp() override {
    if (GetParam() == AttentionPath::kBlocked && !blocked_attention_runs(at::kFloat, 16)) {
      GTEST_SKIP() << "this CPU has no AVX-512: the blocked kernel does not run here";
    }
    if (GetParam() == AttentionPath::kFused && !attention_fused_built()) {
      GTEST_SKIP() << "this build's LibTorch has no fused attention (needs 2.1 or later)";
    }
  }
};

TEST_P(AttentionPaths, MatchesNaiveAcrossShapesAndDtypes) {
  const std::vector<Case> cases = {
      {4, 2, 16, 1, 0, at::kFloat},       // first token
      {4, 2, 16, 1, 300, at::kFloat},     // decode at depth: many key blocks, one row
      {4, 4, 64, 7, 90, at::kFloat},      // few rows: the direct (unpacked) score path
      {4, 2, 16, 150, 0, at::kFloat},     // prefill: several row and key tiles, causal diagonal
      {8, 2, 128, 70, 45, at::kFloat},    // prefill after a cached past, 4 heads per kv head
      {4, 1, 32, 67, 130, at::kBFloat16},  // bfloat16, multi-query
      {4, 2, 128, 1, 200, at::kBFloat16},  // bfloat16 decode
      {2, 2, 80, 129, 0, at::kBFloat16},   // head_dim not a multiple of 64
  };
  uint64_t seed = 1;
  for (const Case& c : cases) {
    AttentionInput in = make_input(c, seed++);
    in.prob_rows = {0, c.n - 1};
    if (c.n > 3) in.prob_rows.push_back(c.n / 2);
    const std::string what = "heads " + std::to_string(c.heads) + "/" + std::to_string(c.kv_heads) + " hd " +
                             std::to_string(c.hd) + " n " + std::to_string(c.n) + " past " + std::to_string(c.past) +
                             (c.dtype == at::kBFloat16 ? " bf16" : " f32");
    expect_close(attend(in, GetParam()), naive_attention(in), c.dtype, what.c_str());
  }
}

TEST_P(AttentionPaths, ReadSubsetMasksByCacheIndex) {
  // 40 cached entries; the 5 new queries (cache indices 40..44) read a subset of the past and
  // all of their own entries; each may see only entries at or before its own index.
  Case c{4, 2, 32, 5, 40, at::kFloat};
  AttentionInput full = make_input(c, 77);
  std::vector<int64_t> read = {0, 3, 4, 9, 17, 18, 30, 39, 40, 41, 42, 43, 44};
  at::Tensor r = at::tensor(read, at::kLong);
  AttentionInput in = full;
  in.keys = full.keys.index_select(1, r);
  in.values = full.values.index_select(1, r);
  in.visible = causal_visible(c.past, c.n, r, static_cast<int64_t>(read.size()));
  EXPECT_EQ(in.visible, (std::vector<int64_t>{9, 10, 11, 12, 13}));
  in.prob_rows = {2};
  AttentionOutput got = attend(in, GetParam());
  expect_close(got, naive_attention(in), at::kFloat, "read subset");
  // Row 2 (cache index 42) sees 11 entries: the last two read entries get nothing.
  EXPECT_EQ(got.probs[0][11].item<float>(), 0.0f);
  EXPECT_EQ(got.probs[0][12].item<float>(), 0.0f);
  EXPECT_GT(got.probs[0][10].item<float>(), 0.0f);
}

TEST_P(AttentionPaths, LargeScoresStayFinite) {
  // Scores in the hundreds: a softmax without the running max would overflow.
  Case c{2, 2, 16, 90, 10, at::kFloat};
  AttentionInput in = make_input(c, 3);
  in.q = in.q * 60;
  at::Tensor out = attend(in, GetParam()).out;
  EXPECT_TRUE(at::isfinite(out).all().item<bool>());
  expect_close(attend(in, GetParam()), naive_attention(in), at::kFloat, "large scores");
}

INSTANTIATE_TEST_SUITE_P(Paths, AttentionPaths,
                         ::testing::Values(AttentionPath::kBlocked, AttentionPath::kReference, AttentionPath::kFused),
                         [](const ::testing::TestParamInfo<AttentionPath>& p) {
                           return p.param == AttentionPath::kBlocked     ? std::string("Blocked")
                                  : p.param == AttentionPath::kReference ? std::string("Reference")
                                                                         : std::string("Fused");
                         });

// The rows the fused path returns beside its outputs are computed on their own: the same
// numbers as the naive loops, including a read subset and rows that see few keys.
TEST(Attention, ProbabilityRowsAloneMatchNaive) {
  const std::vector<Case> cases = {{4, 2, 16, 150, 0, at::kFloat}, {8, 2, 128, 70, 45, at::kFloat},
                                   {4, 1, 32, 67, 130, at::kBFloat16}};
  uint64_t seed = 40;
  for (const Case& c : cases) {
    AttentionInput in = make_input(c, seed++);
    in.prob_rows = {c.n - 1, 0, c.n / 3};
    at::Tensor got = probability_rows(in);
    EXPECT_TRUE(got.device().is_cpu());
    const double err = (got.to(at::kDouble) - naive_attention(in).probs).abs().max().item<double>();
    EXPECT_LT(err, c.dtype == at::kBFloat16 ? 1e-3 : 1e-5) << "n " << c.n << " past " << c.past;
  }
}

// On a GPU (where this process sees one): every path that runs there against the same naive
// loops, probability rows back on the host. Skipped, not failed, without one.
TEST(AttentionOnGpu, MatchesNaive) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU visible to this process";
  const c10::Device gpu(c10::DeviceType::CUDA, 0);
  const std::vector<Case> cases = {{4, 2, 16, 1, 300, at::kFloat},  {8, 2, 128, 70, 45, at::kFloat},
                                   {4, 2, 16, 150, 0, at::kFloat},  {4, 1, 32, 67, 130, at::kBFloat16},
                                   {4, 2, 128, 1, 200, at::kBFloat16}};
  std::vector<AttentionPath> paths = {AttentionPath::kAuto, AttentionPath::kReference};
  if (attention_fused_built()) paths.push_back(AttentionPath::kFused);
  uint64_t seed = 90;
  for (const Case& c : cases) {
    AttentionInput in = make_input(c, seed++);
    in.prob_rows = {0, c.n - 1};
    const Naive want = naive_attention(in);
    AttentionInput on_gpu = in;
    on_gpu.q = in.q.to(gpu);
    on_gpu.keys = in.keys.to(gpu);
    on_gpu.values = in.values.to(gpu);
    for (AttentionPath path : paths) {
      AttentionOutput got = attend(on_gpu, path);
      EXPECT_TRUE(got.out.device().is_cuda());
      ASSERT_TRUE(got.probs.defined());
      EXPECT_TRUE(got.probs.device().is_cpu());
      // TF32 stays off for float32 (LibTorch's default for matrix products), so the float32
      // tolerance is the CPU's.
      expect_close(got, want, c.dtype, ("gpu path " + std::to_string(static_cast<int>(path))).c_str());
    }
  }
}

TEST(Attention, NoNewRowsGiveAnEmptyOutput) {
  Case c{4, 2, 16, 0, 5, at::kFloat};
  AttentionInput in = make_input(c, 2);
  AttentionOutput o = attend(in);
  EXPECT_EQ(o.out.sizes(), (std::vector<int64_t>{0, 64}));
  EXPECT_FALSE(o.probs.defined());
}

TEST(Attention, RejectsCountsThatAreNotCausal) {
  Case c{2, 2, 16, 3, 0, at::kFloat};
  AttentionInput in = make_input(c, 1);
  in.visible = {2, 1, 3};  // decreasing
  EXPECT_THROW(attend(in), std::exception);
  in.visible = {1, 2, 4};  // beyond the keys
  EXPECT_THROW(attend(in), std::exception);
}

}  // namespace
}  // namespace mustdrop::model
