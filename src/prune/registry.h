// The registry (registry.cpp): every pruner, by the name pipelines use in `chain`. A pruner owns
// its options (a struct with visit(), beside its class) and is registered with one line:
//   entry<Fastv, FastvOptions>("fastv", Stage::Prefill),
// The name is also the key path of its options section in a pipeline ("mustdrop.lsm": `lsm`
// under `mustdrop`).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "config/decode.h"
#include "config/pipeline_config.h"
#include "prune/pruner.h"

namespace mustdrop::prune {

struct RegistryEntry {
  const char* name;
  Stage stage;
  // The pruner configured by its section (decoded strictly: file:line:col, unknown keys, ranges).
  std::unique_ptr<TokenPruner> (*make)(const config::Section& section);
  // Its options as that section sets them, every key (for printing and signatures).
  config::Node (*options)(const config::Section& section);
};

template <class P, class Options>
RegistryEntry entry(const char* name, Stage stage) {
  return RegistryEntry{
      name, stage,
      [](const config::Section& s) -> std::unique_ptr<TokenPruner> {
        return std::make_unique<P>(config::decode<Options>(s));
      },
      [](const config::Section& s) { return config::print(config::decode<Options>(s)); }};
}

const std::vector<RegistryEntry>& registry();
std::vector<std::string> registered_names();
// The entry called `name`, or nullptr.
const RegistryEntry* find_entry(const std::string& name);

// Checks every pruner section of `pipeline`: each key must lead to a registered pruner and each
// pruner's section must decode. ConfigError (file:line:col) otherwise. Chain::build does this.
void check_sections(const config::PipelineConfig& pipeline);
// The options of pruner `name` as `pipeline` sets them, as YAML (every key); "" for an unknown name.
std::string options_yaml(const config::PipelineConfig& pipeline, const std::string& name);
// The pipeline as YAML: its own keys, then the options of every pruner in its chain or with a
// section in the document (every key, registry order, nested by key path).
std::string pipeline_yaml(const config::PipelineConfig& pipeline);

}  // namespace mustdrop::prune
