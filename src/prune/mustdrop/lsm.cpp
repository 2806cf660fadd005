#include "prune/mustdrop/lsm.h"

#include <ATen/ATen.h>

#include <unordered_map>
#include <unordered_set>

#include "model/device.h"

namespace mustdrop::prune {

Lsm::Lsm(const Lsm& other) : TokenPruner(other), o_(other.o_), memory_(other.memory_) {
  if (memory_.reference.defined()) memory_.reference = memory_.reference.clone();  // independent copy
}

Needs Lsm::needs(int) const { return acting_after({o_.layer}); }

void Lsm::reset() { memory_ = Memory{}; }

void Lsm::forget(const std::vector<int64_t>& ids) {
  std::unordered_set<int64_t> gone(ids.begin(), ids.end());
  for (int64_t& id : memory_.anchor_id) {
    if (id >= 0 && gone.count(id)) id = -1;  // an evicted token stands for no cell any more
  }
}

void Lsm::frame_done(const std::vector<TokenInfo>& tokens) {
  // A later stage of the same frame may have merged or dropped an anchor: forget those cells.
  if (memory_.anchor_id.empty() || tokens.empty()) return;
  const int64_t frame = tokens.back().frame_seq;
  std::unordered_set<int64_t> alive;
  for (const auto& t : tokens) alive.insert(t.id);
  for (size_t c = 0; c < memory_.anchor_id.size(); ++c) {
    if (memory_.anchor_frame[c] == frame && memory_.anchor_id[c] >= 0 && !alive.count(memory_.anchor_id[c])) {
      memory_.anchor_id[c] = -1;
    }
  }
}

KeepPlan Lsm::decide(const View& v) {
  const std::vector<TokenInfo>& tokens = *v.tokens;
  const int64_t n = static_cast<int64_t>(tokens.size());
  KeepPlan plan;
  const int k = o_.window, g = v.grid;
  const int per_side = k > 0 ? g / k : 0;
  if (per_side == 0 || (k < 2 && o_.temporal_frames <= 1)) return KeepPlan::keep_all(n);

  // Windows whose k*k cells are all present as single, unmerged tokens outside S.
  std::vector<int64_t> index_of_patch(static_cast<size_t>(g) * g, -1);
  for (int64_t i = 0; i < n; ++i) {
    const TokenInfo& t = tokens[static_cast<size_t>(i)];
    if (t.patch >= 0 && t.size == 1 && !t.in_s && t.patch < int64_t(g) * g) index_of_patch[size_t(t.patch)] = i;
  }
  const int cells = k * k;
  std::vector<int64_t> members, window_cells;  // [windows * cells] token indices / patch indices
  std::vector<int> window_ids;
  for (int wy = 0; wy < per_side; ++wy) {
    for (int wx = 0; wx < per_side; ++wx) {
      std::vector<int64_t> m, c;
      for (int dy = 0; dy < k; ++dy) {
        for (int dx = 0; dx < k; ++dx) {
          int64_t patch = int64_t(wy * k + dy) * g + wx * k + dx;
          if (index_of_patch[size_t(patch)] < 0) break;
          m.push_back(index_of_patch[size_t(patch)]);
          c.push_back(patch);
        }
      }
      if (static_cast<int>(m.size()) != cells) continue;
      members.insert(members.end(), m.begin(), m.end());
      window_cells.insert(window_cells.end(), c.begin(), c.end());
      window_ids.push_back(wy * per_side + wx);
    }
  }
  const int64_t n_windows = static_cast<int64_t>(window_ids.size());
  if (n_windows == 0) return KeepPlan::keep_all(n);
  at::Tensor idx = model::index_tensor(members, v.hidden.device());
  at::Tensor x = v.hidden.index_select(0, idx).to(at::kFloat);  // [W*cells, D], where the tokens live
  const int64_t d = x.size(1);
  at::Tensor unit = x / x.norm(2, 1, true).clamp_min(1e-8);

  // Spatial score: mean pairwise cosine inside each window, self-pairs excluded (read on the host).
  std::vector<float> spatial(static_cast<size_t>(n_windows), -2.0f);
  if (cells > 1) {
    at::Tensor w = unit.view({n_windows, cells, d});
    at::Tensor sim = at::bmm(w, w.transpose(1, 2));  // [W, cells, cells]
    at::Tensor off = (sim.sum({1, 2}) - sim.diagonal(0, 1, 2).sum(1)) / double(cells * (cells - 1));
    off = model::to_host(off).contiguous();
    std::copy(off.data_ptr<float>(), off.data_ptr<float>() + n_windows, spatial.begin());
  }

  // Temporal score against the cells' earlier tokens (size-weighted reference features, kept
  // where the tokens live, as x is).
  const bool temporal = o_.temporal_frames > 1;
  const int64_t grid_cells = int64_t(g) * g;
  if (temporal && (memory_.grid != g || !memory_.reference.defined() || memory_.reference.size(1) != d)) {
    memory_.grid = g;
    memory_.anchor_id.assign(size_t(grid_cells), -1);
    memory_.anchor_frame.assign(size_t(grid_cells), 0);
    memory_.reference = at::zeros({grid_cells, d}, x.options());
    memory_.reference_size.assign(size_t(grid_cells), 0.0);
  }
  std::vector<float> co(static_cast<size_t>(n_windows), -2.0f);
  if (temporal) {
    at::Tensor ref = memory_.reference.index_select(0, model::index_tensor(window_cells, memory_.reference.device()));
    at::Tensor ref_unit = ref / ref.norm(2, 1, true).clamp_min(1e-8);
    at::Tensor c = model::to_host((unit * ref_unit).sum(1).view({n_windows, cells}).mean(1)).contiguous();
    std::copy(c.data_ptr<float>(), c.data_ptr<float>() + n_windows, co.begin());
  }
  if (temporal) {
    for (int64_t w = 0; w < n_windows; ++w) {
      bool has_reference = true;
      for (int c = 0; c < cells && has_reference; ++c) {
        has_reference = memory_.reference_size[size_t(window_cells[size_t(w * cells + c)])] > 0;
      }
      if (!has_reference) continue;
      ++plan.n_windows_compared;
      if (co[size_t(w)] < o_.temporal_threshold) ++plan.n_windows_changed;
    }
  }
  const int64_t frame = n > 0 ? tokens.back().frame_seq : 0;
  auto anchored = [&](int64_t w) {  // every cell has an earlier token within t-1 frames
    for (int c = 0; c < cells; ++c) {
      size_t cell = size_t(window_cells[size_t(w * cells + c)]);
      if (memory_.anchor_id[cell] < 0 || frame - memory_.anchor_frame[cell] > o_.temporal_frames - 1 ||
          frame <= memory_.anchor_frame[cell]) {
        return false;
      }
    }
    return true;
  };

  std::vector<char> dropped(size_t(n), 0);
  std::unordered_map<int64_t, int64_t> merge_into;  // into -> window
  std::vector<int64_t> merged_windows;
  for (int64_t w = 0; w < n_windows; ++w) {
    const int64_t* m = &members[size_t(w * cells)];
    if (temporal && anchored(w) && co[size_t(w)] >= o_.temporal_threshold) {
      for (int c = 0; c < cells; ++c) {
        size_t cell = size_t(window_cells[size_t(w * cells + c)]);
        plan.absorbed.push_back(Absorption{m[c], memory_.anchor_id[cell]});
        dropped[size_t(m[c])] = 1;
        // The reference follows the cell as a size-weighted mean.
        double s = memory_.reference_size[cell];
        memory_.reference[int64_t(cell)].mul_(s / (s + 1)).add_(x[w * cells + c], 1.0 / (s + 1));
        memory_.reference_size[cell] = s + 1;
      }
      continue;
    }
    bool merge = cells > 1 && spatial[size_t(w)] >= o_.threshold;
    if (merge) {
      for (int c = 1; c < cells; ++c) dropped[size_t(m[c])] = 1;
      merged_windows.push_back(w);
    }
    if (temporal) {  // this frame's tokens now stand for the window's cells
      for (int c = 0; c < cells; ++c) {
        size_t cell = size_t(window_cells[size_t(w * cells + c)]);
        memory_.anchor_id[cell] = tokens[size_t(merge ? m[0] : m[c])].id;
        memory_.anchor_frame[cell] = frame;
        memory_.reference[int64_t(cell)].copy_(x[w * cells + c]);
        memory_.reference_size[cell] = 1;
      }
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    if (!dropped[size_t(i)]) plan.keep.push_back(i);
  }
  for (int64_t w : merged_windows) {
    MergeGroup grp;
    grp.into = members[size_t(w * cells)];  // top-left cell
    grp.members.assign(members.begin() + w * cells, members.begin() + (w + 1) * cells);
    plan.merges.push_back(std::move(grp));
  }
  return plan;
}

}  // namespace mustdrop::prune
