// Analytic FLOPs, from the shapes actually run, with one formula for every pipeline so that
// "FLOPs kept" compares across methods. Per transformer layer over n tokens with width d and
// MLP width m: 4*n*d^2 + 2*n^2*d + 2*n*d*m (the formula of FastV, PDrop and SparseVLM, which
// MustDrop's tables follow; it counts multiply-accumulates of the projections, attention and
// MLP). A decode step against n_kv cached entries: 4*d^2 + 2*n_kv*d + 2*d*m per layer.
#pragma once

#include <cstdint>
#include <vector>

#include "model/hf_config.h"

namespace mustdrop::model {

// One layer over n tokens.
double layer_flops(double n, double d, double m);
// A vision tower run over `frames` frames with tokens_per_layer[i] tokens entering layer i.
double vision_flops(const VisionConfig& c, int64_t frames, const std::vector<int64_t>& tokens_per_layer);
// A CLS-row-only attention pass over n tokens (keys of every token, one query, one score row).
double cls_row_flops(const VisionConfig& c, int64_t n);
// A prefill with tokens_per_layer[i] tokens entering decoder layer i.
double prefill_flops(const TextConfig& c, const std::vector<int64_t>& tokens_per_layer);
// `steps` decode steps; kv_per_layer[i] entries in layer i's cache before the first step.
double decode_flops(const TextConfig& c, const std::vector<int64_t>& kv_per_layer, int64_t steps);

}  // namespace mustdrop::model
