// DyCoke oracle tests: temporal token merging over a scripted stream of 2 x 2 frames, and the
// decode-time selection on hand-made attention vectors, against hand-worked answers (worked out
// in the comments, never taken from a run of the code); plus one answer on the tiny model whose
// first decode step is checked against a cache with the unselected entries removed.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/sysinfo.h"
#include "model/generate.h"
#include "model/tiny_model.h"
#include "model/vlm.h"
#include "prune/baselines/dycoke.h"
#include "prune/chain.h"
#include "support/test_support.h"

namespace mustdrop::prune {
namespace {

using Ids = std::vector<int64_t>;
using Rows = std::vector<std::vector<double>>;

// One frame of `patches` (CLS first, features (5, 5)): ledger and hidden rows.
struct Frame {
  std::vector<TokenInfo> ledger;
  at::Tensor hidden;
};

Frame frame(int64_t seq, const Rows& patch_rows, const Ids& patches = {0, 1, 2, 3}) {
  Frame f;
  std::vector<double> flat = {5, 5};
  TokenInfo cls;
  cls.id = seq * kIdsPerFrame;
  cls.frame_seq = seq;
  cls.patch = -1;
  f.ledger.push_back(cls);
  for (size_t i = 0; i < patch_rows.size(); ++i) {
    TokenInfo e;
    e.id = seq * kIdsPerFrame + patches[i] + 1;
    e.frame_seq = seq;
    e.patch = patches[i];
    f.ledger.push_back(e);
    flat.insert(flat.end(), patch_rows[i].begin(), patch_rows[i].end());
  }
  f.hidden = at::tensor(flat, at::TensorOptions().dtype(at::kDouble)).view({-1, 2}).to(at::kFloat);
  return f;
}

View output_view(Frame& f) {
  View v;
  v.stage = Stage::VisionOutput;
  v.layer = -1;
  v.tokens = &f.ledger;
  v.hidden = f.hidden;
  v.grid = 2;
  return v;
}

DyCokeTtmOptions ttm(double k) {
  DyCokeTtmOptions o;
  o.merging_ratio = k;
  return o;
}

// The stream (k = 0.5: a non-anchor frame keeps int(0.5 * 4) = 2 of its 4 patches):
//   F0 (anchor) (1,0) (0,1) (1,1) (1,-1)                 -> all
//   F1 vs F0:   (1,0) (1,0) (1,0) (-1,1): cos 1, 0, .707, -1 -> least alike: p3, p1 -> [0, 2, 4]
//   F2 vs F0:   (1,0) (1,0) (0,1) (1,-1): cos 1, 0, .707, 1  -> p1, p2 -> [0, 2, 3]
//              (against F1 it would be cos 1, 1, 0, -1 -> p3, p2 -> [0, 3, 4])
//   F3 vs F2 (full): (1,0) (0,1) (-1,1) (1,-1): cos 1, 0, .707, 1 -> p1, p2 -> [0, 2, 3]
//              (against F2's kept tokens only, p0 and p3 would have no partner and go first:
//               [0, 1, 4]; against F0: cos 1, 1, 0, 1 -> p2 first, not p1)
//   F4 (anchor of the next group) (0,1) x 4              -> all
//   F5 vs F4:   (0,1) (1,0) (0,1) (1,1): cos 1, 0, 1, .707 -> p1, p3 -> [0, 2, 4]
//              (against F0 or F3: cos 0, 0/1, ., . -> p0 would be kept)
const std::vector<Rows> kStream = {
    {{1, 0}, {0, 1}, {1, 1}, {1, -1}}, {{1, 0}, {1, 0}, {1, 0}, {-1, 1}}, {{1, 0}, {1, 0}, {0, 1}, {1, -1}},
    {{1, 0}, {0, 1}, {-1, 1}, {1, -1}}, {{0, 1}, {0, 1}, {0, 1}, {0, 1}}, {{0, 1}, {1, 0}, {0, 1}, {1, 1}}};
const std::vector<Ids> kStreamKeeps = {{0, 1, 2, 3, 4}, {0, 2, 4}, {0, 2, 3}, {0, 2, 3}, {0, 1, 2, 3, 4}, {0, 2, 4}};

TEST(OracleDyCoke, TtmKeepsAnchorsAndTheLeastSimilarTokensOfTheOtherFrames) {
  DyCokeTtm p(ttm(0.5));
  for (size_t i = 0; i < kStream.size(); ++i) {
    Frame f = frame(static_cast<int64_t>(i), kStream[i]);
    View v = output_view(f);
    EXPECT_EQ(p.max_kept(v), static_cast<int64_t>(kStreamKeeps[i].size())) << "frame " << i;
    EXPECT_EQ(p.decide(v).keep, kStreamKeeps[i]) << "frame " << i;
  }
}

TEST(OracleDyCoke, TtmCloneCarriesTheStreamAndResetStartsANewOne) {
  DyCokeTtm p(ttm(0.5));
  for (size_t i = 0; i < 2; ++i) {
    Frame f = frame(static_cast<int64_t>(i), kStream[i]);
    p.decide(output_view(f));
  }
  std::unique_ptr<TokenPruner> copy = p.clone();
  // The original goes on with another frame; the copy still answers frame 2 as the stream does.
  Frame other = frame(9, {{0, 1}, {0, 1}, {0, 1}, {0, 1}});
  p.decide(output_view(other));
  Frame f2 = frame(2, kStream[2]);
  EXPECT_EQ(copy->decide(output_view(f2)).keep, kStreamKeeps[2]);
  // After reset the next frame is an anchor again.
  copy->reset();
  Frame f3 = frame(3, kStream[3]);
  EXPECT_EQ(copy->decide(output_view(f3)).keep, (Ids{0, 1, 2, 3, 4}));
}

// F1 with patch 0 in S (cos 1 with the anchor, the first to go otherwise): S + the least alike
// other (p3, cos -1) -> [0, 1, 4]. With k = 0: every token (keep-all setting).
TEST(OracleDyCoke, TtmKeepsSAndKeepsAllWithZeroRatio) {
  DyCokeTtm p(ttm(0.5));
  Frame f0 = frame(0, kStream[0]);
  p.decide(output_view(f0));
  Frame f1 = frame(1, kStream[1]);
  f1.ledger[1].in_s = true;
  EXPECT_EQ(p.max_kept(output_view(f1)), 3);
  EXPECT_EQ(p.decide(output_view(f1)).keep, (Ids{0, 1, 4}));

  DyCokeTtm all(ttm(0.0));
  for (size_t i = 0; i < kStream.size(); ++i) {
    Frame f = frame(static_cast<int64_t>(i), kStream[i]);
    EXPECT_EQ(all.decide(output_view(f)).keep, (Ids{0, 1, 2, 3, 4})) << "frame " << i;
  }
}

// The anchor lost patch 2 to an earlier stage (tokens p0, p1, p3). F1 (4 patches, keeps 2):
// p2 has no partner and goes first; then the least alike compared one: p0 (cos 0; p1 and p3
// have cos 1) -> [0, 1, 3].
TEST(OracleDyCoke, TtmComparesOnlyPositionsBothFramesHold) {
  DyCokeTtm p(ttm(0.5));
  Frame f0 = frame(0, {{1, 0}, {0, 1}, {1, -1}}, {0, 1, 3});
  p.decide(output_view(f0));
  Frame f1 = frame(1, {{0, 1}, {0, 1}, {1, 0}, {1, -1}});
  EXPECT_EQ(p.decide(output_view(f1)).keep, (Ids{0, 1, 3}));
}

// The official count: int((1 - 0.7) * 196) = int(58.8) = 58; of 576: int(172.8) = 172.
TEST(OracleDyCoke, TtmBudgetIsTheOfficialCount) {
  for (int64_t n : {196, 576}) {
    DyCokeTtm p{DyCokeTtmOptions{}};
    std::vector<TokenInfo> ledger(static_cast<size_t>(n + 1));
    View v;
    v.tokens = &ledger;
    v.hidden = at::randn({n + 1, 3});
    EXPECT_EQ(p.max_kept(v), n + 1);  // anchor
    p.decide(v);
    EXPECT_EQ(p.max_kept(v), 1 + (n == 196 ? 58 : 172));
    EXPECT_EQ(static_cast<int64_t>(p.decide(v).keep.size()), 1 + (n == 196 ? 58 : 172));
  }
}

// ---- dycoke.kv ----

// Layer 2's vision block: 5 entries (ids 1..5) at cache indices 2..6 of 10 (2 system, then text
// and generated tokens); the new token's attention row over the 10 entries, vision part `a`.
View kv_view(std::vector<TokenInfo>& ledger, const std::vector<double>& a, int step) {
  std::vector<double> row = {0.05, 0.05};
  row.insert(row.end(), a.begin(), a.end());
  row.insert(row.end(), {0.01, 0.01, 0.01});
  View v;
  v.stage = Stage::Decode;
  v.layer = 2;
  v.n_layers = 4;
  v.tokens = &ledger;
  v.vision_begin = 2;
  v.n_vision = static_cast<int64_t>(ledger.size());
  v.n_tokens = 10;
  v.rows = {9};
  v.attention = at::tensor(row, at::TensorOptions().dtype(at::kDouble)).view({1, 10}).to(at::kFloat);
  v.step = step;
  return v;
}

std::vector<TokenInfo> block(int64_t n) {
  std::vector<TokenInfo> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)].id = i + 1;
  return out;
}

