// The prefix-space rules (docs/model.md): legacy and non-legacy tokenizer_config.json,
// tokenizer.json's Prepend normalizer and Metaspace prepend_scheme. They are checked against
// spm_encode on the models of tokenizer_support.h and on copies with add_dummy_prefix turned off
// (4 appended bytes: a second normalizer_spec holding add_dummy_prefix = false, which protobuf
// merges into the first), the rule applied here by hand, per stretch.
#include "model/tokenizer.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "support/test_support.h"
#include "tokenizer_support.h"

namespace mustdrop::model::test_tokenizer {
namespace {

namespace fs = std::filesystem;
using test::run_process;

const std::string kMeta = "\xE2\x96\x81";  // "▁"
const std::string kLlamaAdded = "{\"<image>\": 800, \"<video>\": 801, \"<pad>\": 802}\n";
const std::string kLlamaSpecialMap =
    R"({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"})";

// A model without dummy prefix, in a directory of its own (once per process and flavour).
const std::string& plain_model_dir(Flavour flavour = Flavour::kLlama) {
  static std::map<Flavour, std::string> dirs;
  auto [it, fresh] = dirs.emplace(flavour, "");
  if (!fresh) return it->second;
  const std::string& src = model_dir(flavour);
  const std::string out =
      test::temp_dir() + (flavour == Flavour::kLlama ? "/tok_llama_plain" : "/tok_nmt_plain");
  fs::create_directories(out);
  std::ifstream in(src + "/tokenizer.model", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  write_file(out + "/tokenizer.model", bytes + std::string("\x1A\x02\x18\x00", 4));
  it->second = out;
  return it->second;
}

// Ids assembled from spm_encode lines: text parts (for the llama model or the plain one, the
// first `cut` ids dropped) and literal ids, one list per prompt.
class Reference {
 public:
  void text(const std::string& line, bool plain, size_t cut = 0) {
    auto& lines = plain ? plain_lines_ : llama_lines_;
    parts_.back().push_back({-1, plain, lines.size(), cut});
    lines.push_back(line);
  }
  void id(int id) { parts_.back().push_back({id, false, 0, 0}); }
  void next_prompt() { parts_.emplace_back(); }
  std::vector<std::vector<int>> ids() const {
    const auto llama = spm_encode(model_dir(Flavour::kLlama), llama_lines_);
    const auto plain = spm_encode(plain_model_dir(), plain_lines_);
    std::vector<std::vector<int>> out;
    for (const auto& prompt : parts_) {
      std::vector<int> ids;
      for (const Part& p : prompt) {
        if (p.id >= 0) {
          ids.push_back(p.id);
          continue;
        }
        const auto& seg = (p.plain ? plain : llama)[p.line];
        EXPECT_GE(seg.size(), p.cut);
        ids.insert(ids.end(), seg.begin() + static_cast<std::ptrdiff_t>(p.cut), seg.end());
      }
      out.push_back(ids);
    }
    return out;
  }

 private:
  struct Part {
    int id;
    bool plain;
    size_t line;
    size_t cut;
  };
  std::vector<std::vector<Part>> parts_;
  std::vector<std::string> llama_lines_, plain_lines_;
};

// `text` split at every "<image>" (the only added token in these prompts).
std::vector<std::string> split_at_image(const std::string& text) {
  std::vector<std::string> stretches;
  size_t begin = 0;
  for (size_t at; (at = text.find("<image>", begin)) != std::string::npos; begin = at + 7) {
    stretches.push_back(text.substr(begin, at - begin));
  }
  stretches.push_back(text.substr(begin));
  return stretches;
}

bool starts_with_space(const std::string& s) {
  return (!s.empty() && s[0] == ' ') || s.compare(0, kMeta.size(), kMeta) == 0;
}

enum class Rule { kLegacy, kNonLegacy, kNonLegacyNoPrefix, kPrepend, kFirst, kAlways, kNever };

// Prompts with the placeholder at the start, middle and end, whitespace runs, tabs, digits,
// literal "▁", and text outside the vocabulary (byte fallback: CJK, emoji).
const std::vector<std::string>& rule_prompts() {
  static const std::vector<std::string> prompts = {
      "USER: <image> What colour is the car? ASSISTANT:",
      "USER: <image>What is shown? ASSISTANT:",
      "<image> Describe the 2 dogs.",
      "<image>Describe   the video in 10 words",
      "How many cars? Answer with digits: 042 and 7<image>",
      "  two leading spaces <image>  then\ttabs\tand   runs   <image>   ",
      "\tstarts with a tab<image>\tand a tab after",
      "日本語のテキスト 🚗<image>😀 ok 🐕",
      "word" + kMeta + "with" + kMeta + "meta <image>" + kMeta + "after meta",
      kMeta + "starts with meta",
      "plain text without placeholder",
      "<image>",
      "<image><image> two in a row",
      " <image> ",
      "",
  };
  return prompts;
}

// The ids transformers gives for rule_prompts() under `rule`, worked out stretch by stretch.
std::vector<std::vector<int>> rule_reference(Rule rule) {
  const size_t unk_pieces = spm_encode(plain_model_dir(), {"<unk>"})[0].size();
  const auto meta_ids = spm_encode(plain_model_dir(), {kMeta})[0];
  EXPECT_EQ(meta_ids.size(), 1u) << "the llama model has a lone \"▁\" piece";
  Reference ref;
  for (std::string text : rule_prompts()) {
    ref.next_prompt();
    if (text.empty()) continue;
    if (rule == Rule::kNonLegacy || rule == Rule::kNonLegacyNoPrefix) {
      // "▁" -> " ", then one "▁" in front of the whole text (add_prefix_space).
      for (size_t at; (at = text.find(kMeta)) != std::string::npos;) text.replace(at, 3, " ");
      if (rule == Rule::kNonLegacy) text = kMeta + text;
    }
    const auto stretches = split_at_image(text);
    for (size_t i = 0; i < stretches.size(); ++i) {
      const std::string& s = stretches[i];
      if (i > 0) ref.id(kImageId);
      if (s.empty()) continue;
      switch (rule) {
        case Rule::kLegacy:
          ref.text(s, false);  // SentencePiece's own dummy prefix
          break;
        case Rule::kNonLegacy:
        case Rule::kNonLegacyNoPrefix:
          if (starts_with_space(s)) {
            ref.text("<unk>" + s, true, unk_pieces);  // the unk trick keeps the leading space
          } else {
            ref.text(s, true);
          }
          break;
        case Rule::kPrepend:
          ref.text(kMeta + s, true);
          break;
        case Rule::kFirst:
        case Rule::kAlways: {
          const bool gets = (rule == Rule::kAlways || i == 0) && !starts_with_space(s);
          ref.text(gets ? kMeta + s : s, true);
          break;
        }
        case Rule::kNever:
          ref.text(s, true);
          break;
      }
    }
  }
  auto out = ref.ids();
  if (rule == Rule::kNonLegacy || rule == Rule::kNonLegacyNoPrefix) {
    for (auto& ids : out) {  // a lone "▁" right before a special token is dropped
      if (ids.size() > 1 && ids[0] == meta_ids[0] && ids[1] == kImageId) ids.erase(ids.begin());
    }
  }
  return out;
}

struct RuleCase {
  std::string name;
  Rule rule;
  std::string config;  // tokenizer_config.json ("" = none)
  std::string fast;    // tokenizer.json ("" = none)
};

std::vector<RuleCase> rule_cases() {
  // A "model" section like a real tokenizer.json's, which load() must skip.
  const std::string model = R"("model": {"type": "Unigram", "vocab": [["<unk>", 0.0], ["a", -1]]})";
  return {
      {"legacy_absent", Rule::kLegacy, "", ""},
      {"legacy_true", Rule::kLegacy, R"({"legacy": true})", ""},
      {"legacy_null", Rule::kLegacy, R"({"legacy": null, "add_prefix_space": false})", ""},
      {"legacy_false", Rule::kNonLegacy, R"({"legacy": false})", ""},
      {"legacy_false_no_prefix", Rule::kNonLegacyNoPrefix,
       R"({"legacy": false, "add_prefix_space": false})", ""},
      // tokenizer.json decides over tokenizer_config.json's legacy.
      {"fast_prepend", Rule::kPrepend, R"({"legacy": false})",
       R"({"normalizer": {"type": "Sequence", "normalizers": [
             {"type": "Prepend", "prepend": "▁"},
             {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
           "pre_tokenizer": null, )" + model + "}"},
      {"fast_first", Rule::kFirst, R"({"legacy": true})",
       R"({"normalizer": null, "pre_tokenizer": {"type": "Metaspace", "replacement": "▁",
           "prepend_scheme": "first", "split": false}, )" + model + "}"},
      {"fast_always_old_format", Rule::kAlways, "",
       R"({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
             {"type": "Digits", "individual_digits": true},
             {"type": "Metaspace", "replacement": "▁", "add_prefix_space": true}]}})"},
      {"fast_never", Rule::kNever, "",
       R"({"normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
           "pre_tokenizer": {"type": "Metaspace", "replacement": "▁",
                             "prepend_scheme": "never"}})"},
      {"fast_neither", Rule::kNever, R"({"legacy": true})",
       R"({"normalizer": {"type": "Prepend", "prepend": "x"}, "pre_tokenizer": null})"},
  };
}

