// VideoLlavaForConditionalGeneration (LanguageBind/Video-LLaVA-7B-hf): separate image and video
// towers of the same shape. Video: 8 frames through the video tower, CLS kept (8 x 257 tokens),
// "USER: <video>\n..."; a still image: the image tower, CLS per vision_feature_select_strategy
// (256 tokens by default), "USER: <image>\n...".
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
    video_ = std::make_unique<ClipVision>(config.vision, ClipVision::load(config.vision, kVideoTower, w, dtype));
    image_ = std::make_unique<ClipVision>(config.vision, ClipVision::load(config.vision, kImageTower, w, dtype));
  }
  const ClipVision& tower(Media media) const override { return media == Media::kImage ? *image_ : *video_; }
  int video_frames() const override { return 8; }
  bool keeps_cls(Media media) const override {
    return media == Media::kVideo || config_.vision_feature_select_strategy == "full";
  }
  PromptLayout build_prompt(const std::string& question, int64_t n_vision, Media media) const override {
    if (media == Media::kImage) return build_chat_prompt(question, n_vision, config_.image_token_index, "<image>");
    return build_chat_prompt(question, n_vision, config_.video_token_index, "<video>");
  }

 private:
  std::unique_ptr<ClipVision> video_;
  std::unique_ptr<ClipVision> image_;
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
