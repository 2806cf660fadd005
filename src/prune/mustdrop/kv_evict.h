// mustdrop.kv_evict: the output-aware KV cache. After prefill (or after the first D decode
// steps) layers >= L drop the KV entries of vision tokens outside S (policy important_set, the
// method's description) or outside the set that survived every prefill stage (final_kept, what
// the official code does). Layers below L keep everything. Entries keep their RoPE positions
// (keys are cached already rotated), so the next token sees exactly the kept tokens.
#pragma once

#include <memory>
#include <vector>

#include "config/decode.h"
#include "prune/pruner.h"

namespace mustdrop::prune {

// What the decode stage keeps of the vision entries in layers >= L.
enum class KvPolicy { kImportantSet, kFinalKept };
inline std::vector<const char*> enum_names(KvPolicy) { return {"important_set", "final_kept"}; }

// mustdrop.kv_evict: the output-aware KV cache.
struct KvEvictOptions {
  int layer = 2;                       // L: layers >= L evict; layers below keep every entry
  int after_steps = 0;                 // D: evict after this many decode steps (0: right after prefill)
  KvPolicy policy = KvPolicy::kImportantSet;  // important_set: keep only S | final_kept: keep what survived prefill

  template <class V>
  void visit(V& v) {
    v("layer", layer, config::range(0, 10000));
    v("after_steps", after_steps, config::range(0, 1e6));
    v("policy", policy, config::any());
  }
};

class KvEvict : public TokenPruner {
 public:
  explicit KvEvict(const KvEvictOptions& options) : o_(options) {}
  std::string name() const override { return "mustdrop.kv_evict"; }
  Stage stage() const override { return Stage::Decode; }
  Needs needs(int n_layers) const override;
  bool acts_at_step(int step) const override { return step == o_.after_steps; }
  KeepPlan decide(const View& view) override;
  int64_t max_kept(const View& view) const override;
  std::unique_ptr<TokenPruner> clone() const override { return std::make_unique<KvEvict>(*this); }

 private:
  KvEvictOptions o_;
};

}  // namespace mustdrop::prune