DyCokeKvOptions kv(DyCokeWhenSimilar when) {
  DyCokeKvOptions o;
  o.pruning_ratio = 0.6;  // a selecting step reads int(0.4 * 5) = 2 of the 5 vision entries
  o.when_similar = when;
  return o;
}

// Attention vectors at 0, 20 and 40 degrees in the plane of entries 0 and 1, then one on 2..4:
//   step 0: first step -> select: top 2 of (1, 0, 0, 0, 0): entry 0, then the first of the ties: 1
//   step 1: cos(0 deg, 20 deg) = .940 >= .9 -> alike
//   step 2: cos(20 deg, 40 deg) = .940 >= .9 -> alike (against step 0's, 40 deg: .766, it would select)
//   step 3: (0, 0, .2, .5, .3): cos with step 2's = 0 -> select: entries 3 (.5), 4 (.3)
// read_all (official): alike steps read every entry; reuse: they read the last selection.
const double kC20 = std::cos(M_PI / 9), kS20 = std::sin(M_PI / 9);
const double kC40 = std::cos(2 * M_PI / 9), kS40 = std::sin(2 * M_PI / 9);
const std::vector<std::vector<double>> kSteps = {
    {1, 0, 0, 0, 0}, {kC20, kS20, 0, 0, 0}, {kC40, kS40, 0, 0, 0}, {0, 0, 0.2, 0.5, 0.3}};

