#include "app/inspect_fate.h"

#include <map>
#include <unordered_map>

namespace mustdrop::app {

const char* fate_name(Fate fate) {
  switch (fate) {
    case Fate::kKept:
      return "kept";
    case Fate::kImportant:
      return "important";
    case Fate::kAbsorbed:
      return "absorbed";
    case Fate::kVisionDropped:
      return "vision_dropped";
    case Fate::kPrefillDropped:
      return "prefill_dropped";
    case Fate::kDecodeEvicted:
      return "decode_evicted";
    case Fate::kMemoryEvicted:
      return "memory_evicted";
  }
  return "?";
}

std::vector<int64_t> FrameFates::n_cells() const {
  std::vector<int64_t> n(kNumFates, 0);
  for (const auto& c : cells) ++n[static_cast<size_t>(c.fate)];
  return n;
}

std::vector<int64_t> FrameFates::n_tokens() const {
  std::vector<int64_t> n(kNumFates, 0);
  for (const auto& c : cells) {
    if (c.anchor) ++n[static_cast<size_t>(c.fate)];
  }
  return n;
}

std::vector<int64_t> FrameFates::group_sizes() const {
  std::unordered_map<int64_t, int64_t> per_token;
  for (const auto& c : cells) {
    if (c.fate != Fate::kAbsorbed) ++per_token[c.token_id];
  }
  std::vector<int64_t> out;
  out.reserve(cells.size());
  for (const auto& c : cells) out.push_back(c.fate == Fate::kAbsorbed ? 1 : per_token[c.token_id]);
  return out;
}

namespace {

// The cells each live token stands for, and the fate of every cell, as the traces go by.
class Follower {
 public:
  Follower(const std::vector<int64_t>& frame_seqs, int grid) : g2_(static_cast<int64_t>(grid) * grid) {
    frames_.resize(frame_seqs.size());
    for (size_t f = 0; f < frame_seqs.size(); ++f) {
      frames_[f].seq = frame_seqs[f];
      frames_[f].cells.resize(static_cast<size_t>(g2_));
      for (int64_t p = 0; p < g2_; ++p) {
        int64_t id = frame_seqs[f] * prune::kIdsPerFrame + p + 1;
        frames_[f].cells[static_cast<size_t>(p)].token_id = id;
        cells_of_[id] = {{f, p}};
      }
    }
    decided_.assign(frame_seqs.size() * static_cast<size_t>(g2_), 0);
  }

  void vision(const prune::StageTrace& t) {
    const auto& b = t.before;
    const size_t n = b.size();
    std::vector<char> gone(n, 0);  // merged away or absorbed
    for (const auto& g : t.plan.merges) {
      if (g.into < 0 || static_cast<size_t>(g.into) >= n) continue;
      std::vector<Cell>& into = cells_of_[b[static_cast<size_t>(g.into)].id];
      for (int64_t m : g.members) {
        if (m == g.into || m < 0 || static_cast<size_t>(m) >= n) continue;
        gone[static_cast<size_t>(m)] = 1;
        auto it = cells_of_.find(b[static_cast<size_t>(m)].id);
        if (it == cells_of_.end()) continue;
        for (const Cell& c : it->second) {
          CellFate& cf = cell(c);
          cf.token_id = b[static_cast<size_t>(g.into)].id;
          cf.anchor = false;
          into.push_back(c);
        }
        cells_of_.erase(it);
      }
    }
    for (const auto& a : t.plan.absorbed) {
      if (a.index < 0 || static_cast<size_t>(a.index) >= n) continue;
      gone[static_cast<size_t>(a.index)] = 1;
      auto it = cells_of_.find(b[static_cast<size_t>(a.index)].id);
      if (it == cells_of_.end()) continue;
      for (const Cell& c : it->second) {
        CellFate& cf = decide(c, Fate::kAbsorbed, t);
        cf.token_id = a.into_id;
        cf.anchor = false;
        cf.into_frame = a.into_id / prune::kIdsPerFrame;
      }
      cells_of_.erase(it);
    }
    drop_unkept(t, gone, Fate::kVisionDropped);
    note_s(t);
  }

