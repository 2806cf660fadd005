// The token-pruning interface. Every method (MustDrop's stages and the baselines) is a
// TokenPruner acting at one declared stage. A pruner only decides: it returns a KeepPlan over
// the tokens it was shown; one shared routine (apply.h) carries out every plan, so all methods
// are applied and measured the same way.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mustdrop::prune {

enum class Stage {
  VisionLayer,   // inside the ViT, after a layer
  VisionOutput,  // after the tower, within and across frames
  Prefill,       // after an LLM layer during prefill (vision block only)
  Decode,        // during generation: KV-cache eviction, or per-step reading (Needs::decode_read_after)
};
const char* stage_name(Stage stage);

// The ledger entry of one vision token: where it came from and what it stands for.
struct TokenInfo {
  int64_t id = 0;           // stable over the stream: frame_seq * kIdsPerFrame + patch + 1
  int64_t frame_seq = 0;    // frame of origin
  int64_t patch = -1;       // grid position: original patch index in raster order (-1: CLS)
  double size = 1;          // original patches merged into it
  int64_t first_frame = 0;  // frames it covers (temporal merging extends last_frame)
  int64_t last_frame = 0;
  double t_first_sec = 0;   // and their times
  double t_last_sec = 0;
  bool in_s = false;        // in the important set S: never dropped by a later stage
};
constexpr int64_t kIdsPerFrame = int64_t(1) << 24;

// Tokens folded into one: `into` (kept) becomes the weighted mean of `members` (into included),
// or their weighted sum when `normalize` is false (VisionZip's target + mean of the assigned).
struct MergeGroup {
  int64_t into = 0;
  std::vector<int64_t> members;
  std::vector<double> weights;  // one per member; empty: the members' sizes (size-weighted mean)
  bool normalize = true;        // false: the weighted sum, weights as given (required), not divided by their total
};

// A token of the current list folded into a token of an earlier frame (temporal merging):
// removed here, the earlier token's ledger entry grows (size, frame span).
struct Absorption {
  int64_t index = 0;       // in the current list
  int64_t into_id = 0;     // TokenInfo::id of the earlier token
};

// A pruner's decision over the n tokens it was shown.
struct KeepPlan {
  std::vector<int64_t> keep;             // indices kept, in output order (ascending unless documented)
  std::vector<MergeGroup> merges;        // every `into` is kept; the other members are not
  std::vector<Absorption> absorbed;      // not kept; folded into earlier frames' tokens
  std::vector<int64_t> important;        // indices that join S (must be kept)
  // Temporal merging: windows that had an earlier frame to compare with, and of them those unlike
  // it (below the temporal threshold, whatever the earlier frame's age). Scene-change detection.
  int64_t n_windows_compared = 0;
  int64_t n_windows_changed = 0;
  // Keeps every token, in order.
  static KeepPlan keep_all(int64_t n);
};

// What a pruner is shown when it decides. Fields not used by its stage are empty. `hidden` and
// `prompt_embeddings` lie on the model's device (model/device.h); `cls_attention` and `attention`
// on the host. A pruner reduces heavy tensors where they lie and reads only small results on the
// host (model::to_host); indices it applies to them go there with model::index_tensor.
struct View {
  Stage stage = Stage::VisionLayer;
  int layer = 0;               // ViT or LLM layer just run (Decode: the cache layer)
  // Vision stages: one frame. Prefill/Decode: the vision block of the prompt.
  std::vector<TokenInfo>* tokens = nullptr;  // ledger of the tokens in question (vision only)
  at::Tensor hidden;           // VisionLayer: [T, D] tokens incl. CLS at 0; Prefill: [n, D] all tokens
  int grid = 0;                // VisionLayer: patch grid side
  int n_layers = 0;            // layers of the tower or LLM the stage belongs to
  int feature_layer = 0;       // VisionLayer: tower layer whose output feeds the projector
  at::Tensor cls_attention;    // VisionLayer: [T-1] head-mean CLS row over the other tokens, if requested
  // Prefill: the sequence is [sys | vision (n_vision) | text]; `attention` holds the rows asked for.
  int64_t vision_begin = 0;
  int64_t n_vision = 0;
  int64_t n_tokens = 0;        // current sequence length (Prefill), cache entries (Decode)
  std::vector<int64_t> rows;   // Prefill: the query rows in `attention`; Decode reading: {n_tokens - 1}, the new token
  at::Tensor attention;        // Prefill: [rows, n] head-mean probabilities; Decode reading: [1, n_tokens]
  at::Tensor prompt_embeddings;  // Prefill: [n0, D] input embeddings of the whole prompt
  int64_t prompt_vision_begin = 0;
  int64_t prompt_n_vision = 0;
  int64_t n_frames = 1;        // frames in the vision block (budgets are per frame)
  int64_t prefill_id = 0;      // Prefill: unique per prefill (what depends on the prompt alone may be cached)
  int step = 0;                // Decode: decode steps done (reading: before the step being run)
  const std::vector<int64_t>* final_ids = nullptr;  // Decode: ids of vision tokens that reached the last layer
};

