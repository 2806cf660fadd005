// The memory of one stream: the vision tokens kept from its frames, under a hard budget, with the
// question-independent KV prefix (prefix_cache.h) kept in step. Frames are appended by one writer;
// every append publishes an immutable MemorySnapshot, and answers work on the snapshot current
// when their question arrived while ingestion goes on.
#pragma once

#include <ATen/core/Tensor.h>

#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"
#include "model/vlm.h"
#include "prune/apply.h"
#include "prune/pruner.h"
#include "session/prefix_cache.h"

namespace mustdrop::session {

// Where one remembered vision token came from (frame, grid position, merged size, frame span,
// membership in S): the prune module's ledger entry.
using LedgerEntry = prune::TokenInfo;

// The vision tokens of one encoded frame, as perception hands them to the memory.
struct FrameTokens {
  int64_t seq = 0;
  double t_sec = 0;
  model::Media media = model::Media::kVideo;  // kImage: a still image (the source's only picture)
  at::Tensor tokens;                          // [n, text hidden] projected
  std::vector<LedgerEntry> ledger;            // n entries
  int64_t n_tower_tokens = 0;                 // tokens out of the tower before any dropping
  std::vector<int64_t> tokens_per_vision_layer;  // tokens each full ViT layer processed
  std::vector<int64_t> cls_only_tokens;          // tokens of each CLS-row-only pass (S past the feature layer)
  std::vector<prune::Growth> growths;  // earlier frames' tokens that absorbed tokens of this frame
};

// One remembered frame; immutable once published (a change makes a new one).
struct MemoryFrame {
  int64_t seq = 0;
  double t_sec = 0;
  model::Media media = model::Media::kVideo;
  at::Tensor tokens;                // [n, Dt]
  at::Tensor positions;             // [n] int64 RoPE positions
  std::vector<LedgerEntry> ledger;  // n entries
  int64_t n_tower_tokens = 0;
  std::vector<int64_t> tokens_per_vision_layer;
  std::vector<int64_t> cls_only_tokens;
};

// A stretch of time the memory has no frames for.
struct Gap {
  double t_from_sec = 0;  // the last frame before it
  double t_to_sec = 0;    // the first frame after it
  int64_t n_frames = 0;   // frames missed where known (dropped), else 0
  std::string reason;     // "dropped" (the encoder fell behind) | "outage" (the source was lost) | "paused"
};

// Tokens that left the memory at one eviction.
struct Eviction {
  int64_t at_frame = 0;  // the frame whose arrival made room necessary
  int64_t n_tokens = 0;
  int64_t n_in_s = 0;
  double t_first_sec = 0;  // the time span the evicted tokens covered
  double t_last_sec = 0;
};

// Everything the memory was ever given (evicted frames included), for accounting.
struct FramesSeen {
  int64_t n_frames = 0;
  int64_t n_tower_tokens = 0;        // out of the tower before any dropping
  double vision_flops = 0;           // the tower as it ran (analytic, model/flops.h)
  double vision_flops_unpruned = 0;  // the same frames without dropping
};

// What the memory holds at one moment. Never changes; shared by the answers that use it.
struct MemorySnapshot {
  uint64_t version = 0;  // appends so far
  std::vector<std::shared_ptr<const MemoryFrame>> frames;
  std::shared_ptr<const PrefixState> prefix;  // null without the prefix cache; entries follow `frames`
  std::vector<int> system_ids;                // the prompt's system part (positions 0..n-1)
  std::vector<Gap> gaps;                      // within the span
  int64_t n_tokens = 0;
  int64_t bytes = 0;                          // tokens plus the prefix
  int64_t next_position = 0;                  // the first position after the memory
  double t_first_sec = 0;                     // the earliest time a kept token stands for
  double t_last_sec = 0;                      // the newest frame
  int64_t n_evicted_tokens = 0;               // since the session began
  int64_t n_evictions = 0;
  FramesSeen seen;

  // kImage when the memory is one still image.
  model::Media media() const;
  // The vision block in memory order: tokens [n, Dt], positions [n], ledger.
  at::Tensor vision() const;
  at::Tensor positions() const;
  std::vector<LedgerEntry> ledger() const;
};

class FrameMemory {
 public:
  // A memory for `model` whose prefix covers LLM layers 0..prefix_layer. ConfigError when the
  // budget leaves no room in the model's context.
  FrameMemory(const model::VisionLanguageModel& model, int prefix_layer, const config::MemoryConfig& config);
  ~FrameMemory();

  // Appends a frame (frames in sequence order; one writer at a time): grows the earlier tokens
  // that absorbed some of its tokens, evicts down to the budget (tokens outside S first, then S;
  // the oldest first in each, the new frame's tokens being the newest), compacts positions when
  // the context would run out, extends the prefix and publishes a snapshot. Returns the ids
  // evicted. When it throws, the memory is as it was before the call.
  std::vector<int64_t> append(FrameTokens frame);
  // Records a gap (dropped frames, an outage) before the next frame.
  void note_gap(Gap gap);
  // The current snapshot (thread-safe, cheap).
  std::shared_ptr<const MemorySnapshot> snapshot() const;
  // The most recent evictions (at most 256), oldest first (thread-safe).
  std::vector<Eviction> recent_evictions() const;
  // Vision tokens the budget allows (tokens, bytes and the context all counted).
  int64_t token_capacity() const { return capacity_; }
  // Bytes one more vision token costs (its embedding plus its prefix entries).
  int64_t bytes_per_token() const { return bytes_per_token_; }
  // Position compactions so far.
  int64_t n_compactions() const;

 private:
  std::vector<int64_t> append_unsafe(FrameTokens frame);
  // Drops `need` tokens from `frames` and `incoming`; `prefix_rows` gets the vision-block indices
  // of the dropped old tokens (the prefix's entries to remove).
  Eviction evict(std::vector<std::shared_ptr<const MemoryFrame>>& frames, MemoryFrame& incoming, int64_t need,
                 std::vector<int64_t>& prefix_rows);
  // Renumbers the frames' positions from the system part on; returns the positions moved (old, new),
  // system part included, for the prefix.
  std::pair<at::Tensor, at::Tensor> compact(std::vector<std::shared_ptr<const MemoryFrame>>& frames);

  const model::VisionLanguageModel& model_;
  config::MemoryConfig config_;
  std::vector<int> system_ids_;
  int64_t capacity_ = 0;
  int64_t bytes_per_token_ = 0;
  std::unique_ptr<PrefixCache> prefix_;
  std::mutex write_mu_;  // one append at a time
  mutable std::mutex mu_;  // guards the fields below
  std::shared_ptr<const MemorySnapshot> current_;
  std::vector<Gap> pending_gaps_;
  std::deque<Eviction> evictions_;
  int64_t n_compactions_ = 0;
};

}  // namespace mustdrop::session