TEST(OracleDyCoke, KvSelectsAtTheFirstStepAndWhenAttentionChangesReadAll) {
  DyCokeKv p(kv(DyCokeWhenSimilar::kReadAll));
  std::vector<TokenInfo> ledger = block(5);
  const std::vector<Ids> want = {{0, 1}, {0, 1, 2, 3, 4}, {0, 1, 2, 3, 4}, {3, 4}};
  const std::vector<bool> selects = {true, false, false, true};
  for (int s = 0; s < 4; ++s) {
    View v = kv_view(ledger, kSteps[static_cast<size_t>(s)], s);
    EXPECT_EQ(p.selects(v), selects[static_cast<size_t>(s)]) << "step " << s;
    EXPECT_EQ(p.max_kept(v), static_cast<int64_t>(want[static_cast<size_t>(s)].size())) << "step " << s;
    EXPECT_EQ(p.decide(v).keep, want[static_cast<size_t>(s)]) << "step " << s;
  }
}

TEST(OracleDyCoke, KvReuseReadsTheLastSelectionAtAlikeSteps) {
  DyCokeKv p(kv(DyCokeWhenSimilar::kReuse));
  std::vector<TokenInfo> ledger = block(5);
  const std::vector<Ids> want = {{0, 1}, {0, 1}, {0, 1}, {3, 4}};
  for (int s = 0; s < 4; ++s) {
    View v = kv_view(ledger, kSteps[static_cast<size_t>(s)], s);
    EXPECT_EQ(p.max_kept(v), 2) << "step " << s;
    EXPECT_EQ(p.decide(v).keep, want[static_cast<size_t>(s)]) << "step " << s;
  }
}

