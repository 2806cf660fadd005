// VideoLlavaForConditionalGeneration (LanguageBind/Video-LLaVA-7B-hf): separate image and video
// towers of the same shape; video frames keep CLS (8 x 257 tokens); prompt "USER: <video>\n...".
#include <ATen/ATen.h>

#include "model/vlm.h"

namespace mustdrop::model {
namespace {

const char* const kVideoTower = "video_tower.vision_model.";
const char* const kImageTower = "image_tower.vision_model.";

class VideoLlava : public VisionLanguageModel {
 public:
  VideoLlava(const ModelConfig& config, const Weights& w, at::ScalarType dtype) {
    init_common(config, w, dtype);
    // The image tower is checked with the rest but not loaded: mustdrop feeds frames as video.
    video_ = std::make_unique<ClipVision>(config.vision, ClipVision::load(config.vision, kVideoTower, w, dtype));
  }
  const ClipVision& frame_tower() const override { return *video_; }
  bool keeps_cls() const override { return true; }
  PromptLayout build_prompt(const std::string& question, int64_t n_vision) const override {
    return build_chat_prompt(question, n_vision, config_.video_token_index, "<video>");
  }

 private:
  std::unique_ptr<ClipVision> video_;
};

}  // namespace

void video_llava_tower_tensors(const ModelConfig& config, ShapeMap& out) {
  ClipVision::expected_tensors(config.vision, kVideoTower, out);
  ClipVision::expected_tensors(config.vision, kImageTower, out);
}

std::unique_ptr<VisionLanguageModel> make_video_llava(const ModelConfig& config, const Weights& weights,
                                                      at::ScalarType dtype) {
  return std::make_unique<VideoLlava>(config, weights, dtype);
}

}  // namespace mustdrop::model
