// Every pruner, by the name pipelines use in `chain`; their sections; the chain built from them.
#include <algorithm>
#include <set>

#include "core/error.h"
#include "prune/baselines/dycoke.h"
#include "prune/baselines/fastv.h"
#include "prune/baselines/random.h"
#include "prune/baselines/sparsevlm.h"
#include "prune/baselines/tome.h"
#include "prune/baselines/visionzip.h"
#include "prune/chain.h"
#include "prune/registry.h"
#include "prune/mustdrop/dual_attention.h"
#include "prune/mustdrop/important_set.h"
#include "prune/mustdrop/kv_evict.h"
#include "prune/mustdrop/lsm.h"

namespace mustdrop::prune {

const std::vector<RegistryEntry>& registry() {
  static const std::vector<RegistryEntry> entries = {
      entry<Lsm, LsmOptions>("mustdrop.lsm", Stage::VisionLayer),
      entry<ImportantSet, ImportantSetOptions>("mustdrop.important_set", Stage::VisionLayer),
      entry<DualAttention, DualAttentionOptions>("mustdrop.dual_attention", Stage::Prefill),
      entry<KvEvict, KvEvictOptions>("mustdrop.kv_evict", Stage::Decode),
      entry<Fastv, FastvOptions>("fastv", Stage::Prefill),
      entry<Tome, TomeOptions>("tome", Stage::VisionLayer),
      entry<SparseVlm, SparseVlmOptions>("sparsevlm", Stage::Prefill),
      entry<RandomDrop, RandomOptions>("random", Stage::Prefill),
      entry<VisionZip, VisionZipOptions>("visionzip", Stage::VisionLayer),
      entry<DyCokeTtm, DyCokeTtmOptions>("dycoke.ttm", Stage::VisionOutput),
      entry<DyCokeKv, DyCokeKvOptions>("dycoke.kv", Stage::Decode),
  };
  return entries;
}

const RegistryEntry* find_entry(const std::string& name) {
  for (const auto& e : registry()) {
    if (name == e.name) return &e;
  }
  return nullptr;
}

namespace {

// Keys valid in the section at `prefix` ("": the top level): the next key of every registered
// name below it, in registry order.
std::vector<std::string> keys_under(const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& e : registry()) {
    std::string name = e.name;
    if (!prefix.empty() && name.compare(0, prefix.size() + 1, prefix + ".") != 0) continue;
    std::string rest = prefix.empty() ? name : name.substr(prefix.size() + 1);
    std::string key = rest.substr(0, rest.find('.'));
    if (std::find(out.begin(), out.end(), key) == out.end()) out.push_back(key);
  }
  return out;
}

void check_map(const config::PipelineConfig& p, const config::Node& node, const std::string& path) {
  config::detail::for_each_key(node, path, p.origin, [&](const std::string& name, const config::Node& key,
                                                           const config::Node& value) {
    const std::string full = config::detail::join_path(path, name);
    if (const RegistryEntry* e = find_entry(full)) {
      e->options(p.section(full));  // decodes strictly: the errors are the user's
      return;
    }
    if (keys_under(full).empty()) {
      std::vector<std::string> valid = keys_under(path);
      if (path.empty()) {
        config::detail::KeyNames own;
        config::PipelineConfig defaults;
        defaults.visit(own);
        valid.insert(valid.begin(), own.names.begin(), own.names.end());
      }
      config::fail(p.origin, key.mark, config::detail::unknown_key_message(valid, path, name));
    }
    if (value.is_null()) return;
    if (!value.is_map()) {
      config::fail(p.origin, config::detail::value_mark(value, key.mark),
                   full + ": expected a section (a map of keys), found " + config::detail::describe(value));
    }
    check_map(p, value, full);
  });
}

// The map entry `key` of `map`, created (an empty map) when missing.
config::Node& child(config::Node& map, const std::string& key) {
  for (auto& e : map.entries) {
    if (e.first.scalar == key) return e.second;
  }
  config::Node sub;
  sub.kind = config::Node::Kind::kMap;
  map.entries.emplace_back(config::Node::scalar_of(key), std::move(sub));
  return map.entries.back().second;
}

}  // namespace

void check_sections(const config::PipelineConfig& pipeline) {
  if (pipeline.sections.is_map()) check_map(pipeline, pipeline.sections, "");
}

std::string options_yaml(const config::PipelineConfig& pipeline, const std::string& name) {
  const RegistryEntry* e = find_entry(name);
  return e ? config::emit_yaml(e->options(pipeline.section(name))) + "\n" : "";
}

std::string pipeline_yaml(const config::PipelineConfig& pipeline) {
  config::Node root = config::print(pipeline);
  for (const auto& e : registry()) {
    const config::Section s = pipeline.section(e.name);
    bool in_chain = std::count(pipeline.chain.begin(), pipeline.chain.end(), e.name) > 0;
    if (!in_chain && s.node.is_null()) continue;
    config::Node* at = &root;
    const std::vector<std::string> keys = config::detail::split_key_path(e.name);
    for (size_t i = 0; i + 1 < keys.size(); ++i) at = &child(*at, keys[i]);
    child(*at, keys.back()) = e.options(s);
  }
  return config::emit_yaml(root) + "\n";
}

std::unique_ptr<Chain> Chain::build(const config::PipelineConfig& config, const std::string& origin) {
  check_sections(config);
  auto chain = std::make_unique<Chain>();
  chain->name_ = config.name;
  chain->origin_ = origin;
  std::vector<std::string> known = registered_names();
  std::string list;
  for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
  std::set<std::string> seen;
  for (const auto& name : config.chain) {
    const RegistryEntry* it = find_entry(name);
    if (!it) {
      throw ConfigError(origin + ": chain: unknown pruner '" + name + "' (known: " + list + ")");
    }
    if (!seen.insert(name).second) throw ConfigError(origin + ": chain: pruner '" + name + "' is listed twice");
    if (!chain->pruners_.empty() && chain->pruners_.back()->stage() > it->stage) {
      throw ConfigError(origin + ": chain: '" + name + "' (" + stage_name(it->stage) + ") must come before '" +
                        chain->pruners_.back()->name() + "' (" + stage_name(chain->pruners_.back()->stage()) +
                        "): stages run in the order VisionLayer, VisionOutput, Prefill, Decode");
    }
    chain->pruners_.push_back(it->make(config.section(name)));
  }
  return chain;
}

std::vector<std::string> registered_names() {
  std::vector<std::string> out;
  for (const auto& e : registry()) out.push_back(e.name);
  return out;
}

}  // namespace mustdrop::prune
