// The memory of a long-running session: the cached prefix against a computation from scratch,
// frame-by-frame extension against one pass, re-rotated keys against fresh ones, the budget over
// a stream ten times its size, and positions over a simulated ten-hour stream.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "config/pipeline_config.h"
#include "core/sysinfo.h"
#include "model/device.h"
#include "model/presets.h"
#include "model/tiny_model.h"
#include "prune/chain.h"
#include "session/frame_memory.h"
#include "session/prefix_cache.h"
#include "model/kv_cache.h"
#include "session/session.h"
#include "support/test_support.h"

namespace mustdrop::session {
namespace {

// The tiny LLaVA shape with random weights (no tokenizer), `context` positions, `layers` layers.
std::unique_ptr<model::VisionLanguageModel> random_model(int context, int layers = 4, uint64_t seed = 3) {
  tune_allocator();
  model::ModelConfig c = model::preset_config("tiny-llava", layers, 1);
  c.text.max_position_embeddings = context;
  return model::VisionLanguageModel::random(c, seed);
}

// A frame of `n` random projected tokens; every `s_every`-th token is in S.
FrameTokens synthetic_frame(const model::VisionLanguageModel& m, int64_t seq, int n, int s_every = 4) {
  FrameTokens f;
  f.seq = seq;
  f.t_sec = static_cast<double>(seq);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1000 + seq);
  f.tokens = at::normal(0.0, 0.5, {n, m.config().text.hidden_size}, gen);
  for (int i = 0; i < n; ++i) {
    prune::TokenInfo e;
    e.id = seq * prune::kIdsPerFrame + i + 1;
    e.frame_seq = e.first_frame = e.last_frame = seq;
    e.patch = i;
    e.t_first_sec = e.t_last_sec = f.t_sec;
    e.in_s = s_every > 0 && i % s_every == 0;
    f.ledger.push_back(e);
  }
  f.n_tower_tokens = n;
  return f;
}

double rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return ((a.to(at::kDouble) - b.to(at::kDouble)).abs().max() / b.to(at::kDouble).abs().max()).item<double>();
}

// ---- the prefix against a computation from scratch ----

const model::VisionLanguageModel& tiny_with_tokenizer() {
  static std::unique_ptr<model::VisionLanguageModel> m = [] {
    tune_allocator();
    std::string dir = test::temp_dir() + "/memory-tiny";
    model::TinyModelOptions o;
    o.seed = 17;
    model::write_tiny_model(dir, o);
    return model::VisionLanguageModel::load(dir);
  }();
  return *m;
}

at::Tensor picture(int variant) {
  int s = tiny_with_tokenizer().image_size();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(300 + variant);
  at::Tensor px = at::normal(0.0, 1.0, {1, 3, s, s}, gen);
  px.narrow(3, 0, s / 2).fill_(0.2);
  return px;
}

void expect_prefix_equals_scratch(const std::string& pipeline_yaml) {
  c10::InferenceMode guard;
  const model::VisionLanguageModel& m = tiny_with_tokenizer();
  auto chain = prune::Chain::build(config::load_pipeline_string(pipeline_yaml, "test"), "test");
  Session s(m, chain.get());
  for (int i = 0; i < 3; ++i) {
    prune::EncodedFrame f = s.encode_frame(picture(i), i, 0.5 * i);
    at::Tensor tokens = m.project(f.features);
    s.add_frame(frame_tokens(std::move(f), tokens, i, 0.5 * i));
  }
  std::shared_ptr<const MemorySnapshot> memory = s.snapshot();
  ASSERT_TRUE(memory->prefix);
  model::GenerationOptions g;
  g.max_new_tokens = 10;
  for (const char* question : {"What is on the left?", "And now, what moves on the right side?"}) {
    AnswerStats cached = s.answer(*memory, question, g, nullptr, {}, true);
    AnswerStats scratch = s.answer(*memory, question, g, nullptr, {}, false);
    EXPECT_TRUE(cached.used_prefix);
    EXPECT_FALSE(scratch.used_prefix);
    EXPECT_EQ(cached.ids, scratch.ids) << question;
    EXPECT_LE(rel_diff(cached.first_logits, scratch.first_logits), 1e-5) << question;
    EXPECT_EQ(cached.vision_per_layer, scratch.vision_per_layer);
    EXPECT_GT(cached.flops_prefill_saved, 0);
  }
}

TEST(PrefixCache, AnswerEqualsAnAnswerFromScratchWithNone) {
  expect_prefix_equals_scratch("name: none\n");
}

