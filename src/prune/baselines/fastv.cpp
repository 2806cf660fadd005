#include "prune/baselines/fastv.h"

#include <ATen/ATen.h>



namespace mustdrop::prune {

Needs Fastv::needs(int) const { return acting_after({o_.k - 1}); }

std::vector<int64_t> Fastv::attention_rows(const View& v) const {
  if (v.n_tokens == 0) return {};
  return {v.n_tokens - 1};
}

KeepPlan Fastv::decide(const View& v) {
  KeepPlan plan;
  if (v.n_vision == 0) return plan;
  at::Tensor scores = text_to_vision(v, attention_rows(v)).select(0, 0);
  plan.keep = keep_top_with_s(scores, count_or_ratio(o_.keep_tokens_per_frame, o_.keep_ratio, v), *v.tokens);
  return plan;
}

int64_t Fastv::max_kept(const View& v) const {
  return at_least_s(count_or_ratio(o_.keep_tokens_per_frame, o_.keep_ratio, v), *v.tokens);
}

}  // namespace mustdrop::prune
