#include "model/llama.h"

#include <ATen/ATen.h>

#include <cmath>

#include "core/error.h"
#include "core/sysinfo.h"
#include "model/attention.h"
#include "model/device.h"
#include "model/linear.h"

namespace mustdrop::model {

namespace {

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  at::Tensor xf = x.to(accumulate_type(x.scalar_type()));
  at::Tensor y = xf * at::rsqrt(xf.pow(2).mean(-1, true) + eps);
  return (y.to(x.scalar_type()) * w);
}

std::string layer_prefix(int i) { return "language_model.model.layers." + std::to_string(i) + "."; }

}  // namespace

at::ScalarType accumulate_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

void rope_tables(const at::Tensor& positions, int head_dim, const TextConfig& c, int64_t seq_len, at::Tensor* cos,
                 at::Tensor* sin, const c10::Device& device) {
  double base = c.rope_theta;
  at::Tensor pos = to_device(positions, device).to(at::kDouble);
  if (c.rope_scaling_type == "linear") pos = pos / c.rope_scaling_factor;
  if (c.rope_scaling_type == "dynamic" && seq_len > c.max_position_embeddings) {
    double f = c.rope_scaling_factor;
    base *= std::pow(f * seq_len / c.max_position_embeddings - (f - 1), head_dim / (head_dim - 2.0));
  }
  at::Tensor inv_freq =
      1.0 / at::pow(base, at::arange(0, head_dim, 2, at::TensorOptions().dtype(at::kDouble).device(device)) / head_dim);
  at::Tensor freqs = at::outer(pos, inv_freq);  // [n, head_dim/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  *cos = emb.cos();  // float64: callers cast to their compute type
  *sin = emb.sin();
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  int64_t half = x.size(-1) / 2;
  at::ScalarType acc = accumulate_type(x.scalar_type());
  at::Tensor xf = x.to(acc);
  const at::Tensor c = cos.to(acc), s = sin.to(acc);
  // x * cos + rotate_half(x) * sin, with rotate_half(x) = [-x2, x1], accumulated in place: no
  // rotated copy and no product temporaries (prefill chunks are megabytes each).
  at::Tensor out = xf * c;
  out.narrow(-1, 0, half).addcmul_(xf.narrow(-1, half, half), s.narrow(-1, 0, half), -1);
  out.narrow(-1, half, half).addcmul_(xf.narrow(-1, 0, half), s.narrow(-1, half, half));
  return out.to(x.scalar_type());
}

LlamaModel::LlamaModel(TextConfig config, LlamaWeights weights) : config_(std::move(config)), weights_(std::move(weights)) {
  decode_activation(config_.hidden_act, "text_config.hidden_act", {Activation::kSilu});
}

void LlamaModel::expected_tensors(const TextConfig& c, ShapeMap& out) {
  int64_t h = c.hidden_size, hd = c.hidden_size / c.num_attention_heads;
  int64_t kv = static_cast<int64_t>(c.num_key_value_heads) * hd;
  out["language_model.model.embed_tokens.weight"] = {c.vocab_size, h};
  out["language_model.model.norm.weight"] = {h};
  if (!c.tie_word_embeddings) out["language_model.lm_head.weight"] = {c.vocab_size, h};
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    std::string p = layer_prefix(i);
    out[p + "input_layernorm.weight"] = {h};
    out[p + "post_attention_layernorm.weight"] = {h};
    out[p + "self_attn.q_proj.weight"] = {h, h};
    out[p + "self_attn.k_proj.weight"] = {kv, h};
    out[p + "self_attn.v_proj.weight"] = {kv, h};
    out[p + "self_attn.o_proj.weight"] = {h, h};
    if (c.attention_bias) {
      out[p + "self_attn.q_proj.bias"] = {h};
      out[p + "self_attn.k_proj.bias"] = {kv};
      out[p + "self_attn.v_proj.bias"] = {kv};
    }
    out[p + "mlp.gate_proj.weight"] = {c.intermediate_size, h};
    out[p + "mlp.up_proj.weight"] = {c.intermediate_size, h};
    out[p + "mlp.down_proj.weight"] = {h, c.intermediate_size};
  }
}