TEST(PrefixCache, AnswerEqualsAnAnswerFromScratchWithMustDrop) {
  // The dual filter acts after layer 1 of the tiny LLM: layers 0..1 come from the prefix, the
  // filter's text rows see the cached keys, the layers above run on what it keeps.
  expect_prefix_equals_scratch(
      "name: mustdrop\nchain: [mustdrop.lsm, mustdrop.important_set, mustdrop.dual_attention, mustdrop.kv_evict]\n"
      "mustdrop: {dual_attention: {layers: [1], target_tokens_per_frame: 60}, kv_evict: {layer: 2}}\n");
}

TEST(PrefixCache, ExtendedFrameByFrameEqualsOnePass) {
  c10::InferenceMode guard;
  auto m = random_model(4096);
  for (int k : {1, 3}) {
    PrefixCache stepwise(*m, k, {1, 7, 9}, 0);
    PrefixCache once(*m, k, {1, 7, 9}, 0);
    std::vector<at::Tensor> all;
    int64_t next = 3;
    for (int f = 0; f < 4; ++f) {
      at::Tensor t = synthetic_frame(*m, f, 20 + 5 * f).tokens;
      stepwise.extend(t, at::arange(next, next + t.size(0), at::kLong));
      next += t.size(0);
      all.push_back(t);
    }
    once.extend(at::cat(all, 0), at::arange(3, next, at::kLong));
    ASSERT_EQ(stepwise.state().size(), once.state().size());
    for (int l = 0; l <= k; ++l) {
      EXPECT_LE(rel_diff(stepwise.state().keys(l), once.state().keys(l)), 1e-5) << "layer " << l;
      EXPECT_LE(rel_diff(stepwise.state().values(l), once.state().values(l)), 1e-5) << "layer " << l;
    }
    EXPECT_LE(rel_diff(stepwise.state().hidden(), once.state().hidden()), 1e-5);
    // A state published earlier does not change when the prefix grows.
    PrefixState early = stepwise.state();
    at::Tensor before = early.keys(0).clone();
    stepwise.extend(synthetic_frame(*m, 9, 30).tokens, at::arange(next, next + 30, at::kLong));
    EXPECT_TRUE(at::equal(early.keys(0), before));
  }
}

TEST(PrefixCache, ShiftedKeysEqualKeysComputedAtTheNewPositions) {
  c10::InferenceMode guard;
  auto m = random_model(4096);
  at::Tensor tokens = synthetic_frame(*m, 0, 40).tokens;
  // Positions with gaps (as after evictions), far along a long stream...
  at::Tensor spread = at::arange(1000, 1000 + 40 * 7, 7, at::kLong);
  PrefixCache moved(*m, 2, {1, 5}, 0);
  moved.extend(tokens, spread);
  // ...compacted to follow the system part.
  at::Tensor from = at::cat({at::arange(2, at::kLong), spread}), to = at::arange(42, at::kLong);
  moved.shift_positions(from, to);
  PrefixCache fresh(*m, 2, {1, 5}, 0);
  fresh.extend(tokens, at::arange(2, 42, at::kLong));
  EXPECT_LE(rel_diff(moved.state().keys(0), fresh.state().keys(0)), 1e-5);
  EXPECT_TRUE(at::equal(moved.state().values(0), fresh.state().values(0)));
  // Deeper layers saw the old spacing when they were computed: an approximation, and the test can tell.
  EXPECT_GT(rel_diff(moved.state().keys(2), fresh.state().keys(2)), 1e-4);
}

