#include "model/clip_vision.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "model/device.h"
#include "model/llama.h"

namespace mustdrop::model {
namespace {

at::Tensor quick_gelu(const at::Tensor& x) { return x * at::sigmoid(1.702 * x); }

// Proportional attention's log-size bias ([B, T] sizes, kept on the host) as [B, 1, 1, T] on the
// scores' device and in their dtype.
at::Tensor size_bias(const at::Tensor& size, const at::Tensor& scores) {
  return to_device(size, scores.device()).log().view({size.size(0), 1, 1, size.size(1)}).to(scores.scalar_type());
}



std::string layer_prefix(const std::string& prefix, int i) {
  return prefix + "encoder.layers." + std::to_string(i) + ".";
}

}  // namespace

ClipVision::ClipVision(VisionConfig config, ClipWeights weights)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      act_(decode_activation(config_.hidden_act, "vision_config.hidden_act", {Activation::kQuickGelu, Activation::kGelu})) {}

void ClipVision::expected_tensors(const VisionConfig& c, const std::string& prefix, ShapeMap& out) {
  int64_t d = c.hidden_size, g = c.image_size / c.patch_size;
  out[prefix + "embeddings.class_embedding"] = {d};
  out[prefix + "embeddings.patch_embedding.weight"] = {d, c.num_channels, c.patch_size, c.patch_size};
  out[prefix + "embeddings.position_embedding.weight"] = {1 + g * g, d};
  out[prefix + "pre_layrnorm.weight"] = {d};
  out[prefix + "pre_layrnorm.bias"] = {d};
  out[prefix + "post_layernorm.weight"] = {d};
  out[prefix + "post_layernorm.bias"] = {d};
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    std::string p = layer_prefix(prefix, i);
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      out[p + "self_attn." + proj + ".weight"] = {d, d};
      out[p + "self_attn." + proj + ".bias"] = {d};
    }
    for (const char* ln : {"layer_norm1", "layer_norm2"}) {
      out[p + ln + ".weight"] = {d};
      out[p + ln + ".bias"] = {d};
    }
    out[p + "mlp.fc1.weight"] = {c.intermediate_size, d};
    out[p + "mlp.fc1.bias"] = {c.intermediate_size};
    out[p + "mlp.fc2.weight"] = {d, c.intermediate_size};
    out[p + "mlp.fc2.bias"] = {d};
  }
}

ClipWeights ClipVision::load(const VisionConfig& c, const std::string& prefix, const Weights& w, at::ScalarType dtype) {
  ClipWeights cw;
  cw.class_embedding = w.get(prefix + "embeddings.class_embedding", dtype);
  cw.patch_embedding = w.get(prefix + "embeddings.patch_embedding.weight", dtype);
  cw.position_embedding = w.get(prefix + "embeddings.position_embedding.weight", dtype);
  cw.pre_ln_w = w.get(prefix + "pre_layrnorm.weight", dtype);
  cw.pre_ln_b = w.get(prefix + "pre_layrnorm.bias", dtype);
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    std::string p = layer_prefix(prefix, i);
    ClipLayerWeights l;
    l.ln1_w = w.get(p + "layer_norm1.weight", dtype);
    l.ln1_b = w.get(p + "layer_norm1.bias", dtype);
    l.q_w = w.get(p + "self_attn.q_proj.weight", dtype);
    l.q_b = w.get(p + "self_attn.q_proj.bias", dtype);
    l.k_w = w.get(p + "self_attn.k_proj.weight", dtype);
    l.k_b = w.get(p + "self_attn.k_proj.bias", dtype);
    l.v_w = w.get(p + "self_attn.v_proj.weight", dtype);
    l.v_b = w.get(p + "self_attn.v_proj.bias", dtype);
    l.o_w = w.get(p + "self_attn.out_proj.weight", dtype);
    l.o_b = w.get(p + "self_attn.out_proj.bias", dtype);
    l.ln2_w = w.get(p + "layer_norm2.weight", dtype);
    l.ln2_b = w.get(p + "layer_norm2.bias", dtype);
    l.fc1_w = w.get(p + "mlp.fc1.weight", dtype);
    l.fc1_b = w.get(p + "mlp.fc1.bias", dtype);
    l.fc2_w = w.get(p + "mlp.fc2.weight", dtype);
    l.fc2_b = w.get(p + "mlp.fc2.bias", dtype);
    cw.layers.push_back(std::move(l));
  }
  return cw;
}

