// The Llama decoder and its KV cache against independent computations: recomputation without
// a cache, a naive RoPE formula, a full softmax, MHA with repeated heads, and fresh prefills.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>

#include "model/generate.h"
#include "model/kv_cache.h"
#include "model/llama.h"
#include "model/presets.h"

namespace mustdrop::model {
namespace {

TextConfig small_text(int kv_heads = 2) {
  TextConfig c = preset_config("tiny-llava").text;
  c.num_key_value_heads = kv_heads;
  c.vocab_size = 97;
  return c;
}

LlamaModel make_llama(const TextConfig& c, uint64_t seed = 5) {
  std::map<std::string, at::Tensor> t;
  LlamaModel::random_tensors(c, seed, t);
  auto w = Weights::from_tensors(t);
  return LlamaModel(c, LlamaModel::load(c, *w, at::kDouble));
}

at::Tensor positions(std::vector<int64_t> p) { return at::tensor(p, at::kLong); }

at::Tensor run(const LlamaModel& m, KvCache& cache, const std::vector<int>& ids, const std::vector<int64_t>& pos,
               bool all = false) {
  LlmForward f;
  f.hidden = m.embed(ids);
  f.positions = positions(pos);
  f.cache = &cache;
  f.all_logits = all;
  return m.forward(f).logits;
}

std::vector<int64_t> range(int64_t a, int64_t b) {
  std::vector<int64_t> v;
  for (int64_t i = a; i < b; ++i) v.push_back(i);
  return v;
}

TEST(Rope, MatchesTheNaiveFormula) {
  TextConfig c = small_text();
  int hd = 16;
  at::Tensor x = at::randn({3, 5, hd}, at::kDouble);
  std::vector<int64_t> pos = {0, 3, 7, 100, 2047};
  at::Tensor cos, sin;
  rope_tables(positions(pos), hd, c, 10, &cos, &sin);
  at::Tensor y = apply_rope(x.to(at::kFloat), cos, sin).to(at::kDouble);
  for (int h = 0; h < 3; ++h) {
    for (int t = 0; t < 5; ++t) {
      for (int i = 0; i < hd / 2; ++i) {
        double theta = pos[t] / std::pow(c.rope_theta, 2.0 * i / hd);
        double a = x[h][t][i].item<double>(), b = x[h][t][i + hd / 2].item<double>();
        EXPECT_NEAR(y[h][t][i].item<double>(), a * std::cos(theta) - b * std::sin(theta), 1e-4);
        EXPECT_NEAR(y[h][t][i + hd / 2].item<double>(), b * std::cos(theta) + a * std::sin(theta), 1e-4);
      }
    }
  }
}

TEST(Rope, LinearScalingDividesPositions) {
  TextConfig c = small_text();
  c.rope_scaling_type = "linear";
  c.rope_scaling_factor = 4.0;
  TextConfig plain = small_text();
  at::Tensor cos1, sin1, cos2, sin2;
  rope_tables(positions({8, 40}), 16, c, 2, &cos1, &sin1);
  rope_tables(positions({2, 10}), 16, plain, 2, &cos2, &sin2);
  EXPECT_TRUE(at::allclose(cos1, cos2, 1e-6, 1e-6));
  EXPECT_TRUE(at::allclose(sin1, sin2, 1e-6, 1e-6));
}

TEST(Llama, CachedDecodingEqualsFullRecomputation) {
  TextConfig c = small_text();
  LlamaModel m = make_llama(c);
  std::vector<int> ids = {1, 17, 33, 5, 60, 12};
  DenseKvCache cache(m.n_layers());
  at::Tensor logits = run(m, cache, ids, range(0, 6));
  for (int step = 0; step < 24; ++step) {
    int next = static_cast<int>(logits.argmax(-1).item<int64_t>());
    ids.push_back(next);
    logits = run(m, cache, {next}, {static_cast<int64_t>(ids.size() - 1)});
    DenseKvCache fresh(m.n_layers());
    at::Tensor full = run(m, fresh, ids, range(0, static_cast<int64_t>(ids.size())));
    ASSERT_TRUE(at::allclose(logits, full, 1e-9, 1e-9)) << "step " << step << " max diff "
                                                        << (logits - full).abs().max().item<double>();
  }
  EXPECT_EQ(cache.length(0), static_cast<int64_t>(ids.size()));
}

// A prompt longer than one row chunk goes through each layer in chunks; the same prompt fed as
// two forward calls of under a chunk each (the second attending to the cache the first left)
// must give the same logits, caches and asked attention rows, in float64 (reference attention)
// and float32 (the blocked kernel where the CPU has it).
TEST(Llama, ChunkedPrefillEqualsTwoSmallerForwards) {
  TextConfig c = small_text();
  for (at::ScalarType t : {at::kDouble, at::kFloat}) {
    std::map<std::string, at::Tensor> tensors;
    LlamaModel::random_tensors(c, 9, tensors);
    auto w = Weights::from_tensors(tensors);
    LlamaModel m(c, LlamaModel::load(c, *w, t));
    const int64_t n = LlamaModel::kRowChunk + 190, half = n / 2;
    ASSERT_LT(n - half, LlamaModel::kRowChunk);
    std::vector<int> ids;
    for (int64_t i = 0; i < n; ++i) ids.push_back(static_cast<int>(3 + (i * 37) % 90));
    // Rows in both chunks of the one-call run, out of order, and in both halves of the other.
    const std::vector<int64_t> rows = {n - 1, 5, LlamaModel::kRowChunk + 3, LlamaModel::kRowChunk - 1, half + 2};
    DenseKvCache one(m.n_layers());
    LlmForward f;
    f.hidden = m.embed(ids);
    f.positions = positions(range(0, n));
    f.cache = &one;
    f.attention_rows[1] = rows;
    const at::Tensor input = f.hidden.clone();
    LlmOutput a = m.forward(f);
    EXPECT_TRUE(at::equal(f.hidden, input)) << "the caller's input was written";

    DenseKvCache two(m.n_layers());
    LlmForward f1;
    f1.hidden = m.embed(std::vector<int>(ids.begin(), ids.begin() + half));
    f1.positions = positions(range(0, half));
    f1.cache = &two;
    f1.attention_rows[1] = {5};
    LlmOutput b1 = m.forward(f1);
    LlmForward f2;
    f2.hidden = m.embed(std::vector<int>(ids.begin() + half, ids.end()));
    f2.positions = positions(range(half, n));
    f2.cache = &two;
    f2.attention_rows[1] = {n - 1 - half, LlamaModel::kRowChunk + 3 - half, LlamaModel::kRowChunk - 1 - half, 2};
    LlmOutput b2 = m.forward(f2);

    const double tol = t == at::kDouble ? 1e-9 : 2e-4;
    const std::string what = t == at::kDouble ? "float64" : "float32";
    EXPECT_LT((a.logits - b2.logits).abs().max().item<double>(), tol * 10) << what;
    for (int l = 0; l < m.n_layers(); ++l) {
      EXPECT_LT((one.keys(l).to(at::kDouble) - two.keys(l).to(at::kDouble)).abs().max().item<double>(), tol) << what;
      EXPECT_LT((one.values(l).to(at::kDouble) - two.values(l).to(at::kDouble)).abs().max().item<double>(), tol)
          << what;
    }
    ASSERT_EQ(a.attention.at(1).sizes(), (std::vector<int64_t>{5, n}));
    at::Tensor pa = a.attention.at(1).to(at::kDouble), p1 = b1.attention.at(1).to(at::kDouble),
               p2 = b2.attention.at(1).to(at::kDouble);
    // Row 5 saw only the first half's keys; the rest of its row is zero.
    EXPECT_LT((pa[1].narrow(0, 0, half) - p1[0]).abs().max().item<double>(), tol) << what;
    EXPECT_EQ(pa[1].narrow(0, half, n - half).abs().max().item<double>(), 0.0) << what;
    for (int64_t k : {0, 2, 3, 4}) {
      const int64_t j = k == 0 ? 0 : k == 2 ? 1 : k == 3 ? 2 : 3;
      EXPECT_LT((pa[k] - p2[j]).abs().max().item<double>(), tol) << what << " row " << rows[static_cast<size_t>(k)];
    }
  }
}

TEST(Llama, AttentionRowsEqualAnIndependentSoftmax) {
  TextConfig c = small_text(4);  // MHA keeps the reference short
  std::map<std::string, at::Tensor> t;
  LlamaModel::random_tensors(c, 9, t);
  auto w = Weights::from_tensors(t);
  LlamaModel m(c, LlamaModel::load(c, *w, at::kDouble));
  std::vector<int> ids = {1, 4, 9, 16, 25, 36, 49};
  std::vector<int64_t> pos = {0, 1, 2, 5, 6, 9, 10};  // gaps on purpose: positions are explicit
  DenseKvCache cache(m.n_layers());
  LlmForward f;
  f.hidden = m.embed(ids);
  f.positions = positions(pos);
  f.cache = &cache;
  f.attention_rows[0] = {6, 2, 4};
  LlmOutput out = m.forward(f);
  ASSERT_TRUE(out.attention.count(0));
  ASSERT_FALSE(out.attention.count(1));  // nobody asked for layer 1

  // Layer 0 by hand: RMSNorm, projections, RoPE, causal softmax per head, head mean.
  auto get = [&](const std::string& n) { return t.at("language_model.model.layers.0." + n).to(at::kDouble); };
  at::Tensor x = t.at("language_model.model.embed_tokens.weight").to(at::kDouble).index_select(0, at::tensor(std::vector<int64_t>(ids.begin(), ids.end())));
  x = x / at::sqrt(x.pow(2).mean(-1, true) + c.rms_norm_eps) * get("input_layernorm.weight");
  int64_t heads = 4, hd = c.hidden_size / heads, n = 7;
  at::Tensor q = at::mm(x, get("self_attn.q_proj.weight").t()).view({n, heads, hd});
  at::Tensor k = at::mm(x, get("self_attn.k_proj.weight").t()).view({n, heads, hd});
  at::Tensor ref = at::zeros({3, n}, at::kDouble);
  std::vector<int64_t> rows = {6, 2, 4};
  auto rot = [&](at::Tensor v, int64_t p, int64_t hidx) {  // naive RoPE of one vector
    at::Tensor out = v[hidx].clone();
    for (int64_t i = 0; i < hd / 2; ++i) {
      double th = p / std::pow(c.rope_theta, 2.0 * i / hd);
      double a = v[hidx][i].item<double>(), b = v[hidx][i + hd / 2].item<double>();
      out[i] = a * std::cos(th) - b * std::sin(th);
      out[i + hd / 2] = b * std::cos(th) + a * std::sin(th);
    }
    return out;
  };
  for (size_t r = 0; r < rows.size(); ++r) {
    for (int64_t h = 0; h < heads; ++h) {
      std::vector<double> s;
      for (int64_t j = 0; j <= rows[r]; ++j) {
        s.push_back((rot(q[rows[r]], pos[rows[r]], h) * rot(k[j], pos[j], h)).sum().item<double>() / std::sqrt(hd));
      }
      double mx = *std::max_element(s.begin(), s.end()), z = 0;
      for (double v : s) z += std::exp(v - mx);
      for (size_t j = 0; j < s.size(); ++j) ref[r][j] += std::exp(s[j] - mx) / z / heads;
    }
  }
  EXPECT_TRUE(at::allclose(out.attention[0].to(at::kDouble), ref, 1e-5, 1e-6))
      << out.attention[0] << "\n" << ref;
}

TEST(Llama, GqaEqualsMhaWithRepeatedHeads) {
  TextConfig gqa = small_text(2);
  std::map<std::string, at::Tensor> t;
  LlamaModel::random_tensors(gqa, 11, t);
  TextConfig mha = gqa;
  mha.num_key_value_heads = gqa.num_attention_heads;
  std::map<std::string, at::Tensor> t2 = t;
  int64_t hd = gqa.hidden_size / gqa.num_attention_heads, group = gqa.num_attention_heads / gqa.num_key_value_heads;
  for (auto& [name, w] : t2) {
    if (name.find("k_proj.weight") != std::string::npos || name.find("v_proj.weight") != std::string::npos) {
      // [kv*hd, D] -> each kv head repeated `group` times, in the order GQA maps query heads.
      w = w.view({gqa.num_key_value_heads, 1, hd, -1}).expand({gqa.num_key_value_heads, group, hd, w.size(1)}).reshape({-1, w.size(1)});
    }
  }
  auto w1 = Weights::from_tensors(t), w2 = Weights::from_tensors(t2);
  LlamaModel a(gqa, LlamaModel::load(gqa, *w1, at::kDouble)), b(mha, LlamaModel::load(mha, *w2, at::kDouble));
  DenseKvCache ca(a.n_layers()), cb(b.n_layers());
  std::vector<int> ids = {1, 2, 3, 50, 70, 90};
  EXPECT_TRUE(at::allclose(run(a, ca, ids, range(0, 6), true), run(b, cb, ids, range(0, 6), true), 1e-10, 1e-10));
}

// The invariant pruners rely on: removing cache entries leaves every kept entry exactly as it
// was (keys keep their RoPE rotation at the original position), and a new token continues at
// the original next position. A fresh prefill of the kept tokens at their original positions
// must then give the same logits wherever no kept token's cached state depended on a dropped
// one: in a one-layer model for any dropped set, and in a deep model for dropped tokens that
// come after every kept one. (Deeper layers of a kept token that attended to a dropped token
// cannot be reproduced without it; docs/model.md.)
void expect_eviction_matches_fresh_prefill(int n_layers, const std::vector<int64_t>& drop) {
  TextConfig c = small_text();
  c.num_hidden_layers = n_layers;
  LlamaModel m = make_llama(c, 21);
  std::vector<int> ids = {1, 8, 13, 21, 34, 55, 89, 44, 71, 3};
  DenseKvCache cache(m.n_layers());
  run(m, cache, ids, range(0, 10));
  for (int l = 0; l < m.n_layers(); ++l) cache.remove(l, drop);
  EXPECT_EQ(cache.length(0), 10 - static_cast<int64_t>(drop.size()));
  at::Tensor after = run(m, cache, {42}, {10});

  std::vector<int> kept_ids;
  std::vector<int64_t> kept_pos;
  for (int64_t i = 0; i < 10; ++i) {
    if (std::find(drop.begin(), drop.end(), i) == drop.end()) {
      kept_ids.push_back(ids[static_cast<size_t>(i)]);
      kept_pos.push_back(i);
    }
  }
  kept_ids.push_back(42);
  kept_pos.push_back(10);
  DenseKvCache fresh(m.n_layers());
  at::Tensor ref = run(m, fresh, kept_ids, kept_pos);
  EXPECT_TRUE(at::allclose(after, ref, 1e-9, 1e-9)) << (after - ref).abs().max().item<double>();
  // Compacted positions (0..n-1) would be a different computation: the test can tell.
  std::vector<int64_t> compact = range(0, static_cast<int64_t>(kept_ids.size()));
  DenseKvCache wrong(m.n_layers());
  EXPECT_FALSE(at::allclose(after, run(m, wrong, kept_ids, compact), 1e-6, 1e-6));
}

TEST(Llama, EvictedCacheEqualsAFreshPrefillOfTheKeptTokensOneLayer) {
  expect_eviction_matches_fresh_prefill(1, {2, 3, 6});
}

TEST(Llama, EvictedCacheEqualsAFreshPrefillOfTheKeptTokensTrailingDrops) {
  expect_eviction_matches_fresh_prefill(4, {7, 8, 9});
}

// Drops the listed tokens from the forward pass after layer `after`, so later layers never see
// them (a prefill that builds per-layer caches of different lengths from scratch).
class DropAfterLayer : public LayerHook {
 public:
  DropAfterLayer(int after, std::vector<int64_t> drop) : after_(after), drop_(std::move(drop)) {}
  std::vector<int64_t> attention_rows(int, int64_t) override { return {}; }
  void after_layer(LayerState& st) override {
    if (st.layer != after_) return;
    std::vector<int64_t> keep;
    for (int64_t i = 0; i < st.hidden.size(0); ++i) {
      if (std::find(drop_.begin(), drop_.end(), i) == drop_.end()) keep.push_back(i);
    }
    at::Tensor idx = at::tensor(keep, at::kLong);
    st.hidden = st.hidden.index_select(0, idx);
    st.positions = st.positions.index_select(0, idx);
  }