// An answer over the newest state reads the entries in place and writes its own past them; the
// writer then continues in a copy, and in place again once the answer is done. Every state keeps
// its entries, and the writer's match a pass from scratch.
TEST(PrefixCache, AnAnswerReadsTheNewestStateInPlaceAndTheWriterMovesAside) {
  c10::InferenceMode guard;
  auto m = random_model(4096);
  const model::LlamaModel& llm = m->llm();
  const std::vector<int> system = {1, 7, 9};
  PrefixCache prefix(*m, 1, system, 200);
  at::Tensor a = synthetic_frame(*m, 0, 30).tokens, b = synthetic_frame(*m, 1, 25).tokens;
  prefix.extend(a, at::arange(3, 33, at::kLong));
  const PrefixState first = prefix.state();
  const at::Tensor first_keys = first.keys(1).clone();
  at::Tensor own_k = at::randn({llm.config().num_key_value_heads, 5, llm.head_dim()}).to(llm.dtype());
  {
    model::DenseKvCache answer(llm.n_layers(), 8), other(llm.n_layers(), 8);
    EXPECT_TRUE(first.share_into(answer));
    EXPECT_EQ(answer.keys(1).data_ptr(), first.keys(1).data_ptr());
    EXPECT_FALSE(first.share_into(other));  // the room is taken: a copy
    EXPECT_NE(other.keys(1).data_ptr(), first.keys(1).data_ptr());
    EXPECT_TRUE(at::equal(other.keys(1), first_keys));
    answer.append(1, own_k, own_k);  // the answer's question, past the entries
    prefix.extend(b, at::arange(33, 58, at::kLong));
    EXPECT_NE(prefix.state().keys(1).data_ptr(), first.keys(1).data_ptr());  // moved aside
    EXPECT_TRUE(at::equal(answer.keys(1), at::cat({first_keys, own_k}, 1)));
    EXPECT_TRUE(at::equal(first.keys(1), first_keys));
  }
  PrefixCache once(*m, 1, system, 0);
  once.extend(at::cat({a, b}), at::arange(3, 58, at::kLong));
  EXPECT_LE(rel_diff(prefix.state().keys(1), once.state().keys(1)), 1e-5);
  EXPECT_LE(rel_diff(prefix.state().hidden(), once.state().hidden()), 1e-5);
  // The answer is done: the newest state lends again.
  const PrefixState second = prefix.state();
  const void* second_at = second.keys(0).data_ptr();
  {
    model::DenseKvCache answer(llm.n_layers(), 8);
    EXPECT_TRUE(second.share_into(answer));
  }
  prefix.extend(a, at::arange(58, 88, at::kLong));  // nobody holds the room: written in place
  EXPECT_EQ(prefix.state().keys(0).data_ptr(), second_at);
  // An older state in the same storage cannot lend (newer entries follow it); the storage the
  // writer left can (nobody writes there any more).
  model::DenseKvCache late(llm.n_layers(), 8), left(llm.n_layers(), 8);
  EXPECT_FALSE(second.share_into(late));
  EXPECT_TRUE(at::equal(late.keys(0), second.keys(0)));
  EXPECT_TRUE(first.share_into(left));
  EXPECT_EQ(prefix.state().size(), 3 + 30 + 25 + 30);
}

// A prefix made under InferenceMode (the runtime's threads) cannot take an answer's writes from a
// thread outside it: such an answer gets a copy, and the same entries.
TEST(PrefixCache, AnAnswerOutsideInferenceModeCopiesAPrefixMadeInsideIt) {
  auto m = random_model(4096);
  std::unique_ptr<PrefixCache> prefix;
  {
    c10::InferenceMode guard;
    prefix = std::make_unique<PrefixCache>(*m, 1, std::vector<int>{1, 7, 9}, 200);
    prefix->extend(synthetic_frame(*m, 0, 30).tokens, at::arange(3, 33, at::kLong));
  }
  const model::LlamaModel& llm = m->llm();
  model::DenseKvCache answer(llm.n_layers(), 8);
  EXPECT_FALSE(prefix->state().share_into(answer));
  EXPECT_TRUE(at::equal(answer.keys(1), prefix->state().keys(1)));
  at::Tensor own = at::zeros({llm.config().num_key_value_heads, 2, llm.head_dim()}).to(llm.dtype());
  answer.append(1, own, own);  // writable
  EXPECT_EQ(answer.length(1), 35);
}

// ---- the budget and the positions over long streams ----

// The prefix's layer-0 keys and values (which depend on nothing but each token and its position)
// against a fresh pass over the snapshot's tokens at the snapshot's positions: after evictions and
// compactions the prefix must still hold exactly the memory's tokens, in order, where they sit.
void expect_prefix_matches_memory(const model::VisionLanguageModel& m, int prefix_layer, const MemorySnapshot& snap) {
  ASSERT_TRUE(snap.prefix);
  PrefixCache fresh(m, prefix_layer, snap.system_ids, 0);
  if (snap.n_tokens > 0) fresh.extend(snap.vision(), snap.positions());
  ASSERT_EQ(snap.prefix->size(), fresh.state().size());
  EXPECT_LE(rel_diff(snap.prefix->keys(0), fresh.state().keys(0)), 1e-5);
  EXPECT_LE(rel_diff(snap.prefix->values(0), fresh.state().values(0)), 1e-5);
}

// ---- grounding: where an answer looked ----

