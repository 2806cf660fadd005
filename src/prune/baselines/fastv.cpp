#include "prune/baselines/fastv.h"

#include <ATen/ATen.h>

#include <cmath>

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

int64_t Fastv::budget(const View& v) const {
  if (o_.keep_tokens_per_frame > 0) return frame_budget(o_.keep_tokens_per_frame, v.n_frames, v.n_vision);
  return std::llround(o_.keep_ratio * static_cast<double>(v.n_vision));
}

KeepPlan Fastv::decide(const View& v) {
  KeepPlan plan;
  if (v.n_vision == 0) return plan;
  at::Tensor scores = text_to_vision(v, attention_rows(v)).select(0, 0);
  plan.keep = keep_top_with_s(scores, budget(v), *v.tokens);
  return plan;
}

int64_t Fastv::max_kept(const View& v) const {
  return std::max(budget(v), static_cast<int64_t>(important_indices(*v.tokens).size()));
}

std::unique_ptr<TokenPruner> make_fastv(const config::PipelineConfig& config) {
  return std::make_unique<Fastv>(config.fastv);
}

}  // namespace mustdrop::prune
