#include "model/kv_cache.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <string>

#include <sys/mman.h>

#include "core/error.h"
#include "model/device.h"

namespace mustdrop::model {

DenseKvCache::DenseKvCache(int n_layers, int64_t headroom)
    : layers_(static_cast<size_t>(n_layers)), headroom_(std::max<int64_t>(0, headroom)) {}

const DenseKvCache::Layer& DenseKvCache::layer_at(int layer) const {
  if (layer < 0 || layer >= n_layers()) {
    throw InternalError("kv cache: layer " + std::to_string(layer) + " out of range (" + std::to_string(n_layers()) +
                        " layers)");
  }
  return layers_[static_cast<size_t>(layer)];
}

int64_t DenseKvCache::length(int layer) const { return layer_at(layer).length; }

void DenseKvCache::append(int layer, const at::Tensor& k, const at::Tensor& v) {
  layer_at(layer);
  Layer& l = layers_[static_cast<size_t>(layer)];
  int64_t n = k.size(1);
  if (!l.k.defined()) {
    resize(l, std::max<int64_t>(std::max(n, l.reserved) + headroom_, 16), k, v);
  } else if (l.length + n > l.k.size(1)) {
    resize(l, std::max(l.length + n + headroom_, l.k.size(1) + l.k.size(1) / 2), k, v);
  }
  l.k.narrow(1, l.length, n).copy_(k);
  l.v.narrow(1, l.length, n).copy_(v);
  l.length += n;
  peak_bytes_ = std::max(peak_bytes_, bytes());
}

// Storage for a layer's keys or values. Large blocks are mapped on their own rather than taken
// from malloc's heaps: tune_allocator() keeps blocks up to 32 MB in the heaps, where long-lived
// KV blocks (26 MB a layer for a 7B model at 3,200 tokens) interleave with the prompt's
// short-lived activations and leave holes that stay resident; a mapping leaves nothing behind
// when it goes. Its pages are touched once, as entries are written.
at::Tensor kv_storage(int64_t heads, int64_t cap, int64_t head_dim, const at::TensorOptions& options) {
  const size_t bytes = static_cast<size_t>(heads * cap * head_dim) * options.dtype().itemsize();
  if (bytes < (size_t{1} << 20) || !options.device().is_cpu()) return at::empty({heads, cap, head_dim}, options);
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    throw InternalError("kv cache: cannot map " + std::to_string(bytes) + " bytes (out of memory?)");
  }
  return at::from_blob(p, {heads, cap, head_dim}, [bytes](void* q) { munmap(q, bytes); }, options);
}

void DenseKvCache::resize(Layer& l, int64_t cap, const at::Tensor& k, const at::Tensor& v) {
  at::Tensor nk = kv_storage(k.size(0), cap, k.size(2), k.options());
  at::Tensor nv = kv_storage(v.size(0), cap, v.size(2), v.options());
  if (l.length > 0) {
    nk.narrow(1, 0, l.length).copy_(l.k.narrow(1, 0, l.length));
    nv.narrow(1, 0, l.length).copy_(l.v.narrow(1, 0, l.length));
  }
  l.k = nk;  // the old storage goes before the next layer grows
  l.v = nv;
  l.shared = 0;
}

void DenseKvCache::own(Layer& l) const {
  if (l.shared > 0) resize(l, std::max<int64_t>(l.length + headroom_, 16), l.k, l.v);
}

void DenseKvCache::borrow(int layer, const at::Tensor& k, const at::Tensor& v, int64_t n,
                          std::shared_ptr<const void> lease) {
  layer_at(layer);
  Layer& l = layers_[static_cast<size_t>(layer)];
  if (l.k.defined() || l.length > 0) throw InternalError("kv cache: layer " + std::to_string(layer) + " is not empty");
  if (k.dim() != 3 || !k.sizes().equals(v.sizes()) || n < 0 || n > k.size(1)) {
    throw InternalError("kv cache: cannot borrow " + std::to_string(n) + " entries of a block shaped " +
                        std::to_string(k.dim() == 3 ? k.size(1) : -1) + " entries deep");
  }
  l.k = k;
  l.v = v;
  l.length = n;
  l.shared = n;
  if (lease) leases_.push_back(std::move(lease));
  peak_bytes_ = std::max(peak_bytes_, bytes());
}

