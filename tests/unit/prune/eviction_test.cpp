// mustdrop.kv_evict is RoPE-correct: after eviction the cache gives the same next-token logits
// as a fresh prefill of exactly the kept tokens at their original positions. Exact on a
// one-layer model, where a kept token's keys and values depend on nothing but itself (deeper
// layers' entries saw the evicted tokens during prefill: see docs/pruning.md).
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "config/pipeline_config.h"
#include "core/sysinfo.h"
#include "model/tiny_model.h"
#include "prune/chain.h"
#include "support/test_support.h"

namespace mustdrop {
namespace {

TEST(KvEvict, EvictedCacheEqualsAFreshPrefillOfTheKeptTokensAtTheirPositions) {
  tune_allocator();
  c10::InferenceMode guard;
  std::string dir = test::temp_dir() + "/evict-tiny-1layer";
  model::TinyModelOptions o;
  o.llm_layers = 1;
  o.seed = 11;
  model::write_tiny_model(dir, o);
  auto m = model::VisionLanguageModel::load(dir);
  auto chain = prune::Chain::build(
      config::load_pipeline_string("chain: [mustdrop.important_set, mustdrop.kv_evict]\n"
                                   "mustdrop: {important_set: {ratio: 0.1}, kv_evict: {layer: 0}}",
                                   "eviction test"),
      "eviction test");
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  at::Tensor pixels = at::normal(0.0, 1.0, {1, 3, m->image_size(), m->image_size()}, gen);
  prune::EncodedFrame f = chain->encode_frame(*m, pixels, 0, 0.0);
  at::Tensor vision = m->project(f.features);
  model::PromptLayout layout = m->build_prompt("Where is it?", vision.size(0));

  // Prefill everything, then evict: layer 0 keeps sys + S + text.
  model::DenseKvCache cache(m->llm().n_layers());
  prune::PrefillRun run = chain->prefill(*m, layout, vision, f.ledger, 1, cache);
  chain->after_decode_step(0, cache, run);
  std::vector<int64_t> kept_rows;  // prompt rows still cached, in order
  for (int64_t i = 0; i < layout.vision_begin; ++i) kept_rows.push_back(i);
  int64_t n_s = 0;
  for (size_t j = 0; j < f.ledger.size(); ++j) {
    if (!f.ledger[j].in_s) continue;
    kept_rows.push_back(layout.vision_begin + static_cast<int64_t>(j));
    ++n_s;
  }
  for (int64_t i = layout.text_begin(); i < static_cast<int64_t>(layout.ids.size()); ++i) kept_rows.push_back(i);
  ASSERT_GT(n_s, 0);
  ASSERT_LT(n_s, layout.n_vision);
  ASSERT_EQ(cache.length(0), static_cast<int64_t>(kept_rows.size()));

  // The next token through the evicted cache...
  const int next_id = 42;
  int64_t next_pos = static_cast<int64_t>(layout.ids.size());
  auto step = [&](model::KvCache& c) {
    model::LlmForward in;
    in.hidden = m->llm().embed({next_id});
    in.positions = at::tensor(std::vector<int64_t>{next_pos}, at::kLong);
    in.cache = &c;
    return m->llm().forward(in).logits;
  };
  at::Tensor evicted = step(cache);

  // ...and through a fresh prefill of the kept tokens at their original positions.
  at::Tensor idx = at::tensor(kept_rows, at::kLong);
  model::DenseKvCache fresh(m->llm().n_layers());
  model::LlmForward in;
  in.hidden = m->embed_prompt(layout, vision).index_select(0, idx);
  in.positions = idx;
  in.cache = &fresh;
  m->llm().forward(in);
  at::Tensor reference = step(fresh);
  double rel = ((evicted - reference).abs().max() / reference.abs().max()).item<double>();
  EXPECT_LT(rel, 1e-5);

  // Compacted positions (what the official code does) give other logits: the test can tell.
  model::DenseKvCache compact(m->llm().n_layers());
  in.positions = at::arange(static_cast<int64_t>(kept_rows.size()), at::kLong);
  in.cache = &compact;
  m->llm().forward(in);
  at::Tensor shifted = step(compact);
  EXPECT_GT(((shifted - reference).abs().max() / reference.abs().max()).item<double>(), 1e-4);
}

}  // namespace
}  // namespace mustdrop