// Entry 2 in S: a selecting step reads S + the best other (entry 0) -> [0, 2]. After reset the
// next step is a first step again. Pruning ratio 0 reads everything (keep-all setting).
TEST(OracleDyCoke, KvKeepsSResetsAndKeepsAllWithZeroRatio) {
  DyCokeKv p(kv(DyCokeWhenSimilar::kReadAll));
  std::vector<TokenInfo> ledger = block(5);
  ledger[2].in_s = true;
  EXPECT_EQ(p.decide(kv_view(ledger, kSteps[0], 0)).keep, (Ids{0, 2}));
  EXPECT_FALSE(p.selects(kv_view(ledger, kSteps[1], 1)));
  p.reset();
  EXPECT_TRUE(p.selects(kv_view(ledger, kSteps[1], 1)));

  DyCokeKvOptions o;
  o.pruning_ratio = 0;
  DyCokeKv all(o);
  std::vector<TokenInfo> plain = block(5);
  for (int s = 0; s < 4; ++s) {
    EXPECT_EQ(all.decide(kv_view(plain, kSteps[static_cast<size_t>(s)], s)).keep, (Ids{0, 1, 2, 3, 4}));
  }
  EXPECT_THROW(all.decide([&] {
                 View v = kv_view(plain, kSteps[0], 0);
                 v.attention = at::Tensor();
                 return v;
               }()),
               InternalError);
}

TEST(OracleDyCoke, KvNeedsTheLayerBelowAndEvictsNothing) {
  DyCokeKv p{DyCokeKvOptions{}};  // L = 3, p = 0.8
  Needs n = p.needs(32);
  EXPECT_EQ(n.layers, std::vector<int>{3});
  EXPECT_EQ(n.decode_read_after, 2);
  EXPECT_FALSE(p.acts_at_step(0));  // never through after_decode_step (eviction)
  // int((1 - 0.8) * 196) = int(39.2) = 39 read at a selecting step.
  std::vector<TokenInfo> ledger = block(196);
  View v = kv_view(ledger, {0, 0, 0, 0, 0}, 0);
  std::vector<double> row(2 + 196 + 3, 0.001);
  v.n_vision = 196;
  v.n_tokens = static_cast<int64_t>(row.size());
  v.attention = at::tensor(row, at::TensorOptions().dtype(at::kDouble)).view({1, -1}).to(at::kFloat);
  EXPECT_EQ(p.max_kept(v), 39);
  EXPECT_EQ(p.decide(v).keep.size(), 39u);
}

// ---- end to end on the tiny model (4 LLM layers, L = 3) ----

const model::VisionLanguageModel& tiny() {
  static std::unique_ptr<model::VisionLanguageModel> m = [] {
    tune_allocator();
    std::string dir = test::temp_dir() + "/dycoke-tiny";
    model::TinyModelOptions o;
    o.seed = 13;
    model::write_tiny_model(dir, o);
    return model::VisionLanguageModel::load(dir);
  }();
  return *m;
}