void PrintTo(const RuleCase& c, std::ostream* os) { *os << c.name; }

class TokenizerRuleTest : public ::testing::TestWithParam<RuleCase> {};

TEST_P(TokenizerRuleTest, EncodeAppliesThePrefixRule) {
  const RuleCase& c = GetParam();
  std::map<std::string, std::string> files = {{"added_tokens.json", kLlamaAdded},
                                              {"special_tokens_map.json", kLlamaSpecialMap}};
  if (!c.config.empty()) files["tokenizer_config.json"] = c.config;
  if (!c.fast.empty()) files["tokenizer.json"] = c.fast;
  const auto tok = Tokenizer::load(make_dir("tok_rule_" + c.name, files));
  const auto ref = rule_reference(c.rule);
  for (size_t i = 0; i < rule_prompts().size(); ++i) {
    const std::string& prompt = rule_prompts()[i];
    EXPECT_EQ(tok->encode(prompt, false), ref[i]) << "[" << prompt << "]";
    EXPECT_EQ(tok->encode(prompt, true), concat({1}, ref[i])) << "[" << prompt << "]";
  }
  // The reference tells the rules apart, so this test cannot pass with the wrong rule.
  if (c.rule != Rule::kLegacy && c.rule != Rule::kPrepend) {
    EXPECT_NE(ref, rule_reference(Rule::kLegacy));
  }
}

