#include "model/vlm.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <functional>
#include <sstream>

#include "core/error.h"
#include "core/log.h"
#include "model/device.h"

namespace mustdrop::model {

namespace {

// Before any weight is read: a device this process cannot use, or a dtype it cannot compute in.
void check_load_options(const LoadOptions& options) {
  check_device(options.device);
  if (options.dtype == at::kHalf && options.device.is_cpu()) {
    throw ConfigError("dtype f16 computes on a GPU only (model.device cuda, or model.dtype bf16 or f32)");
  }
  // f32 on a GPU means f32: LibTorch leaves TF32 off for matrix products but on for cuDNN's
  // convolutions (the tower's patch embedding), which would round its inputs to 10 bits.
  if (options.dtype == at::kFloat && options.device.is_cuda()) at::globalContext().setAllowTF32CuDNN(false);
}

}  // namespace

std::unique_ptr<VisionLanguageModel> build_model(const ModelConfig& config, const Weights& weights,
                                                 at::ScalarType dtype) {
  weights.check(VisionLanguageModel::expected_tensors(config));
  if (config.is_video_llava()) return make_video_llava(config, weights, dtype);
  return make_llava(config, weights, dtype);
}

ShapeMap VisionLanguageModel::expected_tensors(const ModelConfig& c) {
  ShapeMap out;
  LlamaModel::expected_tensors(c.text, out);
  if (c.is_video_llava()) {
    video_llava_tower_tensors(c, out);
  } else {
    llava_tower_tensors(c, out);
  }
  int64_t dv = c.vision.hidden_size, dt = c.text.hidden_size;
  out["multi_modal_projector.linear_1.weight"] = {dt, dv};
  out["multi_modal_projector.linear_1.bias"] = {dt};
  out["multi_modal_projector.linear_2.weight"] = {dt, dt};
  out["multi_modal_projector.linear_2.bias"] = {dt};
  return out;
}

std::map<std::string, at::Tensor> VisionLanguageModel::random_tensors(const ModelConfig& c, uint64_t seed,
                                                                      at::ScalarType dtype, const c10::Device& device) {
  std::map<std::string, at::Tensor> out;
  LlamaModel::random_tensors(c.text, seed, out, dtype, device);
  ShapeMap towers;
  if (c.is_video_llava()) {
    video_llava_tower_tensors(c, towers);
  } else {
    llava_tower_tensors(c, towers);
  }
  // Each tower prefix gets its own stream of random numbers.
  std::map<std::string, bool> prefixes;
  for (const auto& [name, shape] : towers) prefixes[name.substr(0, name.find(".vision_model.") + 14)] = true;
  uint64_t k = 1;
  for (const auto& [prefix, unused] : prefixes) {
    ClipVision::random_tensors(c.vision, prefix, seed + 1000 * k++, out, dtype, device);
  }
  int64_t dv = c.vision.hidden_size, dt = c.text.hidden_size;
  if (!device.is_cpu()) {
    out.merge(random_weights({{"multi_modal_projector.linear_1.weight", {dt, dv}},
                              {"multi_modal_projector.linear_1.bias", {dt}},
                              {"multi_modal_projector.linear_2.weight", {dt, dt}},
                              {"multi_modal_projector.linear_2.bias", {dt}}},
                             seed + 7, dtype, device));
    return out;
  }
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed + 7);
  out["multi_modal_projector.linear_1.weight"] = at::normal(0.0, 0.02, {dt, dv}, gen).to(dtype);
  out["multi_modal_projector.linear_1.bias"] = at::normal(0.0, 0.01, {dt}, gen).to(dtype);
  out["multi_modal_projector.linear_2.weight"] = at::normal(0.0, 0.02, {dt, dt}, gen).to(dtype);
  out["multi_modal_projector.linear_2.bias"] = at::normal(0.0, 0.01, {dt}, gen).to(dtype);
  return out;
}

std::unique_ptr<VisionLanguageModel> load_model_dir(const std::string& dir, const LoadOptions& options) {
  namespace fs = std::filesystem;
  check_load_options(options);
  if (!fs::is_directory(dir)) throw ModelError(dir + ": not a model directory");
  ModelConfig config = parse_model_config((fs::path(dir) / "config.json").string());
  std::unique_ptr<Tokenizer> tokenizer = Tokenizer::load(dir);
  std::unique_ptr<Weights> weights = Weights::open(dir);
  weights->set_device(options.device);
  std::unique_ptr<VisionLanguageModel> m = build_model(config, *weights, options.dtype);
  m->tokenizer_ = std::move(tokenizer);
  if (m->tokenizer_->vocab_size() > config.text.vocab_size) {
    throw ModelError(dir + "/tokenizer.model: " + std::to_string(m->tokenizer_->vocab_size()) +
                     " tokens, more than the model's vocab_size " + std::to_string(config.text.vocab_size));
  }
  return m;
}

std::unique_ptr<VisionLanguageModel> VisionLanguageModel::load(const std::string& dir, const LoadOptions& options) {
  return load_model_dir(dir, options);
}

std::unique_ptr<VisionLanguageModel> VisionLanguageModel::random(const ModelConfig& config, uint64_t seed,
                                                                 const LoadOptions& options) {
  check_load_options(options);
  std::unique_ptr<Weights> w = Weights::from_tensors(random_tensors(config, seed, options.dtype, options.device));
  w->set_device(options.device);
  return build_model(config, *w, options.dtype);
}