 private:
  int after_;
  std::vector<int64_t> drop_;
};

// Layers below `from_layer` keep everything; layers from it on remove `drop` after the prefill.
// The reference is a fresh prefill in which those layers never see the dropped tokens. Equal where
// no kept entry of an evicting layer depended on a dropped token: the last layer alone (its keys
// and values come from its own input) for any set, or drops after every kept token.
void expect_upper_layer_eviction_matches_fresh_prefill(int from_layer, const std::vector<int64_t>& drop) {
  TextConfig c = small_text();
  LlamaModel m = make_llama(c, 23);
  std::vector<int> ids = {1, 5, 9, 14, 20, 27, 35};
  DenseKvCache cache(m.n_layers());
  run(m, cache, ids, range(0, 7));
  for (int l = from_layer; l < m.n_layers(); ++l) cache.remove(l, drop);
  at::Tensor evicted = run(m, cache, {11}, {7});
  EXPECT_EQ(cache.length(0), 8);
  EXPECT_EQ(cache.length(m.n_layers() - 1), 8 - static_cast<int64_t>(drop.size()));

  DenseKvCache fresh(m.n_layers());
  DropAfterLayer hook(from_layer - 1, drop);
  LlmForward f;
  f.hidden = m.embed(ids);
  f.positions = positions(range(0, 7));
  f.cache = &fresh;
  f.hook = &hook;
  m.forward(f);
  for (int l = 0; l < m.n_layers(); ++l) ASSERT_EQ(fresh.length(l), cache.length(l) - 1) << l;
  at::Tensor reference = run(m, fresh, {11}, {7});
  EXPECT_TRUE(at::allclose(evicted, reference, 1e-9, 1e-9)) << (evicted - reference).abs().max().item<double>();
  // Without the eviction the step sees the dropped tokens: the comparison can tell.
  DenseKvCache full(m.n_layers());
  run(m, full, ids, range(0, 7));
  EXPECT_FALSE(at::allclose(run(m, full, {11}, {7}), reference, 1e-6, 1e-6));
}

TEST(Llama, EvictionInTheLastLayerOnlyEqualsAFreshPrefill) {
  expect_upper_layer_eviction_matches_fresh_prefill(small_text().num_hidden_layers - 1, {1, 4});
}

TEST(Llama, EvictionInUpperLayersOfTrailingTokensEqualsAFreshPrefill) {
  expect_upper_layer_eviction_matches_fresh_prefill(2, {5, 6});
}

TEST(KvCache, RemovingABadIndexThrows) {
  DenseKvCache cache(1);
  cache.append(0, at::zeros({2, 3, 8}), at::zeros({2, 3, 8}));
  EXPECT_THROW(cache.remove(0, {99}), std::exception);
  EXPECT_THROW(cache.remove(0, {1, 1}), std::exception);
  EXPECT_EQ(cache.length(0), 3);
}

TEST(KvCache, BytesTrackLiveEntries) {
  DenseKvCache cache(2);
  at::Tensor k = at::zeros({2, 5, 8}), v = at::zeros({2, 5, 8});
  cache.append(0, k, v);
  cache.append(1, k, v);
  EXPECT_EQ(cache.bytes(), 2 * 2 * 2 * 5 * 8 * 4);
  cache.remove(1, {0, 1});
  EXPECT_EQ(cache.bytes(), (2 * 2 * 5 * 8 + 2 * 2 * 3 * 8) * 4);
  EXPECT_EQ(cache.peak_bytes(), 2 * 2 * 2 * 5 * 8 * 4);
  for (int i = 0; i < 100; ++i) cache.append(0, at::ones({2, 1, 8}), at::ones({2, 1, 8}));
  EXPECT_EQ(cache.length(0), 105);
  EXPECT_EQ(cache.keys(0).narrow(1, 5, 100).sum().item<float>(), 2 * 100 * 8);
}

// A prompt announced before its first entry sizes a layer once, with the answer's room; growing
// past it keeps every entry.
TEST(KvCache, ReservedPromptAndHeadroomSizeALayerOnce) {
  DenseKvCache cache(1, 4);
  cache.reserve(0, 30);
  EXPECT_EQ(cache.capacity(0), 0);  // nothing stored yet
  at::Tensor k = at::arange(2 * 20 * 8, at::kFloat).view({2, 20, 8}), v = -k;
  cache.append(0, k, v);  // the first of two chunks
  EXPECT_EQ(cache.capacity(0), 30 + 4);
  cache.append(0, k.narrow(1, 0, 10), v.narrow(1, 0, 10));
  EXPECT_EQ(cache.capacity(0), 34);
  for (int i = 0; i < 4; ++i) cache.append(0, k.narrow(1, i, 1), v.narrow(1, i, 1));  // the answer's room
  EXPECT_EQ(cache.capacity(0), 34);
  cache.append(0, k.narrow(1, 5, 1), v.narrow(1, 5, 1));  // past it: grows by half
  EXPECT_EQ(cache.capacity(0), 51);
  cache.reserve(0, 50);  // a prompt that fits, but not with the answer's room above it
  EXPECT_EQ(cache.capacity(0), 54);
  cache.reserve(0, 80);  // a second prompt on top
  EXPECT_EQ(cache.capacity(0), 84);
  ASSERT_EQ(cache.length(0), 35);
  at::Tensor want = at::cat({k, k.narrow(1, 0, 10), k.narrow(1, 0, 4), k.narrow(1, 5, 1)}, 1);
  EXPECT_TRUE(at::equal(cache.keys(0), want));
  EXPECT_TRUE(at::equal(cache.values(0), -want));
}

// A layer reading borrowed entries (an answer over a shared prefix) writes only past them: its
// appends land in the lender's free room, and removing, truncating into them or growing past the
// block moves the layer to storage of its own, leaving the lent entries as they were.
TEST(KvCache, BorrowedEntriesAreNeverWritten) {
  at::Tensor lent_k = at::arange(2 * 10 * 8, at::kFloat).view({2, 10, 8}), lent_v = -lent_k;
  const at::Tensor first_k = lent_k.narrow(1, 0, 6).clone(), first_v = lent_v.narrow(1, 0, 6).clone();
  auto lease = std::make_shared<int>(0);
  std::weak_ptr<int> held = lease;
  DenseKvCache cache(3, 2);
  for (int l = 0; l < 3; ++l) cache.borrow(l, lent_k, lent_v, 6, lease);
  lease.reset();
  EXPECT_THROW(cache.borrow(0, lent_k, lent_v, 6, nullptr), std::exception);  // not empty
  at::Tensor nk = at::full({2, 2, 8}, 7.0f), nv = at::full({2, 2, 8}, -7.0f);
  // Layer 0: appends go into the lent block, past the borrowed entries.
  cache.append(0, nk, nv);
  EXPECT_TRUE(cache.borrowed(0));
  EXPECT_EQ(cache.keys(0).data_ptr(), lent_k.data_ptr());
  EXPECT_TRUE(at::equal(lent_k.narrow(1, 6, 2), nk));
  EXPECT_TRUE(at::equal(cache.keys(0), at::cat({first_k, nk}, 1)));
  // Layer 1: a removal among the borrowed entries works on a copy.
  cache.append(1, nk, nv);
  cache.remove(1, {1, 6});
  EXPECT_FALSE(cache.borrowed(1));
  at::Tensor keep = at::tensor(std::vector<int64_t>{0, 2, 3, 4, 5, 7}, at::kLong);
  EXPECT_TRUE(at::equal(cache.keys(1), at::cat({first_k, nk}, 1).index_select(1, keep)));
  EXPECT_TRUE(at::equal(cache.values(1), at::cat({first_v, nv}, 1).index_select(1, keep)));
  // Layer 2: truncated into the borrowed entries, then appended to; then grown past the block.
  cache.truncate(2, 3);
  cache.append(2, nk, nv);
  EXPECT_FALSE(cache.borrowed(2));
  EXPECT_TRUE(at::equal(cache.keys(2), at::cat({first_k.narrow(1, 0, 3), nk}, 1)));
  for (int i = 0; i < 3; ++i) cache.append(0, nk, nv);  // 6 + 8 entries: past the 10 lent
  EXPECT_FALSE(cache.borrowed(0));
  EXPECT_TRUE(at::equal(cache.keys(0), at::cat({first_k, nk, nk, nk, nk}, 1)));
  EXPECT_TRUE(at::equal(lent_k.narrow(1, 0, 6), first_k));
  EXPECT_TRUE(at::equal(lent_v.narrow(1, 0, 6), first_v));
  // The lease is held until the cache lets go.
  EXPECT_FALSE(held.expired());
  cache.clear();
  EXPECT_TRUE(held.expired());
}

// A forward pass over a prompt longer than a row chunk announces it: every layer holds exactly
// the prompt and the headroom, however many chunks it was appended in.
TEST(Llama, ALongPromptSizesEachLayerOnceWithRoomForTheAnswer) {
  TextConfig c = small_text();
  LlamaModel m = make_llama(c);
  const int64_t n = 2 * LlamaModel::kRowChunk + 70;
  std::vector<int> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back(static_cast<int>(3 + (i * 37) % 90));
  DenseKvCache cache(m.n_layers(), 8);
  at::Tensor logits = run(m, cache, ids, range(0, n));
  for (int l = 0; l < m.n_layers(); ++l) EXPECT_EQ(cache.capacity(l), n + 8) << "layer " << l;
  for (int64_t step = 0; step < 8; ++step) {
    int next = static_cast<int>(logits.argmax(-1).item<int64_t>());
    logits = run(m, cache, {next}, {n + step});
  }
  for (int l = 0; l < m.n_layers(); ++l) EXPECT_EQ(cache.capacity(l), n + 8) << "layer " << l;
}

TEST(Generate, GreedyStopsAtEosAndStreamsEveryToken) {
  TextConfig c = small_text();
  LlamaModel m = make_llama(c, 31);
  DenseKvCache cache(m.n_layers());
  at::Tensor logits = run(m, cache, {1, 2, 3}, range(0, 3));
  GenerationOptions o;
  o.max_new_tokens = 12;
  std::vector<int> streamed;
  GenerationResult r = generate(m, cache, logits, 3, o, [&](int id) {
    streamed.push_back(id);
    return true;
  });
  EXPECT_EQ(r.ids.size(), 12u);
  EXPECT_EQ(streamed, r.ids);
  // Stopping at EOS: make the 4th greedy token the stop id.
  DenseKvCache c2(m.n_layers());
  at::Tensor l2 = run(m, c2, {1, 2, 3}, range(0, 3));
  GenerationOptions stop = o;
  stop.stop_ids = {r.ids[3]};
  GenerationResult r2 = generate(m, c2, l2, 3, stop, nullptr);
  EXPECT_TRUE(r2.stopped_by_eos);
  EXPECT_EQ(r2.ids, std::vector<int>(r.ids.begin(), r.ids.begin() + 3));
}

TEST(Generate, SamplingIsDeterministicForASeedAndTopPRestricts) {
  at::Tensor logits = at::tensor({2.0f, 1.0f, 0.5f, -1.0f, 3.0f});
  GenerationOptions o;
  o.temperature = 1.0;
  o.seed = 7;
  std::vector<int> a, b;
  at::Generator g1 = at::make_generator<at::CPUGeneratorImpl>(7), g2 = at::make_generator<at::CPUGeneratorImpl>(7);
  for (int i = 0; i < 50; ++i) {
    a.push_back(pick_token(logits, o, g1));
    b.push_back(pick_token(logits, o, g2));
  }
  EXPECT_EQ(a, b);
  EXPECT_GT(std::set<int>(a.begin(), a.end()).size(), 1u);
  o.top_p = 0.5;  // softmax mass of token 4 alone is ~0.6: only it may be drawn
  for (int i = 0; i < 30; ++i) EXPECT_EQ(pick_token(logits, o, g1), 4);
  o.temperature = 0;
  EXPECT_EQ(pick_token(logits, o, g1), 4);
}

// Reads every entry of layers >= from_layer except `skip` (prompt entries; the new tokens' own
// are always read), records the attention of the last new token at `attention_layer`, and, as a
// generate() step hook, the steps it was given for.
class ReadSubset : public LayerHook {
 public:
  ReadSubset(int from_layer, std::vector<int64_t> skip, int attention_layer)
      : from_layer_(from_layer), skip_(std::move(skip)), attention_layer_(attention_layer) {}
  std::vector<int64_t> attention_rows(int layer, int64_t n_tokens) override {
    if (layer == attention_layer_) return {n_tokens - 1};
    return {};
  }
  void after_layer(LayerState& st) override {
    if (st.layer == attention_layer_) attention = st.attention;
  }
  at::Tensor read_entries(int layer, int64_t n_entries) override {
    if (layer < from_layer_) return at::Tensor();
    std::vector<int64_t> read;
    for (int64_t i = 0; i < n_entries; ++i) {
      if (std::find(skip_.begin(), skip_.end(), i) == skip_.end()) read.push_back(i);
    }
    return at::tensor(read, at::kLong);
  }
  at::Tensor attention;
  std::vector<int> steps;

