// Typed form of pipelines/<name>.yaml: which token pruners run, in which order, with which
// knobs. Each pruner's section has the key path of its registry name ("mustdrop.lsm" is the
// `lsm` section under `mustdrop`), so `chain` entries and sections name each other exactly.
// Decoded strictly by the same visit() machinery as config.h (unknown keys are errors).
#pragma once

#include <string>
#include <vector>

#include "config/config.h"

namespace mustdrop::config {

// mustdrop.lsm: local spatial merging in k x k windows, optionally reaching back in time.
struct LsmOptions {
  int layer = 0;                    // ViT layer (0-based) after which windows are checked
  int window = 3;                   // k: non-overlapping k x k windows; a grid k does not divide keeps its edges
  double threshold = 0.8;           // tau: a window whose mean pairwise cosine is >= tau becomes one token
  int temporal_frames = 1;          // t: a window also covers the same cells of up to t-1 earlier frames (1: off)
  double temporal_threshold = 0.9;  // tau_t: mean co-located cosine at which a later frame's window joins the earlier tokens

  template <class V>
  void visit(V& v) {
    v("layer", layer, range(0, 1000));
    v("window", window, range(1, 64));
    v("threshold", threshold, range(-1, 2));
    v("temporal_frames", temporal_frames, range(1, 1000));
    v("temporal_threshold", temporal_threshold, range(-1, 2));
  }
};

// mustdrop.important_set: the set S from the CLS attention of one ViT layer.
struct ImportantSetOptions {
  int layer = -1;       // ViT layer whose CLS->patch attention ranks tokens (-1: the last layer)
  double ratio = 0.08;  // rho: S holds the top ceil(rho * N_v) tokens of each frame

  template <class V>
  void visit(V& v) {
    v("layer", layer, range(-1000, 1000));
    v("ratio", ratio, range(0, 1));
  }
};

// mustdrop.dual_attention: drop a vision token only if both its global and local text->vision
// attention are low. Thresholds default to the official TextVQA-192 script's (the official code's
// own defaults, 1.0 / 0.0, drop nothing; docs/pruning.md).
struct DualAttentionOptions {
  std::vector<int> layers = {2, 6, 10, 14};  // LLM layers (0-based) after which the filter runs
  double global_threshold = 0.001;           // gamma: drop candidate if its share of the summed attention < gamma
  double local_threshold = 0.001;            // alpha: ... and its largest single-row attention < alpha
  int target_tokens_per_frame = 0;           // > 0: budget mode, keep exactly this many per frame (ranked), thresholds unused

  template <class V>
  void visit(V& v) {
    v("layers", layers, range(0, 10000));
    v("global_threshold", global_threshold, range(0, 1));
    v("local_threshold", local_threshold, range(0, 1));
    v("target_tokens_per_frame", target_tokens_per_frame, range(0, 1e6));
  }
};

// mustdrop.kv_evict: the output-aware KV cache.
struct KvEvictOptions {
  int layer = 2;                       // L: layers >= L evict; layers below keep every entry
  int after_steps = 0;                 // D: evict after this many decode steps (0: right after prefill)
  std::string policy = "important_set";  // important_set: keep only S | final_kept: keep what survived prefill

  template <class V>
  void visit(V& v) {
    v("layer", layer, range(0, 10000));
    v("after_steps", after_steps, range(0, 1e6));
    v("policy", policy, one_of({"important_set", "final_kept"}));
  }
};

struct MustDropOptions {
  LsmOptions lsm;
  ImportantSetOptions important_set;
  DualAttentionOptions dual_attention;
  KvEvictOptions kv_evict;

  template <class V>
  void visit(V& v) {
    v("lsm", lsm);
    v("important_set", important_set);
    v("dual_attention", dual_attention);
    v("kv_evict", kv_evict);
  }
};

// fastv: after layer K-1, keep the vision tokens the last prompt token attends to most.
struct FastvOptions {
  int k = 2;                       // K: layers >= K run on the kept tokens
  double keep_ratio = 0.5;         // share of vision tokens kept (when keep_tokens_per_frame is 0)
  int keep_tokens_per_frame = 0;   // > 0: keep exactly this many per frame

