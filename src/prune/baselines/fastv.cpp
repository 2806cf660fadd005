#include "prune/baselines/fastv.h"

#include <ATen/ATen.h>


#include "prune/mustdrop/dual_attention.h"

namespace mustdrop::prune {

Needs Fastv::needs(int) const {
  Needs n;
  n.layers = {o_.k - 1};
  return n;
}

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
  int64_t budget = count_or_ratio(o_.keep_tokens_per_frame, o_.keep_ratio, v);
  return std::max(budget, static_cast<int64_t>(important_indices(*v.tokens).size()));
}

std::unique_ptr<TokenPruner> make_fastv(const config::PipelineConfig& config) {
  return std::make_unique<Fastv>(config.fastv);
}

}  // namespace mustdrop::prune
