// Rule-based answer scorers for open-ended video QA (exact match, whole-word containment, yes/no
// polarity) and a percentile-bootstrap confidence interval for a mean score.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mustdrop::eval {

// Lower case, punctuation removed, articles dropped, number words as digits, single spaces;
// the rules are listed at the top of score.cpp. Never fails.
std::string normalize_answer(const std::string& text);

// True when the whole prediction and the gold answer normalize to the same text.
bool score_exact(const std::string& prediction, const std::string& gold);

enum class Polarity { kYes, kNo, kNone };

// The first yes-word ("yes") or no-word ("no", "not", "nope", a negative contraction such as
// "isn't") of the normalized text decides; kNone when there is neither.
Polarity polarity(const std::string& text);

// Gold "yes"/"no": the prediction's polarity equals the gold's. Otherwise the normalized gold
// occurs in the normalized prediction as a contiguous run of whole words. An empty gold: false.
bool score_contains(const std::string& prediction, const std::string& gold);

struct Interval {
  double lo = 0;  // lower end of the interval
  double hi = 0;  // upper end of the interval
};

// Percentile bootstrap of the mean of `values`: `resamples` resamples with replacement drawn
// from std::mt19937_64 seeded with `seed`, so the result is fixed for a seed. {0,0} for empty
// input; ConfigError when resamples < 1 or level is not inside (0, 1).
Interval bootstrap_ci(const std::vector<double>& values, int resamples = 1000, double level = 0.95,
                      uint64_t seed = 12345);

}  // namespace mustdrop::eval
