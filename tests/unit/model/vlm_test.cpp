// The vision tower and the whole model: CLS attention against a hand computation, hooks and
// proportional attention, the on-disk roundtrip, prompts, and malformed checkpoints.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "model/device.h"
#include "model/kv_cache.h"
#include "model/presets.h"
#include "model/safetensors.h"
#include "model/tiny_model.h"
#include "model/tokenizer.h"
#include "model/vlm.h"
#include "support/test_support.h"

namespace mustdrop::model {
namespace {

namespace fs = std::filesystem;

struct Tower {
  VisionConfig config;
  std::map<std::string, at::Tensor> tensors;
  std::unique_ptr<ClipVision> clip;
};

Tower small_tower(int image_size = 56) {
  Tower t;
  t.config = preset_config("tiny-llava").vision;
  t.config.image_size = image_size;
  ClipVision::random_tensors(t.config, "v.", 3, t.tensors);
  auto w = Weights::from_tensors(t.tensors);
  t.clip = std::make_unique<ClipVision>(t.config, ClipVision::load(t.config, "v.", *w, at::kDouble));
  return t;
}

TEST(ClipVision, ClsAttentionEqualsAHandComputation) {
  Tower t = small_tower();
  at::Tensor pixels = at::randn({2, 3, 56, 56}, at::kDouble);
  VisionRequest req;
  req.output_layer = 0;
  req.cls_attention_layers = {0, 1};  // layer 1 lies past the output layer: the CLS-only path
  VisionResult r = t.clip->forward(pixels, req);
  ASSERT_EQ(r.tokens.hidden.size(1), 17);  // CLS + 4x4 patches
  auto g = [&](const std::string& n) { return t.tensors.at("v." + n).to(at::kDouble); };
  // Embeddings by hand.
  at::Tensor patches = at::conv2d(pixels, g("embeddings.patch_embedding.weight"), {}, 14).flatten(2).transpose(1, 2);
  at::Tensor x = at::cat({g("embeddings.class_embedding").view({1, 1, -1}).expand({2, 1, 32}), patches}, 1) +
                 g("embeddings.position_embedding.weight");
  x = at::layer_norm(x, {32}, g("pre_layrnorm.weight"), g("pre_layrnorm.bias"), 1e-5);
  auto cls_row = [&](const at::Tensor& in, int layer) {
    std::string p = "encoder.layers." + std::to_string(layer) + ".";
    at::Tensor h = at::layer_norm(in, {32}, g(p + "layer_norm1.weight"), g(p + "layer_norm1.bias"), 1e-5);
    at::Tensor q = at::linear(h, g(p + "self_attn.q_proj.weight"), g(p + "self_attn.q_proj.bias"));
    at::Tensor k = at::linear(h, g(p + "self_attn.k_proj.weight"), g(p + "self_attn.k_proj.bias"));
    at::Tensor out = at::zeros({2, 16}, at::kDouble);
    for (int b = 0; b < 2; ++b) {
      for (int head = 0; head < 2; ++head) {
        at::Tensor qh = q[b][0].narrow(0, head * 16, 16), kh = k[b].narrow(1, head * 16, 16);
        at::Tensor p_ = at::softmax(at::mv(kh, qh) / 4.0, 0);
        out[b] += p_.narrow(0, 1, 16) / 2;
      }
    }
    return out;
  };
  EXPECT_TRUE(at::allclose(r.cls_attention.at(0).to(at::kDouble), cls_row(x, 0), 1e-5, 1e-7));
  EXPECT_TRUE(at::allclose(r.cls_attention.at(1).to(at::kDouble), cls_row(r.tokens.hidden, 1), 1e-5, 1e-7));
  EXPECT_EQ(r.tokens_per_layer, (std::vector<int64_t>{17}));  // one full layer
  EXPECT_EQ(r.cls_only_tokens, (std::vector<int64_t>{17}));   // and one CLS-row pass
}

// Copies token `src` over token `dst` after layer 0, and optionally merges them (drops dst,
// size 2 on src).
class DuplicateHook : public VisionHook {
 public:
  DuplicateHook(int src, int dst, bool merge) : src_(src), dst_(dst), merge_(merge) {}
  void after_layer(int layer, VisionTokens& t, const at::Tensor&) override {
    if (layer != 0) return;
    t.hidden = t.hidden.clone();
    t.hidden.select(1, dst_).copy_(t.hidden.select(1, src_));
    if (!merge_) return;
    std::vector<int64_t> keep;
    for (int64_t i = 0; i < t.hidden.size(1); ++i) {
      if (i != dst_) keep.push_back(i);
    }
    at::Tensor idx = at::tensor(keep, at::kLong);
    t.size = t.size.clone();
    t.size.select(1, src_).fill_(2.0);
    t.hidden = t.hidden.index_select(1, idx);
    t.size = t.size.index_select(1, idx);
    t.patch_index = t.patch_index.index_select(1, idx);
  }

