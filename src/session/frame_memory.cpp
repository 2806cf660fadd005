#include "session/frame_memory.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <tuple>

#include "core/error.h"
#include "core/log.h"
#include "model/device.h"
#include "model/flops.h"

namespace mustdrop::session {
namespace {

constexpr size_t kEvictionsKept = 256;

at::Tensor long_range(int64_t from, int64_t n) {
  return at::arange(from, from + n, at::TensorOptions().dtype(at::kLong));
}

// A copy of `f` keeping the rows `keep` (ascending).
std::shared_ptr<MemoryFrame> keep_rows(const MemoryFrame& f, const std::vector<int64_t>& keep) {
  auto out = std::make_shared<MemoryFrame>(f);
  // Tokens live on the model's device, positions on the host.
  out->tokens = f.tokens.index_select(0, model::index_tensor(keep, f.tokens.device()));
  if (f.positions.defined()) out->positions = f.positions.index_select(0, at::tensor(keep, at::kLong));
  out->ledger.clear();
  for (int64_t i : keep) out->ledger.push_back(f.ledger[static_cast<size_t>(i)]);
  return out;
}

}  // namespace

model::Media MemorySnapshot::media() const {
  return frames.size() == 1 && frames[0]->media == model::Media::kImage ? model::Media::kImage : model::Media::kVideo;
}

at::Tensor MemorySnapshot::vision() const {
  std::vector<at::Tensor> parts;
  for (const auto& f : frames) parts.push_back(f->tokens);
  return at::cat(parts, 0);
}

at::Tensor MemorySnapshot::positions() const {
  std::vector<at::Tensor> parts;
  for (const auto& f : frames) parts.push_back(f->positions);
  return parts.empty() ? at::empty({0}, at::kLong) : at::cat(parts, 0);
}

std::vector<LedgerEntry> MemorySnapshot::ledger() const {
  std::vector<LedgerEntry> out;
  out.reserve(static_cast<size_t>(n_tokens));
  for (const auto& f : frames) out.insert(out.end(), f->ledger.begin(), f->ledger.end());
  return out;
}

FrameMemory::FrameMemory(const model::VisionLanguageModel& model, int prefix_layer, const config::MemoryConfig& config)
    : model_(model), config_(config) {
  model::PromptLayout empty = model.build_prompt("", 0);
  system_ids_.assign(empty.ids.begin(), empty.ids.begin() + empty.vision_begin);
  const int64_t n_system = static_cast<int64_t>(system_ids_.size());
  const int64_t context = model.config().text.max_position_embeddings;
  capacity_ = context - config.position_reserve - n_system;
  if (capacity_ <= 0) {
    throw ConfigError("memory.position_reserve: " + std::to_string(config.position_reserve) +
                      " positions leave no room for vision tokens in the model's context of " + std::to_string(context));
  }
  if (config.max_tokens > 0) capacity_ = std::min<int64_t>(capacity_, config.max_tokens);
  const int64_t token_bytes = model.config().text.hidden_size * static_cast<int64_t>(at::elementSize(model.llm().dtype()));
  const int64_t entry_bytes = config.prefix_cache ? PrefixCache::entry_bytes(model, prefix_layer) : 0;
  bytes_per_token_ = token_bytes + entry_bytes;
  if (config.max_mb > 0) {
    const double budget = config.max_mb * 1e6 - static_cast<double>(entry_bytes * n_system);
    const int64_t by_bytes = static_cast<int64_t>(std::floor(budget / static_cast<double>(bytes_per_token_)));
    if (by_bytes < 1) {
      throw ConfigError("memory.max_mb: " + std::to_string(config.max_mb) + " MB holds no vision token (one costs " +
                        std::to_string(bytes_per_token_) + " bytes with its cached prefix)");
    }
    capacity_ = std::min(capacity_, by_bytes);
  }
  if (config.prefix_cache) {
    // The prefix's storage is sized once: the memory's capacity plus the room an answer's question
    // and text need (position_reserve), so that answers read it in place; a storage is mapped and
    // only the entries written become resident.
    const int64_t entries = std::min(context, n_system + capacity_ + static_cast<int64_t>(config.position_reserve));
    prefix_ = std::make_unique<PrefixCache>(model, prefix_layer, system_ids_, entries);
  }
  auto first = std::make_shared<MemorySnapshot>();
  first->system_ids = system_ids_;
  first->next_position = n_system;
  if (prefix_) {
    first->prefix = std::make_shared<const PrefixState>(prefix_->state());
    first->bytes = prefix_->state().bytes();
  }
  current_ = first;
}

FrameMemory::~FrameMemory() = default;

std::shared_ptr<const MemorySnapshot> FrameMemory::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return current_;
}