 private:
  int from_layer_;
  std::vector<int64_t> skip_;
  int attention_layer_;
};

// A forward whose layers >= from_layer read all but `skip` equals the same forward over a cache
// from which those layers removed `skip` (an independent computation: the eviction path), while
// the cache itself keeps every entry. With several new tokens the causal mask still holds.
void expect_subset_read_matches_removed_entries(int from_layer, const std::vector<int64_t>& skip, int n_new) {
  TextConfig c = small_text();
  LlamaModel m = make_llama(c, 29);
  std::vector<int> ids = {1, 5, 9, 14, 20, 27, 35};
  DenseKvCache full(m.n_layers()), removed(m.n_layers());
  run(m, full, ids, range(0, 7));
  run(m, removed, ids, range(0, 7));
  for (int l = from_layer; l < m.n_layers(); ++l) removed.remove(l, skip);
  std::vector<int> next(static_cast<size_t>(n_new));
  for (int i = 0; i < n_new; ++i) next[static_cast<size_t>(i)] = 40 + i;

  ReadSubset hook(from_layer, skip, m.n_layers() - 1);
  LlmForward f;
  f.hidden = m.embed(next);
  f.positions = positions(range(7, 7 + n_new));
  f.cache = &full;
  f.hook = &hook;
  f.all_logits = true;
  at::Tensor subset = m.forward(f).logits;
  at::Tensor reference = run(m, removed, next, range(7, 7 + n_new), true);
  EXPECT_TRUE(at::allclose(subset, reference, 1e-9, 1e-9)) << (subset - reference).abs().max().item<double>();
  for (int l = 0; l < m.n_layers(); ++l) EXPECT_EQ(full.length(l), 7 + n_new) << l;
  // The attention row covers the entries read: the prompt less `skip`, and the new tokens.
  ASSERT_TRUE(hook.attention.defined());
  EXPECT_EQ(hook.attention.size(1), 7 - static_cast<int64_t>(skip.size()) + n_new);
  EXPECT_NEAR(hook.attention.sum().item<double>(), 1.0, 1e-6);
  // Reading everything gives other logits: the comparison can tell.
  DenseKvCache plain(m.n_layers());
  run(m, plain, ids, range(0, 7));
  EXPECT_FALSE(at::allclose(run(m, plain, next, range(7, 7 + n_new), true), reference, 1e-6, 1e-6));
}

TEST(Llama, ReadingASubsetOfTheCacheEqualsRemovingTheRestOneNewToken) {
  expect_subset_read_matches_removed_entries(1, {2, 3, 5}, 1);
}

TEST(Llama, ReadingASubsetOfTheCacheEqualsRemovingTheRestSeveralNewTokens) {
  expect_subset_read_matches_removed_entries(0, {0, 4}, 3);
}

TEST(Llama, ReadingAnEntryOutsideTheCacheThrows) {
  TextConfig c = small_text();
  LlamaModel m = make_llama(c, 29);
  DenseKvCache cache(m.n_layers());
  run(m, cache, {1, 2, 3}, range(0, 3));
  class Bad : public ReadSubset {
   public:
    Bad() : ReadSubset(0, {}, -1) {}
    at::Tensor read_entries(int, int64_t n_entries) override { return at::tensor(std::vector<int64_t>{0, n_entries}, at::kLong); }
  } bad;
  LlmForward f;
  f.hidden = m.embed({4});
  f.positions = positions({3});
  f.cache = &cache;
  f.hook = &bad;
  EXPECT_THROW(m.forward(f), std::exception);
}

// generate() gives each decode step's forward the hook of that step (steps 1, 2, ... as on_step
// sees them); reading all but prompt entries {1, 3} in layers >= 1 at every step generates what
// a cache with those entries removed from layers >= 1 generates.
TEST(Generate, EachStepRunsWithItsLayerHook) {
  TextConfig c = small_text();
  LlamaModel m = make_llama(c, 31);
  DenseKvCache full(m.n_layers()), removed(m.n_layers());
  at::Tensor logits = run(m, full, {1, 2, 3, 4, 5}, range(0, 5));
  run(m, removed, {1, 2, 3, 4, 5}, range(0, 5));
  for (int l = 1; l < m.n_layers(); ++l) removed.remove(l, {1, 3});
  GenerationOptions o;
  o.max_new_tokens = 6;
  ReadSubset hook(1, {1, 3}, -1);
  std::vector<int> on_step_steps;
  GenerationResult a = generate(
      m, full, logits, 5, o, nullptr, [&](int step, KvCache&) { on_step_steps.push_back(step); },
      [&](int step) -> LayerHook* {
        hook.steps.push_back(step);
        return &hook;
      });
  GenerationResult b = generate(m, removed, logits, 5, o, nullptr);
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(hook.steps, (std::vector<int>{1, 2, 3, 4, 5}));
  EXPECT_EQ(on_step_steps, hook.steps);
  EXPECT_EQ(full.length(m.n_layers() - 1), 5 + 5);
  EXPECT_EQ(removed.length(m.n_layers() - 1), 3 + 5);
  // Without the hook the full cache generates other tokens: the comparison can tell.
  DenseKvCache plain(m.n_layers());
  run(m, plain, {1, 2, 3, 4, 5}, range(0, 5));
  EXPECT_NE(generate(m, plain, logits, 5, o, nullptr).ids, b.ids);
}

}  // namespace
}  // namespace mustdrop::model
