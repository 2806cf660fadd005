// The question-independent start of every answer over one memory: the system part of the prompt
// and the vision block run through LLM layers 0..k (k: Chain::prefix_layer). With causal
// attention nothing there depends on the question, so it is computed once, extended frame by
// frame (new tokens attend to the cached ones) and trimmed on eviction; a question then runs only
// its own tokens through layers 0..k.
//
// Published states never change: appends write past every published length, and eviction or a
// position shift builds new storage (copy on write), so answers read a state while frames keep
// arriving. The writer (FrameMemory) is one thread at a time.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "model/kv_cache.h"
#include "model/vlm.h"

namespace mustdrop::session {

struct PrefixStorage;

// One published prefix: entries [0, n) (system part first, then the vision tokens in memory order).
class PrefixState {
 public:
  int last_layer() const { return last_layer_; }
  int64_t size() const { return n_; }
  int64_t n_system() const { return n_system_; }
  const std::vector<int>& system_ids() const;
  // [n, hidden]: the entries' output of layer last_layer.
  at::Tensor hidden() const;
  // Keys and values of `layer` (<= last_layer): [kv_heads, n, head_dim], read-only views.
  at::Tensor keys(int layer) const;
  at::Tensor values(int layer) const;
  // Bytes of the live entries (keys, values and hidden rows).
  int64_t bytes() const;
  // Gives an answer's `cache` (layers 0..last_layer empty) the entries. When this is the newest
  // state and no other answer holds the room past it, the cache reads them in place and writes
  // its own entries into that room (until the cache lets go; the writer meanwhile continues in a
  // copy); true then. Otherwise it copies them (false).
  bool share_into(model::DenseKvCache& cache) const;

 private:
  // Copies the entries into layers 0..last_layer of `cache` (empty there).
  void copy_to(model::KvCache& cache) const;
  friend class PrefixCache;
  std::shared_ptr<const PrefixStorage> storage_;
  int last_layer_ = -1;
  int64_t n_ = 0;
  int64_t n_system_ = 0;
};

class PrefixCache {
 public:
  // Runs the system part `system_ids` (positions 0..s-1) through layers 0..last_layer of
  // `model`'s LLM. `capacity` entries are reserved (0: grows by doubling); room past the memory
  // for a question and its answer lets answers read the entries in place (share_into).
  PrefixCache(const model::VisionLanguageModel& model, int last_layer, std::vector<int> system_ids, int64_t capacity);
  ~PrefixCache();

  // The current state (shared; never changes afterwards).
  const PrefixState& state() const { return state_; }
  // Appends vision tokens `vision` ([m, Dt], projected) at `positions` ([m] int64): they attend
  // to every cached entry. Cost proportional to m (times the cached length in attention).
  void extend(const at::Tensor& vision, const at::Tensor& positions);
  // Removes the vision entries at `vision_indices` (indices into the vision block, ascending)
  // and, when `from` is given, moves every remaining entry from positions `from` to `to` ([n]
  // int64, n the entries left): keys re-rotated (exact for the keys of layer 0; hidden rows and
  // deeper entries keep what they computed at the old spacing). One copy of the storage for both.
  void remove(const std::vector<int64_t>& vision_indices, const at::Tensor& from = {}, const at::Tensor& to = {});
  void shift_positions(const at::Tensor& from, const at::Tensor& to) { remove({}, from, to); }
  // Bytes one more vision entry costs (keys and values of layers 0..k plus its hidden row).
  int64_t bytes_per_entry() const { return entry_bytes(model_, last_layer_); }
  // The same for `model` and layers 0..last_layer, without building a cache.
  static int64_t entry_bytes(const model::VisionLanguageModel& model, int last_layer);

  // The cache as it is now, to go back to when a change fails half way (cheap: published states
  // share storage, and appends only write past the published length).
  struct Checkpoint {
    std::shared_ptr<PrefixStorage> storage;
    PrefixState state;
  };
  Checkpoint checkpoint() const { return {storage_, state_}; }
  void restore(Checkpoint c);

 private:
  static std::vector<int64_t> all_entries(int64_t n);
  void publish(std::shared_ptr<PrefixStorage> storage, int64_t n);
  std::shared_ptr<PrefixStorage> copy_storage(const std::vector<int64_t>& keep, int64_t capacity) const;

  const model::VisionLanguageModel& model_;
  int last_layer_;
  int64_t capacity_hint_;
  std::shared_ptr<PrefixStorage> storage_;  // the writer's handle; states hold const ones
  PrefixState state_;
};

}  // namespace mustdrop::session
