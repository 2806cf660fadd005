#include "session/prefix_cache.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <mutex>

#include "core/error.h"
#include "model/device.h"

namespace mustdrop::session {

// Keys, values and layer-k output rows of up to `capacity` entries. Entries below a published
// length are never written again.
//
// The room past the newest state is written by one party at a time: the writer appending the
// next frame, or one answer over that newest state that reads the entries in place and appends
// its question there (PrefixState::share_into). Each claims it under `mu`; whoever finds it taken
// works on a copy instead.
struct PrefixStorage {
  std::vector<at::Tensor> k, v;  // per layer 0..k: [kv_heads, capacity, head_dim]
  at::Tensor hidden;             // [capacity, hidden]
  int64_t capacity = 0;
  std::vector<int> system_ids;
  int64_t n_system = 0;
  mutable std::mutex mu;
  mutable int64_t end = 0;     // entries the writer has written or is writing
  mutable bool lent = false;   // an answer writes past `end`
};

namespace {

// The storage as a KvCache of layers 0..k, for the LLM's forward pass and copy_prefix().
class StorageCache : public model::KvCache {
 public:
  StorageCache(PrefixStorage& s, int64_t n) : s_(s), length_(s.k.size(), n) {}
  int n_layers() const override { return static_cast<int>(s_.k.size()); }
  int64_t length(int layer) const override { return length_[static_cast<size_t>(layer)]; }
  void append(int layer, const at::Tensor& k, const at::Tensor& v) override {
    int64_t& len = length_[static_cast<size_t>(layer)];
    const int64_t m = k.size(1);
    if (len + m > s_.capacity) throw InternalError("prefix cache: append past its capacity");
    s_.k[static_cast<size_t>(layer)].narrow(1, len, m).copy_(k);
    s_.v[static_cast<size_t>(layer)].narrow(1, len, m).copy_(v);
    len += m;
  }
  at::Tensor keys(int layer) const override { return s_.k[static_cast<size_t>(layer)].narrow(1, 0, length(layer)); }
  at::Tensor values(int layer) const override { return s_.v[static_cast<size_t>(layer)].narrow(1, 0, length(layer)); }
  void remove(int, const std::vector<int64_t>&) override {
    throw InternalError("prefix cache: entries are removed by copying (PrefixCache::remove)");
  }
  void truncate(int layer, int64_t n) override { length_[static_cast<size_t>(layer)] = std::min(n, length(layer)); }
  int64_t bytes() const override { return 0; }
  int64_t peak_bytes() const override { return 0; }
  void clear() override { std::fill(length_.begin(), length_.end(), 0); }

