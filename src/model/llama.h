// Llama-family decoder (Vicuna, Llama 2; Mistral/Qwen2-style GQA and qkv bias): RMSNorm, RoPE
// at explicit per-token positions, SwiGLU, grouped-query attention written out so that chosen
// layers can return attention probabilities. Single sequence: activations are [tokens, hidden].
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "model/hf_config.h"
#include "model/kv_cache.h"
#include "model/weights.h"

namespace mustdrop::model {

struct LlamaLayerWeights {
  at::Tensor input_norm, q, k, v, o, q_bias, k_bias, v_bias, post_norm, gate, up, down;
};

struct LlamaWeights {
  at::Tensor embed;  // [vocab, hidden], as stored in the file unless tied to lm_head (rows convert when read)
  std::vector<LlamaLayerWeights> layers;
  at::Tensor norm;
  at::Tensor lm_head;  // [vocab, hidden]
  at::ScalarType dtype = at::kFloat;  // compute dtype of every other weight and the activations
};

// What a layer hook sees after a decoder layer has run over the current tokens.
struct LayerState {
  int layer = 0;
  at::Tensor hidden;     // [n, hidden]: output of this layer (input of the next)
  at::Tensor positions;  // [n] int64 RoPE positions of these tokens
  at::Tensor attention;  // [rows, n_keys] head-mean probabilities of the requested rows over the entries the
                         // layer read (every cache entry unless read_entries() chose fewer), or undefined
  int64_t n_past = 0;    // cache entries of this layer before these tokens
};

// Called between decoder layers during a forward pass; may drop tokens from `state` (hidden and
// positions together) so later layers run on fewer. Tokens already cached stay in layers <= this.
class LayerHook {
 public:
  virtual ~LayerHook() = default;
  // Query rows (indices into the tokens entering `layer`) whose attention `layer` must return;
  // empty: none (the layer then pays nothing extra).
  virtual std::vector<int64_t> attention_rows(int layer, int64_t n_tokens) = 0;
  virtual void after_layer(LayerState& state) = 0;
  // The cache entries `layer` reads, out of the `n_entries` it holds once the new tokens are
  // appended: ascending int64 indices, which must include the new tokens' own entries. Undefined
  // (the default): all. The cache keeps every entry either way.
  virtual at::Tensor read_entries(int layer, int64_t n_entries);
};

// Rows that come before the new tokens and are already cached in layers 0..after_layer (the
// question-independent start of a prompt): there the new tokens attend to their cached keys; after
// layer after_layer their cached output joins in front of the new tokens, and the layers above run
// over both. Layer hooks and attention rows see the whole sequence, cached rows first.
struct CachedRows {
  int64_t n = 0;
  int after_layer = -1;  // -1: no cached rows
  at::Tensor hidden;     // [n, hidden] their output of layer after_layer
  at::Tensor positions;  // [n] int64 their RoPE positions
};

struct LlmForward {
  at::Tensor hidden;     // [n, hidden] input embeddings of the new tokens
  at::Tensor positions;  // [n] int64
  KvCache* cache = nullptr;                           // required: extended by every layer
  std::map<int, std::vector<int64_t>> attention_rows;  // fixed requests when there is no hook
  LayerHook* hook = nullptr;
  bool all_logits = false;  // logits for every remaining row, else only the last
  CachedRows cached;        // rows already in `cache` (see CachedRows)
  int last_layer = -1;      // >= 0: run layers 0..last_layer only; no logits, `hidden` out instead
};

struct LlmOutput {
  at::Tensor logits;                        // [rows, vocab] (float32); undefined with last_layer
  at::Tensor hidden;                        // with last_layer: [n, hidden] output of that layer
  std::map<int, at::Tensor> attention;      // layer -> [rows, n_keys] head-mean probabilities
  std::vector<int64_t> tokens_per_layer;    // tokens each layer held (cached rows included)
  std::vector<int64_t> computed_per_layer;  // tokens each layer computed (cached rows excluded)
};

// float64 for float64 tensors, else float32: the type softmax, norms and RoPE run in.
at::ScalarType accumulate_type(at::ScalarType t);
// RoPE cos/sin tables for `positions` ([n] int64, host or `device`): each [n, head_dim], float64,
// computed on `device`.
void rope_tables(const at::Tensor& positions, int head_dim, const TextConfig& config, int64_t seq_len, at::Tensor* cos,
                 at::Tensor* sin, const c10::Device& device = c10::Device(c10::DeviceType::CPU));
// Applies RoPE (rotate-half convention) to x [heads, n, head_dim].
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

class LlamaModel {
 public:
  // Rows of a prompt pushed through one layer at a time (the size of llama.cpp's default ubatch).
  static constexpr int64_t kRowChunk = 512;
  // Hidden rows of at least this many bytes in a chunked prompt: freed heap pages go back after
  // each layer (see forward()).
  static constexpr size_t kTrimBytes = 16 << 20;
  LlamaModel(TextConfig config, LlamaWeights weights);
  // Tensor names and shapes under "language_model." for `config`.
  static void expected_tensors(const TextConfig& config, ShapeMap& out);
  // Reads the weights (names as expected_tensors) converted to `dtype`.
  static LlamaWeights load(const TextConfig& config, const Weights& weights, at::ScalarType dtype);
  // Random weights (normal, std 0.02; norms 1) from `seed`, as named tensors.
  static void random_tensors(const TextConfig& config, uint64_t seed, std::map<std::string, at::Tensor>& out,
                             at::ScalarType dtype = at::kFloat, const c10::Device& device = c10::Device(c10::DeviceType::CPU));

  const TextConfig& config() const { return config_; }
  int n_layers() const { return static_cast<int>(weights_.layers.size()); }
  // Where the weights (and so every activation and cache entry) are.
  c10::Device device() const { return weights_.norm.device(); }
  int head_dim() const { return config_.hidden_size / config_.num_attention_heads; }
  // The compute dtype of the weights and activations.
  at::ScalarType dtype() const { return weights_.dtype; }
  // Embeddings of token ids: [n, hidden].
  at::Tensor embed(const std::vector<int>& ids) const;
  // Runs the new tokens through every layer (or up to in.last_layer), appending their
  // keys/values to the cache. InternalError for a request the cached rows cannot serve.
  LlmOutput forward(const LlmForward& in) const;
  // Re-rotates the keys of layers first..last of `cache` from positions `from` to `to` ([length]
  // int64, one per entry): RoPE rotations compose, so each key becomes what its token gives at the
  // new position (exact within max_position_embeddings, also under dynamic scaling).
  void shift_positions(KvCache& cache, int first_layer, int last_layer, const at::Tensor& from,
                       const at::Tensor& to) const;

 private:
  // One decoder layer over the rows h (appending their keys/values to `cache`): attention, then
  // the MLP, in chunks of kRowChunk rows when there are more. `rows`/`probs` as in attention().
  at::Tensor layer_rows(int layer, const at::Tensor& h, const at::Tensor& positions, KvCache& cache,
                        const std::vector<int64_t>& rows, const at::Tensor& read, at::Tensor* probs) const;
  // `read`: the cache entries attended to (ascending int64; undefined: all).
  at::Tensor attention(int layer, const at::Tensor& x, const at::Tensor& positions, KvCache& cache,
                       const std::vector<int64_t>& rows, const at::Tensor& read, at::Tensor* probs_out) const;
  TextConfig config_;
  LlamaWeights weights_;
};

}  // namespace mustdrop::model
