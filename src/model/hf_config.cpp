// config.json <-> ModelConfig. Absent keys (and keys set to null) take Hugging Face's defaults;
// unknown keys are ignored; a known key of the wrong type or an impossible value is an error
// naming the file and the dotted key.
#include "model/hf_config.h"

#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace mustdrop::model {
namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

constexpr const char* kLlava = "LlavaForConditionalGeneration";
constexpr const char* kVideoLlava = "VideoLlavaForConditionalGeneration";
constexpr const char* kClipVision = "clip_vision_model";
constexpr int kVideoLlavaDefaultVideoToken = 32001;  // VideoLlavaConfig's default

std::string supported_architectures() { return std::string(kLlava) + ", " + kVideoLlava; }

// The architecture a top-level model_type stands for, or "".
std::string architecture_of_model_type(const std::string& model_type) {
  if (model_type == "llava") return kLlava;
  if (model_type == "video_llava") return kVideoLlava;
  return "";
}

bool is_supported_architecture(const std::string& name) { return name == kLlava || name == kVideoLlava; }

std::string join_key(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

// JSON type in words for messages.
std::string json_kind(const Json& j) {
  if (j.is_number_integer()) return "integer";
  if (j.is_number_float()) return "number " + j.dump();
  if (j.is_string()) return "string";
  if (j.is_boolean()) return "boolean";
  if (j.is_array()) return "array";
  if (j.is_object()) return "object";
  return "null";
}

// Typed access to one JSON object with the file and the dotted key in every message.
class Reader {
 public:
  explicit Reader(const std::string& path) : path_(path) {}

  [[noreturn]] void fail(const std::string& key, const std::string& message) const {
    throw ModelError(path_ + ": " + (key.empty() ? "" : key + ": ") + message);
  }

  // obj[key] unless absent or null.
  static const Json* find(const Json& obj, const char* key) {
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }

  // The object at obj[key]; fails when absent or of another type.
  const Json& object(const Json& obj, const char* key) const {
    const Json* j = find(obj, key);
    if (!j) fail("", std::string("missing ") + key + " object");
    if (!j->is_object()) fail(key, "expected an object, found " + json_kind(*j));
    return *j;
  }

  // Each reader leaves `out` alone when the key is absent and returns whether it was present.
  bool read(const Json& obj, const std::string& prefix, const char* key, int& out) const {
    const Json* j = find(obj, key);
    if (!j) return false;
    const std::string name = join_key(prefix, key);
    if (!j->is_number_integer()) fail(name, "expected an integer, found " + json_kind(*j));
    bool in_range = j->is_number_unsigned() ? j->get<uint64_t>() <= static_cast<uint64_t>(INT_MAX)
                                            : j->get<int64_t>() >= INT_MIN && j->get<int64_t>() <= INT_MAX;
    if (!in_range) fail(name, j->dump() + " is out of range for a 32-bit integer");
    out = j->get<int>();
    return true;
  }

  bool read(const Json& obj, const std::string& prefix, const char* key, double& out) const {
    const Json* j = find(obj, key);
    if (!j) return false;
    if (!j->is_number()) fail(join_key(prefix, key), "expected a number, found " + json_kind(*j));
    out = j->get<double>();
    return true;
  }

  bool read(const Json& obj, const std::string& prefix, const char* key, bool& out) const {
    const Json* j = find(obj, key);
    if (!j) return false;
    if (!j->is_boolean()) fail(join_key(prefix, key), "expected true or false, found " + json_kind(*j));
    out = j->get<bool>();
    return true;
  }

  bool read(const Json& obj, const std::string& prefix, const char* key, std::string& out) const {
    const Json* j = find(obj, key);
    if (!j) return false;
    if (!j->is_string()) fail(join_key(prefix, key), "expected a string, found " + json_kind(*j));
    out = j->get<std::string>();
    return true;
  }

  void require_positive(const std::string& key, double value) const {
    if (!(value > 0)) {
      std::ostringstream os;
      os << "must be positive, found " << value;
      fail(key, os.str());
    }
  }

  void require_divides(const std::string& prefix, const char* big, int big_value, const char* small,
                       int small_value, const char* verb) const {
    if (big_value % small_value != 0) {
      fail("", join_key(prefix, big) + " (" + std::to_string(big_value) + ") is not " + verb + " " +
                   join_key(prefix, small) + " (" + std::to_string(small_value) + ")");
    }
  }

 private:
  const std::string& path_;
};

std::string read_text(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    throw ModelError(path + ": cannot open config.json (it is a directory)");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ModelError(path + ": cannot open config.json (" + std::strerror(errno) + ")");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw ModelError(path + ": cannot read config.json (" + std::strerror(errno) + ")");
  return text.str();
}

std::string pick_architecture(const Reader& r, const Json& root) {
  std::vector<std::string> listed;
  if (const Json* archs = Reader::find(root, "architectures")) {
    if (!archs->is_array()) r.fail("architectures", "expected an array of strings, found " + json_kind(*archs));
    for (size_t i = 0; i < archs->size(); ++i) {
      const Json& a = (*archs)[i];
      if (!a.is_string()) {
        r.fail("architectures[" + std::to_string(i) + "]", "expected a string, found " + json_kind(a));
      }
      listed.push_back(a.get<std::string>());
    }
  }
  for (const std::string& a : listed) {
    if (is_supported_architecture(a)) return a;
  }
  if (!listed.empty()) {
    std::string names;
    for (const std::string& a : listed) names += (names.empty() ? "" : ", ") + a;
    r.fail("architectures", "unsupported architecture " + names + " (supported: " + supported_architectures() + ")");
  }
  std::string model_type;
  if (!r.read(root, "", "model_type", model_type)) {
    r.fail("", "no architectures and no model_type; cannot tell the architecture (supported: " +
                   supported_architectures() + ")");
  }
  std::string arch = architecture_of_model_type(model_type);
  if (arch.empty()) {
    r.fail("model_type", "unsupported model_type '" + model_type + "' and no architectures (supported: " +
                             supported_architectures() + ", i.e. model_type llava or video_llava)");
  }
  return arch;
}

void parse_vision(const Reader& r, const Json& v, VisionConfig& out) {
  const std::string p = "vision_config";
  std::string model_type = kClipVision;
  r.read(v, p, "model_type", model_type);
  if (model_type != kClipVision) {
    r.fail(p + ".model_type", "unsupported vision tower '" + model_type + "' (supported: " + kClipVision + ")");
  }
  r.read(v, p, "hidden_size", out.hidden_size);
  r.read(v, p, "intermediate_size", out.intermediate_size);
  r.read(v, p, "num_hidden_layers", out.num_hidden_layers);
  r.read(v, p, "num_attention_heads", out.num_attention_heads);
  r.read(v, p, "num_channels", out.num_channels);
  r.read(v, p, "image_size", out.image_size);
  r.read(v, p, "patch_size", out.patch_size);
  r.read(v, p, "layer_norm_eps", out.layer_norm_eps);
  r.read(v, p, "hidden_act", out.hidden_act);

  r.require_positive(p + ".hidden_size", out.hidden_size);
  r.require_positive(p + ".intermediate_size", out.intermediate_size);
  r.require_positive(p + ".num_hidden_layers", out.num_hidden_layers);
  r.require_positive(p + ".num_attention_heads", out.num_attention_heads);
  r.require_positive(p + ".num_channels", out.num_channels);
  r.require_positive(p + ".image_size", out.image_size);
  r.require_positive(p + ".patch_size", out.patch_size);
  r.require_positive(p + ".layer_norm_eps", out.layer_norm_eps);
  r.require_divides(p, "hidden_size", out.hidden_size, "num_attention_heads", out.num_attention_heads,
                    "divisible by");
  r.require_divides(p, "image_size", out.image_size, "patch_size", out.patch_size, "a multiple of");
}

// The defaults of the text model's own HF config class, where they differ from LlamaConfig's.
void apply_text_defaults(const Reader& r, const std::string& model_type, TextConfig& out) {
  if (model_type == "llama") return;
  if (model_type == "mistral") {
    out.intermediate_size = 14336;
    out.num_key_value_heads = 8;
    out.max_position_embeddings = 4096 * 32;
    return;
  }
  if (model_type == "qwen2") {
    out.vocab_size = 151936;
    out.intermediate_size = 22016;
    out.max_position_embeddings = 32768;
    out.attention_bias = true;
    return;
  }
  r.fail("text_config.model_type", "unsupported text model '" + model_type + "' (supported: llama, mistral, qwen2)");
}

void parse_rope_scaling(const Reader& r, const Json& text, TextConfig& out) {
  const std::string key = "text_config.rope_scaling";
  const Json* rs = Reader::find(text, "rope_scaling");
  if (!rs) return;
  if (!rs->is_object()) r.fail(key, "expected an object or null, found " + json_kind(*rs));
  std::string type;
  if (!r.read(*rs, key, "rope_type", type) && !r.read(*rs, key, "type", type)) {
    r.fail(key, "missing \"type\" (linear or dynamic)");
  }
  if (type == "default") return;  // plain RoPE, written out by newer transformers
  if (type != "linear" && type != "dynamic") {
    r.fail(key, "unsupported rope scaling type '" + type + "' (supported: linear, dynamic)");
  }
  double factor = 0;
  if (!r.read(*rs, key, "factor", factor)) r.fail(key, "missing \"factor\"");
  r.require_positive(key + ".factor", factor);
  out.rope_scaling_type = type;
  out.rope_scaling_factor = factor;
}

void parse_text(const Reader& r, const Json& root, const Json& t, TextConfig& out) {
  const std::string p = "text_config";
  r.read(t, p, "model_type", out.model_type);
  apply_text_defaults(r, out.model_type, out);
  r.read(t, p, "hidden_size", out.hidden_size);
  r.read(t, p, "intermediate_size", out.intermediate_size);
  r.read(t, p, "num_hidden_layers", out.num_hidden_layers);
  r.read(t, p, "num_attention_heads", out.num_attention_heads);
  if (!r.read(t, p, "num_key_value_heads", out.num_key_value_heads) && out.num_key_value_heads < 0) {
    out.num_key_value_heads = out.num_attention_heads;
  }
  if (!r.read(t, p, "vocab_size", out.vocab_size)) r.read(root, "", "vocab_size", out.vocab_size);
  r.read(t, p, "max_position_embeddings", out.max_position_embeddings);
  r.read(t, p, "rms_norm_eps", out.rms_norm_eps);
  r.read(t, p, "rope_theta", out.rope_theta);
  parse_rope_scaling(r, t, out);
  r.read(t, p, "attention_bias", out.attention_bias);
  r.read(t, p, "hidden_act", out.hidden_act);
  if (!r.read(t, p, "tie_word_embeddings", out.tie_word_embeddings)) {
    r.read(root, "", "tie_word_embeddings", out.tie_word_embeddings);
  }

  r.require_positive(p + ".hidden_size", out.hidden_size);
  r.require_positive(p + ".intermediate_size", out.intermediate_size);
  r.require_positive(p + ".num_hidden_layers", out.num_hidden_layers);
  r.require_positive(p + ".num_attention_heads", out.num_attention_heads);
  r.require_positive(p + ".num_key_value_heads", out.num_key_value_heads);
  r.require_positive(p + ".vocab_size", out.vocab_size);
  r.require_positive(p + ".max_position_embeddings", out.max_position_embeddings);
  r.require_positive(p + ".rms_norm_eps", out.rms_norm_eps);
  r.require_positive(p + ".rope_theta", out.rope_theta);
  r.require_divides(p, "hidden_size", out.hidden_size, "num_attention_heads", out.num_attention_heads,
                    "divisible by");
  r.require_divides(p, "num_attention_heads", out.num_attention_heads, "num_key_value_heads",
                    out.num_key_value_heads, "divisible by");
}

}  // namespace

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::kGelu:
      return "gelu";
    case Activation::kQuickGelu:
      return "quick_gelu";
    case Activation::kSilu:
      return "silu";
  }
  return "?";
}

