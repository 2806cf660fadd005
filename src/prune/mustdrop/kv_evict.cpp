#include "prune/mustdrop/kv_evict.h"

#include <algorithm>
#include <unordered_set>

namespace mustdrop::prune {

Needs KvEvict::needs(int) const { return acting_after({o_.layer}); }

KeepPlan KvEvict::decide(const View& v) {
  const std::vector<TokenInfo>& tokens = *v.tokens;
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (v.layer < o_.layer) return KeepPlan::keep_all(n);
  std::unordered_set<int64_t> final_ids;
  if (o_.policy == KvPolicy::kFinalKept && v.final_ids) final_ids.insert(v.final_ids->begin(), v.final_ids->end());
  KeepPlan plan;
  for (int64_t i = 0; i < n; ++i) {
    const TokenInfo& t = tokens[size_t(i)];
    if (t.in_s || final_ids.count(t.id) > 0) plan.keep.push_back(i);
  }
  return plan;
}

int64_t KvEvict::max_kept(const View& v) const {
  const std::vector<TokenInfo>& tokens = *v.tokens;
  if (v.layer < o_.layer) return static_cast<int64_t>(tokens.size());
  int64_t bound = 0;
  for (const auto& t : tokens) {
    bool final_kept = o_.policy == KvPolicy::kFinalKept && v.final_ids &&
                      std::find(v.final_ids->begin(), v.final_ids->end(), t.id) != v.final_ids->end();
    bound += (t.in_s || final_kept) ? 1 : 0;
  }
  return bound;
}

}  // namespace mustdrop::prune