// What a pruner needs computed for it.
struct Needs {
  std::vector<int> layers;               // layers after which it acts (ViT or LLM, by stage); Decode: the first layer it evicts from
  std::vector<int> vision_cls_attention; // ViT layers whose CLS rows it reads (-1: last)
  bool proportional_attention = false;   // merged ViT tokens weigh by log(size) in attention
  // Decode, >= 0: instead of evicting, at each decode step after this LLM layer (shown the new
  // token's attention row there) it picks the vision entries the later layers read in that step;
  // the cache keeps every entry (Chain::decode_layer_hook). -1: it does not.
  int decode_read_after = -1;
};

class TokenPruner {
 public:
  virtual ~TokenPruner() = default;
  // Registry name, e.g. "mustdrop.lsm".
  virtual std::string name() const = 0;
  virtual Stage stage() const = 0;
  // Layers and attention it needs, for a tower (or LLM) of `n_layers` layers.
  virtual Needs needs(int n_layers) const = 0;
  // Prefill: query rows (indices into the current sequence) whose attention it reads.
  virtual std::vector<int64_t> attention_rows(const View& view) const;
  // The decision. May update the pruner's own per-stream memory (temporal stages).
  virtual KeepPlan decide(const View& view) = 0;
  // Decode: whether it acts after `step` decode steps (0: right after prefill).
  virtual bool acts_at_step(int step) const;
  // Upper bound on the tokens it keeps of `view` under its configuration (the budget it promises).
  virtual int64_t max_kept(const View& view) const;
  // An independent copy, per-stream memory included.
  virtual std::unique_ptr<TokenPruner> clone() const = 0;
  // Forgets per-stream memory (a new stream).
  virtual void reset() {}
  // Vision stages: a frame is done; `tokens` are its tokens as they leave the tower (CLS first).
  // Per-stream memory may only point at tokens that exist.
  virtual void frame_done(const std::vector<TokenInfo>& tokens) { (void)tokens; }
  // Vision stages: the tokens `ids` left the stream's memory (evicted); per-stream memory must
  // stop pointing at them.
  virtual void forget(const std::vector<int64_t>& ids) { (void)ids; }
};

// Indices of the `k` largest `scores` (ties: lower index first), returned ascending. Reads the
// scores on the host (a copy when they lie on a device).
std::vector<int64_t> top_k_ascending(const at::Tensor& scores, int64_t k);
// Per-frame budget of a vision block: n_frames * per_frame, at most n.
int64_t frame_budget(int64_t per_frame, int64_t n_frames, int64_t n);
// Tokens a count-or-ratio setting keeps of a prefill view's vision block: per_frame per frame
// when per_frame > 0, else round(ratio * n_vision).
int64_t count_or_ratio(int64_t per_frame, double ratio, const View& view);
// The head-mean attention of `rows_wanted` (sequence indices) to the vision block, [rows, n_v]
// float64 on the host, cut from a prefill view's attention rows. Throws InternalError when a row
// is missing.
at::Tensor text_to_vision(const View& view, const std::vector<int64_t>& rows_wanted);
// Keep list: S plus the best-scored other tokens up to `budget` in total (ascending).
std::vector<int64_t> keep_top_with_s(const at::Tensor& scores, int64_t budget, const std::vector<TokenInfo>& tokens);
// What a budget keeps at most once S, which is always kept, is counted: max(budget, |S|).
int64_t at_least_s(int64_t budget, const std::vector<TokenInfo>& tokens);
// Needs of a stage acting after `layers` and reading nothing else.
Needs acting_after(std::vector<int> layers);
// Needs of a vision stage acting after ViT layer `layer` (< 0: from the end of `n_layers`) and
// reading that layer's CLS attention.
Needs acting_after_with_cls(int layer, int n_layers);
// Vision-block indices of tokens in S.
std::vector<int64_t> important_indices(const std::vector<TokenInfo>& tokens);
// Adds S to a sorted keep list (result sorted, unique).
std::vector<int64_t> with_important(std::vector<int64_t> keep, const std::vector<TokenInfo>& tokens);

}  // namespace mustdrop::prune