LlamaWeights LlamaModel::load(const TextConfig& c, const Weights& w, at::ScalarType dtype) {
  LlamaWeights lw;
  lw.dtype = dtype;
  // Only the prompt's rows of the embedding table are ever read: left in the file's dtype and
  // mapped, the table costs no resident memory beyond those rows (262 MB saved for a 7B f16
  // checkpoint computing in bf16). Tied to lm_head, every row is read each step: compute dtype.
  const std::string embed = "language_model.model.embed_tokens.weight";
  lw.embed = c.tie_word_embeddings ? w.get(embed, dtype) : w.get_stored(embed, dtype);
  lw.norm = w.get("language_model.model.norm.weight", dtype);
  lw.lm_head = c.tie_word_embeddings ? lw.embed : w.get("language_model.lm_head.weight", dtype);
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    std::string p = layer_prefix(i);
    LlamaLayerWeights l;
    l.input_norm = w.get(p + "input_layernorm.weight", dtype);
    l.post_norm = w.get(p + "post_attention_layernorm.weight", dtype);
    l.q = w.get(p + "self_attn.q_proj.weight", dtype);
    l.k = w.get(p + "self_attn.k_proj.weight", dtype);
    l.v = w.get(p + "self_attn.v_proj.weight", dtype);
    l.o = w.get(p + "self_attn.o_proj.weight", dtype);
    if (c.attention_bias) {
      l.q_bias = w.get(p + "self_attn.q_proj.bias", dtype);
      l.k_bias = w.get(p + "self_attn.k_proj.bias", dtype);
      l.v_bias = w.get(p + "self_attn.v_proj.bias", dtype);
    }
    l.gate = w.get(p + "mlp.gate_proj.weight", dtype);
    l.up = w.get(p + "mlp.up_proj.weight", dtype);
    l.down = w.get(p + "mlp.down_proj.weight", dtype);
    lw.layers.push_back(std::move(l));
  }
  return lw;
}

void LlamaModel::random_tensors(const TextConfig& c, uint64_t seed, std::map<std::string, at::Tensor>& out,
                                at::ScalarType dtype, const c10::Device& device) {
  ShapeMap shapes;
  expected_tensors(c, shapes);
  out.merge(random_weights(shapes, seed, dtype, device));
}

at::Tensor LlamaModel::embed(const std::vector<int>& ids) const {
  std::vector<int64_t> v(ids.begin(), ids.end());
  for (int64_t id : v) {
    if (id < 0 || id >= weights_.embed.size(0)) {
      throw InternalError("token id " + std::to_string(id) + " outside the vocabulary (" +
                          std::to_string(weights_.embed.size(0)) + ")");
    }
  }
  return weights_.embed.index_select(0, index_tensor(v, weights_.embed.device())).to(weights_.dtype);
}

at::Tensor LayerHook::read_entries(int, int64_t) { return at::Tensor(); }

at::Tensor LlamaModel::attention(int layer, const at::Tensor& x, const at::Tensor& positions, KvCache& cache,
                                 const std::vector<int64_t>& rows, const at::Tensor& read, at::Tensor* probs_out) const {
  const LlamaLayerWeights& w = weights_.layers[static_cast<size_t>(layer)];
  int64_t n = x.size(0);
  int64_t heads = config_.num_attention_heads, kv_heads = config_.num_key_value_heads, hd = head_dim();
  at::Tensor q = dense(x, w.q, w.q_bias).view({n, heads, hd}).transpose(0, 1);
  at::Tensor k = dense(x, w.k, w.k_bias).view({n, kv_heads, hd}).transpose(0, 1);
  at::Tensor v = dense(x, w.v, w.v_bias).view({n, kv_heads, hd}).transpose(0, 1);
  int64_t past = cache.length(layer);
  at::Tensor cos, sin;
  rope_tables(positions, static_cast<int>(hd), config_, past + n, &cos, &sin, x.device());
  q = apply_rope(q, cos, sin);
  k = apply_rope(k, cos, sin);
  cache.append(layer, k, v);
  at::Tensor keys = cache.keys(layer), values = cache.values(layer);  // [kv_heads, S, hd]
  if (read.defined()) {
    // A subset of the entries (the new tokens' own among them); the rest stay cached.
    // Ascending: its ends bound it (read on the host, where the pruner made it).
    const at::Tensor host_read = to_host(read).contiguous();
    const int64_t n_read = host_read.numel(), *r = host_read.data_ptr<int64_t>();
    if (n_read > 0 && (r[0] < 0 || r[n_read - 1] >= keys.size(1))) {
      throw InternalError("layer " + std::to_string(layer) + ": an entry to read lies outside the cache's " +
                          std::to_string(keys.size(1)));
    }
    const at::Tensor on_device = to_device(read, keys.device());
    keys = keys.index_select(1, on_device);
    values = values.index_select(1, on_device);
  }
  AttentionInput in{q, keys, values, causal_visible(past, n, read, keys.size(1)), rows};
  AttentionOutput att = attend(in);
  if (probs_out && att.probs.defined()) *probs_out = att.probs;
  return dense(att.out, w.o);
}

