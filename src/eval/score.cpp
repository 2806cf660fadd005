// Rule-based scorers.
//
// What the normalization follows, and where it departs:
// - ActivityNet-QA's official evaluation (MILVLG/activitynet-qa, evaluation/eval.py) compares
//   the predicted answer string with the gold string as they are: no normalization at all. Its
//   gold answers are short lower-case phrases ("yes", "3", "in the room"), so exact matching
//   after normalizing both sides agrees with it on those and is fair to free-form model text.
// - The normalization itself follows the VQA evaluation (GT-Vision-Lab/VQA,
//   vqaEvaluation/vqaEval.py): tabs and newlines to spaces, punctuation removed, lower case,
//   number words to digits, the articles a/an/the dropped, tokens re-joined by one space.
// Deviations, each to keep the rules short and predictable:
// - Punctuation: VQA decides per mark whether to delete it or turn it into a space, depending on
//   the spacing around it. Here every ASCII punctuation mark becomes a space, except: a comma
//   between two digits is deleted ("1,000" -> "1000"), a period between two digits is kept
//   ("2.5"), and apostrophes (' ` and the curly ones) are deleted. VQA also leaves '-' and '!'
//   alone; here they are spaces too ("twenty-one" -> "twenty one", "t-shirt" -> "t shirt").
// - Contractions: VQA maps apostrophe-less spellings to the apostrophe form ("dont" -> "don't").
//   Deleting apostrophes gets the same equivalence the other way round ("don't" -> "dont").
// - Numbers: VQA maps zero..ten (and "none" -> 0). Here zero..nineteen and the tens
//   twenty..ninety, and a tens word followed by a unit word is one number ("twenty one" -> "21").
//   "none" stays a word (in ActivityNet-QA it answers "what is he holding" as often as "how
//   many"); "hundred"/"thousand" are not converted.
// - Only ASCII letters are lower-cased; other UTF-8 bytes pass through unchanged.
//
// Bootstrap: indices are drawn from std::mt19937_64 by rejection sampling (not
// std::uniform_int_distribution, whose algorithm differs between standard libraries), so a seed
// gives the same interval everywhere. Percentiles interpolate linearly between order statistics
// at rank q * (resamples - 1), as numpy.percentile does by default.
#include "eval/score.h"

#include <algorithm>
#include <random>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"

