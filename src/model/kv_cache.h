// Per-layer key/value cache behind one small interface with range operations (append, copy a
// prefix, truncate, remove a set; LlamaModel::shift_positions re-rotates keys), so a session can
// own one, pruners can evict entries and a shared question-independent prefix can be copied into
// each answer's cache. Keys are stored already rotated (RoPE) at their tokens' own positions, so
// removing entries never changes the remaining ones.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace mustdrop::model {

class KvCache {
 public:
  virtual ~KvCache() = default;
  virtual int n_layers() const = 0;
  // Entries held by `layer`.
  virtual int64_t length(int layer) const = 0;
  // Appends k, v of shape [n_kv_heads, n_new, head_dim] to `layer`.
  virtual void append(int layer, const at::Tensor& k, const at::Tensor& v) = 0;
  // Views of all entries of `layer`: [n_kv_heads, length, head_dim] each (writes go through to
  // the stored entries).
  virtual at::Tensor keys(int layer) const = 0;
  virtual at::Tensor values(int layer) const = 0;
  // Removes the entries at `indices` (any order, no duplicates, each < length) from `layer`;
  // the rest keep their order. Throws InternalError on a bad index.
  virtual void remove(int layer, const std::vector<int64_t>& indices) = 0;
  // Keeps the first `n` entries of `layer` (n <= length).
  virtual void truncate(int layer, int64_t n) = 0;
  // Says `layer` is about to hold `n_entries` entries (a forward pass calls it before appending a
  // prompt, possibly in chunks), so storage can be sized once (DenseKvCache: to n_entries plus
  // its headroom). Changes no entry.
  virtual void reserve(int /*layer*/, int64_t /*n_entries*/) {}
  // Bytes held by live entries (keys and values, all layers).
  virtual int64_t bytes() const = 0;
  // Largest bytes() seen since construction or the last clear().
  virtual int64_t peak_bytes() const = 0;
  virtual void clear() = 0;
};

// Storage for `heads` x `cap` entries of `head_dim` values: large blocks are mapped on their own
// (pages become resident only as entries are written), small ones come from the heap.
at::Tensor kv_storage(int64_t heads, int64_t cap, int64_t head_dim, const at::TensorOptions& options);

// Appends the first `n_entries` entries of layers 0..n_layers-1 of `from` to the same layers of
// `to`. InternalError when `from` holds fewer.
void copy_prefix(const KvCache& from, KvCache& to, int n_layers, int64_t n_entries);

// Contiguous per-layer storage. A layer is sized once for what a forward pass announces
// (reserve) plus `headroom` entries for the tokens that follow (an answer's max_new_tokens), so
// a long prompt appended in chunks is not copied as it grows and its storage is not rounded up
// by doubling (a 7B model's 8-frame prompt holds 1.7 GB of keys and values; doubling from chunks
// of 512 made it 2.2 GB). Past that it grows by half, so one token per decode step does not copy
// the whole cache each time.
class DenseKvCache : public KvCache {
 public:
  explicit DenseKvCache(int n_layers, int64_t headroom = 0);
  int n_layers() const override { return static_cast<int>(layers_.size()); }
  int64_t length(int layer) const override;
  void append(int layer, const at::Tensor& k, const at::Tensor& v) override;
  at::Tensor keys(int layer) const override;
  at::Tensor values(int layer) const override;
  void remove(int layer, const std::vector<int64_t>& indices) override;
  void truncate(int layer, int64_t n) override;
  void reserve(int layer, int64_t n_entries) override;
  // Entries `layer` has room for without growing.
  int64_t capacity(int layer) const;
  // Lets `layer` (empty) read the first `n` entries of k and v ([heads, capacity, head_dim],
  // capacity >= n) where they lie, instead of a copy: entries appended later are written past n
  // into the same tensors while they have room, and `lease` (say, a claim on that room) is held
  // until clear() or destruction. The first n entries are never written: removing or truncating
  // into them, or growing past the capacity, first moves the layer to storage of its own.
  void borrow(int layer, const at::Tensor& k, const at::Tensor& v, int64_t n, std::shared_ptr<const void> lease);
  // Whether `layer` still reads borrowed entries.
  bool borrowed(int layer) const { return layer_at(layer).shared > 0; }
  int64_t bytes() const override;
  int64_t peak_bytes() const override { return peak_bytes_; }
  void clear() override;

 private:
  struct Layer {
    at::Tensor k;  // [heads, capacity, head_dim]
    at::Tensor v;
    int64_t length = 0;
    int64_t reserved = 0;  // announced before the first entry (its shape unknown until then)
    int64_t shared = 0;    // entries [0, shared) are borrowed (read only)
  };
  const Layer& layer_at(int layer) const;
  // Moves `l`'s entries to storage for `cap` entries shaped like k and v.
  static void resize(Layer& l, int64_t cap, const at::Tensor& k, const at::Tensor& v);
  // Moves a layer that reads borrowed entries to storage of its own (room for its headroom).
  void own(Layer& l) const;
  std::vector<std::shared_ptr<const void>> leases_;  // released after the layers (declared first)
  std::vector<Layer> layers_;
  int64_t headroom_;
  int64_t peak_bytes_ = 0;
};

}  // namespace mustdrop::model