void DenseKvCache::reserve(int layer, int64_t n_entries) {
  layer_at(layer);
  Layer& l = layers_[static_cast<size_t>(layer)];
  if (!l.k.defined()) {  // sized at the first append, when the shape of an entry is known
    l.reserved = std::max(l.reserved, n_entries);
    return;
  }
  // The headroom stays free above a second prompt too (an answer's text after a copied prefix).
  if (n_entries + headroom_ <= l.k.size(1)) return;
  resize(l, n_entries + headroom_, l.k, l.v);
}

int64_t DenseKvCache::capacity(int layer) const {
  const Layer& l = layer_at(layer);
  return l.k.defined() ? l.k.size(1) : 0;
}

at::Tensor DenseKvCache::keys(int layer) const {
  const Layer& l = layer_at(layer);
  return l.k.defined() ? l.k.narrow(1, 0, l.length) : at::Tensor();
}

at::Tensor DenseKvCache::values(int layer) const {
  const Layer& l = layer_at(layer);
  return l.v.defined() ? l.v.narrow(1, 0, l.length) : at::Tensor();
}

void DenseKvCache::remove(int layer, const std::vector<int64_t>& indices) {
  layer_at(layer);
  Layer& l = layers_[static_cast<size_t>(layer)];
  if (indices.empty()) return;
  std::vector<char> drop(static_cast<size_t>(l.length), 0);
  for (int64_t i : indices) {
    if (i < 0 || i >= l.length || drop[static_cast<size_t>(i)]) {
      throw InternalError("kv cache: cannot remove entry " + std::to_string(i) + " of layer " + std::to_string(layer) +
                          " (length " + std::to_string(l.length) + ", or listed twice)");
    }
    drop[static_cast<size_t>(i)] = 1;
  }
  own(l);
  std::vector<int64_t> keep;
  keep.reserve(static_cast<size_t>(l.length) - indices.size());
  for (int64_t i = 0; i < l.length; ++i) {
    if (!drop[static_cast<size_t>(i)]) keep.push_back(i);
  }
  at::Tensor idx = index_tensor(keep, l.k.device());
  int64_t n = static_cast<int64_t>(keep.size());
  at::Tensor k = l.k.narrow(1, 0, l.length).index_select(1, idx);
  at::Tensor v = l.v.narrow(1, 0, l.length).index_select(1, idx);
  l.k.narrow(1, 0, n).copy_(k);
  l.v.narrow(1, 0, n).copy_(v);
  l.length = n;
}

void DenseKvCache::truncate(int layer, int64_t n) {
  layer_at(layer);
  Layer& l = layers_[static_cast<size_t>(layer)];
  if (n < 0 || n > l.length) {
    throw InternalError("kv cache: cannot truncate layer " + std::to_string(layer) + " of length " +
                        std::to_string(l.length) + " to " + std::to_string(n));
  }
  l.length = n;
  if (n < l.shared) own(l);  // the next append would write into borrowed entries
}

void copy_prefix(const KvCache& from, KvCache& to, int n_layers, int64_t n_entries) {
  for (int l = 0; l < n_layers; ++l) {
    if (from.length(l) < n_entries) {
      throw InternalError("kv cache: layer " + std::to_string(l) + " holds " + std::to_string(from.length(l)) +
                          " entries, fewer than the " + std::to_string(n_entries) + " to copy");
    }
    if (n_entries > 0) to.append(l, from.keys(l).narrow(1, 0, n_entries), from.values(l).narrow(1, 0, n_entries));
  }
}

int64_t DenseKvCache::bytes() const {
  int64_t total = 0;
  for (const Layer& l : layers_) {
    if (l.k.defined()) total += 2 * l.length * l.k.size(0) * l.k.size(2) * static_cast<int64_t>(l.k.element_size());
  }
  return total;
}

void DenseKvCache::clear() {
  for (Layer& l : layers_) l = Layer{};
  leases_.clear();
  peak_bytes_ = 0;
}

}  // namespace mustdrop::model