Activation decode_activation(const std::string& name, const std::string& key, const std::vector<Activation>& supported) {
  std::string list;
  for (Activation a : supported) {
    if (name == activation_name(a)) return a;
    list += (list.empty() ? "" : " or ") + std::string(activation_name(a));
  }
  throw ModelError("config.json: " + key + " '" + name + "' is not supported (" + list + ")");
}

ModelConfig parse_model_config(const std::string& path) {
  const std::string text = read_text(path);
  Json root;
  try {
    root = Json::parse(text);
  } catch (const Json::parse_error& e) {
    throw ModelError(path + ": invalid JSON (" + e.what() + ")");
  }
  Reader r(path);
  if (!root.is_object()) r.fail("", "expected a JSON object at the top level, found " + json_kind(root));

  ModelConfig c;
  c.architecture = pick_architecture(r, root);
  parse_vision(r, r.object(root, "vision_config"), c.vision);
  const Json& t = r.object(root, "text_config");
  parse_text(r, root, t, c.text);

  r.read(root, "", "projector_hidden_act", c.projector_hidden_act);
  if (!r.read(root, "", "image_token_index", c.image_token_index)) {
    r.read(root, "", "image_token_id", c.image_token_index);
  }
  if (c.is_video_llava()) c.video_token_index = kVideoLlavaDefaultVideoToken;
  if (!r.read(root, "", "video_token_index", c.video_token_index)) {
    r.read(root, "", "video_token_id", c.video_token_index);
  }
  r.read(root, "", "vision_feature_layer", c.vision_feature_layer);
  r.read(root, "", "vision_feature_select_strategy", c.vision_feature_select_strategy);
  // bos/eos belong to the text model; pad is LLaVA's own added token, set at the top level.
  if (!r.read(t, "text_config", "bos_token_id", c.bos_token_id)) r.read(root, "", "bos_token_id", c.bos_token_id);
  if (!r.read(t, "text_config", "eos_token_id", c.eos_token_id)) r.read(root, "", "eos_token_id", c.eos_token_id);
  if (!r.read(root, "", "pad_token_id", c.pad_token_id)) r.read(t, "text_config", "pad_token_id", c.pad_token_id);
  if (!r.read(root, "", "torch_dtype", c.torch_dtype) && !r.read(root, "", "dtype", c.torch_dtype)) {
    r.read(t, "text_config", "torch_dtype", c.torch_dtype);
  }

  if (c.image_token_index < 0) r.fail("image_token_index", "must be non-negative, found " + std::to_string(c.image_token_index));
  if (c.is_video_llava() && c.video_token_index < 0) {
    r.fail("video_token_index", "must be non-negative, found " + std::to_string(c.video_token_index));
  }
  if (c.vision_feature_select_strategy != "default" && c.vision_feature_select_strategy != "full") {
    r.fail("vision_feature_select_strategy",
           "expected 'default' or 'full', found '" + c.vision_feature_select_strategy + "'");
  }
  // An index into the tower's hidden states as transformers returns them: the embeddings, then
  // each layer's output (L + 1 entries), so -(L + 1)..L, negative from the end.
  const int layers = c.vision.num_hidden_layers;
  if (c.vision_feature_layer < -(layers + 1) || c.vision_feature_layer > layers) {
    r.fail("vision_feature_layer", std::to_string(c.vision_feature_layer) + " is outside [" +
                                       std::to_string(-(layers + 1)) + ", " + std::to_string(layers) + "] for a " +
                                       std::to_string(layers) + "-layer vision tower (its hidden states: the "
                                       "embeddings and " + std::to_string(layers) + " layer outputs)");
  }
  return c;
}

