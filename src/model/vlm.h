// The multimodal model: an immutable object (weights shared by every session) behind one
// interface, with one implementation per architecture (llava.cpp, video_llava.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "model/clip_vision.h"
#include "model/hf_config.h"
#include "model/llama.h"
#include "model/tokenizer.h"

namespace mustdrop::model {

// A prompt with its vision block expanded, and where each part lies.
struct PromptLayout {
  std::vector<int> ids;       // token ids; the vision block holds placeholder ids
  int64_t vision_begin = 0;   // first vision token
  int64_t n_vision = 0;       // vision tokens (system part: [0, vision_begin); text: after the block)
  int64_t text_begin() const { return vision_begin + n_vision; }
};

// What a frame is to the model. Video-LLaVA has a tower and a placeholder for each; LLaVA-1.5
// treats both alike.
enum class Media {
  kVideo,  // a frame of a video (Video-LLaVA: video tower, CLS kept, "<video>")
  kImage,  // a single still image (Video-LLaVA: image tower, CLS per select strategy, "<image>")
};

struct LoadOptions {
  at::ScalarType dtype = at::kFloat;  // compute dtype (f32, bf16; f16 on a GPU only)
  c10::Device device = c10::Device(c10::DeviceType::CPU);  // where weights live and everything computes (model/device.h)
};

class VisionLanguageModel {
 public:
  virtual ~VisionLanguageModel() = default;

  // Loads a Hugging Face directory (config.json, safetensors, tokenizer.model). Throws
  // ModelError naming the file at fault.
  static std::unique_ptr<VisionLanguageModel> load(const std::string& dir, const LoadOptions& options = {});
  // A model built from `config` with random weights (benchmark shape presets); no tokenizer.
  static std::unique_ptr<VisionLanguageModel> random(const ModelConfig& config, uint64_t seed,
                                                     const LoadOptions& options = {});
  // Every tensor name and shape a checkpoint of `config` must hold (canonical names).
  static ShapeMap expected_tensors(const ModelConfig& config);
  // Random weights for `config` under the same names.
  static std::map<std::string, at::Tensor> random_tensors(const ModelConfig& config, uint64_t seed,
                                                          at::ScalarType dtype = at::kFloat,
                                                          const c10::Device& device = c10::Device(c10::DeviceType::CPU));

  const ModelConfig& config() const { return config_; }
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }
  const LlamaModel& llm() const { return *llm_; }
  // The tower that encodes frames of this kind.
  virtual const ClipVision& tower(Media media = Media::kVideo) const = 0;
  // Frames a video must have (Video-LLaVA: 8, short clips repeat frames as its processor
  // does); 0: any number, each frame once.
  virtual int video_frames() const { return 0; }
  // Input side of a frame in pixels (LLaVA-1.5: 336; Video-LLaVA: 224).
  int image_size() const { return config_.vision.image_size; }
  // Whether the CLS token stays in the vision features (Video-LLaVA video: yes; LLaVA image: no).
  virtual bool keeps_cls(Media media = Media::kVideo) const = 0;
  // The tower layer (0-based) whose output feeds the projector (from vision_feature_layer).
  int feature_layer() const;
  // Vision tokens per frame without dropping.
  int64_t tokens_per_frame(Media media = Media::kVideo) const;
  // Vision features of the tower's tokens: drops CLS unless keeps_cls(media); [B, T', Dv].
  at::Tensor select_features(const VisionTokens& tokens, Media media = Media::kVideo) const;
  // Projector: [n, Dv] -> [n, Dt].
  at::Tensor project(const at::Tensor& features) const;
  // The chat prompt for `question` with `n_vision` vision tokens in place of the placeholder.
  virtual PromptLayout build_prompt(const std::string& question, int64_t n_vision, Media media = Media::kVideo) const = 0;
  // Input embeddings for a layout whose vision block is `vision` [n_vision, Dt].
  at::Tensor embed_prompt(const PromptLayout& layout, const at::Tensor& vision) const;
  // Frames [B, 3, S, S] -> projected vision tokens [B * T', Dt], without any dropping.
  at::Tensor encode_frames(const at::Tensor& pixels, Media media = Media::kVideo) const;
  // Runs the whole prompt (positions 0..n-1) through the LLM into `cache`.
  LlmOutput prefill(const PromptLayout& layout, const at::Tensor& vision, KvCache& cache) const;

 protected:
  VisionLanguageModel() = default;
  // Shared by the architectures: "USER: <placeholder>\n{question} ASSISTANT:".
  PromptLayout build_chat_prompt(const std::string& question, int64_t n_vision, int placeholder_id,
                                 const std::string& placeholder_text) const;

  // Loads the text model and the projector (shared by every architecture).
  void init_common(const ModelConfig& config, const Weights& weights, at::ScalarType dtype);

  ModelConfig config_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<LlamaModel> llm_;
  at::Tensor proj1_w_, proj1_b_, proj2_w_, proj2_b_;
  Activation projector_act_ = Activation::kGelu;  // decoded once from config_.projector_hidden_act

  friend std::unique_ptr<VisionLanguageModel> load_model_dir(const std::string&, const LoadOptions&);
};

// Constructs the architecture named in `config` from `weights` (checked strictly first).
std::unique_ptr<VisionLanguageModel> build_model(const ModelConfig& config, const Weights& weights, at::ScalarType dtype);

// Architecture-specific factories (llava.cpp, video_llava.cpp).
std::unique_ptr<VisionLanguageModel> make_llava(const ModelConfig& config, const Weights& weights, at::ScalarType dtype);
std::unique_ptr<VisionLanguageModel> make_video_llava(const ModelConfig& config, const Weights& weights,
                                                      at::ScalarType dtype);
void llava_tower_tensors(const ModelConfig& config, ShapeMap& out);
void video_llava_tower_tensors(const ModelConfig& config, ShapeMap& out);

}  // namespace mustdrop::model