  template <class V>
  void visit(V& v) {
    v("k", k, range(1, 10000));
    v("keep_ratio", keep_ratio, range(0, 1));
    v("keep_tokens_per_frame", keep_tokens_per_frame, range(0, 1e6));
  }
};

// tome: bipartite soft matching in every ViT layer up to the feature layer.
struct TomeOptions {
  int r = 16;                        // tokens merged per layer (at most half the mergeable tokens)
  int target_tokens_per_frame = 0;   // > 0: choose r per layer to end with this many patch tokens
  bool proportional_attention = true;  // add log(size) to the attention logits

  template <class V>
  void visit(V& v) {
    v("r", r, range(0, 1e6));
    v("target_tokens_per_frame", target_tokens_per_frame, range(0, 1e6));
    v("proportional_attention", proportional_attention, any());
  }
};

// sparsevlm: text raters, rank-adaptive keep counts, recycling of dropped tokens.
struct SparseVlmOptions {
  std::vector<int> layers = {2, 6, 15, 19};  // LLM layers (0-based) after which it sparsifies
  double scale = 13.5;                       // keep min(rank * scale + bias, n_v - 1) tokens
  double bias = 0;
  double recycle_ratio = 0.3;                // share of the dropped tokens (best scored) recycled into clusters
  double cluster_ratio = 0.1;                // clusters per recycled token (int(n * ratio) + 1 clusters)
  int target_tokens_per_frame = 0;           // > 0: keep this many per frame instead of the rank rule

  template <class V>
  void visit(V& v) {
    v("layers", layers, range(0, 10000));
    v("scale", scale, range(0, 1e6));
    v("bias", bias, range(-1e6, 1e6));
    v("recycle_ratio", recycle_ratio, range(0, 1));
    v("cluster_ratio", cluster_ratio, range(0, 1));
    v("target_tokens_per_frame", target_tokens_per_frame, range(0, 1e6));
  }
};

// random: drop vision tokens uniformly at random after one LLM layer (a floor for the others).
struct RandomOptions {
  int layer = 1;                   // LLM layer after which tokens are dropped
  double keep_ratio = 0.5;         // share kept (when keep_tokens_per_frame is 0)
  int keep_tokens_per_frame = 0;   // > 0: keep exactly this many per frame
  int seed = 0;                    // same seed, same choice

  template <class V>
  void visit(V& v) {
    v("layer", layer, range(0, 10000));
    v("keep_ratio", keep_ratio, range(0, 1));
    v("keep_tokens_per_frame", keep_tokens_per_frame, range(0, 1e6));
    v("seed", seed, range(0, 2147483647));
  }
};

// A token-dropping pipeline (pipelines/<name>.yaml).
struct PipelineConfig {
  std::string name = "none";        // shown in reports
  std::string description;          // one line for people
  std::vector<std::string> chain;   // pruners in order, by registry name (e.g. mustdrop.lsm); empty: no dropping
  MustDropOptions mustdrop;
  FastvOptions fastv;
  TomeOptions tome;
  SparseVlmOptions sparsevlm;
  RandomOptions random;

  template <class V>
  void visit(V& v) {
    v("name", name, any());
    v("description", description, any());
    v("chain", chain, any());
    v("mustdrop", mustdrop);
    v("fastv", fastv);
    v("tome", tome);
    v("sparsevlm", sparsevlm);
    v("random", random);
  }
};

// Reads a pipeline YAML strictly (unknown keys, wrong types: ConfigError with file:line:col).
PipelineConfig load_pipeline(const std::string& path);
// Same, from YAML text; `origin` names the text in messages.
PipelineConfig load_pipeline_string(const std::string& yaml, const std::string& origin);
// The pipeline as YAML (every key, in declaration order).
std::string to_yaml(const PipelineConfig& pipeline);
// One section as YAML, by key path ("mustdrop.lsm"); "" when there is no such section.
std::string section_yaml(const PipelineConfig& pipeline, const std::string& key_path);

}  // namespace mustdrop::config