TEST(Grounding, SharesEqualTheLastRowsAttentionComputedDirectly) {
  c10::InferenceMode guard;
  auto m = random_model(4096);
  Session session(*m);
  session.ground_answers(true);
  const int n_frames = 4, per_frame = 24;
  for (int f = 0; f < n_frames; ++f) session.add_frame(synthetic_frame(*m, f, per_frame, 0));
  auto snap = session.snapshot();
  model::GenerationOptions o;
  o.max_new_tokens = 1;
  const std::string question = "what happened near the door";
  AnswerStats st = session.answer(*snap, question, o, nullptr);
  ASSERT_FALSE(st.grounding.empty());

  // Independently: the whole prompt through the LLM once, asking the last layer for the last row.
  model::PromptLayout layout = m->build_prompt(question, snap->n_tokens, snap->media());
  const int64_t n = static_cast<int64_t>(layout.ids.size()), n_text = n - layout.text_begin();
  at::Tensor positions = at::cat({at::arange(layout.vision_begin, at::kLong), snap->positions(),
                                  at::arange(snap->next_position, snap->next_position + n_text, at::kLong)});
  model::DenseKvCache cache(m->llm().n_layers());
  model::LlmForward f;
  f.hidden = m->embed_prompt(layout, snap->vision());
  f.positions = positions;
  f.cache = &cache;
  const int last = m->llm().n_layers() - 1;
  f.attention_rows[last] = {n - 1};
  model::LlmOutput out = m->llm().forward(f);
  at::Tensor row = out.attention.at(last)[0].to(at::kDouble);
  std::vector<double> per_frame_mass(n_frames, 0.0);
  double total = 0;
  std::vector<prune::TokenInfo> ledger = snap->ledger();
  for (size_t i = 0; i < ledger.size(); ++i) {
    double w = row[layout.vision_begin + int64_t(i)].item<double>();
    per_frame_mass[size_t(ledger[i].frame_seq)] += w;
    total += w;
  }
  std::vector<int> order(n_frames);
  for (int i = 0; i < n_frames; ++i) order[size_t(i)] = i;
  std::sort(order.begin(), order.end(), [&](int a, int b) { return per_frame_mass[size_t(a)] > per_frame_mass[size_t(b)]; });
  ASSERT_EQ(st.grounding.size(), 3u);  // the three largest of four frames
  for (size_t k = 0; k < 3; ++k) {
    const int frame = order[k];
    EXPECT_DOUBLE_EQ(st.grounding[k].t_from_sec, double(frame)) << k;
    EXPECT_DOUBLE_EQ(st.grounding[k].t_to_sec, double(frame)) << k;
    EXPECT_NEAR(st.grounding[k].share, per_frame_mass[size_t(frame)] / total, 1e-5) << k;
    EXPECT_EQ(st.grounding[k].n_tokens, per_frame);
  }
  // Without grounding nothing is reported and nothing else changes.
  session.ground_answers(false);
  AnswerStats plain = session.answer(*snap, question, o, nullptr);
  EXPECT_TRUE(plain.grounding.empty());
  EXPECT_EQ(plain.ids, st.ids);
  EXPECT_LT(rel_diff(plain.first_logits, st.first_logits), 1e-5);
}

TEST(FrameMemory, BytesStayUnderTheBudgetOverAStreamTenTimesItsSize) {
  c10::InferenceMode guard;
  auto m = random_model(32768);
  config::MemoryConfig mc;
  mc.max_mb = 0.25;
  FrameMemory memory(*m, 1, mc);
  const double budget = mc.max_mb * 1e6;
  const int64_t per_frame = 24;
  const int64_t n_frames = 10 * memory.token_capacity() / per_frame + 1;
  ASSERT_GT(memory.token_capacity(), 2 * per_frame);
  for (int64_t f = 0; f < n_frames; ++f) {
    memory.append(synthetic_frame(*m, f, static_cast<int>(per_frame)));
    std::shared_ptr<const MemorySnapshot> snap = memory.snapshot();
    ASSERT_LE(static_cast<double>(snap->bytes), budget) << "frame " << f;
    ASSERT_LE(snap->n_tokens, memory.token_capacity());
    if (f % 25 == 24) expect_prefix_matches_memory(*m, 1, *snap);
    // The ledger: frames in order, each token's span ordered, positions increasing.
    at::Tensor pos = snap->positions();
    if (pos.numel() > 1) {
      ASSERT_TRUE((pos.narrow(0, 1, pos.numel() - 1) > pos.narrow(0, 0, pos.numel() - 1)).all().item<bool>());
    }
    for (size_t i = 0; i < snap->frames.size(); ++i) {
      if (i > 0) {
        ASSERT_LT(snap->frames[i - 1]->seq, snap->frames[i]->seq);
      }
      for (const auto& e : snap->frames[i]->ledger) ASSERT_LE(e.t_first_sec, e.t_last_sec);
    }
  }
  std::shared_ptr<const MemorySnapshot> end = memory.snapshot();
  EXPECT_GT(end->n_evictions, 0);
  EXPECT_GT(end->n_evicted_tokens, 8 * memory.token_capacity());
  // S outlives everything else of its age: frames older than the newest few hold S tokens only.
  const MemoryFrame& oldest = *end->frames.front();
  EXPECT_TRUE(std::all_of(oldest.ledger.begin(), oldest.ledger.end(), [](const auto& e) { return e.in_s; }));
  EXPECT_LT(end->frames.front()->seq, n_frames - end->n_tokens / per_frame) << "S tokens reach back further";
  expect_prefix_matches_memory(*m, 1, *end);
}