 private:
  int src_, dst_;
  bool merge_;
};

TEST(ClipVision, ProportionalAttentionMakesAMergedPairCountTwice) {
  Tower t = small_tower();
  at::Tensor pixels = at::randn({1, 3, 56, 56}, at::kDouble);
  DuplicateHook dup(5, 9, false), merged(5, 9, true);
  VisionRequest req;
  req.output_layer = 2;
  req.proportional_attention = true;
  req.hook = &dup;
  VisionResult a = t.clip->forward(pixels, req);
  req.hook = &merged;
  VisionResult b = t.clip->forward(pixels, req);
  ASSERT_EQ(b.tokens.hidden.size(1), 16);
  EXPECT_EQ(b.tokens_per_layer, (std::vector<int64_t>{17, 16, 16}));
  // Every surviving token sees exactly what it saw next to the duplicate.
  at::Tensor a_kept = at::cat({a.tokens.hidden.narrow(1, 0, 9), a.tokens.hidden.narrow(1, 10, 7)}, 1);
  EXPECT_TRUE(at::allclose(a_kept, b.tokens.hidden, 1e-9, 1e-9));
  EXPECT_EQ(b.tokens.patch_index[0][9].item<int64_t>(), 9);  // slot 9 now holds token 10, i.e. patch 9
  // Without proportional attention the merged token counts once: the results differ.
  req.proportional_attention = false;
  VisionResult c = t.clip->forward(pixels, req);
  EXPECT_FALSE(at::allclose(a_kept, c.tokens.hidden, 1e-6, 1e-6));
}

TEST(ClipVision, PositionEmbeddingsInterpolateForOtherSizes) {
  Tower t = small_tower(56);
  VisionRequest req;
  req.output_layer = 1;
  VisionResult r = t.clip->forward(at::randn({1, 3, 84, 84}, at::kDouble), req);
  EXPECT_EQ(r.tokens.hidden.size(1), 1 + 6 * 6);
  EXPECT_FALSE(at::isnan(r.tokens.hidden).any().item<bool>());
}

// A tiny model directory, written once per test process.
const std::string& tiny_dir(const std::string& preset = "tiny-llava") {
  static std::map<std::string, std::string> made;
  auto it = made.find(preset);
  if (it != made.end()) return it->second;
  std::string dir = test::temp_dir() + "/" + preset;
  TinyModelOptions o;
  o.preset = preset;
  o.seed = 77;
  write_tiny_model(dir, o);
  return made[preset] = dir;
}

// Logits of the prompt's last token; the prompt's token ids come from `ids_from` (default: m).
at::Tensor prompt_logits(const VisionLanguageModel& m, const at::Tensor& pixels, const std::string& question,
                         const VisionLanguageModel* ids_from = nullptr) {
  at::Tensor vision = m.encode_frames(pixels);
  PromptLayout layout = (ids_from ? *ids_from : m).build_prompt(question, vision.size(0));
  DenseKvCache cache(m.llm().n_layers());
  return m.prefill(layout, vision, cache).logits;
}

// On a GPU (skipped, not failed, where this process sees none): the same checkpoint gives the
// host's logits. float32 with TF32 off (LibTorch's default for matrix products; the model turns it
// off for cuDNN's convolutions when it loads in f32) differs from the host only in summation order: max |diff| within 1e-4 of the largest logit. bf16 rounds every
// activation to 8 bits of mantissa: the logits keep their direction (cosine > 0.99) and their
// top token. The numbers are printed for the device check's record.
TEST(ModelOnGpu, LogitsMatchTheHost) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU visible to this process";
  auto host = VisionLanguageModel::load(tiny_dir());
  at::Tensor pixels = at::randn({2, 3, 336, 336});
  const std::string question = "What is in the picture?";
  const at::Tensor want = prompt_logits(*host, pixels, question).to(at::kDouble).reshape({-1});
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    LoadOptions lo;
    lo.dtype = dtype;
    lo.device = c10::Device(c10::DeviceType::CUDA, 0);
    auto gpu = VisionLanguageModel::load(tiny_dir(), lo);
    const at::Tensor got = to_host(prompt_logits(*gpu, pixels, question)).to(at::kDouble).reshape({-1});
    const double diff = (got - want).abs().max().item<double>(), scale = want.abs().max().item<double>();
    const double cosine = (got * want).sum().item<double>() / (got.norm() * want.norm()).item<double>();
    const bool same_top = got.argmax().item<int64_t>() == want.argmax().item<int64_t>();
    std::printf("[gpu parity] %s: max |diff| %.3g (max |logit| %.3g), cosine %.6f, same top token: %s\n",
                dtype == at::kFloat ? "f32" : "bf16", diff, scale, cosine, same_top ? "yes" : "no");
    if (dtype == at::kFloat) {
      EXPECT_LT(diff, 1e-4 * std::max(1.0, scale));
    } else {
      EXPECT_GT(cosine, 0.99);
    }
    EXPECT_TRUE(same_top);
  }
}

