// Every pruner, by the name pipelines use in `chain`. Adding a method = one line here.
#include "prune/baselines/fastv.h"
#include "prune/baselines/random.h"
#include "prune/baselines/sparsevlm.h"
#include "prune/baselines/tome.h"
#include "prune/chain.h"
#include "prune/mustdrop/dual_attention.h"
#include "prune/mustdrop/important_set.h"
#include "prune/mustdrop/kv_evict.h"
#include "prune/mustdrop/lsm.h"

namespace mustdrop::prune {

const std::vector<RegistryEntry>& registry() {
  static const std::vector<RegistryEntry> entries = {
      {"mustdrop.lsm", Stage::VisionLayer, make_lsm},
      {"mustdrop.important_set", Stage::VisionLayer, make_important_set},
      {"mustdrop.dual_attention", Stage::Prefill, make_dual_attention},
      {"mustdrop.kv_evict", Stage::Decode, make_kv_evict},
      {"fastv", Stage::Prefill, make_fastv},
      {"tome", Stage::VisionLayer, make_tome},
      {"sparsevlm", Stage::Prefill, make_sparsevlm},
      {"random", Stage::Prefill, make_random},
  };
  return entries;
}

std::vector<std::string> registered_names() {
  std::vector<std::string> out;
  for (const auto& e : registry()) out.push_back(e.name);
  return out;
}

}  // namespace mustdrop::prune