std::string model_config_to_json(const ModelConfig& config) {
  const TextConfig& t = config.text;
  const VisionConfig& v = config.vision;
  OrderedJson rope_scaling = nullptr;
  if (!t.rope_scaling_type.empty()) {
    rope_scaling = {{"rope_type", t.rope_scaling_type}, {"type", t.rope_scaling_type}, {"factor", t.rope_scaling_factor}};
  }
  OrderedJson text = {
      {"model_type", t.model_type},
      {"hidden_size", t.hidden_size},
      {"intermediate_size", t.intermediate_size},
      {"num_hidden_layers", t.num_hidden_layers},
      {"num_attention_heads", t.num_attention_heads},
      {"num_key_value_heads", t.num_key_value_heads < 0 ? t.num_attention_heads : t.num_key_value_heads},
      {"vocab_size", t.vocab_size},
      {"max_position_embeddings", t.max_position_embeddings},
      {"rms_norm_eps", t.rms_norm_eps},
      {"rope_theta", t.rope_theta},
      {"rope_scaling", rope_scaling},
      {"attention_bias", t.attention_bias},
      {"hidden_act", t.hidden_act},
      {"tie_word_embeddings", t.tie_word_embeddings},
      {"bos_token_id", config.bos_token_id},
      {"eos_token_id", config.eos_token_id},
  };
  OrderedJson vision = {
      {"model_type", kClipVision},
      {"hidden_size", v.hidden_size},
      {"intermediate_size", v.intermediate_size},
      {"num_hidden_layers", v.num_hidden_layers},
      {"num_attention_heads", v.num_attention_heads},
      {"num_channels", v.num_channels},
      {"image_size", v.image_size},
      {"patch_size", v.patch_size},
      {"layer_norm_eps", v.layer_norm_eps},
      {"hidden_act", v.hidden_act},
  };
  OrderedJson root = {
      {"architectures", OrderedJson::array({config.architecture})},
      {"model_type", config.is_video_llava() ? "video_llava" : "llava"},
      {"image_token_index", config.image_token_index},
      {"video_token_index", config.video_token_index},
      {"projector_hidden_act", config.projector_hidden_act},
      {"vision_feature_layer", config.vision_feature_layer},
      {"vision_feature_select_strategy", config.vision_feature_select_strategy},
      {"pad_token_id", config.pad_token_id},
      {"tie_word_embeddings", t.tie_word_embeddings},
      {"torch_dtype", config.torch_dtype},
      {"text_config", text},
      {"vision_config", vision},
  };
  return root.dump(2) + "\n";
}

}  // namespace mustdrop::model