at::Tensor LlamaModel::layer_rows(int layer, const at::Tensor& h, const at::Tensor& positions, KvCache& cache,
                                  const std::vector<int64_t>& rows, const at::Tensor& read, at::Tensor* probs) const {
  const LlamaLayerWeights& w = weights_.layers[static_cast<size_t>(layer)];
  const double eps = config_.rms_norm_eps;
  auto block = [&](const at::Tensor& hc, const at::Tensor& pc, const std::vector<int64_t>& rc, const at::Tensor& rd,
                   at::Tensor* pr) {
    at::Tensor a = hc + attention(layer, rms_norm(hc, w.input_norm, eps), pc, cache, rc, rd, pr);
    at::Tensor x = rms_norm(a, w.post_norm, eps);
    // In place where the tensor is this block's own: one [rows, intermediate] temporary fewer.
    at::Tensor g = dense(x, w.gate);
    at::silu_(g).mul_(dense(x, w.up));
    return a.add_(dense(g, w.down));
  };
  const int64_t n = h.size(0);
  // A prompt sizes the layer once (not chunk by chunk); single decode rows grow it geometrically.
  if (n > 1) cache.reserve(layer, cache.length(layer) + n);
  // On a GPU the whole prompt goes at once: its allocator reuses blocks anyway, and a prompt with
  // no past keeps the plain causal shape the fused kernel is fastest on.
  if (n <= kRowChunk || read.defined() || !h.device().is_cpu()) return block(h, positions, rows, read, probs);
  // Long prompts on the host go through in chunks of rows, each attending to the cache as the
  // earlier chunks left it (causal, so the same result): temporaries stay small enough to be
  // reused rather than mapped and faulted in afresh for every layer.
  const int64_t n_keys = cache.length(layer) + n;
  // A chunk reads only its own rows of h (earlier rows reach it through the cache), so when
  // nothing else holds h (a layer's output, not the caller's input) the chunks overwrite it:
  // one [n, hidden] tensor less at the peak of a long prefill.
  const bool own = h.use_count() == 1 && h.storage().use_count() == 1 && h.is_contiguous();
  at::Tensor out = own ? h : at::empty_like(h);
  if (!rows.empty()) *probs = at::zeros({static_cast<int64_t>(rows.size()), n_keys}, at::kFloat);
  for (int64_t r0 = 0; r0 < n; r0 += kRowChunk) {
    const int64_t nr = std::min(kRowChunk, n - r0);
    std::vector<int64_t> rc, at_k;  // rows asked in this chunk (chunk-relative), their index in `rows`
    for (size_t k = 0; k < rows.size(); ++k) {
      if (rows[k] >= r0 && rows[k] < r0 + nr) {
        rc.push_back(rows[k] - r0);
        at_k.push_back(static_cast<int64_t>(k));
      }
    }
    at::Tensor pc;
    out.narrow(0, r0, nr).copy_(block(h.narrow(0, r0, nr), positions.narrow(0, r0, nr), rc, at::Tensor(), &pc));
    for (size_t j = 0; j < at_k.size(); ++j) probs->select(0, at_k[j]).narrow(0, 0, pc.size(1)).copy_(pc[j]);
  }
  return out;
}