int64_t FrameMemory::n_compactions() const {
  std::lock_guard<std::mutex> lock(mu_);
  return n_compactions_;
}

std::vector<Eviction> FrameMemory::recent_evictions() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {evictions_.begin(), evictions_.end()};
}

void FrameMemory::note_gap(Gap gap) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_gaps_.push_back(std::move(gap));
}

Eviction FrameMemory::evict(std::vector<std::shared_ptr<const MemoryFrame>>& frames, MemoryFrame& incoming,
                            int64_t need, std::vector<int64_t>& prefix_rows) {
  // Candidates: every token, outside S before S, then by the last time it was seen (a background
  // token that keeps absorbing new frames stays young), then by id. The incoming frame is newest.
  struct Candidate {
    bool in_s;
    double t_last;
    int64_t id;
    size_t frame;  // frames.size(): the incoming frame
    int64_t row;
  };
  std::vector<Candidate> all;
  for (size_t f = 0; f <= frames.size(); ++f) {
    const std::vector<LedgerEntry>& ledger = f < frames.size() ? frames[f]->ledger : incoming.ledger;
    for (size_t r = 0; r < ledger.size(); ++r) {
      all.push_back({ledger[r].in_s, ledger[r].t_last_sec, ledger[r].id, f, static_cast<int64_t>(r)});
    }
  }
  need = std::min<int64_t>(need, static_cast<int64_t>(all.size()));
  auto order = [](const Candidate& a, const Candidate& b) {
    return std::tie(a.in_s, a.t_last, a.id) < std::tie(b.in_s, b.t_last, b.id);
  };
  std::partial_sort(all.begin(), all.begin() + need, all.end(), order);
  std::vector<std::vector<char>> drop(frames.size() + 1);
  for (size_t f = 0; f < frames.size(); ++f) drop[f].assign(frames[f]->ledger.size(), 0);
  drop.back().assign(incoming.ledger.size(), 0);
  Eviction record;
  record.at_frame = incoming.seq;
  record.t_first_sec = std::numeric_limits<double>::infinity();
  record.t_last_sec = -std::numeric_limits<double>::infinity();
  std::vector<int64_t> evicted_ids;
  for (int64_t i = 0; i < need; ++i) {
    const Candidate& c = all[static_cast<size_t>(i)];
    drop[c.frame][static_cast<size_t>(c.row)] = 1;
    const LedgerEntry& e = c.frame < frames.size() ? frames[c.frame]->ledger[size_t(c.row)] : incoming.ledger[size_t(c.row)];
    ++record.n_tokens;
    record.n_in_s += e.in_s ? 1 : 0;
    record.t_first_sec = std::min(record.t_first_sec, e.t_first_sec);
    record.t_last_sec = std::max(record.t_last_sec, e.t_last_sec);
  }
  // Old frames: copies without the dropped rows; the prefix is to lose the same entries.
  int64_t offset = 0;
  std::vector<std::shared_ptr<const MemoryFrame>> kept;
  for (size_t f = 0; f < frames.size(); ++f) {
    const MemoryFrame& frame = *frames[f];
    std::vector<int64_t> keep;
    for (int64_t r = 0; r < static_cast<int64_t>(frame.ledger.size()); ++r) {
      if (drop[f][static_cast<size_t>(r)]) {
        prefix_rows.push_back(offset + r);
      } else {
        keep.push_back(r);
      }
    }
    offset += static_cast<int64_t>(frame.ledger.size());
    if (frame.ledger.empty()) continue;  // a frame all of whose tokens went into earlier ones: gone with the room
    if (keep.size() == frame.ledger.size()) {
      kept.push_back(frames[f]);
    } else if (!keep.empty()) {
      kept.push_back(keep_rows(frame, keep));
    }
  }
  frames = std::move(kept);
  std::vector<int64_t> keep_new;
  for (int64_t r = 0; r < static_cast<int64_t>(incoming.ledger.size()); ++r) {
    if (!drop.back()[static_cast<size_t>(r)]) keep_new.push_back(r);
  }
  if (keep_new.size() != incoming.ledger.size()) incoming = *keep_rows(incoming, keep_new);
  MD_LOG_DEBUG("memory", "evicted " << record.n_tokens << " tokens (" << record.n_in_s << " in S) covering "
                                    << record.t_first_sec << " .. " << record.t_last_sec << " s");
  return record;
}

