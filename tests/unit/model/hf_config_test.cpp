// config.json parsing: published LLaVA / Video-LLaVA configs with HF defaults filled in, GQA and
// rope scaling, a to_json -> parse roundtrip on every field, and errors naming file and key.
#include "model/hf_config.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "core/error.h"
#include "support/test_support.h"

namespace mustdrop::model {
namespace {

// llava-hf/llava-1.5-7b-hf/config.json as published (sparse: text defaults come from LlamaConfig).
const char* const kLlava7b = R"({
  "architectures": ["LlavaForConditionalGeneration"],
  "ignore_index": -100,
  "image_token_index": 32000,
  "model_type": "llava",
  "pad_token_id": 32001,
  "projector_hidden_act": "gelu",
  "text_config": {
    "_name_or_path": "lmsys/vicuna-7b-v1.5",
    "architectures": ["LlamaForCausalLM"],
    "max_position_embeddings": 4096,
    "model_type": "llama",
    "rms_norm_eps": 1e-05,
    "torch_dtype": "float16",
    "vocab_size": 32064
  },
  "tie_word_embeddings": false,
  "torch_dtype": "float16",
  "transformers_version": "4.36.0.dev0",
  "vision_config": {
    "hidden_size": 1024,
    "image_size": 336,
    "intermediate_size": 4096,
    "model_type": "clip_vision_model",
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "patch_size": 14,
    "projection_dim": 768,
    "vocab_size": 32000
  },
  "vision_feature_layer": -2,
  "vision_feature_select_strategy": "default",
  "vocab_size": 32064
})";

// llava-hf/llava-1.5-13b-hf/config.json.
const char* const kLlava13b = R"({
  "architectures": ["LlavaForConditionalGeneration"],
  "ignore_index": -100,
  "image_token_index": 32000,
  "model_type": "llava",
  "pad_token_id": 32001,
  "projector_hidden_act": "gelu",
  "text_config": {
    "_name_or_path": "lmsys/vicuna-13b-v1.5",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 5120,
    "intermediate_size": 13824,
    "max_position_embeddings": 4096,
    "model_type": "llama",
    "num_attention_heads": 40,
    "num_hidden_layers": 40,
    "num_key_value_heads": 40,
    "rms_norm_eps": 1e-05,
    "torch_dtype": "float16",
    "vocab_size": 32064
  },
  "tie_word_embeddings": false,
  "torch_dtype": "float16",
  "transformers_version": "4.36.0.dev0",
  "vision_config": {
    "hidden_size": 1024,
    "image_size": 336,
    "intermediate_size": 4096,
    "model_type": "clip_vision_model",
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "patch_size": 14,
    "projection_dim": 768,
    "vocab_size": 32000
  },
  "vision_feature_layer": -2,
  "vision_feature_select_strategy": "default",
  "vocab_size": 32064
})";

// LanguageBind/Video-LLaVA-7B-hf/config.json (text_config carries its own pad id 0; the
// top-level one is LLaVA's added pad token and wins).
const char* const kVideoLlava7b = R"({
  "_name_or_path": "LanguageBind/Video-LLaVA-7B-hf",
  "architectures": ["VideoLlavaForConditionalGeneration"],
  "ignore_index": -100,
  "image_seq_length": 256,
  "image_token_index": 32000,
  "model_type": "video_llava",
  "pad_token_id": 32002,
  "projector_hidden_act": "gelu",
  "text_config": {
    "_name_or_path": "lmsys/vicuna-7b-v1.5",
    "architectures": ["LlamaForCausalLM"],
    "max_position_embeddings": 4096,
    "model_type": "llama",
    "pad_token_id": 0,
    "rms_norm_eps": 1e-05,
    "torch_dtype": "float16",
    "vocab_size": 32064
  },
  "torch_dtype": "float16",
  "transformers_version": "4.41.0.dev0",
  "video_seq_length": 2056,
  "video_token_index": 32001,
  "vision_config": {
    "hidden_size": 1024,
    "image_size": 224,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "patch_size": 14,
    "projection_dim": 768
  },
  "vision_feature_layer": -2,
  "vision_feature_select_strategy": "default"
})";