void ClipVision::random_tensors(const VisionConfig& c, const std::string& prefix, uint64_t seed,
                                std::map<std::string, at::Tensor>& out, at::ScalarType dtype, const c10::Device& device) {
  ShapeMap shapes;
  expected_tensors(c, prefix, shapes);
  out.merge(random_weights(shapes, seed, dtype, device));
}

at::Tensor ClipVision::embed(const at::Tensor& pixels) const {
  int64_t b = pixels.size(0);
  at::Tensor x = to_device(pixels, weights_.patch_embedding.device()).to(weights_.patch_embedding.scalar_type());
  at::Tensor patches = at::conv2d(x, weights_.patch_embedding, {}, config_.patch_size);  // [B, D, g, g]
  int64_t gh = patches.size(2), gw = patches.size(3), d = patches.size(1);
  patches = patches.flatten(2).transpose(1, 2);  // [B, g*g, D]
  at::Tensor cls = weights_.class_embedding.view({1, 1, d}).expand({b, 1, d});
  at::Tensor tokens = at::cat({cls, patches}, 1);
  at::Tensor pos = weights_.position_embedding;
  int64_t g0 = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(pos.size(0) - 1))));
  if (gh != g0 || gw != g0) {
    // Another input size: interpolate the patch position grid (bicubic), keep the CLS entry.
    at::Tensor grid = pos.narrow(0, 1, g0 * g0).view({1, g0, g0, d}).permute({0, 3, 1, 2}).to(at::kFloat);
    grid = at::upsample_bicubic2d(grid, {gh, gw}, false).permute({0, 2, 3, 1}).reshape({gh * gw, d});
    pos = at::cat({pos.narrow(0, 0, 1), grid.to(pos.scalar_type())}, 0);
  }
  tokens = tokens + pos.unsqueeze(0);
  return at::layer_norm(tokens, {d}, weights_.pre_ln_w, weights_.pre_ln_b, config_.layer_norm_eps);
}

at::Tensor ClipVision::layer(int i, const at::Tensor& x, const at::Tensor& size, bool proportional,
                             at::Tensor* cls_probs) const {
  const ClipLayerWeights& w = weights_.layers[static_cast<size_t>(i)];
  int64_t b = x.size(0), t = x.size(1), d = x.size(2), heads = config_.num_attention_heads, hd = d / heads;
  at::Tensor h = at::layer_norm(x, {d}, w.ln1_w, w.ln1_b, config_.layer_norm_eps);
  auto split = [&](const at::Tensor& y) { return y.view({b, t, heads, hd}).transpose(1, 2); };  // [B, H, T, hd]
  at::Tensor q = split(at::linear(h, w.q_w, w.q_b)), k = split(at::linear(h, w.k_w, w.k_b)), v = split(at::linear(h, w.v_w, w.v_b));
  at::Tensor scores = at::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(hd));
  if (proportional) scores = scores + size_bias(size, scores);
  at::Tensor probs = at::softmax(scores.to(accumulate_type(scores.scalar_type())), -1).to(v.scalar_type());
  if (cls_probs) *cls_probs = to_host(probs.select(2, 0).mean(1).narrow(1, 1, t - 1).to(at::kFloat));  // [B, T-1]
  at::Tensor attn = at::matmul(probs, v).transpose(1, 2).reshape({b, t, d});
  at::Tensor y = x + at::linear(attn, w.o_w, w.o_b);
  at::Tensor m = at::layer_norm(y, {d}, w.ln2_w, w.ln2_b, config_.layer_norm_eps);
  at::Tensor hidden = at::linear(m, w.fc1_w, w.fc1_b);
  hidden = act_ == Activation::kGelu ? at::gelu(hidden) : quick_gelu(hidden);
  return y + at::linear(hidden, w.fc2_w, w.fc2_b);
}

