#include "prune/baselines/random.h"

#include <ATen/ATen.h>

#include <random>


namespace mustdrop::prune {

Needs RandomDrop::needs(int) const { return acting_after({o_.layer}); }

KeepPlan RandomDrop::decide(const View& v) {
  // Uniform scores from a generator seeded by the seed alone: the same seed, the same subset.
  std::mt19937_64 gen(static_cast<uint64_t>(o_.seed));
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> s(static_cast<size_t>(v.n_vision));
  for (double& x : s) x = u(gen);
  KeepPlan plan;
  at::Tensor scores = at::tensor(s, at::TensorOptions().dtype(at::kDouble));
  plan.keep = keep_top_with_s(scores, count_or_ratio(o_.keep_tokens_per_frame, o_.keep_ratio, v), *v.tokens);
  return plan;
}

int64_t RandomDrop::max_kept(const View& v) const {
  return at_least_s(count_or_ratio(o_.keep_tokens_per_frame, o_.keep_ratio, v), *v.tokens);
}

}  // namespace mustdrop::prune