// The smallest config the parser accepts, with `text` and `top` spliced into text_config and
// the top level (each a comma-led list of members, or "").
std::string minimal_config(const std::string& text = "", const std::string& top = "") {
  return R"({"architectures": ["LlavaForConditionalGeneration"], "vision_config": {"hidden_size": 64,
    "num_attention_heads": 4, "num_hidden_layers": 2, "image_size": 28, "patch_size": 14},
    "text_config": {"model_type": "llama")" +
         text + "}" + top + "}";
}

// Writes `text` to a config file named after the running test and returns its path.
std::string write_config(const std::string& text, const std::string& suffix = "") {
  const std::string path = test::temp_dir() + "/cfg_" +
                           testing::UnitTest::GetInstance()->current_test_info()->name() + suffix + ".json";
  std::ofstream(path) << text;
  return path;
}

ModelConfig parse_text(const std::string& text) { return parse_model_config(write_config(text)); }

// The message of the ModelError parsing `path`; checks it starts with the path.
std::string error_for_path(const std::string& path) {
  try {
    parse_model_config(path);
  } catch (const ModelError& e) {
    std::string message = e.what();
    EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << "message does not start with the path: " << message;
    return message;
  }
  ADD_FAILURE() << "expected a ModelError parsing " << path;
  return "";
}

std::string error_for(const std::string& text) { return error_for_path(write_config(text)); }

// Evaluates `s` once (it may parse a file).
#define EXPECT_CONTAINS(s, part)                                                 \
  do {                                                                           \
    const std::string message_ = (s);                                            \
    EXPECT_NE(message_.find(part), std::string::npos) << "message: " << message_; \
  } while (0)

// Field-by-field equality, so a failure names the field.
void expect_same(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.architecture, b.architecture);
  EXPECT_EQ(a.vision.hidden_size, b.vision.hidden_size);
  EXPECT_EQ(a.vision.intermediate_size, b.vision.intermediate_size);
  EXPECT_EQ(a.vision.num_hidden_layers, b.vision.num_hidden_layers);
  EXPECT_EQ(a.vision.num_attention_heads, b.vision.num_attention_heads);
  EXPECT_EQ(a.vision.num_channels, b.vision.num_channels);
  EXPECT_EQ(a.vision.image_size, b.vision.image_size);
  EXPECT_EQ(a.vision.patch_size, b.vision.patch_size);
  EXPECT_EQ(a.vision.layer_norm_eps, b.vision.layer_norm_eps);
  EXPECT_EQ(a.vision.hidden_act, b.vision.hidden_act);
  EXPECT_EQ(a.text.model_type, b.text.model_type);
  EXPECT_EQ(a.text.hidden_size, b.text.hidden_size);
  EXPECT_EQ(a.text.intermediate_size, b.text.intermediate_size);
  EXPECT_EQ(a.text.num_hidden_layers, b.text.num_hidden_layers);
  EXPECT_EQ(a.text.num_attention_heads, b.text.num_attention_heads);
  EXPECT_EQ(a.text.num_key_value_heads, b.text.num_key_value_heads);
  EXPECT_EQ(a.text.vocab_size, b.text.vocab_size);
  EXPECT_EQ(a.text.max_position_embeddings, b.text.max_position_embeddings);
  EXPECT_EQ(a.text.rms_norm_eps, b.text.rms_norm_eps);
  EXPECT_EQ(a.text.rope_theta, b.text.rope_theta);
  EXPECT_EQ(a.text.rope_scaling_type, b.text.rope_scaling_type);
  EXPECT_EQ(a.text.rope_scaling_factor, b.text.rope_scaling_factor);
  EXPECT_EQ(a.text.attention_bias, b.text.attention_bias);
  EXPECT_EQ(a.text.hidden_act, b.text.hidden_act);
  EXPECT_EQ(a.text.tie_word_embeddings, b.text.tie_word_embeddings);
  EXPECT_EQ(a.projector_hidden_act, b.projector_hidden_act);
  EXPECT_EQ(a.image_token_index, b.image_token_index);
  EXPECT_EQ(a.video_token_index, b.video_token_index);
  EXPECT_EQ(a.vision_feature_layer, b.vision_feature_layer);
  EXPECT_EQ(a.vision_feature_select_strategy, b.vision_feature_select_strategy);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_id, b.eos_token_id);
  EXPECT_EQ(a.pad_token_id, b.pad_token_id);
  EXPECT_EQ(a.torch_dtype, b.torch_dtype);
}

