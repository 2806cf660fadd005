// A chain of pruners (pipelines/<name>.yaml) and the places where it meets the model: the
// vision tower of each frame, the LLM prefill, and the decode loop. Every stage's plan goes
// through apply_plan(), and every stage is timed and counted the same way.
//
// Threading: vision stages run on the encoder (one frame at a time, in order) and keep the
// stream's memory (temporal windows). Each prefill works on its own copies of the prefill and
// decode stages (held by its PrefillRun), so any number of answers may run at once, also while
// frames are encoded; prefill() and after_decode_step() touch nothing shared.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "config/pipeline_config.h"
#include "model/generate.h"
#include "model/vlm.h"
#include "prune/apply.h"
#include "prune/pruner.h"

namespace mustdrop::prune {

// One frame through the tower with the vision stages.
struct EncodedFrame {
  at::Tensor features;                    // [n, Dv] tower features (CLS only if the model keeps it)
  std::vector<TokenInfo> ledger;          // n entries
  std::vector<int64_t> tokens_per_layer;  // tokens each full ViT layer processed
  std::vector<int64_t> cls_only_tokens;   // tokens of each CLS-row-only pass (S past the feature layer)
  int64_t n_tower_tokens = 0;             // vision tokens of a frame without dropping
  std::vector<Growth> growths;            // earlier frames' tokens that absorbed tokens of this frame
  int64_t n_windows_compared = 0;         // temporal merging: windows compared with an earlier frame
  int64_t n_windows_changed = 0;          // ... and found unlike it (KeepPlan)
};

// What one stage did, as it happened (mustdrop inspect draws these): the tokens it was shown and
// its plan. Vision stages: one frame's tokens (CLS first); Prefill: the vision block after an LLM
// layer; Decode: the vision entries of one cache layer.
struct StageTrace {
  std::string pruner;
  Stage stage = Stage::VisionLayer;
  int layer = 0;                  // ViT or LLM layer (-1: after the tower)
  int64_t frame_seq = -1;         // vision stages: the frame; -1 otherwise
  int step = 0;                   // Decode: decode steps done
  std::vector<TokenInfo> before;  // the tokens shown, in order (plan indices point here)
  KeepPlan plan;
  bool read_only = false;         // Decode: the entries one decode step read (Needs::decode_read_after); nothing evicted
};
using TraceSink = std::function<void(const StageTrace&)>;

// A prefill with the prefill stages, and what the decode stages need afterwards.
struct PrefillRun {
  std::vector<std::unique_ptr<TokenPruner>> stages;  // this answer's copies of the prefill and decode stages
  model::LlmOutput out;
  int64_t vision_begin = 0;
  int64_t n_vision_in = 0;                          // vision tokens entering the LLM
  std::vector<std::vector<TokenInfo>> layer_vision;  // per layer: the vision tokens in its cache, in order
  std::vector<int64_t> final_ids;                   // ids of vision tokens that reached the last layer
  at::Tensor final_positions;                       // positions of every token that reached the last layer
  std::vector<StageRecord> records;                 // prefill and decode stages of this answer
  // With `ground`: the vision tokens in the last layer's cache and the head-mean attention the last
  // prompt row (the one that predicts the first answer token) paid to each there.
  std::vector<TokenInfo> ground_tokens;
  std::vector<double> ground_attention;
};

class Chain {
 public:
  // Builds the pruners named in config.chain (registry.cpp). Throws ConfigError naming
  // `origin` for an unknown name, a stage out of order, or a pruner listed twice.
  static std::unique_ptr<Chain> build(const config::PipelineConfig& config, const std::string& origin);
  // An empty chain: no dropping.
  Chain() = default;
  Chain(const Chain& other);
  Chain& operator=(const Chain&) = delete;

  const std::string& name() const { return name_; }
  const std::vector<std::unique_ptr<TokenPruner>>& pruners() const { return pruners_; }
  // Adds a pruner at the end (tests compose chains by hand).
  void add(std::unique_ptr<TokenPruner> pruner);
  // Every stage's decision from now on goes to `sink` too (copies of the chain keep it), called on
  // the thread that runs the stage. Empty: none (the default; costs nothing).
  void set_trace(TraceSink sink) { trace_ = std::move(sink); }

  // Runs the tower for `media` over one frame ([1, 3, S, S]) with the vision stages and the
  // frame's ledger.
  EncodedFrame encode_frame(const model::VisionLanguageModel& model, const at::Tensor& pixels, int64_t frame_seq,
                            double t_sec, model::Media media = model::Media::kVideo);
  // Prefill of `layout` with vision block `vision` ([n_vision, Dt], described by `ledger`) at
  // `positions` ([prompt length] int64; undefined: 0..n-1) with the prefill stages; tokens keep
  // their positions whatever is dropped. With `prefix_hidden` defined, the system part and the
  // vision block already sit in layers 0..prefix_layer(model) of `cache` and `prefix_hidden`
  // ([vision_begin + n_vision, D]) is their output of that layer: only the text runs there.
  // `ground` also reads the last prompt row's attention in the last layer (PrefillRun::ground_*).
  // `vision` is let go once the prompt is embedded: pass it moved to free it during prefill.
  PrefillRun prefill(const model::VisionLanguageModel& model, const model::PromptLayout& layout,
                     at::Tensor vision, const std::vector<TokenInfo>& ledger, int64_t n_frames,
                     model::KvCache& cache, const at::Tensor& positions = at::Tensor(),
                     const at::Tensor& prefix_hidden = at::Tensor(), bool ground = false) const;
  // The last LLM layer whose keys and values cannot depend on the question: the first layer after
  // which a prefill stage acts (or whose attention it reads); the last layer when none does.
  int prefix_layer(const model::VisionLanguageModel& model) const;
  // Decode stages due after `step` decode steps (0: right after prefill) act on `cache` (evicting).
  void after_decode_step(int step, model::KvCache& cache, PrefillRun& run) const;
  // For generate(): the layer hook of every decode step of this answer, through which its decode
  // stages that choose what each step reads (Needs::decode_read_after >= 0) act; they see the new
  // token's attention at their layer and the layers above read only the vision entries they keep
  // (their records: `layer` is the first reading layer, one call per step). Empty when no stage
  // reads so: decode then runs without a hook. `run` must outlive the hook.
  model::StepLayerHook decode_layer_hook(PrefillRun& run) const;
  // Stages that can never act on `model` (layers past its depth), one line each, for a warning.
  std::vector<std::string> inactive_stages(const model::VisionLanguageModel& model) const;
  // Vision-stage records summed over the frames encoded so far.
  const std::vector<StageRecord>& vision_records() const { return vision_records_; }
  // Forgets per-stream memory and records (a new stream).
  void reset();
  // Tells the vision stages that the tokens `ids` left the stream's memory.
  void forget(const std::vector<int64_t>& ids);

 private:
  std::string name_ = "none";
  std::string origin_ = "pipeline";  // the YAML it came from, for messages
  std::vector<std::unique_ptr<TokenPruner>> pruners_;
  std::vector<StageRecord> vision_records_;
  TraceSink trace_;
};

// Fills each record's `flops`: the FLOPs of the layers its output fed, up to the next stage of
// the same part, from the tokens each layer processed (vision: per frame, summed); Decode
// records get `decode_flops` (the decode steps over the evicted cache).
void attribute_flops(std::vector<StageRecord>& records, const model::ModelConfig& config,
                     const std::vector<std::vector<int64_t>>& vision_tokens_per_layer,
                     const std::vector<int64_t>& llm_tokens_per_layer, double decode_flops);

}  // namespace mustdrop::prune
