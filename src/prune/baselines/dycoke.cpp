#include "prune/baselines/dycoke.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "model/device.h"

namespace mustdrop::prune {

// ---- dycoke.ttm ----

Needs DyCokeTtm::needs(int) const { return Needs{}; }  // after the tower; reads nothing extra

void DyCokeTtm::reset() {
  seen_ = 0;
  anchor_ = Frame{};
  previous_ = Frame{};
}

int64_t DyCokeTtm::max_kept(const View& v) const {
  const int64_t n = static_cast<int64_t>(v.tokens->size());
  if (seen_ % 4 == 0 || n <= 1) return n;
  std::vector<TokenInfo> patches(v.tokens->begin() + 1, v.tokens->end());
  const int64_t budget = static_cast<int64_t>((1.0 - o_.merging_ratio) * static_cast<double>(n - 1));
  return 1 + std::min(n - 1, at_least_s(budget, patches));
}

KeepPlan DyCokeTtm::decide(const View& v) {
  const std::vector<TokenInfo>& tokens = *v.tokens;
  const int64_t n = static_cast<int64_t>(tokens.size());
  // This frame's patch features as they are, before pruning (what the next frames compare with).
  Frame full;
  at::Tensor x = v.hidden.narrow(0, 1, std::max<int64_t>(0, n - 1)).to(at::kFloat);
  full.unit = x / x.norm(2, 1, true).clamp_min(1e-12);
  for (int64_t i = 1; i < n; ++i) full.patch.push_back(tokens[static_cast<size_t>(i)].patch);

  const int64_t position = seen_ % 4;
  ++seen_;
  if (position == 0) {
    anchor_ = full;
    previous_ = std::move(full);
    return KeepPlan::keep_all(n);
  }
  // Frames 1 and 3 of a group against the frame before (1: the anchor), frame 2 against the anchor.
  const Frame& earlier = position == 2 ? anchor_ : previous_;
  std::unordered_map<int64_t, int64_t> row_of;
  for (size_t r = 0; r < earlier.patch.size(); ++r) row_of[earlier.patch[r]] = static_cast<int64_t>(r);
  // Score = -cosine with the same grid position (the least similar rank first); a position the
  // earlier frame does not hold (merged away by an earlier stage) ranks before every compared one.
  at::Tensor score = at::full({n - 1}, std::numeric_limits<double>::infinity(), at::TensorOptions().dtype(at::kDouble));
  std::vector<int64_t> here, there;
  for (int64_t i = 0; i < n - 1; ++i) {
    auto it = row_of.find(full.patch[static_cast<size_t>(i)]);
    if (it == row_of.end()) continue;
    here.push_back(i);
    there.push_back(it->second);
  }
  if (!here.empty()) {
    // Features stay on the model's device; only the cosines come to the host score.
    at::Tensor cos = (full.unit.index_select(0, model::index_tensor(here, full.unit.device())) *
                      earlier.unit.index_select(0, model::index_tensor(there, earlier.unit.device())))
                         .sum(1);
    score.index_copy_(0, at::tensor(here, at::TensorOptions().dtype(at::kLong)), -model::to_host(cos).to(at::kDouble));
  }
  std::vector<TokenInfo> patches(tokens.begin() + 1, tokens.end());
  const int64_t budget = static_cast<int64_t>((1.0 - o_.merging_ratio) * static_cast<double>(n - 1));
  KeepPlan plan;
  plan.keep.push_back(0);  // CLS
  for (int64_t i : keep_top_with_s(score, budget, patches)) plan.keep.push_back(i + 1);
  previous_ = std::move(full);
  return plan;
}

// ---- dycoke.kv ----

Needs DyCokeKv::needs(int) const {
  Needs n = acting_after({o_.layer});
  n.decode_read_after = o_.layer - 1;
  return n;
}

void DyCokeKv::reset() {
  previous_ = at::Tensor();
  selected_ids_.clear();
  have_selection_ = false;
}

at::Tensor DyCokeKv::vision_attention(const View& v) const {
  if (!v.attention.defined() || v.attention.size(0) < 1) {
    throw InternalError("dycoke.kv: no attention of the new token at LLM layer " + std::to_string(v.layer));
  }
  if (v.vision_begin + v.n_vision > v.attention.size(1)) {
    throw InternalError("dycoke.kv: attention over " + std::to_string(v.attention.size(1)) + " entries, vision block [" +
                        std::to_string(v.vision_begin) + ", " + std::to_string(v.vision_begin + v.n_vision) + ")");
  }
  // On the host (also `previous_`, compared with it): a score read by item() and top-k.
  return model::to_host(v.attention[v.attention.size(0) - 1].narrow(0, v.vision_begin, v.n_vision)).to(at::kDouble);
}

bool DyCokeKv::selects(const View& v) const {
  if (!previous_.defined() || previous_.numel() != v.n_vision) return true;
  at::Tensor a = vision_attention(v);
  double norms = (a.norm() * previous_.norm()).item<double>();
  double cos = norms > 0 ? (a * previous_).sum().item<double>() / norms : 0.0;
  return cos < o_.similarity_threshold;
}

namespace {

int64_t kv_budget(double pruning_ratio, int64_t n_vision) {
  return static_cast<int64_t>((1.0 - pruning_ratio) * static_cast<double>(n_vision));
}

// Indices of `tokens` whose ids are in `ids`, plus S, ascending.
std::vector<int64_t> present(const std::vector<int64_t>& ids, const std::vector<TokenInfo>& tokens) {
  std::unordered_set<int64_t> want(ids.begin(), ids.end());
  std::vector<int64_t> out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (want.count(tokens[i].id) > 0) out.push_back(static_cast<int64_t>(i));
  }
  return with_important(std::move(out), tokens);
}

}  // namespace

int64_t DyCokeKv::max_kept(const View& v) const {
  const std::vector<TokenInfo>& tokens = *v.tokens;
  if (selects(v)) return std::min(v.n_vision, at_least_s(kv_budget(o_.pruning_ratio, v.n_vision), tokens));
  if (o_.when_similar == DyCokeWhenSimilar::kReuse && have_selection_) {
    return static_cast<int64_t>(present(selected_ids_, tokens).size());
  }
  return static_cast<int64_t>(tokens.size());
}

KeepPlan DyCokeKv::decide(const View& v) {
  const std::vector<TokenInfo>& tokens = *v.tokens;
  at::Tensor a = vision_attention(v);
  const bool fresh = selects(v);
  previous_ = a;  // compared with the next step's, whatever this step does
  KeepPlan plan;
  if (fresh) {
    plan.keep = keep_top_with_s(a, kv_budget(o_.pruning_ratio, v.n_vision), tokens);
    selected_ids_.clear();
    for (int64_t i : plan.keep) selected_ids_.push_back(tokens[static_cast<size_t>(i)].id);
    have_selection_ = true;
    return plan;
  }
  switch (o_.when_similar) {
    case DyCokeWhenSimilar::kReadAll:
      return KeepPlan::keep_all(static_cast<int64_t>(tokens.size()));
    case DyCokeWhenSimilar::kReuse:
      if (!have_selection_) return KeepPlan::keep_all(static_cast<int64_t>(tokens.size()));
      plan.keep = present(selected_ids_, tokens);
      return plan;
  }
  return KeepPlan::keep_all(static_cast<int64_t>(tokens.size()));
}

}  // namespace mustdrop::prune
