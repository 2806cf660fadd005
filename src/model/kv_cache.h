// Per-layer key/value cache behind one small interface with range operations (append, copy a
// prefix, truncate, remove a set; LlamaModel::shift_positions re-rotates keys), so a session can
// own one, pruners can evict entries and a shared question-independent prefix can be copied into
// each answer's cache. Keys are stored already rotated (RoPE) at their tokens' own positions, so
// removing entries never changes the remaining ones.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
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
  // Bytes held by live entries (keys and values, all layers).
  virtual int64_t bytes() const = 0;
  // Largest bytes() seen since construction or the last clear().
  virtual int64_t peak_bytes() const = 0;
  virtual void clear() = 0;
};

// Appends the first `n_entries` entries of layers 0..n_layers-1 of `from` to the same layers of
// `to`. InternalError when `from` holds fewer.
void copy_prefix(const KvCache& from, KvCache& to, int n_layers, int64_t n_entries);

// Contiguous per-layer storage with doubling capacity, so appending one token per decode step
// does not copy the whole cache.
class DenseKvCache : public KvCache {
 public:
  explicit DenseKvCache(int n_layers);
  int n_layers() const override { return static_cast<int>(layers_.size()); }
  int64_t length(int layer) const override;
  void append(int layer, const at::Tensor& k, const at::Tensor& v) override;
  at::Tensor keys(int layer) const override;
  at::Tensor values(int layer) const override;
  void remove(int layer, const std::vector<int64_t>& indices) override;
  void truncate(int layer, int64_t n) override;
  int64_t bytes() const override;
  int64_t peak_bytes() const override { return peak_bytes_; }
  void clear() override;

 private:
  struct Layer {
    at::Tensor k;  // [heads, capacity, head_dim]
    at::Tensor v;
    int64_t length = 0;
  };
  const Layer& layer_at(int layer) const;
  std::vector<Layer> layers_;
  int64_t peak_bytes_ = 0;
};

}  // namespace mustdrop::model