  // Prefill and decode: what a plan does not keep left there (merge members included).
  void later(const prune::StageTrace& t, Fate fate) {
    std::vector<char> gone(t.before.size(), 0);
    drop_unkept(t, gone, fate);
    note_s(t);
  }

  std::vector<FrameFates> finish(const std::set<int64_t>& memory_ids) {
    for (const auto& [id, cells] : cells_of_) {
      for (const Cell& c : cells) {
        if (decided_[index(c)]) continue;
        CellFate& cf = cell(c);
        if (!memory_ids.count(id)) {
          cf.fate = Fate::kMemoryEvicted;
          cf.by = "memory budget";
        } else {
          cf.fate = in_s_.count(id) ? Fate::kImportant : Fate::kKept;
        }
      }
    }
    return std::move(frames_);
  }

 private:
  struct Cell {
    size_t frame;
    int64_t patch;
  };

  size_t index(const Cell& c) const { return c.frame * static_cast<size_t>(g2_) + static_cast<size_t>(c.patch); }
  CellFate& cell(const Cell& c) { return frames_[c.frame].cells[static_cast<size_t>(c.patch)]; }

  CellFate& decide(const Cell& c, Fate fate, const prune::StageTrace& t) {
    CellFate& cf = cell(c);
    if (decided_[index(c)]) return cf;
    decided_[index(c)] = 1;
    cf.fate = fate;
    cf.layer = t.layer;
    cf.by = t.pruner;
    return cf;
  }

  // Every token of `t` neither kept nor `gone` left at this stage with `fate` (cells already
  // decided keep their first fate: a token dropped at prefill is still in the caches of the layers
  // below, which a decode stage may evict later).
  void drop_unkept(const prune::StageTrace& t, const std::vector<char>& gone, Fate fate) {
    std::vector<char> kept(t.before.size(), 0);
    for (int64_t k : t.plan.keep) {
      if (k >= 0 && static_cast<size_t>(k) < kept.size()) kept[static_cast<size_t>(k)] = 1;
    }
    for (size_t i = 0; i < t.before.size(); ++i) {
      if (kept[i] || gone[i]) continue;
      auto it = cells_of_.find(t.before[i].id);
      if (it == cells_of_.end()) continue;
      for (const Cell& c : it->second) decide(c, fate, t);
    }
  }

  void note_s(const prune::StageTrace& t) {
    for (int64_t i : t.plan.important) {
      if (i >= 0 && static_cast<size_t>(i) < t.before.size()) in_s_.insert(t.before[static_cast<size_t>(i)].id);
    }
    for (const auto& e : t.before) {
      if (e.in_s) in_s_.insert(e.id);
    }
  }

  int64_t g2_;
  std::vector<FrameFates> frames_;
  std::unordered_map<int64_t, std::vector<Cell>> cells_of_;  // live tokens of the frames
  std::vector<char> decided_;
  std::set<int64_t> in_s_;
};

}  // namespace

std::vector<FrameFates> follow_traces(const std::vector<prune::StageTrace>& traces,
                                      const std::vector<int64_t>& frame_seqs, int grid,
                                      const std::set<int64_t>& memory_ids) {
  Follower follow(frame_seqs, grid);
  for (const auto& t : traces) {
    switch (t.stage) {
      case prune::Stage::VisionLayer:
      case prune::Stage::VisionOutput:
        follow.vision(t);
        break;
      case prune::Stage::Prefill:
        follow.later(t, Fate::kPrefillDropped);
        break;
      case prune::Stage::Decode:
        follow.later(t, Fate::kDecodeEvicted);
        break;
    }
  }
  return follow.finish(memory_ids);
}

}  // namespace mustdrop::app