std::pair<at::Tensor, at::Tensor> FrameMemory::compact(std::vector<std::shared_ptr<const MemoryFrame>>& frames) {
  const int64_t n_system = static_cast<int64_t>(system_ids_.size());
  std::vector<at::Tensor> from = {long_range(0, n_system)};
  int64_t next = n_system;
  for (auto& f : frames) {
    auto moved = std::make_shared<MemoryFrame>(*f);
    const int64_t n = moved->tokens.size(0);
    from.push_back(f->positions);
    moved->positions = long_range(next, n);
    next += n;
    f = moved;
  }
  return {at::cat(from, 0), long_range(0, next)};
}

std::vector<int64_t> FrameMemory::append(FrameTokens in) {
  std::lock_guard<std::mutex> writing(write_mu_);
  // Frames and snapshots are copied on change, and so is the prefix: a failure half way (out of
  // memory, say) leaves everything as it was once the prefix goes back to its checkpoint.
  std::optional<PrefixCache::Checkpoint> checkpoint;
  if (prefix_) checkpoint = prefix_->checkpoint();
  try {
    return append_unsafe(std::move(in));
  } catch (...) {
    if (prefix_) prefix_->restore(std::move(*checkpoint));
    throw;
  }
}

std::vector<int64_t> FrameMemory::append_unsafe(FrameTokens in) {
  std::shared_ptr<const MemorySnapshot> before = snapshot();
  std::vector<std::shared_ptr<const MemoryFrame>> frames = before->frames;

  // Earlier tokens that absorbed tokens of this frame grow (copies of their frames).
  for (const auto& g : in.growths) {
    const int64_t seq = g.id / prune::kIdsPerFrame;
    for (auto it = frames.rbegin(); it != frames.rend(); ++it) {
      if ((*it)->seq != seq) continue;
      const auto& ledger = (*it)->ledger;
      auto e = std::find_if(ledger.begin(), ledger.end(), [&](const LedgerEntry& x) { return x.id == g.id; });
      if (e == ledger.end()) break;  // evicted since
      auto grown = std::make_shared<MemoryFrame>(**it);
      LedgerEntry& entry = grown->ledger[static_cast<size_t>(e - ledger.begin())];
      entry.size += g.size;
      if (g.last_frame > entry.last_frame) {
        entry.last_frame = g.last_frame;
        entry.t_last_sec = g.t_last_sec;
      }
      *it = grown;
      break;
    }
  }

  // What the tower did for this frame, kept in the totals whatever becomes of its tokens.
  const model::VisionConfig& vc = model_.config().vision;
  const int64_t seen_tower_tokens = in.n_tower_tokens;
  double seen_flops = model::vision_flops(vc, 1, in.tokens_per_vision_layer), seen_flops_full = 0;
  for (int64_t n : in.cls_only_tokens) seen_flops += model::cls_row_flops(vc, n);
  if (!in.tokens_per_vision_layer.empty()) {
    // Layer 0 always runs on every token: the no-dropping count of every layer.
    std::vector<int64_t> full(in.tokens_per_vision_layer.size(), in.tokens_per_vision_layer.front());
    seen_flops_full = model::vision_flops(vc, 1, full);
  }

  MemoryFrame incoming;
  incoming.seq = in.seq;
  incoming.t_sec = in.t_sec;
  incoming.media = in.media;
  incoming.tokens = std::move(in.tokens);
  incoming.ledger = std::move(in.ledger);
  incoming.n_tower_tokens = in.n_tower_tokens;
  incoming.tokens_per_vision_layer = std::move(in.tokens_per_vision_layer);
  incoming.cls_only_tokens = std::move(in.cls_only_tokens);
  const int64_t m = incoming.tokens.size(0);
  if (static_cast<int64_t>(incoming.ledger.size()) != m) {
    throw InternalError("memory: frame " + std::to_string(in.seq) + " has " + std::to_string(m) + " tokens and " +
                        std::to_string(incoming.ledger.size()) + " ledger entries");
  }

  // Room first, so the budget holds at every moment: evict down to evict_to of the budget.
  std::vector<int64_t> evicted, prefix_rows;
  std::optional<Eviction> eviction;
  const int64_t total = before->n_tokens + m;
  if (total > capacity_) {
    int64_t target = static_cast<int64_t>(std::floor(static_cast<double>(capacity_) * config_.evict_to));
    target = std::max(target, std::min(m, capacity_));
    std::vector<LedgerEntry> gone;
    for (const auto& f : frames) gone.insert(gone.end(), f->ledger.begin(), f->ledger.end());
    gone.insert(gone.end(), incoming.ledger.begin(), incoming.ledger.end());
    eviction = evict(frames, incoming, total - target, prefix_rows);
    std::vector<int64_t> alive;
    for (const auto& f : frames) {
      for (const auto& e : f->ledger) alive.push_back(e.id);
    }
    for (const auto& e : incoming.ledger) alive.push_back(e.id);
    std::sort(alive.begin(), alive.end());
    for (const auto& e : gone) {
      if (!std::binary_search(alive.begin(), alive.end(), e.id)) evicted.push_back(e.id);
    }
  }

  // Positions: the next ones; compacted first when the context would run out.
  const int64_t n_kept_new = incoming.tokens.size(0);
  const int64_t limit = model_.config().text.max_position_embeddings - config_.position_reserve;
  int64_t next = before->next_position;
  const bool compacting = next + n_kept_new > limit;
  at::Tensor moved_from, moved_to;
  if (compacting) {
    std::tie(moved_from, moved_to) = compact(frames);
    next = static_cast<int64_t>(system_ids_.size());
    for (const auto& f : frames) next += f->tokens.size(0);
  }
  // The prefix follows the eviction and the compaction in one copy.
  if (prefix_) prefix_->remove(prefix_rows, moved_from, moved_to);
  incoming.positions = long_range(next, n_kept_new);
  if (prefix_ && n_kept_new > 0) prefix_->extend(incoming.tokens, incoming.positions);
  // A frame stays even when all its tokens went into earlier ones: it was seen, and per-frame
  // budgets count it. (Temporal LSM's anchors reach back t-1 frames, so such frames come between
  // frames with tokens, and eviction drops them with their neighbours.)
  frames.push_back(std::make_shared<const MemoryFrame>(std::move(incoming)));

  auto snap = std::make_shared<MemorySnapshot>();
  snap->version = before->version + 1;
  snap->frames = std::move(frames);
  snap->system_ids = system_ids_;
  snap->next_position = next + n_kept_new;
  snap->t_first_sec = std::numeric_limits<double>::infinity();
  for (const auto& f : snap->frames) {
    snap->n_tokens += f->tokens.size(0);
    for (const auto& e : f->ledger) snap->t_first_sec = std::min(snap->t_first_sec, e.t_first_sec);
    snap->t_last_sec = std::max(snap->t_last_sec, f->t_sec);
  }
  if (std::isinf(snap->t_first_sec)) snap->t_first_sec = snap->frames.front()->t_sec;  // no token left but the frame
  snap->bytes = snap->n_tokens * model_.config().text.hidden_size * static_cast<int64_t>(at::elementSize(model_.llm().dtype()));
  if (prefix_) {
    snap->prefix = std::make_shared<const PrefixState>(prefix_->state());
    snap->bytes += prefix_->state().bytes();
  }
  snap->n_evicted_tokens = before->n_evicted_tokens + static_cast<int64_t>(evicted.size());
  snap->n_evictions = before->n_evictions + (evicted.empty() ? 0 : 1);
  snap->seen = before->seen;
  snap->seen.n_frames += 1;
  snap->seen.n_tower_tokens += seen_tower_tokens;
  snap->seen.vision_flops += seen_flops;
  snap->seen.vision_flops_unpruned += seen_flops_full;
  std::lock_guard<std::mutex> lock(mu_);
  if (eviction) {
    evictions_.push_back(*eviction);
    if (evictions_.size() > kEvictionsKept) evictions_.pop_front();
  }
  n_compactions_ += compacting ? 1 : 0;
  snap->gaps = before->gaps;
  snap->gaps.insert(snap->gaps.end(), pending_gaps_.begin(), pending_gaps_.end());
  pending_gaps_.clear();
  snap->gaps.erase(std::remove_if(snap->gaps.begin(), snap->gaps.end(),
                                  [&](const Gap& g) { return g.t_to_sec <= snap->t_first_sec; }),
                   snap->gaps.end());
  current_ = snap;
  return evicted;
}

}  // namespace mustdrop::session