 private:
  PrefixStorage& s_;
  std::vector<int64_t> length_;
};

}  // namespace

const std::vector<int>& PrefixState::system_ids() const { return storage_->system_ids; }
at::Tensor PrefixState::hidden() const { return storage_->hidden.narrow(0, 0, n_); }
at::Tensor PrefixState::keys(int layer) const { return storage_->k[static_cast<size_t>(layer)].narrow(1, 0, n_); }
at::Tensor PrefixState::values(int layer) const { return storage_->v[static_cast<size_t>(layer)].narrow(1, 0, n_); }

int64_t PrefixState::bytes() const {
  if (!storage_) return 0;
  int64_t per_entry = storage_->hidden.size(1) * static_cast<int64_t>(storage_->hidden.element_size());
  for (const auto& t : storage_->k) per_entry += 2 * t.size(0) * t.size(2) * static_cast<int64_t>(t.element_size());
  return per_entry * n_;
}

namespace {

// An answer's claim on the room past a state: given back when the answer's cache lets go.
struct Lease {
  explicit Lease(std::shared_ptr<const PrefixStorage> s) : storage(std::move(s)) {}
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  std::shared_ptr<const PrefixStorage> storage;
  ~Lease() {
    std::lock_guard<std::mutex> lock(storage->mu);
    storage->lent = false;
  }
};

}  // namespace

bool PrefixState::share_into(model::DenseKvCache& cache) const {
  // Storage made under InferenceMode (the runtime's threads) takes no writes outside it.
  bool lend = !storage_->k.front().is_inference() || c10::InferenceMode::is_enabled();
  if (lend) {
    std::lock_guard<std::mutex> lock(storage_->mu);
    lend = !storage_->lent && storage_->end == n_;
    if (lend) storage_->lent = true;
  }
  if (!lend) {
    copy_to(cache);
    return false;
  }
  auto lease = std::make_shared<const Lease>(storage_);
  for (int l = 0; l <= last_layer_; ++l) {
    cache.borrow(l, storage_->k[static_cast<size_t>(l)], storage_->v[static_cast<size_t>(l)], n_, lease);
  }
  return true;
}

void PrefixState::copy_to(model::KvCache& cache) const {
  // A const storage is only read here; the adapter's writes are never called.
  StorageCache view(const_cast<PrefixStorage&>(*storage_), n_);
  model::copy_prefix(view, cache, last_layer_ + 1, n_);
}

PrefixCache::PrefixCache(const model::VisionLanguageModel& model, int last_layer, std::vector<int> system_ids,
                         int64_t capacity)
    : model_(model), last_layer_(last_layer), capacity_hint_(capacity) {
  const model::LlamaModel& llm = model.llm();
  if (last_layer < 0 || last_layer >= llm.n_layers()) {
    throw InternalError("prefix cache: layer " + std::to_string(last_layer) + " outside the LLM's " +
                        std::to_string(llm.n_layers()) + " layers");
  }
  const int64_t n_system = static_cast<int64_t>(system_ids.size());
  storage_ = copy_storage({}, std::max<int64_t>(capacity, n_system + 16));
  storage_->system_ids = std::move(system_ids);
  storage_->n_system = n_system;
  publish(storage_, 0);
  if (!storage_->system_ids.empty()) {
    extend(llm.embed(storage_->system_ids), at::arange(storage_->n_system, at::TensorOptions().dtype(at::kLong)));
  }
}

PrefixCache::~PrefixCache() = default;

std::shared_ptr<PrefixStorage> PrefixCache::copy_storage(const std::vector<int64_t>& keep, int64_t capacity) const {
  const model::LlamaModel& llm = model_.llm();
  const model::TextConfig& c = llm.config();
  const at::ScalarType dtype = llm.dtype();
  auto s = std::make_shared<PrefixStorage>();
  s->capacity = capacity;
  if (storage_) {
    s->system_ids = storage_->system_ids;
    s->n_system = storage_->n_system;
  }
  const at::TensorOptions options = at::TensorOptions().dtype(dtype).device(llm.device());
  at::Tensor idx = model::index_tensor(keep, llm.device());
  const int64_t n = static_cast<int64_t>(keep.size());
  for (int l = 0; l <= last_layer_; ++l) {
    for (std::vector<at::Tensor>* part : {&s->k, &s->v}) {
      at::Tensor t = model::kv_storage(c.num_key_value_heads, capacity, llm.head_dim(), options);
      if (n > 0) {
        // A head at a time, straight into place: no temporary of a whole layer's entries.
        const at::Tensor& old = (part == &s->k ? storage_->k : storage_->v)[static_cast<size_t>(l)];
        for (int64_t h = 0; h < t.size(0); ++h) {
          at::Tensor into = t.select(0, h).narrow(0, 0, n);
          at::index_select_out(into, old.select(0, h), 0, idx);
        }
      }
      part->push_back(t);
    }
  }
  s->hidden = at::empty({capacity, c.hidden_size}, options);
  if (n > 0) {
    at::Tensor into = s->hidden.narrow(0, 0, n);
    at::index_select_out(into, storage_->hidden, 0, idx);
  }
  s->end = n;
  return s;
}

void PrefixCache::publish(std::shared_ptr<PrefixStorage> storage, int64_t n) {
  storage_ = std::move(storage);
  state_.storage_ = storage_;
  state_.last_layer_ = last_layer_;
  state_.n_ = n;
  state_.n_system_ = storage_->n_system;
}

void PrefixCache::extend(const at::Tensor& vision, const at::Tensor& positions) {
  const int64_t n = state_.n_, m = vision.size(0);
  if (m == 0) return;
  // Claim the room past n; an answer reading the newest state in place may hold it.
  bool room = false;
  {
    std::lock_guard<std::mutex> lock(storage_->mu);
    room = !storage_->lent && storage_->end == n && n + m <= storage_->capacity;
    if (room) storage_->end = n + m;
  }
  if (!room) {
    const int64_t cap = storage_->capacity;
    storage_ = copy_storage(all_entries(n), n + m <= cap ? cap : std::max({n + m, 2 * cap, capacity_hint_}));
    storage_->end = n + m;
  }
  // Writes land past n: a published state (which ends at n) never sees them.
  StorageCache cache(*storage_, n);
  model::LlmForward f;
  f.hidden = vision;
  f.positions = positions;
  f.cache = &cache;
  f.last_layer = last_layer_;
  model::LlmOutput out = model_.llm().forward(f);
  storage_->hidden.narrow(0, n, m).copy_(out.hidden);
  publish(storage_, n + m);
}

void PrefixCache::restore(Checkpoint c) {
  storage_ = std::move(c.storage);
  state_ = std::move(c.state);
  // A failed extend may have claimed the room past the state; nobody else can have since.
  std::lock_guard<std::mutex> lock(storage_->mu);
  if (!storage_->lent) storage_->end = state_.n_;
}

std::vector<int64_t> PrefixCache::all_entries(int64_t n) {
  std::vector<int64_t> all(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = i;
  return all;
}

void PrefixCache::remove(const std::vector<int64_t>& vision_indices, const at::Tensor& from, const at::Tensor& to) {
  if (vision_indices.empty() && !from.defined()) return;
  const int64_t n = state_.n_, s = storage_->n_system;
  std::vector<char> drop(static_cast<size_t>(n - s), 0);
  for (int64_t i : vision_indices) {
    if (i < 0 || i >= n - s || drop[static_cast<size_t>(i)]) {
      throw InternalError("prefix cache: cannot remove vision entry " + std::to_string(i));
    }
    drop[static_cast<size_t>(i)] = 1;
  }
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < n; ++i) {
    if (i < s || !drop[static_cast<size_t>(i - s)]) keep.push_back(i);
  }
  // One copy for both changes: the new storage is the writer's alone until published, so the
  // keys are re-rotated in it.
  std::shared_ptr<PrefixStorage> fresh = copy_storage(keep, storage_->capacity);
  const int64_t kept = static_cast<int64_t>(keep.size());
  if (from.defined()) {
    StorageCache cache(*fresh, kept);
    model_.llm().shift_positions(cache, 0, last_layer_, from, to);
  }
  publish(fresh, kept);
}

int64_t PrefixCache::entry_bytes(const model::VisionLanguageModel& model, int last_layer) {
  const model::LlamaModel& llm = model.llm();
  const int64_t elem = static_cast<int64_t>(at::elementSize(llm.dtype()));
  const int64_t kv = static_cast<int64_t>(llm.config().num_key_value_heads) * llm.head_dim();
  return (llm.config().hidden_size + 2 * kv * (last_layer + 1)) * elem;
}

}  // namespace mustdrop::session
