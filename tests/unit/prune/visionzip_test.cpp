// VisionZip oracle tests: scripted CLS attention and features on a 4 x 4 grid, against
// hand-worked dominant sets, targets, assignments and merged rows (worked out in the comments,
// never taken from a run of the code); plus S, the budget and keep-all settings, and one frame
// through the tiny model's tower.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "core/sysinfo.h"
#include "model/tiny_model.h"
#include "model/vlm.h"
#include "prune/apply.h"
#include "prune/baselines/visionzip.h"
#include "prune/chain.h"
#include "support/test_support.h"
#include "oracle_util.h"

namespace mustdrop::prune {
namespace {

using Ids = std::vector<int64_t>;

// CLS (patch -1) then the patches in raster order, as Chain::encode_frame builds a frame's ledger.
std::vector<TokenInfo> frame_ledger(int64_t n_patches) {
  std::vector<TokenInfo> out;
  for (int64_t i = -1; i < n_patches; ++i) {
    TokenInfo e;
    e.id = i + 1;
    e.patch = i;
    out.push_back(e);
  }
  return out;
}

// The scripted frame: 16 patches, D = 3. Row 0 is CLS, row p + 1 is patch p.
//   CLS attention: 0.01 * (p + 1), except patch 5: 0.9, patch 10: 0.8, patch 12: 0.7.
//   Targets-to-be: patch 0 = (1,0,0), patch 4 = (0,2,0), patch 9 = (0,0,3).
//   Others: 1 = (3,1,0), 6 = (5,0,1), 14 = (2,0,1)   -> most like patch 0 (x dominates)
//           2 = (0,4,0), 7 = (1,2,0), 8 = (0,2,1), 15 = (0,3,-1) -> most like patch 4 (y dominates)
//           3 = (0,0,1), 11 = (1,0,4), 13 = (0,1,2)  -> most like patch 9 (z dominates)
//   Dominant-to-be: 5 = (1,1,1), 10 = (2,2,2), 12 = (-1,1,0); CLS = (9,9,9).
at::Tensor scripted_hidden() {
  std::vector<std::vector<double>> rows(17);
  rows[0] = {9, 9, 9};
  const std::vector<std::vector<double>> patch = {
      {1, 0, 0}, {3, 1, 0}, {0, 4, 0}, {0, 0, 1}, {0, 2, 0}, {1, 1, 1}, {5, 0, 1}, {1, 2, 0},
      {0, 2, 1}, {0, 0, 3}, {2, 2, 2}, {1, 0, 4}, {-1, 1, 0}, {0, 1, 2}, {2, 0, 1}, {0, 3, -1}};
  for (int p = 0; p < 16; ++p) rows[static_cast<size_t>(p + 1)] = patch[static_cast<size_t>(p)];
  std::vector<double> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  return at::tensor(flat, at::TensorOptions().dtype(at::kDouble)).view({17, 3}).to(at::kFloat);
}

at::Tensor scripted_cls_attention() {
  std::vector<double> a(16);
  for (int p = 0; p < 16; ++p) a[static_cast<size_t>(p)] = 0.01 * (p + 1);
  a[5] = 0.9;
  a[10] = 0.8;
  a[12] = 0.7;
  return at::tensor(a, at::TensorOptions().dtype(at::kDouble)).to(at::kFloat);
}

View view_of(std::vector<TokenInfo>& ledger, const at::Tensor& hidden, const at::Tensor& cls) {
  View v;
  v.stage = Stage::VisionLayer;
  v.layer = 22;
  v.tokens = &ledger;
  v.hidden = hidden;
  v.grid = 4;
  v.n_layers = 24;
  v.feature_layer = 22;
  v.cls_attention = cls;
  return v;
}

using test_util::expect_row;

Ids patches_of(const std::vector<TokenInfo>& ledger) {
  Ids out;
  for (const auto& e : ledger) out.push_back(e.patch);
  return out;
}

void apply_frame(const KeepPlan& plan, at::Tensor& hidden, std::vector<TokenInfo>& ledger) {
  PlanTarget target;
  target.merged = {&hidden};
  target.ledger = &ledger;
  target.protect_first = true;
  apply_plan(plan, target, "visionzip-test");
}

VisionZipOptions options(int dominant, int contextual, VisionZipMerge merge = VisionZipMerge::kTargetPlusMean) {
  VisionZipOptions o;
  o.dominant = dominant;
  o.contextual = contextual;
  o.merge = merge;
  return o;
}

// Dominant (3): patches 5, 10, 12 (attention .9, .8, .7; every other patch <= .16).
// The rest, in order: 0 1 2 3 4 6 7 8 9 11 13 14 15 (R = 13); step = floor(13 / 3) = 4, so the
// targets are the rest's positions 0, 4, 8: patches 0, 4, 9. Assignment by cosine (see the
// features): 0 <- {1, 6, 14}, 4 <- {2, 7, 8, 15}, 9 <- {3, 11, 13}.
// Output: CLS, dominant 5 10 12 (original order), then the contextual tokens 0 4 9.
// target + mean: patch 0: (1,0,0) + ((3+5+2)/3, (1+0+0)/3, (0+1+1)/3) = (13/3, 1/3, 2/3)
//                patch 4: (0,2,0) + ((0+1+0+0)/4, (4+2+2+3)/4, (0+0+1-1)/4) = (1/4, 19/4, 0)
//                patch 9: (0,0,3) + ((0+1+0)/3, (0+0+1)/3, (1+4+2)/3) = (1/3, 1/3, 16/3)
TEST(OracleVisionZip, DominantByClsAttentionContextualByUniformTargetsTargetPlusMean) {
  std::vector<TokenInfo> ledger = frame_ledger(16);
  at::Tensor hidden = scripted_hidden();
  VisionZip vz(options(3, 3));
  View v = view_of(ledger, hidden, scripted_cls_attention());
  EXPECT_EQ(vz.max_kept(v), 1 + 3 + 3);
  KeepPlan plan = vz.decide(v);
  EXPECT_EQ(plan.keep, (Ids{0, 6, 11, 13, 1, 5, 10}));  // indices = patch + 1
  ASSERT_EQ(plan.merges.size(), 3u);
  EXPECT_EQ(plan.merges[0].into, 1);
  EXPECT_EQ(plan.merges[0].members, (Ids{1, 2, 7, 15}));
  EXPECT_EQ(plan.merges[1].into, 5);
  EXPECT_EQ(plan.merges[1].members, (Ids{5, 3, 8, 9, 16}));
  EXPECT_EQ(plan.merges[2].into, 10);
  EXPECT_EQ(plan.merges[2].members, (Ids{10, 4, 12, 14}));

  apply_frame(plan, hidden, ledger);
  EXPECT_EQ(patches_of(ledger), (Ids{-1, 5, 10, 12, 0, 4, 9}));
  expect_row(hidden, 0, {9, 9, 9});
  expect_row(hidden, 1, {1, 1, 1});
  expect_row(hidden, 2, {2, 2, 2});
  expect_row(hidden, 3, {-1, 1, 0});
  expect_row(hidden, 4, {13.0 / 3, 1.0 / 3, 2.0 / 3});
  expect_row(hidden, 5, {0.25, 4.75, 0});
  expect_row(hidden, 6, {1.0 / 3, 1.0 / 3, 16.0 / 3});
  EXPECT_EQ(ledger[4].size, 4);  // the target and its 3
  EXPECT_EQ(ledger[5].size, 5);
  EXPECT_EQ(ledger[6].size, 4);
}

// Same frame, merge = mean: the plain mean of the target and its assigned patches (sizes 1).
//   patch 0: ((1+3+5+2)/4, (0+1+0+0)/4, (0+0+1+1)/4) = (11/4, 1/4, 1/2)
//   patch 4: ((0+0+1+0+0)/5, (2+4+2+2+3)/5, (0+0+0+1-1)/5) = (1/5, 13/5, 0)
//   patch 9: ((0+0+1+0)/4, (0+0+0+1)/4, (3+1+4+2)/4) = (1/4, 1/4, 5/2)
TEST(OracleVisionZip, MeanMergeIsTheSizeWeightedMeanOfTheGroup) {
  std::vector<TokenInfo> ledger = frame_ledger(16);
  at::Tensor hidden = scripted_hidden();
  VisionZip vz(options(3, 3, VisionZipMerge::kMean));
  KeepPlan plan = vz.decide(view_of(ledger, hidden, scripted_cls_attention()));
  apply_frame(plan, hidden, ledger);
  ASSERT_EQ(hidden.size(0), 7);
  expect_row(hidden, 4, {11.0 / 4, 0.25, 0.5});
  expect_row(hidden, 5, {0.2, 2.6, 0});
  expect_row(hidden, 6, {0.25, 0.25, 2.5});
}

// Patch 2 in S (attention .03, far from the top): it takes one of the 3 dominant places, so the
// dominant set is S + the best two others: patches 2, 5, 10 (12 drops out). The rest: 0 1 3 4 6 7
// 8 9 11 12 13 14 15 (R = 13, step 4): targets at positions 0, 4, 8: patches 0, 6, 11.
// With 5 tokens in S (patches 0..4) and dominant 3: S alone is dominant (5), + 3 contextual.
TEST(OracleVisionZip, TokensInSAreAlwaysDominant) {
  std::vector<TokenInfo> ledger = frame_ledger(16);
  ledger[3].in_s = true;  // patch 2
  at::Tensor hidden = scripted_hidden();
  VisionZip vz(options(3, 3));
  View v = view_of(ledger, hidden, scripted_cls_attention());
  EXPECT_EQ(vz.max_kept(v), 7);
  KeepPlan plan = vz.decide(v);
  EXPECT_EQ(plan.keep, (Ids{0, 3, 6, 11, 1, 7, 12}));
  apply_frame(plan, hidden, ledger);  // would throw if S were dropped or merged away
  EXPECT_TRUE(ledger[1].in_s);

  std::vector<TokenInfo> many = frame_ledger(16);
  for (int i = 1; i <= 5; ++i) many[static_cast<size_t>(i)].in_s = true;
  View w = view_of(many, scripted_hidden(), scripted_cls_attention());
  EXPECT_EQ(vz.max_kept(w), 1 + 5 + 3);
  KeepPlan p2 = vz.decide(w);
  EXPECT_EQ(static_cast<int64_t>(p2.keep.size()), 9);
  EXPECT_EQ((Ids(p2.keep.begin(), p2.keep.begin() + 6)), (Ids{0, 1, 2, 3, 4, 5}));
}

// Keep-all settings: dominant >= the patches keeps every token; contextual >= the rest makes
// every remaining patch a target (step 1) with nothing to merge. contextual 0 keeps CLS + dominant.
TEST(OracleVisionZip, KeepAllSettingsAndNoContextual) {
  std::vector<TokenInfo> ledger = frame_ledger(16);
  at::Tensor hidden = scripted_hidden();
  View v = view_of(ledger, hidden, scripted_cls_attention());
  for (VisionZip vz : {VisionZip(options(16, 10)), VisionZip(options(1000000, 10)), VisionZip(options(3, 13)),
                       VisionZip(options(0, 16))}) {
    KeepPlan plan = vz.decide(v);
    EXPECT_TRUE(plan.merges.empty());
    Ids sorted = plan.keep;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, KeepPlan::keep_all(17).keep);
    EXPECT_EQ(vz.max_kept(v), 17);
  }
  VisionZip none(options(3, 0));
  EXPECT_EQ(none.decide(v).keep, (Ids{0, 6, 11, 13}));
  EXPECT_EQ(none.max_kept(v), 4);
}

TEST(OracleVisionZip, ActsAtTheFeatureLayerAndReadsItsClsRow) {
  VisionZip vz(VisionZipOptions{});
  Needs n = vz.needs(24);
  EXPECT_EQ(n.layers, std::vector<int>{22});
  EXPECT_EQ(n.vision_cls_attention, std::vector<int>{22});
  std::vector<TokenInfo> ledger = frame_ledger(16);
  View v = view_of(ledger, scripted_hidden(), at::Tensor());
  EXPECT_THROW(vz.decide(v), InternalError);
}

// Through the tiny model's tower (4 layers, feature layer 2 = -2, 24 x 24 patches): a frame
// reaches the LLM with dominant + contextual tokens (CLS is dropped by LLaVA's feature select).
TEST(OracleVisionZip, AFrameThroughTheTowerKeepsDominantPlusContextual) {
  tune_allocator();
  c10::InferenceMode guard;
  std::string dir = test::temp_dir() + "/visionzip-tiny";
  model::TinyModelOptions o;
  o.seed = 17;
  model::write_tiny_model(dir, o);
  auto m = model::VisionLanguageModel::load(dir);
  Chain chain;
  chain.add(std::make_unique<VisionZip>(options(54, 10)));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(4);
  at::Tensor pixels = at::normal(0.0, 1.0, {1, 3, m->image_size(), m->image_size()}, gen);
  EncodedFrame f = chain.encode_frame(*m, pixels, 0, 0.0);
  EXPECT_EQ(f.features.size(0), 64);
  ASSERT_EQ(f.ledger.size(), 64u);
  double size = 0;
  for (const auto& e : f.ledger) size += e.size;
  EXPECT_EQ(size, 576);  // every patch is kept or merged into a contextual token
  ASSERT_EQ(chain.vision_records().size(), 1u);
  EXPECT_EQ(chain.vision_records()[0].layer, m->feature_layer());
}

}  // namespace
}  // namespace mustdrop::prune
