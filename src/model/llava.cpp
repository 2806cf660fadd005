// LlavaForConditionalGeneration (llava-hf/llava-1.5-*): one CLIP tower; image features drop CLS
// (vision_feature_select_strategy "default"); prompt "USER: <image>\n... ASSISTANT:".
#include <ATen/ATen.h>

#include "model/vlm.h"

namespace mustdrop::model {
namespace {

const char* const kTower = "vision_tower.vision_model.";

class Llava : public VisionLanguageModel {
 public:
  Llava(const ModelConfig& config, const Weights& w, at::ScalarType dtype) {
    init_common(config, w, dtype);
    tower_ = std::make_unique<ClipVision>(config.vision, ClipVision::load(config.vision, kTower, w, dtype));
  }
  const ClipVision& tower(Media) const override { return *tower_; }
  bool keeps_cls(Media) const override { return config_.vision_feature_select_strategy == "full"; }
  PromptLayout build_prompt(const std::string& question, int64_t n_vision, Media) const override {
    return build_chat_prompt(question, n_vision, config_.image_token_index, "<image>");
  }

 private:
  std::unique_ptr<ClipVision> tower_;
};

}  // namespace

void llava_tower_tensors(const ModelConfig& config, ShapeMap& out) {
  ClipVision::expected_tensors(config.vision, kTower, out);
}

std::unique_ptr<VisionLanguageModel> make_llava(const ModelConfig& config, const Weights& weights, at::ScalarType dtype) {
  return std::make_unique<Llava>(config, weights, dtype);
}

}  // namespace mustdrop::model