// Four frames through the TTM stage, an answer whose decode steps read through the chain's hook.
// The first decode step with the hook equals a step over a copy of the cache from which layer 3
// removed the vision entries DyCoke did not select (and differs from reading them all).
TEST(OracleDyCoke, ChainEndToEndOnTheTinyModel) {
  c10::InferenceMode guard;
  const model::VisionLanguageModel& m = tiny();
  Chain chain;
  chain.add(std::make_unique<DyCokeTtm>(DyCokeTtmOptions{}));
  chain.add(std::make_unique<DyCokeKv>(DyCokeKvOptions{}));
  std::vector<StageTrace> reads;
  chain.set_trace([&](const StageTrace& t) {
    if (t.read_only) reads.push_back(t);
  });
  std::vector<at::Tensor> features;
  std::vector<TokenInfo> ledger;
  const int64_t per_frame = m.tokens_per_frame(model::Media::kVideo);  // 576
  for (int i = 0; i < 4; ++i) {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(50 + i);
    at::Tensor px = at::normal(0.0, 1.0, {1, 3, m.image_size(), m.image_size()}, gen);
    EncodedFrame f = chain.encode_frame(m, px, i, 0.5 * i);
    // Anchor whole; the others int(0.3 * 576) = 172.
    EXPECT_EQ(static_cast<int64_t>(f.ledger.size()), i == 0 ? per_frame : 172) << "frame " << i;
    features.push_back(m.project(f.features));
    ledger.insert(ledger.end(), f.ledger.begin(), f.ledger.end());
  }
  at::Tensor vision = at::cat(features, 0);
  model::PromptLayout layout = m.build_prompt("What moves?", vision.size(0));
  const int n_layers = m.llm().n_layers();
  model::DenseKvCache cache(n_layers);
  PrefillRun run = chain.prefill(m, layout, vision, ledger, 4, cache);
  chain.after_decode_step(0, cache, run);  // evicts nothing
  const int64_t n_prompt = static_cast<int64_t>(layout.ids.size());
  for (int l = 0; l < n_layers; ++l) ASSERT_EQ(cache.length(l), n_prompt);
  model::StepLayerHook hook = chain.decode_layer_hook(run);
  ASSERT_TRUE(hook);
  PrefillRun no_readers;  // an answer without a reading stage gets no hook
  EXPECT_FALSE(chain.decode_layer_hook(no_readers));

  // Two copies of the prompt cache: one to read in full, one to remove the unselected entries from.
  model::DenseKvCache full(n_layers), removed(n_layers);
  model::copy_prefix(cache, full, n_layers, n_prompt);
  model::copy_prefix(cache, removed, n_layers, n_prompt);
  const int next_id = 7;
  auto step = [&](model::KvCache& c, model::LayerHook* h) {
    model::LlmForward f;
    f.hidden = m.llm().embed({next_id});
    f.positions = at::full({1}, n_prompt, at::TensorOptions().dtype(at::kLong));
    f.cache = &c;
    f.hook = h;
    return m.llm().forward(f).logits;
  };
  at::Tensor with_hook = step(cache, hook(1));
  ASSERT_EQ(reads.size(), 1u);
  const StageTrace& t = reads[0];
  EXPECT_EQ(t.layer, 2);
  EXPECT_EQ(t.step, 0);
  EXPECT_EQ(static_cast<int64_t>(t.before.size()), layout.n_vision);
  EXPECT_EQ(static_cast<int64_t>(t.plan.keep.size()), static_cast<int64_t>(0.19999999999999996 * layout.n_vision));
  for (int l = 0; l < n_layers; ++l) EXPECT_EQ(cache.length(l), n_prompt + 1) << "the cache keeps every entry";
  std::vector<char> kept(static_cast<size_t>(layout.n_vision), 0);
  for (int64_t i : t.plan.keep) kept[static_cast<size_t>(i)] = 1;
  std::vector<int64_t> drop;
  for (int64_t j = 0; j < layout.n_vision; ++j) {
    if (!kept[static_cast<size_t>(j)]) drop.push_back(layout.vision_begin + j);
  }
  removed.remove(3, drop);
  at::Tensor reference = step(removed, nullptr);
  double scale = reference.abs().max().item<double>();
  EXPECT_LT((with_hook - reference).abs().max().item<double>() / scale, 1e-5);
  EXPECT_GT((step(full, nullptr) - reference).abs().max().item<double>() / scale, 1e-4);

  // The record: one call per decode step at layer 3, the entries shown and read.
  auto rec = std::find_if(run.records.begin(), run.records.end(), [](const StageRecord& r) { return r.name == "dycoke.kv"; });
  ASSERT_NE(rec, run.records.end());
  EXPECT_EQ(rec->layer, 3);
  EXPECT_EQ(rec->calls, 1);
  EXPECT_EQ(rec->n_in, layout.n_vision);
  EXPECT_EQ(rec->n_out, static_cast<int64_t>(t.plan.keep.size()));

  // generate() with the hook runs one selection per step, steps numbered from 0 (steps done).
  reads.clear();
  model::DenseKvCache again(n_layers);
  PrefillRun run2 = chain.prefill(m, layout, vision, ledger, 4, again);
  model::GenerationOptions g;
  g.max_new_tokens = 5;
  model::GenerationResult r = model::generate(m.llm(), again, run2.out.logits, n_prompt, g, nullptr, {},
                                              chain.decode_layer_hook(run2));
  ASSERT_EQ(r.ids.size(), 5u);
  ASSERT_EQ(reads.size(), 4u);
  for (size_t i = 0; i < reads.size(); ++i) EXPECT_EQ(reads[i].step, static_cast<int>(i));
}

}  // namespace
}  // namespace mustdrop::prune
