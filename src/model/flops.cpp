#include "model/flops.h"

namespace mustdrop::model {

double layer_flops(double n, double d, double m) { return 4 * n * d * d + 2 * n * n * d + 2 * n * d * m; }

double vision_flops(const VisionConfig& c, int64_t frames, const std::vector<int64_t>& tokens_per_layer) {
  double total = 0;
  for (int64_t n : tokens_per_layer) total += layer_flops(static_cast<double>(n), c.hidden_size, c.intermediate_size);
  return total * static_cast<double>(frames);
}

double cls_row_flops(const VisionConfig& c, int64_t n) {
  double d = c.hidden_size, t = static_cast<double>(n);
  return t * d * d + d * d + t * d;
}

double prefill_flops(const TextConfig& c, const std::vector<int64_t>& tokens_per_layer) {
  double total = 0;
  for (int64_t n : tokens_per_layer) total += layer_flops(static_cast<double>(n), c.hidden_size, c.intermediate_size);
  return total;
}

double decode_flops(const TextConfig& c, const std::vector<int64_t>& kv_per_layer, int64_t steps) {
  double d = c.hidden_size, m = c.intermediate_size, total = 0;
  for (int64_t s = 0; s < steps; ++s) {
    for (int64_t kv : kv_per_layer) total += 4 * d * d + 2 * static_cast<double>(kv + s) * d + 2 * d * m;
  }
  return total;
}

}  // namespace mustdrop::model