TEST(Model, SaveLoadRoundtripGivesIdenticalLogits) {
  auto loaded = VisionLanguageModel::load(tiny_dir());
  ModelConfig c = preset_config("tiny-llava");
  auto direct = VisionLanguageModel::random(loaded->config(), 77);
  at::Tensor pixels = at::randn({1, 3, 336, 336});
  at::Tensor a = prompt_logits(*loaded, pixels, "What is in the picture?");
  at::Tensor b = prompt_logits(*direct, pixels, "What is in the picture?", loaded.get());  // no tokenizer of its own
  EXPECT_TRUE(at::equal(a, b)) << (a - b).abs().max().item<float>();
  EXPECT_EQ(loaded->tokens_per_frame(), 576);
  EXPECT_FALSE(loaded->keeps_cls());
  EXPECT_EQ(loaded->feature_layer(), c.vision.num_hidden_layers - 2);
}

// A random model built in bf16 holds the same draws as the float32 one, rounded: the dtype
// changes the storage, not the numbers (a 7B preset is generated in bf16 directly).
TEST(Model, RandomWeightsInBf16AreTheFloat32DrawsRounded) {
  ModelConfig c = preset_config("tiny-llava");
  LoadOptions bf16;
  bf16.dtype = at::kBFloat16;
  auto a = VisionLanguageModel::random(c, 5), b = VisionLanguageModel::random(c, 5, bf16);
  EXPECT_EQ(b->llm().dtype(), at::kBFloat16);
  at::Tensor ea = a->llm().embed({1, 7, 99}), eb = b->llm().embed({1, 7, 99});
  EXPECT_TRUE(at::equal(ea.to(at::kBFloat16), eb));
  at::Tensor features = at::randn({3, c.vision.hidden_size});
  at::Tensor pa = a->project(features), pb = b->project(features);
  EXPECT_GT(pa.abs().max().item<double>(), 0.0);
  EXPECT_LT((pa - pb.to(at::kFloat)).abs().max().item<double>(), 0.02 * pa.abs().max().item<double>());
}