TEST(HfConfig, Llava15_7bTakesLlamaDefaultsForWhatItOmits) {
  const ModelConfig c = parse_text(kLlava7b);
  EXPECT_EQ(c.architecture, "LlavaForConditionalGeneration");
  EXPECT_FALSE(c.is_video_llava());
  EXPECT_EQ(c.text.model_type, "llama");
  EXPECT_EQ(c.text.hidden_size, 4096);
  EXPECT_EQ(c.text.intermediate_size, 11008);
  EXPECT_EQ(c.text.num_hidden_layers, 32);
  EXPECT_EQ(c.text.num_attention_heads, 32);
  EXPECT_EQ(c.text.num_key_value_heads, 32);
  EXPECT_EQ(c.text.vocab_size, 32064);
  EXPECT_EQ(c.text.max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c.text.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.text.rope_theta, 10000.0);
  EXPECT_EQ(c.text.rope_scaling_type, "");
  EXPECT_FALSE(c.text.attention_bias);
  EXPECT_EQ(c.text.hidden_act, "silu");
  EXPECT_FALSE(c.text.tie_word_embeddings);
  EXPECT_EQ(c.vision.hidden_size, 1024);
  EXPECT_EQ(c.vision.intermediate_size, 4096);
  EXPECT_EQ(c.vision.num_hidden_layers, 24);
  EXPECT_EQ(c.vision.num_attention_heads, 16);
  EXPECT_EQ(c.vision.image_size, 336);
  EXPECT_EQ(c.vision.patch_size, 14);
  EXPECT_EQ(c.vision.num_channels, 3);
  EXPECT_DOUBLE_EQ(c.vision.layer_norm_eps, 1e-5);
  EXPECT_EQ(c.vision.hidden_act, "quick_gelu");
  EXPECT_EQ(c.projector_hidden_act, "gelu");
  EXPECT_EQ(c.image_token_index, 32000);
  EXPECT_EQ(c.video_token_index, -1);
  EXPECT_EQ(c.vision_feature_layer, -2);
  EXPECT_EQ(c.vision_feature_select_strategy, "default");
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
  EXPECT_EQ(c.pad_token_id, 32001);
  EXPECT_EQ(c.torch_dtype, "float16");
}

TEST(HfConfig, Llava15_13bReadsItsTextSizes) {
  const ModelConfig c = parse_text(kLlava13b);
  EXPECT_EQ(c.text.hidden_size, 5120);
  EXPECT_EQ(c.text.intermediate_size, 13824);
  EXPECT_EQ(c.text.num_hidden_layers, 40);
  EXPECT_EQ(c.text.num_attention_heads, 40);
  EXPECT_EQ(c.text.num_key_value_heads, 40);
  EXPECT_EQ(c.text.vocab_size, 32064);
  EXPECT_EQ(c.vision.image_size, 336);
}

TEST(HfConfig, VideoLlava7bIsTheVideoArchitecture) {
  const ModelConfig c = parse_text(kVideoLlava7b);
  EXPECT_EQ(c.architecture, "VideoLlavaForConditionalGeneration");
  EXPECT_TRUE(c.is_video_llava());
  EXPECT_EQ(c.image_token_index, 32000);
  EXPECT_EQ(c.video_token_index, 32001);
  EXPECT_EQ(c.pad_token_id, 32002);
  EXPECT_EQ(c.vision.image_size, 224);
  EXPECT_EQ(c.vision.patch_size, 14);
  EXPECT_EQ(c.vision.hidden_size, 1024);
  EXPECT_EQ(c.text.hidden_size, 4096);
  EXPECT_EQ(c.text.vocab_size, 32064);
}

