// CLIP vision transformer (HF CLIPVisionModel): patch convolution, class embedding, position
// embeddings (interpolated for other input sizes), pre-layernorm, encoder layers with
// quick_gelu. Hooks between layers may drop or merge tokens; merged tokens carry a size that
// proportional attention can use; CLS attention and hidden states of chosen layers on request.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "model/hf_config.h"
#include "model/weights.h"

namespace mustdrop::model {

struct ClipLayerWeights {
  at::Tensor ln1_w, ln1_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
};

struct ClipWeights {
  at::Tensor class_embedding;  // [D]
  at::Tensor patch_embedding;  // [D, C, P, P]
  at::Tensor position_embedding;  // [1 + grid*grid, D]
  at::Tensor pre_ln_w, pre_ln_b;
  std::vector<ClipLayerWeights> layers;
};

// The tokens between layers. Token 0 is CLS; hooks must keep it first.
struct VisionTokens {
  at::Tensor hidden;       // [B, T, D]
  at::Tensor size;         // [B, T] float: originals each token stands for (1 unmerged)
  at::Tensor patch_index;  // [B, T] int64: original patch index in raster order (CLS: -1; merged: the kept one)
};

class VisionHook {
 public:
  virtual ~VisionHook() = default;
  // Called after encoder layer `layer` (0-based) has run; may replace the tokens.
  // `cls_attention` is that layer's CLS row ([B, T-1]) when requested, else undefined.
  virtual void after_layer(int layer, VisionTokens& tokens, const at::Tensor& cls_attention) = 0;
};

struct VisionRequest {
  int output_layer = -1;               // return the output of this layer (0-based); -1: the embeddings
  std::vector<int> cls_attention_layers;  // layers whose CLS->token head-mean probabilities to return
  bool proportional_attention = false; // add log(size) to attention logits (ToMe)
  VisionHook* hook = nullptr;
};

struct VisionResult {
  VisionTokens tokens;                    // after output_layer (and any hooks up to it)
  std::map<int, at::Tensor> cls_attention;  // layer -> [B, T_layer - 1]: CLS row over the other tokens
  std::vector<int64_t> tokens_per_layer;  // tokens each full layer processed
  std::vector<int64_t> cls_only_tokens;   // tokens of each CLS-row-only pass past the output layer
};

class ClipVision {
 public:
  ClipVision(VisionConfig config, ClipWeights weights);
  // Names/shapes under `prefix` (e.g. "vision_tower.vision_model.").
  static void expected_tensors(const VisionConfig& config, const std::string& prefix, ShapeMap& out);
  static ClipWeights load(const VisionConfig& config, const std::string& prefix, const Weights& w, at::ScalarType dtype);
  static void random_tensors(const VisionConfig& config, const std::string& prefix, uint64_t seed,
                             std::map<std::string, at::Tensor>& out, at::ScalarType dtype = at::kFloat,
                             const c10::Device& device = c10::Device(c10::DeviceType::CPU));

  const VisionConfig& config() const { return config_; }
  int n_layers() const { return static_cast<int>(weights_.layers.size()); }
  // Patch grid side for an input of `image_size` pixels.
  int grid(int image_size) const { return image_size / config_.patch_size; }
  // pixels: [B, 3, S, S] normalised. Runs the layers needed for the request: up to output_layer,
  // and for a CLS-attention layer past it only what that row needs.
  VisionResult forward(const at::Tensor& pixels, const VisionRequest& request) const;

 private:
  at::Tensor embed(const at::Tensor& pixels) const;
  at::Tensor layer(int i, const at::Tensor& x, const at::Tensor& size, bool proportional, at::Tensor* cls_probs) const;
  at::Tensor cls_attention_only(int i, const at::Tensor& x, const at::Tensor& size, bool proportional) const;
  VisionConfig config_;
  ClipWeights weights_;
  Activation act_;  // decoded once from config_.hidden_act
};

}  // namespace mustdrop::model