INSTANTIATE_TEST_SUITE_P(Tokenizer, TokenizerRuleTest, ::testing::ValuesIn(rule_cases()),
                         [](const auto& info) { return info.param.name; });

TEST(TokenizerRuleTest, PlainModelHasNoDummyPrefix) {
  // The 4 appended bytes work: "hello" loses its leading "▁" piece, "▁hello" gets it back.
  const auto r = run_process({"spm_encode", "--model=" + plain_model_dir() + "/tokenizer.model",
                              "--output_format=piece",
                              "--input=" + lines_file("plain.txt", {"hello", kMeta + "hello"})});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = split_lines(r.out);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[0].compare(0, kMeta.size(), kMeta), 0) << lines[0];
  EXPECT_EQ(lines[1].compare(0, kMeta.size(), kMeta), 0) << lines[1];
  const std::string& dir = model_dir(Flavour::kLlama);
  EXPECT_EQ(spm_encode(plain_model_dir(), {kMeta + "hello"}), spm_encode(dir, {"hello"}));
  EXPECT_NE(spm_encode(plain_model_dir(), {"hello"}), spm_encode(dir, {"hello"}));
  // And inside the tokenizer: tokenizer.json with neither Prepend nor Metaspace, no prefix.
  const auto tok = Tokenizer::load(make_dir("tok_rule_plain", {{"tokenizer.json", "{}"}}));
  EXPECT_EQ(tok->encode("hello", false), spm_encode(plain_model_dir(), {"hello"})[0]);
}

TEST(TokenizerRuleTest, NonLegacyKeepsTheSpaceBeforeANonSpecialToken) {
  const std::string dir = make_dir(
      "tok_rule_nonspecial",
      {{"tokenizer_config.json", R"({"legacy": false, "added_tokens_decoder": {
           "800": {"content": "<image>", "special": true},
           "801": {"content": "<video>", "special": false}}})"}});
  const auto tok = Tokenizer::load(dir);
  const size_t cut = spm_encode(plain_model_dir(), {"<unk>"})[0].size();
  // "▁<video> x": the stretch "▁" stays (only a special token drops it); " x" by the unk trick.
  const auto ref = spm_encode(plain_model_dir(), {"<unk>" + kMeta, "<unk> x"});
  ASSERT_EQ(ref[0].size(), cut + 1);
  const std::vector<int> space(ref[0].begin() + static_cast<std::ptrdiff_t>(cut), ref[0].end());
  const std::vector<int> x(ref[1].begin() + static_cast<std::ptrdiff_t>(cut), ref[1].end());
  EXPECT_EQ(tok->encode("<video> x", false), concat(concat(space, {801}), x));
  EXPECT_EQ(tok->encode("<image> x", false), concat({800}, x));
}

TEST(TokenizerRuleTest, NonLegacyUnkTrickKeepsALeadingSpaceTheModelWouldStrip) {
  // The nmt model removes leading whitespace, so " What" alone loses its "▁"; behind "<unk>"
  // it keeps it. The identity-normalised llama model cannot tell the two apart.
  const std::string& nmt = model_dir(Flavour::kNmt);
  const std::string& plain = plain_model_dir(Flavour::kNmt);
  const std::string dir = make_dir("tok_rule_nmt_nonlegacy", {}, false);
  fs::copy_file(nmt + "/tokenizer.model", dir + "/tokenizer.model",
                fs::copy_options::overwrite_existing);
  write_file(dir + "/tokenizer_config.json", R"({"legacy": false})");
  write_file(dir + "/added_tokens.json", kLlamaAdded);
  const auto tok = Tokenizer::load(dir);
  // "USER: <image> What is shown?" -> "▁USER: " <image> " What is shown?", both by the trick.
  const auto ref = spm_encode(plain, {"<unk>", "<unk>" + kMeta + "USER: ", "<unk> What is shown?",
                                      " What is shown?"});
  const auto cut = static_cast<std::ptrdiff_t>(ref[0].size());
  const std::vector<int> user(ref[1].begin() + cut, ref[1].end());
  const std::vector<int> what(ref[2].begin() + cut, ref[2].end());
  ASSERT_NE(what, ref[3]) << "the nmt model no longer strips a leading space";
  EXPECT_EQ(tok->encode("USER: <image> What is shown?", false),
            concat(concat(user, {kImageId}), what));
}

}  // namespace
}  // namespace mustdrop::model::test_tokenizer