TEST(FrameMemory, TenHoursAtOneFramePerSecondNeverReachTheContextLimit) {
  c10::InferenceMode guard;
  const int context = 512;
  auto m = random_model(context, 1);
  config::MemoryConfig mc;
  mc.max_tokens = 120;
  mc.position_reserve = 64;
  FrameMemory memory(*m, 0, mc);
  const int64_t frames = 10 * 3600;
  int64_t max_position = 0, compactions = 0;
  for (int64_t f = 0; f < frames; ++f) {
    memory.append(synthetic_frame(*m, f, 3, 3));
    std::shared_ptr<const MemorySnapshot> snap = memory.snapshot();
    ASSERT_LE(snap->next_position + mc.position_reserve, context) << "frame " << f;
    if (memory.n_compactions() != compactions) {  // right after a compaction: prefix and memory agree
      compactions = memory.n_compactions();
      expect_prefix_matches_memory(*m, 0, *snap);
      if (::testing::Test::HasFailure()) FAIL() << "after the compaction at frame " << f;
    }
    if (snap->n_tokens > 0) max_position = std::max(max_position, snap->positions().max().item<int64_t>());
  }
  EXPECT_LT(max_position, context - mc.position_reserve);
  EXPECT_GT(memory.n_compactions(), 100);
  expect_prefix_matches_memory(*m, 0, *memory.snapshot());
  EXPECT_NEAR(memory.snapshot()->t_last_sec, frames - 1, 1e-9);
}

// ---- on a GPU (skipped, not failed, where this process sees none) ----

// Every shipped pipeline on the GPU in float32 against the same pipeline on the host: the same
// tokens kept at every stage and the same answer. The GPU's float32 differs from the host's only
// in summation order (TF32 stays off: matrix products by default, convolutions by the model), so decisions near a tie could in principle flip; the tiny
// model's scores are far from ties.
TEST(SessionOnGpu, EveryPipelineKeepsAndAnswersAsOnTheHost) {
  if (model::cuda_device_count() == 0) GTEST_SKIP() << "no GPU visible to this process";
  c10::InferenceMode guard;
  const model::VisionLanguageModel& host = tiny_with_tokenizer();
  model::LoadOptions on_gpu;
  on_gpu.device = c10::Device(c10::DeviceType::CUDA, 0);
  auto gpu = model::VisionLanguageModel::load(test::temp_dir() + "/memory-tiny", on_gpu);
  ASSERT_TRUE(gpu->llm().device().is_cuda());
  for (const auto& entry : std::filesystem::directory_iterator(std::string(MUSTDROP_SOURCE_DIR) + "/pipelines")) {
    if (entry.path().extension() != ".yaml") continue;
    auto chain = prune::Chain::build(config::load_pipeline(entry.path().string()), entry.path().string());
    std::vector<AnswerStats> answers;
    for (const model::VisionLanguageModel* m : {&host, static_cast<const model::VisionLanguageModel*>(gpu.get())}) {
      Session s(*m, chain.get());
      for (int i = 0; i < 4; ++i) {
        prune::EncodedFrame f = s.encode_frame(picture(i % 3), i, 0.5 * i);
        at::Tensor tokens = m->project(f.features);
        s.add_frame(frame_tokens(std::move(f), tokens, i, 0.5 * i));
      }
      model::GenerationOptions g;
      g.max_new_tokens = 8;
      answers.push_back(s.answer("What moves on the right?", g, nullptr));
    }
    const std::string what = entry.path().filename().string();
    EXPECT_EQ(answers[0].n_vision_tokens, answers[1].n_vision_tokens) << what;
    EXPECT_EQ(answers[0].vision_per_layer, answers[1].vision_per_layer) << what;
    EXPECT_EQ(answers[0].n_vision_kv_after_decode, answers[1].n_vision_kv_after_decode) << what;
    EXPECT_EQ(answers[0].ids, answers[1].ids) << what;
    EXPECT_LE(rel_diff(answers[0].first_logits, model::to_host(answers[1].first_logits)), 1e-3) << what;
  }
}

}  // namespace
}  // namespace mustdrop::session