TEST(HfConfig, GroupedQueryAttentionAndLinearRopeScaling) {
  const ModelConfig c = parse_text(minimal_config(
      R"(, "num_key_value_heads": 8, "rope_theta": 500000.0, "rope_scaling": {"type": "linear", "factor": 2.0})"));
  EXPECT_EQ(c.text.num_attention_heads, 32);
  EXPECT_EQ(c.text.num_key_value_heads, 8);
  EXPECT_DOUBLE_EQ(c.text.rope_theta, 500000.0);
  EXPECT_EQ(c.text.rope_scaling_type, "linear");
  EXPECT_DOUBLE_EQ(c.text.rope_scaling_factor, 2.0);
}

TEST(HfConfig, RopeScalingNullAndRopeTypeSpelling) {
  const ModelConfig none = parse_text(minimal_config(R"(, "rope_scaling": null)"));
  EXPECT_EQ(none.text.rope_scaling_type, "");
  EXPECT_DOUBLE_EQ(none.text.rope_scaling_factor, 1.0);
  const ModelConfig dynamic = parse_model_config(
      write_config(minimal_config(R"(, "rope_scaling": {"rope_type": "dynamic", "factor": 4})"), "_dynamic"));
  EXPECT_EQ(dynamic.text.rope_scaling_type, "dynamic");
  EXPECT_DOUBLE_EQ(dynamic.text.rope_scaling_factor, 4.0);
}

TEST(HfConfig, ModelTypeStandsInForMissingArchitectures) {
  std::string llava = kLlava7b;
  llava.erase(llava.find(R"("architectures": ["LlavaForConditionalGeneration"],)"),
              std::string(R"("architectures": ["LlavaForConditionalGeneration"],)").size());
  EXPECT_EQ(parse_text(llava).architecture, "LlavaForConditionalGeneration");

  const std::string video = R"({"model_type": "video_llava", "architectures": [],
    "vision_config": {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "image_size": 28,
    "patch_size": 14}, "text_config": {}})";
  const ModelConfig v = parse_model_config(write_config(video, "_video"));
  EXPECT_EQ(v.architecture, "VideoLlavaForConditionalGeneration");
  EXPECT_EQ(v.video_token_index, 32001);  // VideoLlavaConfig's default
}

TEST(HfConfig, TopLevelVocabAndTokenIdsFillTextConfigGaps) {
  const ModelConfig c = parse_text(minimal_config(
      R"(, "eos_token_id": 7)", R"(, "vocab_size": 5000, "bos_token_id": 11, "eos_token_id": 12, "pad_token_id": null)"));
  EXPECT_EQ(c.text.vocab_size, 5000);
  EXPECT_EQ(c.bos_token_id, 11);
  EXPECT_EQ(c.eos_token_id, 7);  // text_config wins
  EXPECT_EQ(c.pad_token_id, -1);  // null reads as absent
}

TEST(HfConfig, Qwen2TextModelHasAttentionBiasAndItsOwnDefaults) {
  const ModelConfig c = parse_text(minimal_config().replace(minimal_config().find("llama"), 5, "qwen2"));
  EXPECT_EQ(c.text.model_type, "qwen2");
  EXPECT_TRUE(c.text.attention_bias);
  EXPECT_EQ(c.text.vocab_size, 151936);
  const ModelConfig llama = parse_model_config(write_config(minimal_config(), "_llama"));
  EXPECT_FALSE(llama.text.attention_bias);
}