TEST(Model, ShardedNewPrefixF16CheckpointLoads) {
  std::string dir = test::temp_dir() + "/sharded";
  TinyModelOptions o;
  o.seed = 77;
  o.shards = 3;
  o.new_prefixes = true;
  o.dtype = "f16";
  write_tiny_model(dir, o);
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(dir + "/model-00002-of-00003.safetensors"));
  auto m = VisionLanguageModel::load(dir);
  auto ref = VisionLanguageModel::load(tiny_dir());
  at::Tensor pixels = at::randn({1, 3, 336, 336});
  at::Tensor a = prompt_logits(*m, pixels, "count the cars"), b = prompt_logits(*ref, pixels, "count the cars");
  EXPECT_TRUE(at::allclose(a, b, 1e-2, 1e-2)) << (a - b).abs().max().item<float>();  // f16 weights
}

// IEEE half to float, by hand (independent of LibTorch's conversion).
float half_to_float(uint16_t h) {
  const int sign = h >> 15, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  float v = exponent == 0 ? std::ldexp(static_cast<float>(mantissa), -24)
                          : std::ldexp(static_cast<float>(mantissa | 0x400), exponent - 25);
  return sign ? -v : v;
}

// The token embedding table stays in the checkpoint's dtype (only the prompt's rows are read);
// the rows a prompt reads come out in the compute dtype with the file's values.
TEST(Model, EmbeddingRowsOfAnF16CheckpointAreTheFileValuesInTheComputeDtype) {
  std::string dir = test::temp_dir() + "/f16-embed";
  TinyModelOptions o;
  o.seed = 78;
  o.dtype = "f16";
  write_tiny_model(dir, o);
  SafetensorsFile file(dir + "/model.safetensors");
  const TensorView* table = file.find("language_model.model.embed_tokens.weight");
  ASSERT_NE(table, nullptr);
  ASSERT_EQ(table->dtype, DType::kF16);
  const int64_t hidden = table->shape[1];
  const std::vector<int> ids = {1, 7, 99, static_cast<int>(table->shape[0] - 1)};
  std::vector<float> expected;
  for (int id : ids) {
    for (int64_t j = 0; j < hidden; ++j) {
      uint16_t bits;
      std::memcpy(&bits, table->data + 2 * (id * hidden + j), 2);
      expected.push_back(half_to_float(bits));
    }
  }
  const at::Tensor want = at::tensor(expected).view({static_cast<int64_t>(ids.size()), hidden});
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    LoadOptions lo;
    lo.dtype = dtype;
    auto m = VisionLanguageModel::load(dir, lo);
    at::Tensor got = m->llm().embed(ids);
    EXPECT_EQ(got.scalar_type(), dtype);
    EXPECT_TRUE(at::equal(got, want.to(dtype))) << (got.to(at::kFloat) - want).abs().max().item<float>();
  }
}

// A generated model's token table sits on a file mapping as a checkpoint's does: the table's
// whole size is mapped, and reading a few rows makes only their pages resident.
TEST(Model, GeneratedTokenTableIsMappedAndOnlyTheRowsReadAreResident) {
  ModelConfig c = preset_config("tiny-llava");
  c.text.vocab_size = 40000;  // a table of megabytes, so rows and table differ by far
  auto m = VisionLanguageModel::random(c, 5);
  const int64_t table_kb = c.text.vocab_size * c.text.hidden_size * 4 / 1024;
  // Sums Size and Rss of the mappings of the generated tables (named by the temporary file).
  auto mapped_kb = [] {
    std::ifstream smaps("/proc/self/smaps");
    std::string line;
    bool ours = false;
    std::pair<int64_t, int64_t> kb{0, 0};
    while (std::getline(smaps, line)) {
      const std::string first = line.substr(0, line.find(' '));
      const bool header = first.find('-') != std::string::npos &&
                          first.find_first_not_of("0123456789abcdef-") == std::string::npos;
      if (header) {
        ours = line.find("mustdrop-weights-") != std::string::npos;
      } else if (ours && line.rfind("Size:", 0) == 0) {
        kb.first += std::stoll(line.substr(5));
      } else if (ours && line.rfind("Rss:", 0) == 0) {
        kb.second += std::stoll(line.substr(4));
      }
    }
    return kb;
  };
  at::Tensor rows = m->llm().embed({1, 20000, 39999});
  auto [size_kb, rss_kb] = mapped_kb();
  EXPECT_GE(size_kb, table_kb);
  EXPECT_LT(rss_kb, 1024) << "of a " << table_kb << " kB table";
  // The rows are the draws themselves.
  at::Tensor table = VisionLanguageModel::random_tensors(c, 5).at("language_model.model.embed_tokens.weight");
  EXPECT_TRUE(at::equal(rows, table.index_select(0, at::tensor({1, 20000, 39999}, at::kLong))));
}