void VisionLanguageModel::init_common(const ModelConfig& config, const Weights& w, at::ScalarType dtype) {
  projector_act_ = decode_activation(config.projector_hidden_act, "projector_hidden_act", {Activation::kGelu, Activation::kSilu});
  config_ = config;
  llm_ = std::make_unique<LlamaModel>(config.text, LlamaModel::load(config.text, w, dtype));
  proj1_w_ = w.get("multi_modal_projector.linear_1.weight", dtype);
  proj1_b_ = w.get("multi_modal_projector.linear_1.bias", dtype);
  proj2_w_ = w.get("multi_modal_projector.linear_2.weight", dtype);
  proj2_b_ = w.get("multi_modal_projector.linear_2.bias", dtype);
}

int VisionLanguageModel::feature_layer() const {
  int n = config_.vision.num_hidden_layers;
  int index = config_.vision_feature_layer < 0 ? n + 1 + config_.vision_feature_layer : config_.vision_feature_layer;
  return index - 1;  // hidden_states[index] is the output of layer index - 1 (0: the embeddings)
}

int64_t VisionLanguageModel::tokens_per_frame(Media media) const {
  int64_t g = config_.vision.image_size / config_.vision.patch_size;
  return g * g + (keeps_cls(media) ? 1 : 0);
}

at::Tensor VisionLanguageModel::select_features(const VisionTokens& tokens, Media media) const {
  if (keeps_cls(media)) return tokens.hidden;
  return tokens.hidden.narrow(1, 1, tokens.hidden.size(1) - 1);
}

at::Tensor VisionLanguageModel::project(const at::Tensor& features) const {
  at::Tensor x = at::linear(features.to(proj1_w_.scalar_type()), proj1_w_, proj1_b_);
  x = projector_act_ == Activation::kGelu ? at::gelu(x) : at::silu(x);
  return at::linear(x, proj2_w_, proj2_b_);
}

PromptLayout VisionLanguageModel::build_chat_prompt(const std::string& question_in, int64_t n_vision,
                                                    int placeholder_id, const std::string& placeholder_text) const {
  // A placeholder typed into the question would open a second vision block: remove it.
  std::string question = question_in;
  for (size_t at_pos; (at_pos = question.find(placeholder_text)) != std::string::npos;) {
    question.erase(at_pos, placeholder_text.size());
  }
  std::vector<int> ids;
  if (tokenizer_) {
    ids = tokenizer_->encode("USER: " + placeholder_text + "\n" + question + " ASSISTANT:", true);
  } else {
    // Shape presets carry no tokenizer: words hash to ids (benchmarks only; no text comes out).
    std::hash<std::string> h;
    int64_t span = std::max(1, config_.text.vocab_size - 100);
    auto word_ids = [&](const std::string& text) {
      std::istringstream words(text);
      for (std::string w; words >> w;) ids.push_back(3 + static_cast<int>(h(w) % static_cast<size_t>(span)));
    };
    ids.push_back(config_.bos_token_id);
    word_ids("USER:");
    ids.push_back(placeholder_id);
    word_ids(question + " ASSISTANT:");
  }
  PromptLayout layout;
  auto it = std::find(ids.begin(), ids.end(), placeholder_id);
  if (it == ids.end()) throw InternalError("prompt lost its " + placeholder_text + " placeholder");
  layout.vision_begin = it - ids.begin();
  layout.n_vision = n_vision;
  ids.erase(it);
  ids.insert(ids.begin() + layout.vision_begin, static_cast<size_t>(n_vision), placeholder_id);
  layout.ids = std::move(ids);
  return layout;
}

at::Tensor VisionLanguageModel::embed_prompt(const PromptLayout& layout, const at::Tensor& vision) const {
  if (vision.size(0) != layout.n_vision) {
    throw InternalError("prompt expects " + std::to_string(layout.n_vision) + " vision tokens, got " +
                        std::to_string(vision.size(0)));
  }
  std::vector<int> before(layout.ids.begin(), layout.ids.begin() + layout.vision_begin);
  std::vector<int> after(layout.ids.begin() + layout.text_begin(), layout.ids.end());
  at::Tensor parts[3] = {llm_->embed(before), vision.to(proj1_w_.scalar_type()), llm_->embed(after)};
  return at::cat({parts[0], parts[1], parts[2]}, 0);
}

}  // namespace mustdrop::model

namespace mustdrop::model {

at::Tensor VisionLanguageModel::encode_frames(const at::Tensor& pixels, Media media) const {
  VisionRequest req;
  req.output_layer = feature_layer();
  at::Tensor feats = select_features(tower(media).forward(pixels, req).tokens, media);
  return project(feats.reshape({-1, feats.size(-1)}));
}

LlmOutput VisionLanguageModel::prefill(const PromptLayout& layout, const at::Tensor& vision, KvCache& cache) const {
  LlmForward f;
  f.hidden = embed_prompt(layout, vision);
  f.positions = at::arange(static_cast<int64_t>(layout.ids.size()), at::TensorOptions().dtype(at::kLong));
  f.cache = &cache;
  return llm_->forward(f);
}

}  // namespace mustdrop::model