LlmOutput LlamaModel::forward(const LlmForward& in) const {
  if (!in.cache) throw InternalError("LlamaModel::forward needs a KV cache");
  const CachedRows& cached = in.cached;
  const int last = in.last_layer >= 0 ? std::min(in.last_layer, n_layers() - 1) : n_layers() - 1;
  LlmOutput out;
  at::Tensor h = to_device(in.hidden, device()).to(weights_.dtype);
  at::Tensor positions = in.positions;  // bookkeeping, on the host (hooks read and replace it)
  // The same positions where the layers compute: copied once, again only when they change.
  at::Tensor positions_here, positions_from;
  for (int i = 0; i <= last; ++i) {
    if (!positions_from.defined() || !positions_from.is_same(positions)) {
      positions_from = positions;
      positions_here = to_device(positions, device());
    }
    // Cached rows sit in front of the new ones (in this layer's cache, not in h) up to after_layer.
    const int64_t shown = i <= cached.after_layer ? cached.n : 0;
    std::vector<int64_t> rows;
    if (in.hook) {
      rows = in.hook->attention_rows(i, shown + h.size(0));
    } else if (auto it = in.attention_rows.find(i); it != in.attention_rows.end()) {
      rows = it->second;
    }
    for (int64_t& r : rows) {
      if (r < shown) {
        throw InternalError("layer " + std::to_string(i) + ": attention of row " + std::to_string(r) +
                            " was asked for, but that row is cached (its attention was never computed here)");
      }
      r -= shown;
    }
    out.tokens_per_layer.push_back(shown + h.size(0));
    out.computed_per_layer.push_back(h.size(0));
    int64_t past = in.cache->length(i);
    at::Tensor read = in.hook ? in.hook->read_entries(i, past + h.size(0)) : at::Tensor();
    at::Tensor probs;
    h = layer_rows(i, h, positions_here, *in.cache, rows, read, &probs);
    // A long prompt of a large model leaves tens of MB of freed temporaries in the heaps each
    // layer; handing their pages back keeps them from adding up beside a KV cache that grows to
    // its peak in the last layer (20-36 MB lower peak RSS for 3,219 rows of a 7B-shaped model;
    // about 4.5 ms a call). Smaller layers are not worth the call.
    if (h.device().is_cpu() && h.size(0) > kRowChunk && h.nbytes() >= kTrimBytes) release_free_memory();
    if (probs.defined()) out.attention[i] = probs;
    if (i == cached.after_layer && cached.n > 0) {
      h = at::cat({cached.hidden.to(h.scalar_type()), h}, 0);
      positions = at::cat({cached.positions, positions}, 0);
      past -= cached.n;
    }
    if (in.hook) {
      LayerState st{i, h, positions, probs, past};
      in.hook->after_layer(st);
      h = st.hidden;
      positions = st.positions;
    }
  }
  if (in.last_layer >= 0) {
    out.hidden = h;
    return out;
  }
  at::Tensor last_row = in.all_logits ? h : h.narrow(0, h.size(0) - 1, 1);
  out.logits = dense(rms_norm(last_row, weights_.norm, config_.rms_norm_eps), weights_.lm_head).to(at::kFloat);
  return out;
}

void LlamaModel::shift_positions(KvCache& cache, int first_layer, int last_layer, const at::Tensor& from,
                                 const at::Tensor& to) const {
  // Dynamic scaling changes the base only past max_position_embeddings, where no cached key lies.
  at::Tensor cos, sin;
  rope_tables(to - from, head_dim(), config_, 0, &cos, &sin, device());
  const at::ScalarType acc = accumulate_type(dtype());  // converted once, not per head
  cos = cos.to(acc);
  sin = sin.to(acc);
  for (int l = first_layer; l <= last_layer; ++l) {
    at::Tensor k = cache.keys(l);
    if (k.size(1) != from.size(0)) {
      throw InternalError("shift_positions: layer " + std::to_string(l) + " holds " + std::to_string(k.size(1)) +
                          " entries, " + std::to_string(from.size(0)) + " positions given");
    }
    // A head at a time: the rotation's temporaries are one head's rows, not a whole layer's
    // (a 7B model's memory of 3,000 tokens has 25 MB of keys a layer).
    for (int64_t h = 0; h < k.size(0); ++h) {
      at::Tensor kh = k.narrow(0, h, 1);
      kh.copy_(apply_rope(kh, cos, sin));
    }
  }
}

}  // namespace mustdrop::model