namespace mustdrop::eval {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool is_ascii_punct(unsigned char c) {
  return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
}

// Lower case; apostrophes deleted; other punctuation and whitespace to spaces (digit exceptions).
std::string clean_characters(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  const size_t n = text.size();
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    const bool digit_before = i > 0 && is_digit(text[i - 1]);
    const bool digit_after = i + 1 < n && is_digit(text[i + 1]);
    // U+2018 / U+2019 (curly apostrophes) are E2 80 98 / E2 80 99 in UTF-8.
    if (c == 0xE2 && i + 2 < n && static_cast<unsigned char>(text[i + 1]) == 0x80 &&
        (static_cast<unsigned char>(text[i + 2]) == 0x98 || static_cast<unsigned char>(text[i + 2]) == 0x99)) {
      i += 2;
      continue;
    }
    if (c == '\'' || c == '`') continue;
    if (c == ',' && digit_before && digit_after) continue;
    if (c == '.' && digit_before && digit_after) {
      out.push_back('.');
      continue;
    }
    if (c >= 'A' && c <= 'Z') {
      out.push_back(static_cast<char>(c - 'A' + 'a'));
    } else if (is_ascii_punct(c) || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
      out.push_back(' ');
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

std::vector<std::string> split_words(const std::string& text) {
  std::vector<std::string> words;
  std::istringstream in(text);
  std::string w;
  while (in >> w) words.push_back(w);
  return words;
}

const std::unordered_map<std::string, int>& small_numbers() {
  static const std::unordered_map<std::string, int> kMap = {
      {"zero", 0},      {"one", 1},       {"two", 2},       {"three", 3},     {"four", 4},
      {"five", 5},      {"six", 6},       {"seven", 7},     {"eight", 8},     {"nine", 9},
      {"ten", 10},      {"eleven", 11},   {"twelve", 12},   {"thirteen", 13}, {"fourteen", 14},
      {"fifteen", 15},  {"sixteen", 16},  {"seventeen", 17}, {"eighteen", 18}, {"nineteen", 19}};
  return kMap;
}

const std::unordered_map<std::string, int>& tens_numbers() {
  static const std::unordered_map<std::string, int> kMap = {
      {"twenty", 20}, {"thirty", 30}, {"forty", 40}, {"fifty", 50},
      {"sixty", 60},  {"seventy", 70}, {"eighty", 80}, {"ninety", 90}};
  return kMap;
}

// Normalized words: articles dropped, number words as digits.
std::vector<std::string> normalized_words(const std::string& text) {
  std::vector<std::string> out;
  const std::vector<std::string> words = split_words(clean_characters(text));
  const auto& smalls = small_numbers();
  const auto& tens = tens_numbers();
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& w = words[i];
    if (w == "a" || w == "an" || w == "the") continue;
    if (auto t = tens.find(w); t != tens.end()) {
      int value = t->second;
      if (i + 1 < words.size()) {
        auto u = smalls.find(words[i + 1]);
        if (u != smalls.end() && u->second >= 1 && u->second <= 9) {
          value += u->second;
          ++i;
        }
      }
      out.push_back(std::to_string(value));
    } else if (auto s = smalls.find(w); s != smalls.end()) {
      out.push_back(std::to_string(s->second));
    } else {
      out.push_back(w);
    }
  }
  return out;
}

std::string join_words(const std::vector<std::string>& words) {
  std::string out;
  for (const std::string& w : words) {
    if (!out.empty()) out.push_back(' ');
    out += w;
  }
  return out;
}

// No-words after apostrophes are deleted ("isn't" -> "isnt").
bool is_no_word(const std::string& w) {
  static const std::unordered_set<std::string> kNoWords = {
      "no",     "not",    "nope",   "cannot", "dont",     "doesnt",  "didnt",    "isnt",
      "arent",  "wasnt",  "werent", "cant",   "wont",     "wouldnt", "shouldnt", "couldnt",
      "hasnt",  "havent", "hadnt",  "aint",   "mustnt",   "neednt"};
  return kNoWords.count(w) > 0;
}

// Mean of values[idx] for every index in `idx`.
double mean_at(const std::vector<double>& values, const std::vector<size_t>& idx) {
  double sum = 0;
  for (size_t i : idx) sum += values[i];
  return sum / static_cast<double>(idx.size());
}

// Uniform index in [0, n) by rejection: draws above the largest multiple of n are redrawn.
size_t uniform_index(std::mt19937_64& rng, uint64_t n) {
  const uint64_t limit = UINT64_MAX - (UINT64_MAX % n + 1) % n;  // last accepted value
  uint64_t x;
  do {
    x = rng();
  } while (x > limit);
  return static_cast<size_t>(x % n);
}

// Percentile `q` in [0, 1] of sorted `v`, linear between order statistics.
double percentile_sorted(const std::vector<double>& v, double q) {
  const double rank = q * static_cast<double>(v.size() - 1);
  const size_t below = static_cast<size_t>(rank);
  if (below + 1 >= v.size()) return v.back();
  const double frac = rank - static_cast<double>(below);
  return v[below] + frac * (v[below + 1] - v[below]);
}

}  // namespace

std::string normalize_answer(const std::string& text) { return join_words(normalized_words(text)); }

bool score_exact(const std::string& prediction, const std::string& gold) {
  return normalize_answer(prediction) == normalize_answer(gold);
}

Polarity polarity(const std::string& text) {
  for (const std::string& w : normalized_words(text)) {
    if (w == "yes") return Polarity::kYes;
    if (is_no_word(w)) return Polarity::kNo;
  }
  return Polarity::kNone;
}

bool score_contains(const std::string& prediction, const std::string& gold) {
  const std::vector<std::string> g = normalized_words(gold);
  if (g.empty()) return false;
  if (g.size() == 1 && (g[0] == "yes" || g[0] == "no")) {
    const Polarity want = g[0] == "yes" ? Polarity::kYes : Polarity::kNo;
    return polarity(prediction) == want;
  }
  const std::vector<std::string> p = normalized_words(prediction);
  return std::search(p.begin(), p.end(), g.begin(), g.end()) != p.end();
}

Interval bootstrap_ci(const std::vector<double>& values, int resamples, double level, uint64_t seed) {
  if (resamples < 1) throw ConfigError("bootstrap_ci: resamples must be >= 1, got " + std::to_string(resamples));
  if (!(level > 0 && level < 1)) throw ConfigError("bootstrap_ci: level must be inside (0, 1), got " + std::to_string(level));
  if (values.empty()) return {};
  std::mt19937_64 rng(seed);
  const uint64_t n = values.size();
  std::vector<size_t> idx(values.size());
  std::vector<double> means;
  means.reserve(static_cast<size_t>(resamples));
  for (int r = 0; r < resamples; ++r) {
    for (size_t& i : idx) i = uniform_index(rng, n);
    means.push_back(mean_at(values, idx));
  }
  std::sort(means.begin(), means.end());
  const double alpha = (1.0 - level) / 2.0;
  return Interval{percentile_sorted(means, alpha), percentile_sorted(means, 1.0 - alpha)};
}

}  // namespace mustdrop::eval
