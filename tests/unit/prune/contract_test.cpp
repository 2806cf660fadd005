// The contract every registered pruner keeps, checked with one case list on the generated
// tiny model: it respects its budget, never drops text or S, is deterministic, its clone is
// independent of the original, and with keep-all settings the answer equals `none` exactly.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>
#include <set>

#include "config/pipeline_config.h"
#include "core/error.h"
#include "core/sysinfo.h"
#include "model/tiny_model.h"
#include "prune/chain.h"
#include "prune/registry.h"
#include "session/session.h"
#include "support/test_support.h"

namespace mustdrop {
namespace {

using prune::Chain;
using prune::KeepPlan;
using prune::TokenPruner;
using prune::View;

// What a budget limits, worked out from the configuration (2 frames of 24 x 24 patches on the
// 4-layer tiny LLM; S = ceil(0.08 * 576) = 47 per frame = 94 when important_set runs first).
enum class Count { ToLlm, InS, LastLayer, KvAfter };

// Per pruner: a configuration with a real budget, the count it must give (`exact`) or stay
// under, and a configuration that keeps everything.
struct Case {
  std::string budget_yaml;
  Count what;
  int64_t expected;
  bool exact;
  std::string keep_all_yaml;
};

const std::map<std::string, Case>& cases() {
  static const std::map<std::string, Case> c = {
      // Half of every frame is flat: at least one 3 x 3 window merges (8 tokens fewer).
      {"mustdrop.lsm",
       {"mustdrop: {lsm: {threshold: 0.5, temporal_frames: 3, temporal_threshold: 0.5}}", Count::ToLlm, 2 * 576 - 8,
        false, "mustdrop: {lsm: {threshold: 2.0, temporal_frames: 1}}"}},
      // ceil(0.2 * 576) = 116 per frame.
      {"mustdrop.important_set",
       {"mustdrop: {important_set: {ratio: 0.2}}", Count::InS, 2 * 116, true, "mustdrop: {important_set: {ratio: 0.08}}"}},
      // 40 per frame = 80 < |S| = 94: S alone stays after layer 1.
      {"mustdrop.dual_attention",
       {"mustdrop: {dual_attention: {layers: [1], target_tokens_per_frame: 40}}", Count::LastLayer, 94, true,
        "mustdrop: {dual_attention: {layers: [1, 2], global_threshold: 0, local_threshold: 0}}"}},
      // Layer 0 keeps all 1152, layers 1..3 keep S: (1152 + 3 * 94) / 4 = 358.
      {"mustdrop.kv_evict",
       {"mustdrop: {kv_evict: {layer: 1}}", Count::KvAfter, (1152 + 3 * 94) / 4, true,
        "mustdrop: {kv_evict: {layer: 0, policy: final_kept}}"}},
      {"fastv", {"fastv: {k: 2, keep_tokens_per_frame: 60}", Count::LastLayer, 120, true, "fastv: {k: 2, keep_ratio: 1.0}"}},
      // r per layer reaches 300 per frame within the 3 layers up to the feature layer.
      {"tome", {"tome: {target_tokens_per_frame: 300}", Count::ToLlm, 600, true, "tome: {r: 0}"}},
      // Layer 1: keep 100, recycle int(1052 * .3) + 1 = 316 into int(31.6) + 1 = 32 clusters -> 132;
      // layer 2: keep 100, recycle int(32 * .3) + 1 = 10 into 2 clusters -> 102.
      {"sparsevlm",
       {"sparsevlm: {layers: [1, 2], target_tokens_per_frame: 50}", Count::LastLayer, 102, true,
        "sparsevlm: {layers: [1], target_tokens_per_frame: 100000}"}},
      {"random",
       {"random: {layer: 1, keep_tokens_per_frame: 60, seed: 7}", Count::LastLayer, 120, true,
        "random: {layer: 1, keep_ratio: 1.0}"}},
      // 40 dominant + 10 contextual per frame, at the feature layer (2 of 4).
      {"visionzip",
       {"visionzip: {dominant: 40, contextual: 10}", Count::ToLlm, 2 * 50, true, "visionzip: {dominant: 1000000}"}},
      // Frame 0 anchors its group (576); frame 1 keeps int(0.3 * 576) = 172 (S's 47 among them).
      {"dycoke.ttm",
       {"dycoke: {ttm: {merging_ratio: 0.7}}", Count::ToLlm, 576 + 172, true, "dycoke: {ttm: {merging_ratio: 0}}"}},
      // Reads a selection at each decode step and evicts nothing: every entry stays cached (its
      // per-step reading budget is checked on each decision by Checked).
      {"dycoke.kv",
       {"dycoke: {kv: {layer: 2, pruning_ratio: 0.8}}", Count::KvAfter, 1152, true,
        "dycoke: {kv: {layer: 2, pruning_ratio: 0}}"}},
  };
  return c;
}

const model::VisionLanguageModel& tiny() {
  static std::unique_ptr<model::VisionLanguageModel> m = [] {
    tune_allocator();
    std::string dir = test::temp_dir() + "/contract-tiny";
    model::TinyModelOptions o;
    o.seed = 5;
    model::write_tiny_model(dir, o);
    return model::VisionLanguageModel::load(dir);
  }();
  return *m;
}

// Frames with flat regions (LSM material) and textured ones; `variant` changes the texture.
at::Tensor frame(int variant) {
  int s = tiny().image_size();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(100 + variant);
  at::Tensor px = at::normal(0.0, 1.0, {1, 3, s, s}, gen);
  px.narrow(3, 0, s / 2).fill_(0.3);  // left half flat
  return px;
}

// Wraps a pruner and checks every plan it makes against the contract while the chain runs.
class Checked : public TokenPruner {
 public:
  explicit Checked(std::unique_ptr<TokenPruner> inner, std::shared_ptr<int> calls = std::make_shared<int>(0))
      : calls(std::move(calls)), inner_(std::move(inner)) {}
  std::string name() const override { return inner_->name(); }
  prune::Stage stage() const override { return inner_->stage(); }
  prune::Needs needs(int n) const override { return inner_->needs(n); }
  std::vector<int64_t> attention_rows(const View& v) const override { return inner_->attention_rows(v); }
  bool acts_at_step(int step) const override { return inner_->acts_at_step(step); }
  int64_t max_kept(const View& v) const override { return inner_->max_kept(v); }
  // Clones share the call counter (a session runs its own copy of the chain).
  std::unique_ptr<TokenPruner> clone() const override { return std::make_unique<Checked>(inner_->clone(), calls); }
  void reset() override { inner_->reset(); }
  KeepPlan decide(const View& v) override {
    int64_t bound = inner_->max_kept(v);
    KeepPlan plan = inner_->decide(v);
    ++*calls;
    EXPECT_LE(static_cast<int64_t>(plan.keep.size()), bound) << name() << " over its budget at layer " << v.layer;
    std::set<int64_t> kept(plan.keep.begin(), plan.keep.end());
    for (size_t i = 0; i < v.tokens->size(); ++i) {
      if ((*v.tokens)[i].in_s) {
        EXPECT_TRUE(kept.count(static_cast<int64_t>(i))) << name() << " dropped S";
      }
    }
    return plan;
  }
  std::shared_ptr<int> calls;  // decisions made by this pruner and its clones

