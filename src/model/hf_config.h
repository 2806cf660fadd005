// A Hugging Face LLaVA / Video-LLaVA config.json, parsed strictly. Keys the file omits take
// the defaults Hugging Face's own config classes use (a published llava-1.5 config.json leaves
// most of text_config out); keys present with the wrong type are errors.
#pragma once

#include <string>
#include <vector>

namespace mustdrop::model {

// An activation function, decoded once from its Hugging Face spelling (`hidden_act`).
enum class Activation { kGelu, kQuickGelu, kSilu };
const char* activation_name(Activation a);
// `name` as one of `supported`; ModelError "config.json: <key> '<name>' is not supported (...)"
// otherwise. Configs keep the string as written (it round-trips); models decode it here once.
Activation decode_activation(const std::string& name, const std::string& key, const std::vector<Activation>& supported);

// CLIP vision tower (HF CLIPVisionConfig; defaults are CLIPVisionConfig's).
struct VisionConfig {
  int hidden_size = 768;
  int intermediate_size = 3072;
  int num_hidden_layers = 12;
  int num_attention_heads = 12;
  int num_channels = 3;
  int image_size = 224;
  int patch_size = 32;
  double layer_norm_eps = 1e-5;
  std::string hidden_act = "quick_gelu";
};

// Llama-family text model (HF LlamaConfig defaults; Mistral/Qwen2 follow where they fit).
struct TextConfig {
  std::string model_type = "llama";
  int hidden_size = 4096;
  int intermediate_size = 11008;
  int num_hidden_layers = 32;
  int num_attention_heads = 32;
  int num_key_value_heads = -1;  // -1 in the file's absence: equals num_attention_heads after parsing
  int vocab_size = 32000;
  int max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::string rope_scaling_type;     // "" (none), "linear" or "dynamic"
  double rope_scaling_factor = 1.0;
  bool attention_bias = false;       // q/k/v/o biases (Qwen2 has q/k/v bias: set from model_type)
  std::string hidden_act = "silu";
  bool tie_word_embeddings = false;
};

struct ModelConfig {
  std::string architecture;  // "LlavaForConditionalGeneration" | "VideoLlavaForConditionalGeneration"
  VisionConfig vision;
  TextConfig text;
  std::string projector_hidden_act = "gelu";
  int image_token_index = 32000;
  int video_token_index = -1;        // Video-LLaVA only
  int vision_feature_layer = -2;
  std::string vision_feature_select_strategy = "default";  // "default" drops CLS, "full" keeps it
  int bos_token_id = 1;
  int eos_token_id = 2;
  int pad_token_id = -1;
  std::string torch_dtype;           // as written ("float16", ...), informational

  bool is_video_llava() const { return architecture == "VideoLlavaForConditionalGeneration"; }
};

// Parses `path` (a config.json). Throws ModelError naming the file and the field for: a missing
// or unreadable file, invalid JSON, no `architectures` (or an unsupported one), missing
// `vision_config`/`text_config` objects, a field of the wrong type or an impossible value
// (non-positive sizes, heads not dividing hidden size, kv heads not dividing heads).
ModelConfig parse_model_config(const std::string& path);

// The JSON text of a config.json that parse_model_config() reads back to `config` (every field
// written explicitly), for generated models.
std::string model_config_to_json(const ModelConfig& config);

}  // namespace mustdrop::model
