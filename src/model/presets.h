// Named model shapes: the published checkpoints' architectures (for benchmarks with random
// weights, layer counts reducible) and the tiny test models.
#pragma once

#include <string>
#include <vector>

#include "model/hf_config.h"

namespace mustdrop::model {

// "llava-1.5-7b", "llava-1.5-13b", "video-llava-7b", "tiny-llava", "tiny-video-llava".
// llm_layers / vision_layers > 0 replace the layer counts (vision_feature_layer stays -2).
// Throws ConfigError naming the preset and listing the known ones.
ModelConfig preset_config(const std::string& name, int llm_layers = 0, int vision_layers = 0);
std::vector<std::string> preset_names();

}  // namespace mustdrop::model
