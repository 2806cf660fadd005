#include "prune/mustdrop/important_set.h"

#include <ATen/ATen.h>

#include <cmath>

#include "core/error.h"

namespace mustdrop::prune {

Needs ImportantSet::needs(int n_layers) const {
  return acting_after_with_cls(o_.layer, n_layers);
}

int64_t ImportantSet::set_size(int64_t n_vision) const {
  // A small guard keeps 0.08 * 575 style products from rounding up past the exact value.
  return std::min<int64_t>(n_vision, static_cast<int64_t>(std::ceil(o_.ratio * static_cast<double>(n_vision) - 1e-9)));
}

KeepPlan ImportantSet::decide(const View& v) {
  const int64_t n = static_cast<int64_t>(v.tokens->size());
  KeepPlan plan = KeepPlan::keep_all(n);
  if (!v.cls_attention.defined()) {
    throw InternalError("mustdrop.important_set: no CLS attention at ViT layer " + std::to_string(v.layer));
  }
  // cls_attention covers tokens 1..n-1 (CLS is token 0 and never in S).
  const int64_t n_vision = n - 1;
  for (int64_t i : top_k_ascending(v.cls_attention, set_size(n_vision))) plan.important.push_back(i + 1);
  return plan;
}

}  // namespace mustdrop::prune
