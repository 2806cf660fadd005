// Oracle tests: each pruner on scripted features and attention, against hand-worked answers.
// Every expected value below is worked out by hand in the comment next to it, never taken from
// an earlier run of the code.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "prune/apply.h"
#include "prune/baselines/fastv.h"
#include "prune/baselines/sparsevlm.h"
#include "prune/baselines/tome.h"
#include "prune/mustdrop/dual_attention.h"
#include "prune/mustdrop/important_set.h"
#include "prune/mustdrop/kv_evict.h"
#include "oracle_util.h"
#include "prune/mustdrop/lsm.h"

namespace mustdrop::prune {
namespace {

using Ids = std::vector<int64_t>;

// The ledger of one frame exactly as Chain::encode_frame builds it: CLS (patch -1), then the
// patches in raster order, id = frame_seq * kIdsPerFrame + patch + 1.
std::vector<TokenInfo> frame_ledger(int64_t frame_seq, int64_t n_patches) {
  std::vector<TokenInfo> out;
  for (int64_t i = -1; i < n_patches; ++i) {
    TokenInfo e;
    e.id = frame_seq * kIdsPerFrame + i + 1;
    e.frame_seq = e.first_frame = e.last_frame = frame_seq;
    e.patch = i;
    e.t_first_sec = e.t_last_sec = 0.5 * static_cast<double>(frame_seq);
    out.push_back(e);
  }
  return out;
}

// A vision block for the LLM stages: n tokens, ids 1..n; `s` marks the tokens in S.
std::vector<TokenInfo> block_ledger(int64_t n, const Ids& s = {}) {
  std::vector<TokenInfo> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[size_t(i)].id = i + 1, out[size_t(i)].patch = i;
  for (int64_t i : s) out[size_t(i)].in_s = true;
  return out;
}

at::Tensor matrix(const std::vector<double>& v, int64_t rows, int64_t cols, at::ScalarType t = at::kFloat) {
  return at::tensor(v, at::TensorOptions().dtype(at::kDouble)).view({rows, cols}).to(t);
}

at::Tensor unit_vector(int64_t d, int64_t i) {
  at::Tensor v = at::zeros({d}, at::TensorOptions().dtype(at::kFloat));
  v[i] = 1.0;
  return v;
}

using test_util::expect_row;

// `uniform`: a plain mean (weights all 1); else a size-weighted mean (no weights).
void expect_merge(const MergeGroup& g, int64_t into, const Ids& members, bool uniform = false) {
  EXPECT_EQ(g.into, into);
  EXPECT_EQ(g.members, members);
  if (uniform) {
    EXPECT_EQ(g.weights, std::vector<double>(members.size(), 1.0));
  } else {
    EXPECT_TRUE(g.weights.empty());
  }
}

Ids plus_one(const Ids& patches) {  // patch -> index in a list that starts with CLS
  Ids out;
  for (int64_t p : patches) out.push_back(p + 1);
  return out;
}
Ids with_cls(const std::vector<Ids>& patch_sets) {  // CLS + the patches' indices, ascending
  Ids out = {0};
  for (const Ids& ps : patch_sets) {
    for (int64_t p : ps) out.push_back(p + 1);
  }
  std::sort(out.begin(), out.end());
  return out;
}

View vision_view(std::vector<TokenInfo>& ledger, const at::Tensor& hidden, int grid) {
  View v;
  v.stage = Stage::VisionLayer;
  v.tokens = &ledger;
  v.hidden = hidden;
  v.grid = grid;
  v.n_layers = 24;
  v.feature_layer = 22;
  return v;
}

std::vector<Growth> apply_vision(const KeepPlan& plan, at::Tensor& hidden, std::vector<TokenInfo>& ledger) {
  PlanTarget target;
  target.merged = {&hidden};
  target.ledger = &ledger;
  target.protect_first = true;
  return apply_plan(plan, target, "oracle");
}

// A Prefill view: [sys | vision (n_vision from vision_begin) | text] of n_tokens, `rows` in `attention`.
View prefill_view(std::vector<TokenInfo>& ledger, int64_t vision_begin, int64_t n_tokens, Ids rows,
                  const at::Tensor& attention) {
  View v;
  v.stage = Stage::Prefill;
  v.layer = 2;
  v.n_layers = 32;
  v.tokens = &ledger;
  v.vision_begin = vision_begin;
  v.n_vision = static_cast<int64_t>(ledger.size());
  v.n_tokens = n_tokens;
  v.rows = std::move(rows);
  v.attention = attention;
  return v;
}

// Applies a plan to the vision block at `offset` of `hidden` (Prefill/Decode: no CLS).
void apply_block(const KeepPlan& plan, at::Tensor* hidden, int64_t offset, std::vector<TokenInfo>& ledger) {
  PlanTarget target;
  if (hidden) target.merged = {hidden};
  target.offset = offset;
  target.ledger = &ledger;
  apply_plan(plan, target, "oracle");
}

// The patches of the k=3 windows of a 6x6 grid, cells in raster order inside the window.
const Ids kW0 = {0, 1, 2, 6, 7, 8, 12, 13, 14};
const Ids kW1 = {3, 4, 5, 9, 10, 11, 15, 16, 17};
const Ids kW2 = {18, 19, 20, 24, 25, 26, 30, 31, 32};
const Ids kW3 = {21, 22, 23, 27, 28, 29, 33, 34, 35};

// 1. LSM on 6x6, k=3: w0 = (j+1)*u and w3 = (10-j)*u' (one direction each: every cosine 1,
// score 1 >= 0.8); w1 and w2 hold e0..e8 (pairwise cosine 0, score 0). So exactly w0 and w3
// merge, into their top-left cells (patch 0 -> index 1, patch 21 -> index 22).
// Kept patches: 0 | w1 | w2 | 21 -> raster: 0,3,4,5,9,10,11,15,16,17,18,19,20,21,24,25,26,30,31,32
// (20 patches + CLS = 21 = 37 - 2*8). Merged rows: mean (j+1) over j=0..8 = 45/9 = 5 -> 5u;
// mean (10-j) = (90-36)/9 = 6 -> 6u'. With u = e9+e10, u' = e9-e10 (D = 11).
TEST(OracleLsm, TwoAlikeWindowsMergeIntoTopLeftCell) {
  const int64_t d = 11;
  at::Tensor u = unit_vector(d, 9) + unit_vector(d, 10), u2 = unit_vector(d, 9) - unit_vector(d, 10);
  at::Tensor hidden = at::zeros({37, d}, at::TensorOptions().dtype(at::kFloat));
  hidden[0].fill_(1.0);
  for (int j = 0; j < 9; ++j) {
    hidden[kW0[size_t(j)] + 1].copy_(u * double(j + 1));
    hidden[kW1[size_t(j)] + 1].copy_(unit_vector(d, j));
    hidden[kW2[size_t(j)] + 1].copy_(unit_vector(d, j));
    hidden[kW3[size_t(j)] + 1].copy_(u2 * double(10 - j));
  }
  auto ledger = frame_ledger(0, 36);
  prune::LsmOptions o;  // layer 0, window 3, threshold 0.8, temporal off
  Lsm lsm(o);
  KeepPlan plan = lsm.decide(vision_view(ledger, hidden, 6));

  const Ids kept_patches = {0, 3, 4, 5, 9, 10, 11, 15, 16, 17, 18, 19, 20, 21, 24, 25, 26, 30, 31, 32};
  EXPECT_EQ(plan.keep, with_cls({kept_patches}));
  ASSERT_EQ(plan.merges.size(), 2u);
  expect_merge(plan.merges[0], 1, plus_one(kW0));
  expect_merge(plan.merges[1], 22, plus_one(kW3));
  EXPECT_TRUE(plan.absorbed.empty());

  apply_vision(plan, hidden, ledger);
  ASSERT_EQ(hidden.size(0), 21);
  ASSERT_EQ(ledger.size(), 21u);
  expect_row(hidden, 0, std::vector<double>(size_t(d), 1.0));  // CLS untouched, first
  expect_row(hidden, 1, {0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 5});
  expect_row(hidden, 14, {0, 0, 0, 0, 0, 0, 0, 0, 0, 6, -6});  // patch 21 is the 14th kept token
  expect_row(hidden, 2, {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});   // patch 3 = w1 cell 0 = e0
  EXPECT_EQ(ledger[0].patch, -1);
  for (size_t i = 1; i < ledger.size(); ++i) EXPECT_EQ(ledger[i].patch, kept_patches[i - 1]);
  EXPECT_EQ(ledger[1].size, 9);
  EXPECT_EQ(ledger[14].size, 9);
  EXPECT_EQ(ledger[2].size, 1);
}

// 2a. One 3x3 window (grid 3): cells 0..4 = p = (2,0), cells 5..8 = q = (3,4); cos(p,q) = 3/5.
// Ordered pairs i != j: 5*4 = 20 inside p (cos 1), 4*3 = 12 inside q (cos 1), 2*5*4 = 40 across
// (cos 0.6): score = (20 + 12 + 24) / 72 = 56/72 = 7/9 = 0.777...
// tau = 7/9 - 1e-4 merges (into index 1; mean = (5p + 4q)/9 = (22/9, 16/9)); 7/9 + 1e-4 does not.
TEST(OracleLsm, ThresholdEdgesAroundExactScore) {
  std::vector<double> v = {0, 1};
  for (int j = 0; j < 5; ++j) v.insert(v.end(), {2, 0});
  for (int j = 0; j < 4; ++j) v.insert(v.end(), {3, 4});
  const at::Tensor hidden0 = matrix(v, 10, 2);
  const double score = 7.0 / 9.0;

  prune::LsmOptions below;
  below.threshold = score - 1e-4;
  auto ledger = frame_ledger(0, 9);
  at::Tensor hidden = hidden0.clone();
  KeepPlan plan = Lsm(below).decide(vision_view(ledger, hidden, 3));
  EXPECT_EQ(plan.keep, (Ids{0, 1}));
  ASSERT_EQ(plan.merges.size(), 1u);
  expect_merge(plan.merges[0], 1, (Ids{1, 2, 3, 4, 5, 6, 7, 8, 9}));
  apply_vision(plan, hidden, ledger);
  expect_row(hidden, 1, {22.0 / 9.0, 16.0 / 9.0});
  EXPECT_EQ(ledger[1].size, 9);

  prune::LsmOptions above;
  above.threshold = score + 1e-4;
  auto ledger2 = frame_ledger(0, 9);
  KeepPlan none = Lsm(above).decide(vision_view(ledger2, hidden0, 3));
  EXPECT_EQ(none.keep, (Ids{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_TRUE(none.merges.empty());
}

// 2b. 7x7 grid, k=3: 7/3 = 2 windows per side -> 4 full windows on rows/cols 0..5; column 6
// (patches 6,13,20,27,34,41) and row 6 (42..48) are 13 edge tokens that stay. All 49 tokens are
// the same vector, so all 4 windows merge (and the identical edge tokens must still stay).
// Kept patches: tops-left 0,3,21,24 + edges -> 0,3,6,13,20,21,24,27,34,41,42..48 (17) + CLS = 18.
TEST(OracleLsm, GridNotDividedByWindowKeepsEdges) {
  at::Tensor hidden = at::zeros({50, 3}, at::TensorOptions().dtype(at::kFloat));
  hidden[0][2] = 1.0;
  for (int64_t i = 1; i < 50; ++i) hidden[i].copy_(at::tensor({1.0f, 2.0f, 3.0f}));
  auto ledger = frame_ledger(0, 49);
  prune::LsmOptions o;
  Lsm lsm(o);
  KeepPlan plan = lsm.decide(vision_view(ledger, hidden, 7));
  EXPECT_EQ(plan.keep, with_cls({{0, 3, 6, 13, 20, 21, 24, 27, 34, 41, 42, 43, 44, 45, 46, 47, 48}}));
  ASSERT_EQ(plan.merges.size(), 4u);
  const std::vector<Ids> windows = {{0, 1, 2, 7, 8, 9, 14, 15, 16},
                                    {3, 4, 5, 10, 11, 12, 17, 18, 19},
                                    {21, 22, 23, 28, 29, 30, 35, 36, 37},
                                    {24, 25, 26, 31, 32, 33, 38, 39, 40}};
  for (size_t w = 0; w < 4; ++w) expect_merge(plan.merges[w], windows[w][0] + 1, plus_one(windows[w]));
  apply_vision(plan, hidden, ledger);
  EXPECT_EQ(hidden.size(0), 18);
  EXPECT_EQ(ledger.size(), 18u);
}

// 3. Temporal windows. Features: frame 0: cell j of every window = e_j; frames >= 1: w0..w2 the
// same (static), w3 = e_{9+j} (moving: co-located cosine 0 vs frame 0). threshold 2.0: no
// spatial merge. Anchor rules (lsm.cpp): a kept window's cells anchor to this frame's tokens;
// an absorbed cell keeps its old anchor; a cell is anchored only if frame - anchor_frame <= t-1.
struct TemporalStream {
  explicit TemporalStream(int t) : lsm(options(t)) {}
  static prune::LsmOptions options(int t) {
    prune::LsmOptions o;
    o.threshold = 2.0;
    o.temporal_frames = t;
    o.temporal_threshold = 0.9;
    return o;
  }
  KeepPlan frame(int64_t f, std::vector<Growth>* growths = nullptr) {
    const int64_t d = 18;
    at::Tensor hidden = at::zeros({37, d}, at::TensorOptions().dtype(at::kFloat));
    hidden[0].fill_(1.0);
    for (int j = 0; j < 9; ++j) {
      for (const Ids* w : {&kW0, &kW1, &kW2}) hidden[(*w)[size_t(j)] + 1].copy_(unit_vector(d, j));
      hidden[kW3[size_t(j)] + 1].copy_(unit_vector(d, f == 0 ? j : 9 + j));
    }
    auto ledger = frame_ledger(f, 36);
    KeepPlan plan = lsm.decide(vision_view(ledger, hidden, 6));
    std::vector<Growth> g = apply_vision(plan, hidden, ledger);  // the plan must be valid
    if (growths) *growths = g;
    return plan;
  }
  Lsm lsm;
};

// (index, into_id) pairs for the windows `ws` (window order, raster order inside), absorbed into
// frame `into_frame`'s tokens of the same cells.
using Pairs = std::vector<std::pair<int64_t, int64_t>>;
Pairs absorbed_into(const std::vector<Ids>& ws, int64_t into_frame) {
  Pairs out;
  for (const Ids& w : ws) {
    for (int64_t p : w) out.push_back({p + 1, into_frame * kIdsPerFrame + p + 1});
  }
  return out;
}
Pairs absorbed_of(const KeepPlan& plan) {
  Pairs out;
  for (const auto& a : plan.absorbed) out.push_back({a.index, a.into_id});
  return out;
}

// t = 3: frame 0 keeps all (no anchors) -> every cell anchored to frame 0.
// frame 1: w0..w2 co = 1 >= 0.9, 1-0 <= 2 -> absorbed into frame 0 ids; w3 co = 0 -> kept, anchors -> frame 1.
// frame 2: w0..w2 still anchored to frame 0 (2-0 = 2 <= 2) -> absorbed into frame 0 ids;
//          w3 equals frame 1's w3 (2-1 = 1) -> absorbed into frame 1 ids: only CLS stays.
// frame 3: w0..w2: 3-0 = 3 > 2 -> not anchored -> kept (new anchors); w3: 3-1 = 2 -> absorbed into frame 1.
TEST(OracleLsm, TemporalWindowsOfThreeFrames) {
  TemporalStream s(3);
  KeepPlan f0 = s.frame(0);
  EXPECT_EQ(f0.keep, with_cls({kW0, kW1, kW2, kW3}));
  EXPECT_TRUE(f0.absorbed.empty());

  std::vector<Growth> growths;
  KeepPlan f1 = s.frame(1, &growths);
  EXPECT_EQ(f1.keep, with_cls({kW3}));
  EXPECT_EQ(absorbed_of(f1), absorbed_into({kW0, kW1, kW2}, 0));
  ASSERT_EQ(growths.size(), 27u);
  EXPECT_EQ(growths[0].id, 1);  // patch 0 of frame 0
  EXPECT_EQ(growths[0].size, 1);
  EXPECT_EQ(growths[0].last_frame, 1);
  EXPECT_DOUBLE_EQ(growths[0].t_last_sec, 0.5);

  KeepPlan f2 = s.frame(2);
  EXPECT_EQ(f2.keep, (Ids{0}));
  auto want2 = absorbed_into({kW0, kW1, kW2}, 0);
  auto w3_into_1 = absorbed_into({kW3}, 1);
  want2.insert(want2.end(), w3_into_1.begin(), w3_into_1.end());
  EXPECT_EQ(absorbed_of(f2), want2);

  KeepPlan f3 = s.frame(3);
  EXPECT_EQ(f3.keep, with_cls({kW0, kW1, kW2}));
  EXPECT_EQ(absorbed_of(f3), w3_into_1);
}

// t = 2: frame 1 as above (static absorbed into frame 0, moving w3 kept -> anchored to frame 1).
// frame 2: w0..w2 anchors are frame 0's, 2-0 = 2 > 1 -> too old -> kept, re-anchored to frame 2;
//          w3 anchored to frame 1 (2-1 = 1 <= 1), same features -> absorbed into frame 1's ids.
// frame 3: w0..w2 absorbed into frame 2's ids; w3 anchor frame 1, 3-1 = 2 > 1 -> kept.
TEST(OracleLsm, TemporalWindowsOfTwoFrames) {
  TemporalStream s(2);
  s.frame(0);
  KeepPlan f1 = s.frame(1);
  EXPECT_EQ(f1.keep, with_cls({kW3}));
  EXPECT_EQ(absorbed_of(f1), absorbed_into({kW0, kW1, kW2}, 0));
  KeepPlan f2 = s.frame(2);
  EXPECT_EQ(f2.keep, with_cls({kW0, kW1, kW2}));
  EXPECT_EQ(absorbed_of(f2), absorbed_into({kW3}, 1));
  KeepPlan f3 = s.frame(3);
  EXPECT_EQ(f3.keep, with_cls({kW3}));
  EXPECT_EQ(absorbed_of(f3), absorbed_into({kW0, kW1, kW2}, 2));
}

// 4. |S| = ceil(0.08 * N_v): 25 -> ceil(2.0) = 2; 576 -> ceil(46.08) = 47; 575 -> ceil(46.0) = 46;
// 12 -> ceil(0.96) = 1; 13 -> ceil(1.04) = 2. N_v = 25 with CLS row: [7] = 0.2, [3] = [19] = 0.15
// (tie: lower index first), rest 0.01 -> S = patches {3, 7} -> indices {4, 8} (+1 for CLS).
TEST(OracleImportantSet, TopCeilRatioOfClsAttention) {
  prune::ImportantSetOptions o;  // layer -1, ratio 0.08
  ImportantSet is(o);
  EXPECT_EQ(is.set_size(25), 2);
  EXPECT_EQ(is.set_size(576), 47);
  EXPECT_EQ(is.set_size(575), 46);
  EXPECT_EQ(is.set_size(12), 1);
  EXPECT_EQ(is.set_size(13), 2);

  auto ledger = frame_ledger(0, 25);
  at::Tensor hidden = at::zeros({26, 2}, at::TensorOptions().dtype(at::kFloat));
  View v = vision_view(ledger, hidden, 5);
  v.layer = 23;
  EXPECT_THROW(is.decide(v), InternalError);  // no CLS row given
  v.cls_attention = at::full({25}, 0.01, at::TensorOptions().dtype(at::kFloat));
  v.cls_attention[7] = 0.2;
  v.cls_attention[3] = 0.15;
  v.cls_attention[19] = 0.15;
  KeepPlan plan = is.decide(v);
  EXPECT_EQ(plan.keep, KeepPlan::keep_all(26).keep);
  EXPECT_EQ(plan.important, (Ids{4, 8}));
  EXPECT_TRUE(plan.merges.empty());
  apply_vision(plan, hidden, ledger);
  for (size_t i = 0; i < ledger.size(); ++i) EXPECT_EQ(ledger[i].in_s, i == 4 || i == 8) << i;

  // N_v = 576, attention[j] = (5j mod 576): a permutation of 0..575 (gcd(5, 576) = 1); the top 47
  // are the j with 5j mod 576 >= 529.
  auto big = frame_ledger(0, 576);
  View vb = vision_view(big, at::zeros({577, 2}), 24);
  std::vector<double> a(576);
  Ids want;
  for (int64_t j = 0; j < 576; ++j) {
    a[size_t(j)] = double((5 * j) % 576);
    if ((5 * j) % 576 >= 529) want.push_back(j + 1);
  }
  vb.cls_attention = at::tensor(a, at::TensorOptions().dtype(at::kDouble)).to(at::kFloat);
  KeepPlan pb = is.decide(vb);
  EXPECT_EQ(pb.important.size(), 47u);
  EXPECT_EQ(pb.important, want);
  EXPECT_EQ(pb.keep.size(), 577u);
}

// 5. Prefill layout: [sys 0,1 | vision 2..6 (v0..v4) | text 7,8,9]; rows 7,8,9. Vision columns:
//        v0    v1    v2    v3    v4(S)
//   r7  .35   .20   .05   .10   .05      (sys col 0: .25)
//   r8  .00   .20   .05   .40   .00      (sys .35)
//   r9  .00   .20   .00   .30   .05      (sys .45)
//  sum  .35   .60   .10   .80   .10   -> G = 1.95; share = .1795 .3077 .0513 .4103 .0513
//  max  .35   .20   .05   .40   .05
// gamma = 0.2, alpha = 0.21: v0 low share/high max -> kept; v1 high share/low max -> kept;
// v2 low/low -> dropped; v3 high/high -> kept; v4 low/low but in S -> kept. keep = {0,1,3,4}.
// Budget 3: rank = max(share/.2, max/.21) = v0 1.667, v1 1.538, v2 .256, v3 2.051; S (v4) takes
// one place, the best two others are v3, v0 -> {0,3,4}. Budget 1: S alone -> {4}.
struct DualCase {
  explicit DualCase(const Ids& s) : ledger(block_ledger(5, s)) {
    at::Tensor a = matrix({.25, 0, .35, .20, .05, .10, .05, 0, 0, 0,  //
                           .35, 0, .00, .20, .05, .40, .00, 0, 0, 0,  //
                           .45, 0, .00, .20, .00, .30, .05, 0, 0, 0},
                          3, 10);
    v = prefill_view(ledger, 2, 10, {7, 8, 9}, a);
    v.hidden = at::arange(10, at::TensorOptions().dtype(at::kFloat)).view({10, 1});
  }
  std::vector<TokenInfo> ledger;
  View v;
};

prune::DualAttentionOptions dual_options(int target) {
  prune::DualAttentionOptions o;
  o.layers = {2};
  o.global_threshold = 0.2;
  o.local_threshold = 0.21;
  o.target_tokens_per_frame = target;
  return o;
}

TEST(OracleDualAttention, AndRuleKeepsEitherHighAndS) {
  DualAttention da(dual_options(0));
  DualCase c({4});
  EXPECT_EQ(da.attention_rows(c.v), (Ids{7, 8, 9}));
  KeepPlan plan = da.decide(c.v);
  EXPECT_EQ(plan.keep, (Ids{0, 1, 3, 4}));

  DualCase no_s({});
  EXPECT_EQ(da.decide(no_s.v).keep, (Ids{0, 1, 3}));  // without S, v4 goes like v2

  // Applied at offset 2: hidden rows 0..9 hold their index -> 0,1 | 2,3,5,6 | 7,8,9.
  at::Tensor hidden = c.v.hidden.clone();
  apply_block(plan, &hidden, 2, c.ledger);
  EXPECT_TRUE(at::equal(hidden.view({-1}), at::tensor({0.f, 1.f, 2.f, 3.f, 5.f, 6.f, 7.f, 8.f, 9.f})));
  EXPECT_EQ(c.ledger.size(), 4u);
  EXPECT_EQ(c.ledger[3].id, 5);
}

TEST(OracleDualAttention, BudgetModeKeepsExactCountWithS) {
  DualCase c({4});
  EXPECT_EQ(DualAttention(dual_options(3)).decide(c.v).keep, (Ids{0, 3, 4}));
  EXPECT_EQ(DualAttention(dual_options(3)).max_kept(c.v), 3);
  EXPECT_EQ(DualAttention(dual_options(1)).decide(c.v).keep, (Ids{4}));
}

// 6. FastV: [sys 0 | vision 1..6 | text 7,8]; the last token (row 8) attends to the vision
// tokens .05 .30 .10 .20 .02 .25 -> top 3 = tokens 1 (.30), 5 (.25), 3 (.20) -> {1,3,5}.
// With token 0 (.05) in S: S + top 2 -> {0,1,5}. keep_ratio 0.5 of 6 = 3 -> the same {1,3,5}.
TEST(OracleFastv, TopKOfLastTokenRow) {
  std::vector<TokenInfo> ledger = block_ledger(6);
  View v = prefill_view(ledger, 1, 9, {8}, matrix({.05, .05, .30, .10, .20, .02, .25, .03, 0}, 1, 9));
  prune::FastvOptions o;
  o.keep_tokens_per_frame = 3;
  Fastv fastv(o);
  EXPECT_EQ(fastv.attention_rows(v), (Ids{8}));
  EXPECT_EQ(fastv.decide(v).keep, (Ids{1, 3, 5}));
  ledger[0].in_s = true;
  EXPECT_EQ(fastv.decide(v).keep, (Ids{0, 1, 5}));
  ledger[0].in_s = false;
  prune::FastvOptions by_ratio;  // keep_ratio 0.5
  EXPECT_EQ(Fastv(by_ratio).decide(v).keep, (Ids{1, 3, 5}));
}

// 7. ToMe on t0..t6 (3-d). A = {t0 (CLS), t2, t4, t6}, B = {t1, t3, t5}.
//   t0 (1,0,0) CLS   t1 (1,0,0)   t2 (3,4,0)   t3 (0,1,0)   t4 (0,0,2)   t5 (0,0,1)   t6 (12,5,0)
// Best B partner: t0 would be t1 (cos 1) but CLS is protected; t2: t3 (4/5 = .8 > t1 .6);
// t4: t5 (1.0); t6: t1 (12/13 = .923 > t3 5/13). Ranking t4 > t6 > t2; r = 2 merges t4 -> t5 and
// t6 -> t1. keep {0,1,2,3,5}; groups (by B token) {1: 1,6}, {5: 5,4}.
// t6 has size 3: merged t1 = (1*(1,0,0) + 3*(12,5,0))/4 = (37/4, 15/4, 0); t5 = ((0,0,1)+(0,0,2))/2.
const std::vector<double> kTomeX = {1, 0, 0, 1, 0, 0, 3, 4, 0, 0, 1, 0, 0, 0, 2, 0, 0, 1, 12, 5, 0};

TEST(OracleTome, BipartiteMatchingAndSizeWeightedMean) {
  prune::TomeOptions o;
  o.r = 2;
  Tome tome(o);
  auto ledger = frame_ledger(0, 6);
  ledger[6].size = 3;
  at::Tensor hidden = matrix(kTomeX, 7, 3);
  View v = vision_view(ledger, hidden, 0);
  EXPECT_EQ(tome.merges_at(v), 2);
  KeepPlan plan = tome.decide(v);
  EXPECT_EQ(plan.keep, (Ids{0, 1, 2, 3, 5}));
  ASSERT_EQ(plan.merges.size(), 2u);
  expect_merge(plan.merges[0], 1, (Ids{1, 6}));
  expect_merge(plan.merges[1], 5, (Ids{5, 4}));
  apply_vision(plan, hidden, ledger);
  expect_row(hidden, 1, {9.25, 3.75, 0});
  expect_row(hidden, 4, {0, 0, 1.5});
  expect_row(hidden, 2, {3, 4, 0});
  EXPECT_EQ(ledger[1].size, 4);
  EXPECT_EQ(ledger[4].size, 2);

  // t4 in S stays put: the best two movable A tokens are t6 (-> t1) and t2 (-> t3).
  auto ledger_s = frame_ledger(0, 6);
  ledger_s[4].in_s = true;
  KeepPlan ps = tome.decide(vision_view(ledger_s, matrix(kTomeX, 7, 3), 0));
  EXPECT_EQ(ps.keep, (Ids{0, 1, 3, 4, 5}));
  ASSERT_EQ(ps.merges.size(), 2u);
  EXPECT_EQ(ps.merges[0].members, (Ids{1, 6}));
  EXPECT_EQ(ps.merges[1].members, (Ids{3, 2}));
}

// Target mode: 7 tokens = 6 patches, target 4 -> excess 2, spread over the layers left up to the
// feature layer 22 (inclusive): layer 22 -> 1 layer -> r = 2; layer 21 -> 2 layers -> ceil(2/2) = 1;
// layer 0 -> 23 layers -> ceil(2/23) = 1. Target 1: excess 5 at layer 22, capped at |A| - 1 = 3.
// At layer 21 (r = 1) only the best match t4 -> t5 merges.
TEST(OracleTome, TargetModeSpreadsExcessOverLayersLeft) {
  prune::TomeOptions o;
  o.r = 0;
  o.target_tokens_per_frame = 4;
  Tome tome(o);
  auto ledger = frame_ledger(0, 6);
  View v = vision_view(ledger, matrix(kTomeX, 7, 3), 0);
  v.layer = 22;
  EXPECT_EQ(tome.merges_at(v), 2);
  v.layer = 0;
  EXPECT_EQ(tome.merges_at(v), 1);
  v.layer = 21;
  EXPECT_EQ(tome.merges_at(v), 1);
  KeepPlan plan = tome.decide(v);
  EXPECT_EQ(plan.keep, (Ids{0, 1, 2, 3, 5, 6}));
  ASSERT_EQ(plan.merges.size(), 1u);
  expect_merge(plan.merges[0], 5, (Ids{5, 4}));
  o.target_tokens_per_frame = 1;
  v.layer = 22;
  EXPECT_EQ(Tome(o).merges_at(v), 3);
}

// 8. kv_evict, L = 2, ledger ids 1..5 with S = {1, 3}: layer 1 keeps all; layers 2 and 5 keep S
// only; final_kept with final ids {2, 4, 5} (= indices 1, 3, 4) keeps {1, 3, 4}.
TEST(OracleKvEvict, LayersBelowLKeepAllAboveKeepPolicySet) {
  std::vector<TokenInfo> ledger = block_ledger(5, {1, 3});
  View v;
  v.stage = Stage::Decode;
  v.tokens = &ledger;
  v.vision_begin = 3;
  v.n_vision = 5;
  v.n_layers = 8;
  prune::KvEvictOptions o;  // layer 2, after_steps 0, important_set
  KvEvict kv(o);
  EXPECT_TRUE(kv.acts_at_step(0));
  EXPECT_FALSE(kv.acts_at_step(1));
  v.layer = 1;
  EXPECT_EQ(kv.decide(v).keep, (Ids{0, 1, 2, 3, 4}));
  v.layer = 2;
  EXPECT_EQ(kv.decide(v).keep, (Ids{1, 3}));
  EXPECT_EQ(kv.max_kept(v), 2);
  v.layer = 5;
  EXPECT_EQ(kv.decide(v).keep, (Ids{1, 3}));

  o.policy = prune::KvPolicy::kFinalKept;
  KvEvict fk(o);
  const Ids final_ids = {2, 4, 5};
  v.final_ids = &final_ids;
  v.layer = 2;
  KeepPlan plan = fk.decide(v);
  EXPECT_EQ(plan.keep, (Ids{1, 3, 4}));
  apply_block(plan, nullptr, 3, ledger);
  ASSERT_EQ(ledger.size(), 3u);
  EXPECT_EQ(ledger[2].id, 5);
}

// 9. SparseVLM. Prompt: [sys 0 | vision 1..8 | text 9..12]; embeddings: vision (1,0), text
// t0 = t1 = (ln 3, 0), t2 = t3 = (0, 1). Each vision row's logits over text: [ln3, ln3, 0, 0] ->
// softmax [3/8, 3/8, 1/8, 1/8]; mean over vision the same; mean relevance 1/4 -> raters {t0, t1}
// -> rows {9, 10}. Rater rows over the 8 vision tokens:
//   r9  = .30 .02 .10 .06 .01 .14 .05 .04
//   r10 = .10 .02 .20 .06 .01 .10 .05 .04   -> score (mean) = .20 .02 .15 .06 .01 .12 .05 .04
// target 3 -> keep {0 (.20), 2 (.15), 5 (.12)}. Dropped {1,3,4,6,7} = 5, best first 3,6,7,1,4;
// recycle int(5 * .5) + 1 = 3 -> {3,6,7}; clusters min(3, int(3 * .1) + 1) = 1.
// Density peaks on their features (1-d) 0, 1, 3 (dist / sqrt(1)); density from the distances to
// as many nearest rows as clusters (1), the row itself included: exp(0) = 1 for all, a tie the
// lower index wins, so x=0 (token 3) is densest: parent = max dist 3; x=1 -> 1 (to x=0), x=3 -> 2.
// score 3, 1, 2 -> centre token 3. Plan: keep {0,2,3,5}, merge {3: 3,6,7}; merged row = plain
// mean (0+1+3)/3 = 4/3, size 3.
struct SparseCase {
  explicit SparseCase(bool proportional) : ledger(block_ledger(8)) {
    const double l3 = std::log(3.0);
    std::vector<double> e = {0, 0};
    for (int i = 0; i < 8; ++i) e.insert(e.end(), {1, 0});
    e.insert(e.end(), {l3, 0, l3, 0, 0, 1, 0, 1});
    std::vector<double> r9 = {.30, .02, .10, .06, .01, .14, .05, .04};
    std::vector<double> r10 = proportional ? std::vector<double>{.15, .01, .05, .03, .005, .07, .025, .02}
                                           : std::vector<double>{.10, .02, .20, .06, .01, .10, .05, .04};
    std::vector<double> a = {.28};
    a.insert(a.end(), r9.begin(), r9.end());
    a.insert(a.end(), {0, 0, 0, 0, .42});
    a.insert(a.end(), r10.begin(), r10.end());
    a.insert(a.end(), {0, 0, 0, 0});
    v = prefill_view(ledger, 1, 13, {9, 10}, matrix(a, 2, 13));
    v.prompt_embeddings = matrix(e, 13, 2);
    v.prompt_vision_begin = 1;
    v.prompt_n_vision = 8;
    v.hidden = matrix({-1, 10, 11, 12, 0, 14, 15, 1, 3, 20, 21, 22, 23}, 13, 1);
  }
  std::vector<TokenInfo> ledger;
  View v;
};

TEST(OracleSparseVlm, RatersBudgetAndRecycledClusters) {
  prune::SparseVlmOptions o;
  o.layers = {2};
  o.target_tokens_per_frame = 3;
  o.recycle_ratio = 0.5;
  o.cluster_ratio = 0.1;
  SparseVlm svlm(o);
  SparseCase c(false);
  EXPECT_EQ(svlm.raters(c.v), (Ids{0, 1}));
  EXPECT_EQ(svlm.attention_rows(c.v), (Ids{9, 10}));
  KeepPlan plan = svlm.decide(c.v);
  EXPECT_EQ(plan.keep, (Ids{0, 2, 3, 5}));
  ASSERT_EQ(plan.merges.size(), 1u);
  expect_merge(plan.merges[0], 3, (Ids{3, 6, 7}), true);
  EXPECT_EQ(svlm.max_kept(c.v), 4);  // 3 + one cluster
  for (const auto& g : plan.merges) {  // every centre kept; its other members are not
    EXPECT_NE(std::find(plan.keep.begin(), plan.keep.end(), g.into), plan.keep.end());
    for (int64_t m : g.members) {
      if (m != g.into) {
        EXPECT_EQ(std::find(plan.keep.begin(), plan.keep.end(), m), plan.keep.end());
      }
    }
  }
  at::Tensor hidden = c.v.hidden.clone();
  apply_block(plan, &hidden, 1, c.ledger);
  ASSERT_EQ(hidden.size(0), 9);  // 1 sys + 4 vision + 4 text
  EXPECT_NEAR(hidden[3][0].item<double>(), 4.0 / 3.0, 1e-6);
  EXPECT_NEAR(hidden[4][0].item<double>(), 15.0, 1e-6);
  EXPECT_NEAR(hidden[5][0].item<double>(), 20.0, 1e-6);
  EXPECT_EQ(c.ledger[2].size, 3);
}

// Rank mode (scale 1.5, bias 0, no recycling): the two rater rows above are independent -> rank 2
// -> keep int(2 * 1.5) = 3 -> {0, 2, 5}. With r10 = r9 / 2 the relation has rank 1 -> keep
// int(1.5) = 1: score = .75 * r9, best is token 0 -> {0}.
TEST(OracleSparseVlm, RankModeKeepCount) {
  prune::SparseVlmOptions o;
  o.layers = {2};
  o.scale = 1.5;
  o.bias = 0;
  o.recycle_ratio = 0;
  SparseCase c(false);
  EXPECT_EQ(SparseVlm(o).decide(c.v).keep, (Ids{0, 2, 5}));
  SparseCase p(true);
  EXPECT_EQ(SparseVlm(o).decide(p.v).keep, (Ids{0}));
}

// 10. apply_plan refuses a plan that drops S (token 2 in S, keep {0,1,3}) or CLS (keep {1,2,3}
// with protect_first), and one that merges S away into another token.
TEST(OracleApply, RejectsDroppingSOrCls) {
  std::vector<TokenInfo> ledger = frame_ledger(0, 3);
  ledger[2].in_s = true;
  at::Tensor hidden = at::zeros({4, 2});
  PlanTarget target;
  target.merged = {&hidden};
  target.ledger = &ledger;
  target.protect_first = true;
  KeepPlan drop_s;
  drop_s.keep = {0, 1, 3};
  EXPECT_THROW(apply_plan(drop_s, target, "oracle"), InternalError);
  KeepPlan merge_s;
  merge_s.keep = {0, 1, 3};
  merge_s.merges = {MergeGroup{1, {1, 2}, {}}};
  EXPECT_THROW(apply_plan(merge_s, target, "oracle"), InternalError);
  KeepPlan drop_cls;
  drop_cls.keep = {1, 2, 3};
  EXPECT_THROW(apply_plan(drop_cls, target, "oracle"), InternalError);
  // Nothing was changed by the refused plans.
  EXPECT_EQ(ledger.size(), 4u);
  EXPECT_EQ(hidden.size(0), 4);
  KeepPlan ok;
  ok.keep = {0, 2, 3};
  EXPECT_NO_THROW(apply_plan(ok, target, "oracle"));
  EXPECT_EQ(ledger.size(), 3u);
}

}  // namespace
}  // namespace mustdrop::prune