at::Tensor ClipVision::cls_attention_only(int i, const at::Tensor& x, const at::Tensor& size, bool proportional) const {
  const ClipLayerWeights& w = weights_.layers[static_cast<size_t>(i)];
  int64_t b = x.size(0), t = x.size(1), d = x.size(2), heads = config_.num_attention_heads, hd = d / heads;
  at::Tensor h = at::layer_norm(x, {d}, w.ln1_w, w.ln1_b, config_.layer_norm_eps);
  at::Tensor q = at::linear(h.narrow(1, 0, 1), w.q_w, w.q_b).view({b, 1, heads, hd}).transpose(1, 2);  // [B, H, 1, hd]
  at::Tensor k = at::linear(h, w.k_w, w.k_b).view({b, t, heads, hd}).transpose(1, 2);
  at::Tensor scores = at::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(hd));  // [B, H, 1, T]
  if (proportional) scores = scores + size_bias(size, scores);
  at::Tensor probs = at::softmax(scores.to(accumulate_type(scores.scalar_type())), -1);
  return to_host(probs.squeeze(2).mean(1).narrow(1, 1, t - 1).to(at::kFloat));
}

VisionResult ClipVision::forward(const at::Tensor& pixels, const VisionRequest& req) const {
  if (req.output_layer < -1 || req.output_layer >= n_layers()) {
    throw InternalError("vision output layer " + std::to_string(req.output_layer) + " outside 0.." +
                        std::to_string(n_layers() - 1));
  }
  VisionResult r;
  VisionTokens& tok = r.tokens;
  tok.hidden = embed(pixels);
  int64_t b = tok.hidden.size(0), t = tok.hidden.size(1);
  tok.size = at::ones({b, t}, at::TensorOptions().dtype(at::kFloat));
  tok.patch_index = (at::arange(t, at::TensorOptions().dtype(at::kLong)) - 1).unsqueeze(0).expand({b, t}).contiguous();
  int last_needed = req.output_layer;
  for (int l : req.cls_attention_layers) last_needed = std::max(last_needed, l);
  if (last_needed >= n_layers()) throw InternalError("CLS attention requested from a layer the tower does not have");

  at::Tensor x = tok.hidden;
  for (int i = 0; i <= last_needed; ++i) {
    bool want_cls = std::find(req.cls_attention_layers.begin(), req.cls_attention_layers.end(), i) !=
                    req.cls_attention_layers.end();
    if (i > req.output_layer) {
      // Past the output layer only CLS attention rows are wanted: no MLP, no full attention.
      if (want_cls) {
        r.cls_only_tokens.push_back(x.size(1));
        r.cls_attention[i] = cls_attention_only(i, x, tok.size, req.proportional_attention);
      }
      if (i + 1 <= last_needed) {
        r.tokens_per_layer.push_back(x.size(1));
        x = layer(i, x, tok.size, req.proportional_attention, nullptr);
      }
      continue;
    }
    r.tokens_per_layer.push_back(x.size(1));
    at::Tensor cls;
    x = layer(i, x, tok.size, req.proportional_attention, want_cls ? &cls : nullptr);
    if (want_cls) r.cls_attention[i] = cls;
    tok.hidden = x;
    if (req.hook) {
      req.hook->after_layer(i, tok, cls);
      x = tok.hidden;
    }
  }
  return r;
}

}  // namespace mustdrop::model