// The full LLaVA-1.5 vocabulary from the small bundled corpus: exactly 32,000 pieces, so <image>
// sits at 32000 as in the real checkpoint; ordinary text never uses a placeholder piece.
TEST(TinyModel, FullVocabularyTokenizerFromTheSmallCorpus) {
  const std::string dir = test::temp_dir() + "/full-vocab";
  std::filesystem::create_directories(dir);
  train_tokenizer(dir + "/tokenizer", 32000, 7, test::source_dir() + "/tools/data/tiny_corpus.txt");
  std::ofstream(dir + "/added_tokens.json") << R"({"<image>": 32000})";
  auto tok = Tokenizer::load(dir);
  EXPECT_EQ(tok->vocab_size(), 32001);  // the pieces and <image>
  EXPECT_EQ(tok->added_token_id("<image>"), 32000);
  const std::string text = "the red car drives past the door";
  std::vector<int> ids = tok->encode(text, false);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(tok->decode(ids), text);
  for (int id : ids) {
    EXPECT_LT(id, 32000);
    EXPECT_EQ(tok->decode({id}).find("<unused_"), std::string::npos) << id;
  }
}

TEST(Model, VideoLlavaKeepsClsPerFrameAndUsesTheVideoPrompt) {
  auto m = VisionLanguageModel::load(tiny_dir("tiny-video-llava"));
  EXPECT_TRUE(m->config().is_video_llava());
  EXPECT_TRUE(m->keeps_cls());
  EXPECT_EQ(m->tokens_per_frame(), 257);
  PromptLayout p = m->build_prompt("what happens? <video>", 8 * 257);
  EXPECT_EQ(p.n_vision, 2056);
  int64_t n_video = std::count(p.ids.begin(), p.ids.end(), m->config().video_token_index);
  EXPECT_EQ(n_video, 2056);  // the <video> typed in the question was removed
  EXPECT_EQ(p.ids[0], m->tokenizer()->bos_id());
  for (int64_t i = p.vision_begin; i < p.text_begin(); ++i) ASSERT_EQ(p.ids[static_cast<size_t>(i)], m->config().video_token_index);
  at::Tensor logits = prompt_logits(*m, at::randn({8, 3, 224, 224}), "what happens?");
  EXPECT_EQ(logits.size(1), m->config().text.vocab_size);
}

TEST(Model, LlavaPromptLayoutFollowsTheChatTemplate) {
  auto m = VisionLanguageModel::load(tiny_dir());
  PromptLayout p = m->build_prompt("What colour is the car?", 576);
  const Tokenizer& tok = *m->tokenizer();
  std::vector<int> before = tok.encode("USER: ", true);
  EXPECT_EQ(std::vector<int>(p.ids.begin(), p.ids.begin() + p.vision_begin), before);
  std::vector<int> after = tok.encode("USER: <image>\nWhat colour is the car? ASSISTANT:", true);
  after.erase(after.begin(), after.begin() + static_cast<int64_t>(before.size()) + 1);
  EXPECT_EQ(std::vector<int>(p.ids.begin() + p.text_begin(), p.ids.end()), after);
}

