// mustdrop.kv_evict: the output-aware KV cache. After prefill (or after the first D decode
// steps) layers >= L drop the KV entries of vision tokens outside S (policy important_set, the
// method's description) or outside the set that survived every prefill stage (final_kept, what
// the official code does). Layers below L keep everything. Entries keep their RoPE positions
// (keys are cached already rotated), so the next token sees exactly the kept tokens.
#pragma once

#include <memory>

#include "config/pipeline_config.h"
#include "prune/pruner.h"

namespace mustdrop::prune {

class KvEvict : public TokenPruner {
 public:
  explicit KvEvict(const config::KvEvictOptions& options) : o_(options) {}
  std::string name() const override { return "mustdrop.kv_evict"; }
  Stage stage() const override { return Stage::Decode; }
  Needs needs(int n_layers) const override;
  bool acts_at_step(int step) const override { return step == o_.after_steps; }
  KeepPlan decide(const View& view) override;
  int64_t max_kept(const View& view) const override;
  std::unique_ptr<TokenPruner> clone() const override { return std::make_unique<KvEvict>(*this); }

 private:
  config::KvEvictOptions o_;
};

std::unique_ptr<TokenPruner> make_kv_evict(const config::PipelineConfig& config);

}  // namespace mustdrop::prune