 private:
  std::unique_ptr<TokenPruner> inner_;
};

config::PipelineConfig parse(const std::string& chain, const std::string& knobs) {
  return config::load_pipeline_string("chain: [" + chain + "]\n" + knobs, "contract case");
}

// The chain under test: important_set first for later stages (so there is an S to protect),
// after it for ViT stages that act before S exists.
std::unique_ptr<Chain> chain_for(const std::string& name, const std::string& knobs, bool checked) {
  const prune::RegistryEntry* e = nullptr;
  for (const auto& r : prune::registry()) {
    if (name == r.name) e = &r;
  }
  config::PipelineConfig cfg = parse(name, knobs);
  auto chain = std::make_unique<Chain>();
  auto s = prune::Chain::build(parse("mustdrop.important_set", ""), "contract case");
  bool s_first = e->stage != prune::Stage::VisionLayer;
  if (s_first && name != "mustdrop.important_set") chain->add(s->pruners().front()->clone());
  std::unique_ptr<TokenPruner> p = e->make(cfg.section(name));
  if (checked) p = std::make_unique<Checked>(std::move(p));
  chain->add(std::move(p));
  if (!s_first && name != "mustdrop.important_set") chain->add(s->pruners().front()->clone());
  return chain;
}

const std::string kQuestion = "What is on the left?";

struct Outcome {
  std::vector<int> ids;
  session::AnswerStats stats;
  std::vector<std::vector<prune::TokenInfo>> frame_ledgers;
};

Outcome answer_with(const Chain& chain, int n_frames = 2) {
  c10::InferenceMode guard;
  const model::VisionLanguageModel& m = tiny();
  session::Session s(m, &chain);
  Outcome o;
  for (int i = 0; i < n_frames; ++i) {
    prune::EncodedFrame f = s.encode_frame(frame(i % 2), i, 0.5 * i);
    o.frame_ledgers.push_back(f.ledger);
    at::Tensor tokens = m.project(f.features);
    s.add_frame(session::frame_tokens(std::move(f), tokens, i, 0.5 * i));
  }
  model::GenerationOptions g;
  g.max_new_tokens = 8;
  o.stats = s.answer(kQuestion, g, nullptr);
  o.ids = o.stats.ids;
  return o;
}

TEST(PrunerContract, EveryRegisteredPrunerHasACase) {
  std::set<std::string> registered, listed;
  for (const auto& r : prune::registry()) registered.insert(r.name);
  for (const auto& [name, c] : cases()) listed.insert(name);
  EXPECT_EQ(registered, listed);
}

class Contract : public ::testing::TestWithParam<std::string> {};

TEST_P(Contract, RespectsItsBudgetAndNeverDropsSOrText) {
  const std::string name = GetParam();
  auto chain = chain_for(name, cases().at(name).budget_yaml, true);
  Outcome o = answer_with(*chain);
  const auto* checked = dynamic_cast<const Checked*>(
      std::find_if(chain->pruners().begin(), chain->pruners().end(), [&](const auto& p) { return p->name() == name; })
          ->get());
  ASSERT_NE(checked, nullptr);
  int64_t s_total = 0;
  for (const auto& ledger : o.frame_ledgers) {
    for (const auto& e : ledger) s_total += e.in_s ? 1 : 0;
  }
  EXPECT_GT(s_total, 0);
  // The budget, against the count worked out from the configuration.
  const Case& c = cases().at(name);
  int64_t got = 0;
  switch (c.what) {
    case Count::ToLlm:
      got = o.stats.n_vision_tokens;
      break;
    case Count::InS:
      got = s_total;
      break;
    case Count::LastLayer:
      got = o.stats.vision_per_layer.back();
      break;
    case Count::KvAfter:
      got = o.stats.n_vision_kv_after_decode;
      break;
  }
  if (c.exact) {
    EXPECT_EQ(got, c.expected) << name;
  } else {
    EXPECT_LE(got, c.expected) << name;
  }
  // Text and S: the tokens that reached the last LLM layer are every system token, every text
  // token (their positions, in order, at the end) and vision tokens in between, S among them.
  model::PromptLayout layout = tiny().build_prompt(kQuestion, o.stats.n_vision_tokens);
  at::Tensor pos = o.stats.final_positions.contiguous();
  const int64_t* p = pos.data_ptr<int64_t>();
  const int64_t n = pos.numel(), n_text = static_cast<int64_t>(layout.ids.size()) - layout.text_begin();
  ASSERT_GE(n, layout.vision_begin + n_text);
  for (int64_t i = 0; i < layout.vision_begin; ++i) EXPECT_EQ(p[i], i);
  for (int64_t i = 0; i < n_text; ++i) EXPECT_EQ(p[n - n_text + i], layout.text_begin() + i);
  for (int64_t i = layout.vision_begin + 1; i < n - n_text; ++i) EXPECT_LT(p[i - 1], p[i]);
  if (c.what == Count::LastLayer) {
    EXPECT_GE(n - layout.vision_begin - n_text, s_total);
  }
  EXPECT_GT(*checked->calls, 0) << name << " never acted";
}

TEST_P(Contract, IsDeterministic) {
  const std::string name = GetParam();
  Outcome a = answer_with(*chain_for(name, cases().at(name).budget_yaml, false));
  Outcome b = answer_with(*chain_for(name, cases().at(name).budget_yaml, false));
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(a.stats.vision_per_layer, b.stats.vision_per_layer);
  EXPECT_EQ(a.stats.n_vision_kv_after_decode, b.stats.n_vision_kv_after_decode);
  ASSERT_EQ(a.frame_ledgers.size(), b.frame_ledgers.size());
  for (size_t i = 0; i < a.frame_ledgers.size(); ++i) {
    ASSERT_EQ(a.frame_ledgers[i].size(), b.frame_ledgers[i].size());
    for (size_t j = 0; j < a.frame_ledgers[i].size(); ++j) EXPECT_EQ(a.frame_ledgers[i][j].id, b.frame_ledgers[i][j].id);
  }
}

TEST_P(Contract, CloneIsIndependentOfTheOriginal) {
  // Through real answers, so prefill and decode stages run too: a session's copy of a chain must
  // answer exactly like a fresh chain while the original is used elsewhere in between.
  const std::string name = GetParam();
  c10::InferenceMode guard;
  const model::VisionLanguageModel& m = tiny();
  auto original = chain_for(name, cases().at(name).budget_yaml, false);
  auto fresh = chain_for(name, cases().at(name).budget_yaml, false);
  model::GenerationOptions g;
  g.max_new_tokens = 8;
  auto add = [&](session::Session& s, int variant, int seq) {
    prune::EncodedFrame f = s.encode_frame(frame(variant), seq, 0.5 * seq);
    at::Tensor tokens = m.project(f.features);
    s.add_frame(session::frame_tokens(std::move(f), tokens, seq, 0.5 * seq));
  };
  session::Session copy(m, original.get());
  add(copy, 0, 0);
  {
    // The original goes on with other frames and another question...
    session::Session other(m, original.get());
    add(other, 5, 0);
    add(other, 4, 1);
    other.answer("What else is there?", g, nullptr);
  }
  add(copy, 1, 1);
  session::AnswerStats a = copy.answer(kQuestion, g, nullptr);
  // ...and the copy still answers like a chain that saw only its own frames.
  session::Session reference(m, fresh.get());
  add(reference, 0, 0);
  add(reference, 1, 1);
  session::AnswerStats b = reference.answer(kQuestion, g, nullptr);
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_TRUE(at::equal(a.first_logits, b.first_logits));
  EXPECT_EQ(a.vision_per_layer, b.vision_per_layer);
  EXPECT_EQ(a.n_vision_kv_after_decode, b.n_vision_kv_after_decode);
  // The pruner acted in this answer (vision stages in the tower, the others in the answer).
  std::vector<prune::StageRecord> records = copy.vision_records();
  records.insert(records.end(), a.stages.begin(), a.stages.end());
  EXPECT_TRUE(std::any_of(records.begin(), records.end(), [&](const auto& r) { return r.name == name && r.calls > 0; }))
      << name << " never acted in the answer";
}

TEST_P(Contract, KeepAllSettingsEqualNone) {
  const std::string name = GetParam();
  Outcome none = answer_with(Chain());
  Outcome same = answer_with(*chain_for(name, cases().at(name).keep_all_yaml, true));
  double diff = (same.stats.first_logits - none.stats.first_logits).abs().max().item<double>();
  EXPECT_LE(diff, 1e-6) << name << " with keep-all settings changed the logits";
  EXPECT_EQ(same.ids, none.ids);
  EXPECT_EQ(same.stats.vision_per_layer, none.stats.vision_per_layer);
  EXPECT_EQ(same.stats.n_vision_kv_after_decode, none.stats.n_vision_kv_after_decode);
  EXPECT_EQ(same.stats.n_vision_tokens, none.stats.n_vision_tokens);
}

std::vector<std::string> names() {
  std::vector<std::string> out;
  for (const auto& [name, c] : cases()) out.push_back(name);
  return out;
}

INSTANTIATE_TEST_SUITE_P(Registered, Contract, ::testing::ValuesIn(names()), [](const auto& info) {
  std::string n = info.param;
  for (char& c : n) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return n;
});

}  // namespace
}  // namespace mustdrop