TEST(HfConfig, ToJsonRoundtripKeepsEveryField) {
  ModelConfig c;
  c.architecture = "VideoLlavaForConditionalGeneration";
  c.vision = {48, 100, 3, 6, 4, 42, 7, 1.0 / 3.0 * 1e-5, "gelu"};
  c.text.model_type = "mistral";
  c.text.hidden_size = 96;
  c.text.intermediate_size = 250;
  c.text.num_hidden_layers = 5;
  c.text.num_attention_heads = 12;
  c.text.num_key_value_heads = 4;
  c.text.vocab_size = 777;
  c.text.max_position_embeddings = 333;
  c.text.rms_norm_eps = 0.1 + 0.2;  // not exactly representable in short decimal
  c.text.rope_theta = 123456.789;
  c.text.rope_scaling_type = "dynamic";
  c.text.rope_scaling_factor = 2.5;
  c.text.attention_bias = true;
  c.text.hidden_act = "gelu_pytorch_tanh";
  c.text.tie_word_embeddings = true;
  c.projector_hidden_act = "relu";
  c.image_token_index = 700;
  c.video_token_index = 701;
  c.vision_feature_layer = -3;
  c.vision_feature_select_strategy = "full";
  c.bos_token_id = 5;
  c.eos_token_id = 6;
  c.pad_token_id = 702;
  c.torch_dtype = "bfloat16";
  const ModelConfig back = parse_text(model_config_to_json(c));
  expect_same(back, c);

  const ModelConfig llava = parse_model_config(write_config(kLlava7b, "_7b"));
  expect_same(parse_model_config(write_config(model_config_to_json(llava), "_7b_back")), llava);
}

TEST(HfConfigErrors, MissingFile) {
  const std::string path = test::temp_dir() + "/no_such_dir/config.json";
  EXPECT_CONTAINS(error_for_path(path), "cannot open config.json");
}

TEST(HfConfigErrors, InvalidJsonGivesParserPosition) {
  const std::string m = error_for(R"({"architectures": ["LlavaForConditionalGeneration"],, })");
  EXPECT_CONTAINS(m, "invalid JSON");
  EXPECT_CONTAINS(m, "line 1, column 53");
}

TEST(HfConfigErrors, TopLevelNotAnObject) { EXPECT_CONTAINS(error_for("[1]"), "expected a JSON object"); }

TEST(HfConfigErrors, MissingVisionConfig) {
  std::string text = kLlava7b;
  text.replace(text.find("\"vision_config\""), 15, "\"vision_cfg\"");
  EXPECT_CONTAINS(error_for(text), "missing vision_config object");
}

TEST(HfConfigErrors, MissingTextConfig) {
  std::string text = kLlava7b;
  text.replace(text.find("\"text_config\""), 13, "\"txt_config\"");
  EXPECT_CONTAINS(error_for(text), "missing text_config object");
}

TEST(HfConfigErrors, StringHiddenSizeNamesTheDottedKey) {
  const std::string path = write_config(minimal_config(R"(, "hidden_size": "4096")"));
  EXPECT_EQ(error_for_path(path), path + ": text_config.hidden_size: expected an integer, found string");
}

TEST(HfConfigErrors, FractionalLayerCountAndStringEps) {
  EXPECT_CONTAINS(error_for(minimal_config(R"(, "num_hidden_layers": 32.5)")),
                  "text_config.num_hidden_layers: expected an integer, found number 32.5");
  EXPECT_CONTAINS(error_for_path(write_config(minimal_config(R"(, "rms_norm_eps": "1e-5")"), "_eps")),
                  "text_config.rms_norm_eps: expected a number, found string");
}

TEST(HfConfigErrors, HiddenNotDivisibleByHeads) {
  EXPECT_CONTAINS(error_for(minimal_config(R"(, "hidden_size": 4100)")),
                  "text_config.hidden_size (4100) is not divisible by text_config.num_attention_heads (32)");
  std::string vision = minimal_config();
  vision.replace(vision.find("\"hidden_size\": 64"), 17, "\"hidden_size\": 66");
  EXPECT_CONTAINS(error_for_path(write_config(vision, "_vision")),
                  "vision_config.hidden_size (66) is not divisible by vision_config.num_attention_heads (4)");
}

