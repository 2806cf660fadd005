// Typed form of pipelines/<name>.yaml: which token pruners run, in which order, with which
// knobs. The pipeline's own keys (name, description, chain) are decoded here; every other
// top-level key belongs to a pruner: its section has the key path of its registry name
// ("mustdrop.lsm" is the `lsm` section under `mustdrop`) and the pruner decodes it itself, with
// the machinery of decode.h, from the tree kept here (prune/registry.h checks every section).
#pragma once

#include <string>
#include <vector>

#include "config/decode.h"
#include "config/node.h"

namespace mustdrop::config {

// A token-dropping pipeline (pipelines/<name>.yaml).
struct PipelineConfig {
  std::string name = "none";        // shown in reports
  std::string description;          // one line for people
  std::vector<std::string> chain;   // pruners in order, by registry name (e.g. mustdrop.lsm); empty: no dropping
  Node sections;                    // every other top-level key as written (a map; null: none)
  Origin origin{"pipeline", true};  // the document, for messages about its sections

  template <class V>
  void visit(V& v) {
    v("name", name, any());
    v("description", description, any());
    v("chain", chain, any());
  }

  // The section at `key_path` ("mustdrop.lsm"); a null node (defaults) when the document has
  // none. ConfigError (file:line:col) when a key on the way holds something other than a section.
  Section section(const std::string& key_path) const;
};

// Reads a pipeline YAML: its own keys strictly (ConfigError with file:line:col); the pruners'
// sections are kept as written and checked when the chain is built (prune::Chain::build).
PipelineConfig load_pipeline(const std::string& path);
// Same, from YAML text; `origin` names the text in messages.
PipelineConfig load_pipeline_string(const std::string& yaml, const std::string& origin);

}  // namespace mustdrop::config
