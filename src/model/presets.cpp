#include "model/presets.h"

#include "core/error.h"

namespace mustdrop::model {
namespace {

ModelConfig llava_15(int hidden, int intermediate, int layers, int heads) {
  ModelConfig c;
  c.architecture = "LlavaForConditionalGeneration";
  c.vision = VisionConfig{1024, 4096, 24, 16, 3, 336, 14, 1e-5, "quick_gelu"};
  c.text.hidden_size = hidden;
  c.text.intermediate_size = intermediate;
  c.text.num_hidden_layers = layers;
  c.text.num_attention_heads = heads;
  c.text.num_key_value_heads = heads;
  c.text.vocab_size = 32064;
  c.text.max_position_embeddings = 4096;
  c.text.rms_norm_eps = 1e-5;
  c.image_token_index = 32000;
  c.pad_token_id = 32001;
  return c;
}

}  // namespace

std::vector<std::string> preset_names() {
  return {"llava-1.5-7b", "llava-1.5-13b", "video-llava-7b", "tiny-llava", "tiny-video-llava"};
}

ModelConfig preset_config(const std::string& name, int llm_layers, int vision_layers) {
  ModelConfig c;
  if (name == "llava-1.5-7b") {
    c = llava_15(4096, 11008, 32, 32);
  } else if (name == "llava-1.5-13b") {
    c = llava_15(5120, 13824, 40, 40);
  } else if (name == "video-llava-7b") {
    c = llava_15(4096, 11008, 32, 32);
    c.architecture = "VideoLlavaForConditionalGeneration";
    c.vision.image_size = 224;
    c.video_token_index = 32001;
    c.pad_token_id = 32002;
  } else if (name == "tiny-llava" || name == "tiny-video-llava") {
    bool video = name == "tiny-video-llava";
    c.architecture = video ? "VideoLlavaForConditionalGeneration" : "LlavaForConditionalGeneration";
    // Real token geometry (24x24 or 16x16 patches per frame), tiny widths.
    c.vision = VisionConfig{32, 64, 4, 2, 3, video ? 224 : 336, 14, 1e-5, "quick_gelu"};
    c.text.hidden_size = 64;
    c.text.intermediate_size = 128;
    c.text.num_hidden_layers = 4;
    c.text.num_attention_heads = 4;
    c.text.num_key_value_heads = 2;  // GQA on purpose
    c.text.vocab_size = 1003;        // the tiny tokenizer's 1000 pieces + added tokens
    c.text.max_position_embeddings = 32768;  // room for many frames in tests
    c.text.rms_norm_eps = 1e-5;
    c.image_token_index = 1000;
    c.video_token_index = video ? 1001 : -1;
    c.pad_token_id = 1002;
  } else {
    std::string known;
    for (const auto& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
    throw ConfigError("unknown model preset '" + name + "' (known: " + known + ")");
  }
  if (llm_layers > 0) c.text.num_hidden_layers = llm_layers;
  if (vision_layers > 0) c.vision.num_hidden_layers = vision_layers;
  return c;
}

}  // namespace mustdrop::model