TEST(HfConfigErrors, KvHeadsNotDividingHeads) {
  EXPECT_CONTAINS(error_for(minimal_config(R"(, "num_key_value_heads": 5)")),
                  "text_config.num_attention_heads (32) is not divisible by text_config.num_key_value_heads (5)");
}

TEST(HfConfigErrors, ImageSizeNotAMultipleOfPatchSize) {
  std::string text = minimal_config();
  text.replace(text.find("\"image_size\": 28"), 16, "\"image_size\": 30");
  EXPECT_CONTAINS(error_for(text), "vision_config.image_size (30) is not a multiple of vision_config.patch_size (14)");
}

TEST(HfConfigErrors, NonPositiveSize) {
  EXPECT_CONTAINS(error_for(minimal_config(R"(, "num_hidden_layers": 0)")),
                  "text_config.num_hidden_layers: must be positive, found 0");
}

TEST(HfConfigErrors, UnsupportedArchitectureListsTheSupportedOnes) {
  std::string text = kLlava7b;
  text.replace(text.find("LlavaForConditionalGeneration"), 29, "Qwen2VLForConditionalGeneration");
  const std::string m = error_for(text);
  EXPECT_CONTAINS(m, "architectures: unsupported architecture Qwen2VLForConditionalGeneration");
  EXPECT_CONTAINS(m, "LlavaForConditionalGeneration, VideoLlavaForConditionalGeneration");
}

TEST(HfConfigErrors, NoArchitecturesAndUnknownModelType) {
  const std::string m = error_for(R"({"model_type": "llava_next", "vision_config": {}, "text_config": {}})");
  EXPECT_CONTAINS(m, "model_type: unsupported model_type 'llava_next'");
  EXPECT_CONTAINS(m, "VideoLlavaForConditionalGeneration");
}

TEST(HfConfigErrors, ArchitecturesNotAnArray) {
  EXPECT_CONTAINS(error_for(R"({"architectures": "LlavaForConditionalGeneration"})"),
                  "architectures: expected an array of strings, found string");
}

TEST(HfConfigErrors, BadFeatureStrategyAndLayer) {
  EXPECT_CONTAINS(error_for(minimal_config("", R"(, "vision_feature_select_strategy": "cls")")),
                  "vision_feature_select_strategy: expected 'default' or 'full', found 'cls'");
  // minimal_config's tower has 2 layers, so 3 hidden states (embeddings, layer 0, layer 1): as in
  // transformers, indices -3..2 are valid.
  EXPECT_CONTAINS(error_for_path(write_config(minimal_config("", R"(, "vision_feature_layer": -4)"), "_low")),
                  "vision_feature_layer: -4 is outside [-3, 2]");
  EXPECT_CONTAINS(error_for_path(write_config(minimal_config("", R"(, "vision_feature_layer": 3)"), "_high")),
                  "vision_feature_layer: 3 is outside [-3, 2]");
  for (int layer : {-3, -1, 0, 2}) {
    EXPECT_EQ(parse_model_config(write_config(
                                     minimal_config("", ", \"vision_feature_layer\": " + std::to_string(layer)), "_ok"))
                  .vision_feature_layer,
              layer);
  }
}

TEST(HfConfigErrors, UnsupportedRopeScalingAndTextModel) {
  EXPECT_CONTAINS(error_for(minimal_config(R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4})")),
                  "text_config.rope_scaling: unsupported rope scaling type 'yarn'");
  EXPECT_CONTAINS(error_for_path(write_config(minimal_config(R"(, "rope_scaling": {"factor": 4})"), "_notype")),
                  "text_config.rope_scaling: missing \"type\"");
  std::string gemma = minimal_config();
  gemma.replace(gemma.find("llama"), 5, "gemma");
  EXPECT_CONTAINS(error_for_path(write_config(gemma, "_gemma")), "text_config.model_type: unsupported text model 'gemma'");
}

}  // namespace
}  // namespace mustdrop::model
