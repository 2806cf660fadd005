#include "prune/baselines/random.h"

#include <ATen/ATen.h>

#include <cmath>
#include <random>

#include "prune/mustdrop/dual_attention.h"

namespace mustdrop::prune {

Needs RandomDrop::needs(int) const {
  Needs n;
  n.layers = {o_.layer};
  return n;
}

int64_t RandomDrop::budget(const View& v) const {
  if (o_.keep_tokens_per_frame > 0) return frame_budget(o_.keep_tokens_per_frame, v.n_frames, v.n_vision);
  return std::llround(o_.keep_ratio * static_cast<double>(v.n_vision));
}

KeepPlan RandomDrop::decide(const View& v) {
  // Uniform scores from a generator seeded by the seed alone: the same seed, the same subset.
  std::mt19937_64 gen(static_cast<uint64_t>(o_.seed));
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> s(static_cast<size_t>(v.n_vision));
  for (double& x : s) x = u(gen);
  KeepPlan plan;
  plan.keep = keep_top_with_s(at::tensor(s, at::TensorOptions().dtype(at::kDouble)), budget(v), *v.tokens);
  return plan;
}

int64_t RandomDrop::max_kept(const View& v) const {
  return std::max(budget(v), static_cast<int64_t>(important_indices(*v.tokens).size()));
}

std::unique_ptr<TokenPruner> make_random(const config::PipelineConfig& config) {
  return std::make_unique<RandomDrop>(config.random);
}

}  // namespace mustdrop::prune
