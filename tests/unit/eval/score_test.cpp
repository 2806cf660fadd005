// Scorers against hand-worked cases; the bootstrap against the normal approximation.
#include "eval/score.h"

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "core/error.h"

namespace mustdrop::eval {
namespace {

TEST(NormalizeAnswer, LowerCasesAndCollapsesWhitespace) {
  EXPECT_EQ(normalize_answer("  Red\tAND\n blue  "), "red and blue");
  EXPECT_EQ(normalize_answer(""), "");
  EXPECT_EQ(normalize_answer(" \n\t "), "");
}

TEST(NormalizeAnswer, RemovesPunctuation) {
  EXPECT_EQ(normalize_answer("Yes."), "yes");
  EXPECT_EQ(normalize_answer("in (the) room!?"), "in room");
  EXPECT_EQ(normalize_answer("red/blue;green"), "red blue green");
  EXPECT_EQ(normalize_answer("t-shirt"), "t shirt");
}

TEST(NormalizeAnswer, DigitPunctuationRules) {
  EXPECT_EQ(normalize_answer("1,000"), "1000");     // comma between digits deleted
  EXPECT_EQ(normalize_answer("2.5 meters"), "2.5 meters");  // decimal point kept
  EXPECT_EQ(normalize_answer("It is 3."), "it is 3");       // sentence period dropped
  EXPECT_EQ(normalize_answer("1, 2"), "1 2");
}

TEST(NormalizeAnswer, DeletesApostrophes) {
  EXPECT_EQ(normalize_answer("don't"), "dont");
  EXPECT_EQ(normalize_answer("dont"), "dont");
  EXPECT_EQ(normalize_answer("man\xE2\x80\x99s hat"), "mans hat");  // curly apostrophe
  EXPECT_EQ(normalize_answer("'yes'"), "yes");
}

TEST(NormalizeAnswer, DropsArticles) {
  EXPECT_EQ(normalize_answer("a dog"), "dog");
  EXPECT_EQ(normalize_answer("The dog"), "dog");
  EXPECT_EQ(normalize_answer("an apple and the pear"), "apple and pear");
  EXPECT_EQ(normalize_answer("another theme"), "another theme");  // whole words only
}

TEST(NormalizeAnswer, NumberWordsToDigits) {
  EXPECT_EQ(normalize_answer("three"), "3");
  EXPECT_EQ(normalize_answer("Zero"), "0");
  EXPECT_EQ(normalize_answer("twelve people"), "12 people");
  EXPECT_EQ(normalize_answer("nineteen"), "19");
  EXPECT_EQ(normalize_answer("forty"), "40");
  EXPECT_EQ(normalize_answer("twenty one"), "21");
  EXPECT_EQ(normalize_answer("Twenty-one"), "21");
  EXPECT_EQ(normalize_answer("twenty ten"), "20 10");  // only a unit 1..9 joins a tens word
  EXPECT_EQ(normalize_answer("twenty zero"), "20 0");
  EXPECT_EQ(normalize_answer("none"), "none");       // not a number here (VQA maps it to 0)
  EXPECT_EQ(normalize_answer("hundred"), "hundred");
}

TEST(ScoreExact, NormalizedEquality) {
  EXPECT_TRUE(score_exact("three", "3"));
  EXPECT_TRUE(score_exact("The dog.", "a dog"));
  EXPECT_TRUE(score_exact("YES", "yes"));
  EXPECT_FALSE(score_exact("dogs", "dog"));
  EXPECT_FALSE(score_exact("Yes, it is.", "yes"));  // the whole prediction, no extraction
  EXPECT_FALSE(score_exact("There are three dogs.", "3"));
}

TEST(Polarity, FirstYesOrNoWordDecides) {
  EXPECT_EQ(polarity("yes."), Polarity::kYes);
  EXPECT_EQ(polarity("Yes, the man is running."), Polarity::kYes);
  EXPECT_EQ(polarity("No, he is walking."), Polarity::kNo);
  EXPECT_EQ(polarity("I think not"), Polarity::kNo);
  EXPECT_EQ(polarity("There is no dog."), Polarity::kNo);
  EXPECT_EQ(polarity("He isn't running"), Polarity::kNo);
  EXPECT_EQ(polarity("Yes, but not fast"), Polarity::kYes);
  EXPECT_EQ(polarity("Not really, yes"), Polarity::kNo);
  EXPECT_EQ(polarity("The man is running."), Polarity::kNone);
  EXPECT_EQ(polarity("eyes nothing known"), Polarity::kNone);  // whole words only
  EXPECT_EQ(polarity(""), Polarity::kNone);
}

TEST(ScoreContains, YesNoGoldUsesPolarity) {
  EXPECT_TRUE(score_contains("Yes, he is.", "yes"));
  EXPECT_TRUE(score_contains("No, she is not.", "no"));
  EXPECT_TRUE(score_contains("He is not swimming.", "No"));
  EXPECT_FALSE(score_contains("No.", "yes"));
  EXPECT_FALSE(score_contains("He is swimming.", "yes"));  // no polarity word at all
  // A "no" somewhere after "yes" does not count: the first polarity word decides.
  EXPECT_FALSE(score_contains("Yes, there is no rain.", "no"));
}

TEST(ScoreContains, WholeWordRun) {
  EXPECT_TRUE(score_contains("The cat sat on a mat.", "cat"));
  EXPECT_FALSE(score_contains("He opens a catalog.", "cat"));
  EXPECT_TRUE(score_contains("It is a black dog.", "the black dog"));
  EXPECT_FALSE(score_contains("The dog is black.", "black dog"));  // contiguous, in order
  EXPECT_TRUE(score_contains("There are three people.", "3"));
  EXPECT_TRUE(score_contains("twenty-one", "21"));
  EXPECT_FALSE(score_contains("anything", ""));
  EXPECT_FALSE(score_contains("anything", "the"));  // gold normalizes to nothing
}

TEST(Bootstrap, AllEqualValuesGiveDegenerateInterval) {
  const std::vector<double> v(50, 0.7);
  const Interval ci = bootstrap_ci(v);
  EXPECT_NEAR(ci.lo, 0.7, 1e-12);
  EXPECT_NEAR(ci.hi, 0.7, 1e-12);
}

TEST(Bootstrap, EmptyInputGivesZero) {
  const Interval ci = bootstrap_ci({});
  EXPECT_EQ(ci.lo, 0.0);
  EXPECT_EQ(ci.hi, 0.0);
}

// Checked against an independent computation: the normal approximation of a proportion's CI.
TEST(Bootstrap, HalfOnesMatchesNormalApproximation) {
  std::vector<double> v(400);
  for (size_t i = 0; i < v.size(); ++i) v[i] = i % 2 == 0 ? 1.0 : 0.0;
  const double half_width_normal = 1.96 * std::sqrt(0.5 * 0.5 / 400.0);  // 0.049
  for (uint64_t seed : {12345ULL, 1ULL, 2ULL, 3ULL}) {
    SCOPED_TRACE(seed);
    const Interval ci = bootstrap_ci(v, 1000, 0.95, seed);
    EXPECT_LT(ci.lo, 0.5);
    EXPECT_GT(ci.hi, 0.5);
    EXPECT_NEAR((ci.hi - ci.lo) / 2.0, half_width_normal, 0.2 * half_width_normal);
    EXPECT_NEAR((ci.hi + ci.lo) / 2.0, 0.5, 0.2 * half_width_normal);
  }
}

// With many resamples the percentiles sit close to the normal quantiles z = 1.960 (95%) and
// z = 1.282 (80%); a level mapped to the wrong tail (a 90% interval for 95%) is 16% off.
TEST(Bootstrap, LevelSetsTheTails) {
  std::vector<double> v(400);
  for (size_t i = 0; i < v.size(); ++i) v[i] = i % 2 == 0 ? 1.0 : 0.0;
  const double se = std::sqrt(0.5 * 0.5 / 400.0);
  for (auto [level, z] : {std::pair{0.95, 1.960}, std::pair{0.80, 1.282}}) {
    for (uint64_t seed : {1ULL, 2ULL, 3ULL}) {
      SCOPED_TRACE(std::to_string(level) + " seed " + std::to_string(seed));
      const Interval ci = bootstrap_ci(v, 5000, level, seed);
      EXPECT_NEAR(0.5 - ci.lo, z * se, 0.08 * z * se);
      EXPECT_NEAR(ci.hi - 0.5, z * se, 0.08 * z * se);
    }
  }
}

TEST(Bootstrap, DeterministicPerSeed) {
  std::vector<double> v;
  for (int i = 0; i < 97; ++i) v.push_back(static_cast<double>((i * 37) % 11) / 10.0);
  const Interval a = bootstrap_ci(v, 500, 0.9, 42);
  const Interval b = bootstrap_ci(v, 500, 0.9, 42);
  EXPECT_EQ(a.lo, b.lo);
  EXPECT_EQ(a.hi, b.hi);
  const Interval c = bootstrap_ci(v, 500, 0.9, 43);
  EXPECT_TRUE(c.lo != a.lo || c.hi != a.hi);
  EXPECT_LE(a.lo, a.hi);
}

TEST(Bootstrap, WiderLevelGivesWiderInterval) {
  std::vector<double> v(200);
  for (size_t i = 0; i < v.size(); ++i) v[i] = i % 4 == 0 ? 1.0 : 0.0;
  const Interval narrow = bootstrap_ci(v, 1000, 0.5, 1);
  const Interval wide = bootstrap_ci(v, 1000, 0.99, 1);
  EXPECT_LT(wide.lo, narrow.lo);
  EXPECT_GT(wide.hi, narrow.hi);
}

TEST(Bootstrap, RejectsBadArguments) {
  const std::vector<double> v = {1, 0};
  EXPECT_THROW(bootstrap_ci(v, 0), ConfigError);
  EXPECT_THROW(bootstrap_ci(v, 100, 1.0), ConfigError);
  EXPECT_THROW(bootstrap_ci(v, 100, 0.0), ConfigError);
}

}  // namespace
}  // namespace mustdrop::eval
