#include "prune/apply.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <unordered_map>

#include "core/error.h"
#include "model/device.h"

namespace mustdrop::prune {
namespace {

// `idx` + `offset` as an index on `device`: that of the tensor whose rows it picks.
at::Tensor index_tensor(const std::vector<int64_t>& idx, int64_t offset, const c10::Device& device) {
  std::vector<int64_t> shifted(idx);
  for (auto& i : shifted) i += offset;
  return model::index_tensor(shifted, device);
}

// Replaces rows [offset, offset + n) of `t` by `rows` (the new token list).
at::Tensor splice(const at::Tensor& t, int64_t offset, int64_t n, const at::Tensor& rows) {
  std::vector<at::Tensor> parts;
  if (offset > 0) parts.push_back(t.narrow(0, 0, offset));
  parts.push_back(rows);
  int64_t tail = t.size(0) - offset - n;
  if (tail > 0) parts.push_back(t.narrow(0, offset + n, tail));
  return parts.size() == 1 ? parts[0] : at::cat(parts, 0);
}

}  // namespace

void check_plan(const KeepPlan& plan, const std::vector<TokenInfo>& ledger, bool protect_first, const std::string& who) {
  const int64_t n = static_cast<int64_t>(ledger.size());
  auto fail = [&](const std::string& what) { throw InternalError("pruner " + who + ": invalid plan: " + what); };
  std::vector<char> kept(static_cast<size_t>(n), 0);
  for (int64_t i : plan.keep) {
    if (i < 0 || i >= n) fail("kept index " + std::to_string(i) + " outside 0.." + std::to_string(n - 1));
    if (kept[static_cast<size_t>(i)]) fail("index " + std::to_string(i) + " kept twice");
    kept[static_cast<size_t>(i)] = 1;
  }
  std::vector<char> merged_away(static_cast<size_t>(n), 0), in_group(static_cast<size_t>(n), 0);
  for (const auto& g : plan.merges) {
    if (g.into < 0 || g.into >= n || !kept[static_cast<size_t>(g.into)]) fail("a merge goes into a token not kept");
    if (!g.weights.empty() && g.weights.size() != g.members.size()) fail("merge weights do not match its members");
    if (!g.normalize && g.weights.empty()) fail("a merge summed without weights");
    if (std::find(g.members.begin(), g.members.end(), g.into) == g.members.end()) fail("a merge target is not a member");
    for (int64_t m : g.members) {
      if (m < 0 || m >= n) fail("merge member " + std::to_string(m) + " out of range");
      if (in_group[static_cast<size_t>(m)]) fail("token " + std::to_string(m) + " is in two merge groups");
      in_group[static_cast<size_t>(m)] = 1;
      if (m != g.into && kept[static_cast<size_t>(m)]) fail("merge member " + std::to_string(m) + " is also kept");
      if (m != g.into) merged_away[static_cast<size_t>(m)] = 1;
    }
  }
  for (const auto& a : plan.absorbed) {
    if (a.index < 0 || a.index >= n || kept[static_cast<size_t>(a.index)]) fail("an absorbed token is also kept");
  }
  for (int64_t i : plan.important) {
    if (i < 0 || i >= n || !kept[static_cast<size_t>(i)]) fail("a token joins S without being kept");
  }
  for (int64_t i = 0; i < n; ++i) {
    if (!kept[static_cast<size_t>(i)] && ledger[static_cast<size_t>(i)].in_s) {
      fail("token " + std::to_string(i) + " is in S and was dropped");
    }
  }
  if (protect_first && n > 0 && (!kept[0] || merged_away[0])) fail("CLS dropped");
}

std::vector<Growth> apply_plan(const KeepPlan& plan, PlanTarget& target, const std::string& who) {
  if (!target.ledger) throw InternalError("apply_plan: no ledger");
  std::vector<TokenInfo>& ledger = *target.ledger;
  const int64_t n = static_cast<int64_t>(ledger.size());
  check_plan(plan, ledger, target.protect_first, who);

  // Merges: the `into` row becomes the weighted mean of its members (or their weighted sum).
  std::unordered_map<int64_t, const MergeGroup*> merge_of;
  for (const auto& g : plan.merges) merge_of[g.into] = &g;
  auto weights_of = [&](const MergeGroup& g) {
    std::vector<double> w = g.weights;
    if (w.empty()) {
      for (int64_t m : g.members) w.push_back(ledger[static_cast<size_t>(m)].size);
    }
    double total = 0;
    for (double x : w) total += x;
    if (total <= 0) throw InternalError("pruner " + who + ": merge weights sum to " + std::to_string(total));
    if (g.normalize) {
      for (double& x : w) x /= total;
    }
    return w;
  };
  // Every group's members and weights laid end to end (group of keep[k]: `span[k]` = offset,
  // count), so each merged tensor takes them to its device in one index and one weight vector,
  // not two host-to-device copies per group.
  std::vector<int64_t> all_members;
  std::vector<double> all_weights;
  std::vector<std::pair<int64_t, int64_t>> span(plan.keep.size(), {0, 0});
  if (!target.merged.empty()) {
    for (size_t k = 0; k < plan.keep.size(); ++k) {
      auto it = merge_of.find(plan.keep[k]);
      if (it == merge_of.end()) continue;
      std::vector<double> w = weights_of(*it->second);
      span[k] = {static_cast<int64_t>(all_members.size()), static_cast<int64_t>(w.size())};
      all_members.insert(all_members.end(), it->second->members.begin(), it->second->members.end());
      all_weights.insert(all_weights.end(), w.begin(), w.end());
    }
  }
  for (at::Tensor* t : target.merged) {
    at::Tensor rows = t->narrow(0, target.offset, n);
    at::Tensor out = rows.index_select(0, index_tensor(plan.keep, 0, rows.device()));
    if (!plan.merges.empty()) {
      out = out.clone();
      at::Tensor member_idx = index_tensor(all_members, 0, rows.device());
      at::Tensor weight = model::to_device(
          at::tensor(all_weights, at::TensorOptions().dtype(at::kDouble)).to(rows.scalar_type()), rows.device());
      for (size_t k = 0; k < plan.keep.size(); ++k) {
        const auto [begin, count] = span[k];
        if (count == 0) continue;
        at::Tensor members = rows.index_select(0, member_idx.narrow(0, begin, count));
        at::Tensor wt = weight.narrow(0, begin, count);
        std::vector<int64_t> shape(static_cast<size_t>(members.dim()), 1);
        shape[0] = count;
        out[static_cast<int64_t>(k)].copy_((members * wt.view(shape)).sum(0));
      }
    }
    *t = splice(*t, target.offset, n, out);
  }
  for (at::Tensor* t : target.gathered) {
    at::Tensor out = t->narrow(0, target.offset, n).index_select(0, index_tensor(plan.keep, 0, t->device()));
    *t = splice(*t, target.offset, n, out);
  }

  // Ledger: sizes add up, frame spans widen, S grows.
  std::vector<TokenInfo> next;
  next.reserve(plan.keep.size());
  for (int64_t i : plan.keep) next.push_back(ledger[static_cast<size_t>(i)]);
  for (size_t k = 0; k < plan.keep.size(); ++k) {
    auto it = merge_of.find(plan.keep[k]);
    if (it == merge_of.end()) continue;
    TokenInfo& e = next[k];
    double size = 0;
    for (int64_t m : it->second->members) {
      const TokenInfo& src = ledger[static_cast<size_t>(m)];
      size += src.size;
      e.in_s = e.in_s || src.in_s;
      if (src.first_frame < e.first_frame) {
        e.first_frame = src.first_frame;
        e.t_first_sec = src.t_first_sec;
      }
      if (src.last_frame > e.last_frame) {
        e.last_frame = src.last_frame;
        e.t_last_sec = src.t_last_sec;
      }
    }
    e.size = size;
  }
  for (int64_t i : plan.important) {
    auto pos = std::find(plan.keep.begin(), plan.keep.end(), i) - plan.keep.begin();
    next[static_cast<size_t>(pos)].in_s = true;
  }
  if (target.size && target.size->defined()) {
    std::vector<double> sizes;
    for (const auto& e : next) sizes.push_back(e.size);
    at::Tensor s = at::tensor(sizes, at::TensorOptions().dtype(at::kDouble)).to(target.size->scalar_type());
    s = model::to_device(s, target.size->device());  // spliced between its own rows, wherever they live
    *target.size = splice(*target.size, target.offset, n, s);
  }
  std::vector<Growth> growths;
  for (const auto& a : plan.absorbed) {
    const TokenInfo& src = ledger[static_cast<size_t>(a.index)];
    growths.push_back(Growth{a.into_id, src.size, src.last_frame, src.t_last_sec});
  }

  if (target.cache) {
    std::vector<char> kept(static_cast<size_t>(n), 0);
    for (int64_t i : plan.keep) kept[static_cast<size_t>(i)] = 1;
    std::vector<int64_t> drop;
    for (int64_t i = 0; i < n; ++i) {
      if (!kept[static_cast<size_t>(i)]) drop.push_back(target.offset + i);
    }
    if (!drop.empty()) target.cache->remove(target.cache_layer, drop);
  }
  ledger = std::move(next);
  return growths;
}

void record_stage(std::vector<StageRecord>& records, const std::string& name, Stage stage, int layer, int64_t n_in,
                  int64_t n_out, double ms) {
  auto it = std::find_if(records.begin(), records.end(), [&](const StageRecord& r) {
    return r.name == name && r.stage == stage && r.layer == layer;
  });
  if (it == records.end()) {
    records.push_back(StageRecord{name, stage, layer, 0, 0, 0, 0, 0});
    it = records.end() - 1;
  }
  ++it->calls;
  it->n_in += n_in;
  it->n_out += n_out;
  it->ms += ms;
}

}  // namespace mustdrop::prune