// Malformed checkpoints: each a ModelError naming the file at fault.
class BrokenCheckpoint : public ::testing::Test {
 protected:
  std::string copy(const std::string& name) {
    std::string dir = test::temp_dir() + "/broken_" + name;
    fs::remove_all(dir);
    fs::copy(tiny_dir(), dir, fs::copy_options::recursive);
    return dir;
  }
  void expect_model_error(const std::string& dir, const std::string& must_name, const std::string& phrase) {
    try {
      VisionLanguageModel::load(dir);
      ADD_FAILURE() << "loaded a broken checkpoint: " << dir;
    } catch (const ModelError& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(must_name), std::string::npos) << msg;
      EXPECT_NE(msg.find(phrase), std::string::npos) << msg;
    }
  }
  void rewrite_weights(const std::string& dir, const std::function<void(std::vector<TensorData>&)>& edit) {
    std::vector<TensorData> tensors;
    {
      SafetensorsFile f(dir + "/model.safetensors");
      for (const TensorView& t : f.tensors()) {
        tensors.push_back(TensorData{t.name, t.dtype, t.shape, std::vector<uint8_t>(t.data, t.data + t.n_bytes)});
      }
    }
    edit(tensors);
    write_safetensors(dir + "/model.safetensors", tensors);
  }
};

TEST_F(BrokenCheckpoint, MissingConfig) {
  std::string dir = copy("noconfig");
  fs::remove(dir + "/config.json");
  expect_model_error(dir, dir + "/config.json", "");
}

TEST_F(BrokenCheckpoint, ConfigWithoutTextConfig) {
  std::string dir = copy("notext");
  std::ofstream(dir + "/config.json") << R"({"architectures": ["LlavaForConditionalGeneration"], "vision_config": {}})";
  expect_model_error(dir, dir + "/config.json", "text_config");
}

TEST_F(BrokenCheckpoint, MissingTokenizer) {
  std::string dir = copy("notok");
  fs::remove(dir + "/tokenizer.model");
  expect_model_error(dir, "tokenizer.model", "");
}

TEST_F(BrokenCheckpoint, TruncatedSafetensors) {
  std::string dir = copy("trunc");
  fs::resize_file(dir + "/model.safetensors", fs::file_size(dir + "/model.safetensors") / 2);
  expect_model_error(dir, dir + "/model.safetensors", "");
}

TEST_F(BrokenCheckpoint, MissingUnexpectedAndWrongShapedTensorsListedTogether) {
  std::string dir = copy("names");
  rewrite_weights(dir, [](std::vector<TensorData>& t) {
    t.erase(std::remove_if(t.begin(), t.end(), [](const TensorData& d) { return d.name == "language_model.model.norm.weight"; }),
            t.end());
    t.push_back(TensorData{"language_model.model.extra.weight", DType::kF32, {2}, std::vector<uint8_t>(8, 0)});
    for (auto& d : t) {
      if (d.name == "multi_modal_projector.linear_2.bias") {
        d.shape = {d.shape[0] / 2, 2};
      }
    }
  });
  try {
    VisionLanguageModel::load(dir);
    FAIL() << "loaded";
  } catch (const ModelError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(dir), std::string::npos) << msg;
    EXPECT_NE(msg.find("1 missing"), std::string::npos) << msg;
    EXPECT_NE(msg.find("language_model.model.norm.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("1 unexpected"), std::string::npos) << msg;
    EXPECT_NE(msg.find("language_model.model.extra.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("wrong shape"), std::string::npos) << msg;
    EXPECT_NE(msg.find("multi_modal_projector.linear_2.bias"), std::string::npos) << msg;
  }
}

TEST_F(BrokenCheckpoint, IndexNamesAMissingShard) {
  std::string dir = copy("shard");
  fs::remove(dir + "/model.safetensors");
  std::ofstream(dir + "/model.safetensors.index.json")
      << R"({"metadata": {}, "weight_map": {"language_model.model.norm.weight": "model-00001-of-00002.safetensors"}})";
  expect_model_error(dir, "model.safetensors.index.json", "model-00001-of-00002.safetensors");
}

TEST_F(BrokenCheckpoint, IntegerDtypeWeights) {
  std::string dir = copy("dtype");
  rewrite_weights(dir, [](std::vector<TensorData>& t) {
    for (auto& d : t) {
      if (d.name == "language_model.model.norm.weight") d.dtype = DType::kI32;
    }
  });
  expect_model_error(dir, dir + "/model.safetensors", "I32");
}

}  // namespace
}  // namespace mustdrop::model