namespace mustdrop {
namespace {

// Every shipped pipeline loads strictly, builds its chain, and comments each of its knobs.
TEST(Pipelines, EveryShippedPipelineBuildsAndCommentsEveryKnob) {
  namespace fs = std::filesystem;
  int n = 0;
  for (const auto& entry : fs::directory_iterator(test::source_dir() + "/pipelines")) {
    if (entry.path().extension() != ".yaml") continue;
    ++n;
    const std::string path = entry.path().string();
    config::PipelineConfig p = config::load_pipeline(path);
    EXPECT_EQ(p.name + ".yaml", entry.path().filename().string()) << path << ": name differs from the file name";
    auto chain = Chain::build(p, path);
    EXPECT_EQ(chain->pruners().size(), p.chain.size());
    std::istringstream lines(test::read_file(path));
    int line_no = 0;
    for (std::string line; std::getline(lines, line);) {
      ++line_no;
      bool leaf = line.find(':') != std::string::npos && line.back() != ':' && line.rfind("#", 0) != 0 &&
                  line.rfind("name:", 0) != 0 && line.rfind("description:", 0) != 0;
      if (leaf) {
        EXPECT_NE(line.find('#'), std::string::npos) << path << ":" << line_no << " has no comment: " << line;
      }
    }
  }
  EXPECT_GE(n, 10);
}

std::string build_error(const std::string& yaml) {
  try {
    Chain::build(config::load_pipeline_string(yaml, "p.yaml"), "p.yaml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

// Each pruner decodes its own section; errors still name the file, line, column and key path,
// also for a pruner that is not in the chain.
TEST(Pipelines, PrunerSectionErrorsNameFileLineColumnAndKey) {
  std::string e = build_error("mustdrop:\n  dual_attention:\n    layers: [2, x]\n");
  EXPECT_NE(e.find("p.yaml:3:"), std::string::npos) << e;
  EXPECT_NE(e.find("mustdrop.dual_attention.layers[1]"), std::string::npos) << e;
  e = build_error("fastv:\n  keep_ratio: 1.5\n");
  EXPECT_NE(e.find("p.yaml:2:"), std::string::npos) << e;
  EXPECT_NE(e.find("fastv.keep_ratio"), std::string::npos) << e;
  e = build_error("tome:\n  rr: 3\n");
  EXPECT_EQ(e.rfind("p.yaml:2:3: unknown key 'tome.rr' (valid keys under 'tome': r, ", 0), 0u) << e;
  e = build_error("mustdrop:\n  kv_evict:\n    policy: everything\n");
  EXPECT_EQ(e, "p.yaml:3:13: mustdrop.kv_evict.policy: 'everything' is not one of: important_set, final_kept") << e;
  e = build_error("mustdrop:\n  lsmm: {window: 2}\n");
  EXPECT_EQ(e.rfind("p.yaml:2:3: unknown key 'mustdrop.lsmm' (valid keys under 'mustdrop': lsm, important_set, "
                    "dual_attention, kv_evict; did you mean 'lsm'?)", 0), 0u) << e;
  e = build_error("fastvv: {k: 2}\n");
  EXPECT_EQ(e.rfind("p.yaml:1:1: unknown key 'fastvv' (valid keys at the top level: name, description, chain, mustdrop, "
                    "fastv, ", 0), 0u) << e;
  EXPECT_NE(e.find("did you mean 'fastv'?"), std::string::npos) << e;
  e = build_error("chain: [fastv]\nfastv: 2\n");
  EXPECT_EQ(e.rfind("p.yaml:2:8: fastv: expected a section (a map of keys), found the integer 2", 0), 0u) << e;
}

// Scalars equal as numbers where they are numbers, else as text; lists element by element.
void expect_same_value(const config::Node& have, const config::Node& want, const std::string& where) {
  if (want.is_sequence()) {
    ASSERT_TRUE(have.is_sequence()) << where;
    ASSERT_EQ(have.items.size(), want.items.size()) << where;
    for (size_t i = 0; i < want.items.size(); ++i) expect_same_value(have.items[i], want.items[i], where);
    return;
  }
  ASSERT_TRUE(have.is_scalar() && want.is_scalar()) << where;
  char* end = nullptr;
  double w = std::strtod(want.scalar.c_str(), &end);
  if (!want.scalar.empty() && *end == '\0') {
    EXPECT_DOUBLE_EQ(std::strtod(have.scalar.c_str(), nullptr), w) << where;
  } else {
    EXPECT_EQ(have.scalar, want.scalar) << where;
  }
}

// Every knob a shipped pipeline writes reaches its pruner's options: the printed options hold the
// value as written (compared as numbers where they are numbers), and printing round-trips.
TEST(Pipelines, EveryWrittenKnobReachesThePrunersOptions) {
  namespace fs = std::filesystem;
  int knobs = 0;
  for (const auto& entry : fs::directory_iterator(test::source_dir() + "/pipelines")) {
    if (entry.path().extension() != ".yaml") continue;
    const std::string path = entry.path().string();
    config::PipelineConfig p = config::load_pipeline(path);
    for (const auto& name : prune::registered_names()) {
      // The section as written, found in the document's tree by hand (not through section()).
      const config::Node* written = &p.sections;
      std::stringstream keys(name);
      for (std::string k; written && std::getline(keys, k, '.');) written = written->find(k);
      if (!written || written->is_null()) continue;
      config::Node printed = prune::find_entry(name)->options(p.section(name));
      for (const auto& kv : written->entries) {
        const config::Node* got = printed.find(kv.first.scalar);
        ASSERT_NE(got, nullptr) << path << ": " << name << "." << kv.first.scalar;
        expect_same_value(*got, kv.second, path + ": " + name + "." + kv.first.scalar);
        ++knobs;
      }
    }
    const std::string text = prune::pipeline_yaml(p);
    EXPECT_EQ(prune::pipeline_yaml(config::load_pipeline_string(text, "printed")), text) << path;
  }
  EXPECT_GE(knobs, 20);
}

}  // namespace
}  // namespace mustdrop

namespace mustdrop {
namespace {

TEST(ChainErrors, AStaleAttentionReadIsAConfigErrorNamingThePipeline) {
  c10::InferenceMode guard;
  // S at layer 0 after LSM changed the tokens at layer 0: its CLS row would be stale.
  auto vision = Chain::build(config::load_pipeline_string("chain: [mustdrop.lsm, mustdrop.important_set]\n"
                                                          "mustdrop: {lsm: {threshold: -1}, important_set: {layer: 0}}",
                                                          "p.yaml"),
                             "p.yaml");
  EXPECT_THROW(vision->encode_frame(tiny(), frame(0), 0, 0.0), ConfigError);
  // Two attention readers after the same LLM layer, the first one dropping tokens.
  auto llm = Chain::build(config::load_pipeline_string("chain: [mustdrop.dual_attention, fastv]\n"
                                                       "mustdrop: {dual_attention: {layers: [2], target_tokens_per_frame: 10}}\n"
                                                       "fastv: {k: 3, keep_ratio: 0.5}",
                                                       "p.yaml"),
                          "p.yaml");
  EXPECT_THROW(answer_with(*llm, 1), ConfigError);
}

TEST(ChainErrors, StagesPastTheModelsDepthAreNamed) {
  // The tiny LLM has 4 layers, its tower 4 (feature layer 2).
  auto chain = Chain::build(config::load_pipeline(test::source_dir() + "/pipelines/mustdrop.yaml"), "mustdrop.yaml");
  std::vector<std::string> lines = chain->inactive_stages(tiny());
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("mustdrop.dual_attention: layer(s) 6, 10, 14 lie past the LLM's 4 layers"), std::string::npos)
      << lines[0];
  auto lsm = Chain::build(config::load_pipeline_string("chain: [mustdrop.lsm]\nmustdrop: {lsm: {layer: 3}}", "p.yaml"),
                          "p.yaml");
  ASSERT_EQ(lsm->inactive_stages(tiny()).size(), 1u);
  EXPECT_NE(lsm->inactive_stages(tiny())[0].find("never acts"), std::string::npos);
}

}  // namespace
}  // namespace mustdrop
