// Tokenizer tests against the SentencePiece CLI on the models of tokenizer_support.h: encode and
// decode (decode_next included), added tokens, tokenizer_config.json / added_tokens.json /
// special_tokens_map.json handling, load errors and the shim's error path. The prefix-space
// rules are in tokenizer_rule_test.cpp, special tokens in decode and TextStream in
// tokenizer_stream_test.cpp.
//
// These run in a LibTorch-free binary; tests/unit/model/vlm_test.cpp loads the same tokenizer
// inside a LibTorch process (the protobuf clash the dlopen'ed shim exists for).
#include "model/tokenizer.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "tokenizer_support.h"

namespace mustdrop::model::test_tokenizer {
namespace {

struct Line {
  std::string text;
  bool nmt_roundtrips;  // false where nmt_nfkc normalisation changes the text (spaces, NFKC)
};

// The shared case list: plain English, unicode, emoji, digits, punctuation, odd spacing.
const std::vector<Line>& lines() {
  static const std::vector<Line> cases = {
      {"What colour is the car? The car is red.", true},
      {"How many people are walking? Two people are walking.", true},
      {"Is it raining in the video? Yes, it is raining lightly.", true},
      {"The café on the corner sells naïve paintings.", true},
      {"A red 🚗 drives past 3 people and a 🐕.", true},
      {"😀😃😄", true},
      {"Digits: 0123456789 and 3.14159, 42%, $5.50", true},
      {"The year 2024, the time 18:40, the score 3-2.", true},
      {"UPPER CASE WORDS and lower case words", true},
      {"Ümlaut, Öl, Äpfel und die Straße.", true},
      {"日本語のテキストです。", true},
      {"Привет, мир!", true},
      {"Ελληνικά γράμματα", true},
      {"עברית ועוד", true},
      {"مرحبا بالعالم", true},
      {"email@example.com and https://example.org/path?q=1&x=2", true},
      {"C++ code: int x = y * 2; // comment", true},
      {"A backslash \\ a tilde ~ a caret ^ and a pipe |", true},
      {"Quotes \"double\" and 'single', (parens) [brackets] {braces}.", true},
      {"Dashes — and – are kept.", true},
      {"<not an added token> <imag> <image", true},
      {"x", true},
      {"a b c d e f g", true},
      {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", true},
      {"zebra giraffe elephant penguin", true},
      {"  two leading spaces", false},
      {"trailing spaces   ", false},
      {"multiple    spaces   inside", false},
      {"   ", false},
      {"tab\tseparated\twords", false},
      {"An ellipsis… and a ligature ﬁsh", false},            // NFKC: "...", "fi"
      {"Ｆｕｌｌｗｉｄｔｈ letters", false},                   // NFKC: "Fullwidth"
      {"cafe\xCC\x81 with a combining accent", false},        // NFKC composes "é"
  };
  return cases;
}

std::vector<std::string> texts() {
  std::vector<std::string> out;
  for (const auto& line : lines()) out.push_back(line.text);
  return out;
}

class TokenizerTest : public ::testing::TestWithParam<Flavour> {
 protected:
  void SetUp() override {
    dir_ = model_dir(GetParam());
    ASSERT_FALSE(dir_.empty());
    tok_ = Tokenizer::load(dir_);
  }
  std::string dir_;
  std::unique_ptr<Tokenizer> tok_;
};

TEST_P(TokenizerTest, SpecialIdsAndVocab) {
  EXPECT_EQ(tok_->unk_id(), 0);
  EXPECT_EQ(tok_->bos_id(), 1);
  EXPECT_EQ(tok_->eos_id(), 2);
  EXPECT_EQ(tok_->vocab_size(), kSpVocab + 3);
  EXPECT_EQ(tok_->added_token_id("<image>"), kImageId);
  EXPECT_EQ(tok_->added_token_id("<video>"), kVideoId);
  EXPECT_EQ(tok_->added_token_id("<pad>"), kPadId);
  EXPECT_EQ(tok_->added_token_id("<audio>"), -1);
}

TEST_P(TokenizerTest, EncodeMatchesSpmEncode) {
  const auto ref = spm_encode(dir_, texts());
  for (size_t i = 0; i < lines().size(); ++i) {
    const std::string& text = lines()[i].text;
    EXPECT_EQ(tok_->encode(text, false), ref[i]) << "[" << text << "]";
    EXPECT_EQ(tok_->encode(text, true), concat({1}, ref[i])) << "[" << text << "]";
  }
}

TEST_P(TokenizerTest, DecodeMatchesSpmDecodeAndRoundTrips) {
  std::vector<std::vector<int>> encoded;
  for (const auto& line : lines()) encoded.push_back(tok_->encode(line.text, false));
  const auto ref = spm_decode(dir_, encoded);
  for (size_t i = 0; i < lines().size(); ++i) {
    const Line& line = lines()[i];
    const std::string decoded = tok_->decode(encoded[i]);
    EXPECT_EQ(decoded, ref[i]) << "[" << line.text << "]";
    // Identity normalisation keeps every text; nmt_nfkc rewrites spacing and NFKC forms.
    if (GetParam() == Flavour::kLlama || line.nmt_roundtrips) {
      EXPECT_EQ(decoded, line.text);
    } else {
      EXPECT_NE(decoded, line.text) << "nmt_nfkc no longer changes this line; flip its flag";
    }
    EXPECT_EQ(tok_->decode(concat(concat({1}, encoded[i]), {2})), decoded) << "bos/eos skipped";
  }
}

TEST_P(TokenizerTest, AddedTokensBecomeSingleIds) {
  EXPECT_EQ(tok_->encode("<image>", false), std::vector<int>{kImageId});
  EXPECT_EQ(tok_->encode("<image><video><pad>", true),
            (std::vector<int>{1, kImageId, kVideoId, kPadId}));
  // Legacy (HF slow Llama, legacy=True): each stretch around an added token is encoded on its
  // own, dummy prefix included. spm_encode of the stretches is the reference.
  const auto ref = spm_encode(dir_, {"USER: ", " What is shown? ASSISTANT:", "the red car"});
  EXPECT_EQ(tok_->encode("USER: <image> What is shown? ASSISTANT:", true),
            concat(concat({1}, ref[0]), concat({kImageId}, ref[1])));
  EXPECT_EQ(tok_->encode("<video>the red car<image>", false),
            concat(concat({kVideoId}, ref[2]), {kImageId}));
}

TEST(TokenizerLlamaTest, ImagePromptWithNewlineIsLegacySegmentEncoding) {
  const std::string dir = model_dir(Flavour::kLlama);
  ASSERT_FALSE(dir.empty());
  const auto tok = Tokenizer::load(dir);
  const std::string prompt = "USER: <image>\nWhat is shown? ASSISTANT:";
  // spm_encode reads lines, so "\nWhat ..." cannot be given to it directly. Neither '\n' nor
  // '\x01' is in the corpus: each is one byte-fallback piece of equal score that no other piece
  // spans, so the segmentation of "\x01What ..." is that of "\nWhat ..." with one byte swapped.
  const auto ref = spm_encode(dir, {"USER: ", "\x01What is shown? ASSISTANT:", "\x01"});
  ASSERT_FALSE(ref[2].empty());  // "▁" then <0x01>
  const int byte_01 = ref[2].back();
  const int byte_0a = byte_01 + 9;  // byte pieces are consecutive <0x00>..<0xFF>
  std::vector<int> newline_segment = ref[1];
  for (int& id : newline_segment) {
    if (id == byte_01) id = byte_0a;
  }
  EXPECT_EQ(tok->encode(prompt, true),
            concat(concat({1}, ref[0]), concat({kImageId}, newline_segment)));
  // <image> (old-format added token, so special) is skipped without splitting the run: the
  // "▁" its stretch got stays a space, as in transformers' decode(skip_special_tokens=True).
  EXPECT_EQ(tok->decode(tok->encode(prompt, true)), "USER:  \nWhat is shown? ASSISTANT:");
}

TEST_P(TokenizerTest, DecodeSkipsSpecialsWithoutSplittingTheRun) {
  const std::string text = "USER: <image> What colour is the car? ASSISTANT: red";
  const auto ids = tok_->encode(text, true);
  ASSERT_EQ(ids[0], 1);
  // The old-format added tokens (<image>, <video>, <pad>) are special, like bos/eos/unk: the
  // reference is spm_decode of the ids without them, one run.
  std::vector<int> pieces;
  for (const int id : ids) {
    if (id > 2 && id < kSpVocab) pieces.push_back(id);
  }
  const std::string expected = spm_decode(dir_, {pieces})[0];
  EXPECT_EQ(tok_->decode(ids), expected);
  EXPECT_EQ(expected, GetParam() == Flavour::kLlama
                          ? "USER:   What colour is the car? ASSISTANT: red"
                          : "USER: What colour is the car? ASSISTANT: red");
  // pad (named by special_tokens_map.json), bos, eos, unk and other control ids vanish without
  // splitting the SentencePiece run around them.
  auto padded = concat(ids, {kPadId, 2, kPadId, 0, kVideoId});
  padded.insert(padded.begin() + 3, 1);
  padded.insert(padded.begin() + 2, 0);
  EXPECT_EQ(tok_->decode(padded), expected);
  EXPECT_EQ(tok_->decode({kVideoId, kImageId, 0, 1, 2}), "");
  EXPECT_EQ(tok_->decode({}), "");
  EXPECT_THROW(tok_->decode({kSpVocab + 3}), ModelError);
  EXPECT_THROW(tok_->decode({-5}), ModelError);
}

TEST_P(TokenizerTest, DecodeNextStreamsLikeDecode) {
  const std::vector<std::string> sentences = {
      "What colour is the car? The car is red, and it drives past 3 people.",
      "USER: <image>\nWhat is shown? ASSISTANT: A 🚗 at a café, naïve   and   slow 😀😃",
      "<video><image>words after added tokens and a long tail of many many words here",
      "日本語のテキストです。 Ελληνικά γράμματα 🇫🇷",
      // Over 64 byte pieces in one run: the window has to start at a byte piece.
      "vehicles and animals: 🚗🚕🚙🚌🚎🏎🚓🚑🚒🚐🛻🚚🚛🚜🐕🐈🐎🐄🐖🐑🐐🐓🦆🦢 done",
  };
  for (const auto& sentence : sentences) {
    const auto ids = concat(tok_->encode(sentence, true), {2});
    std::string streamed;
    std::vector<int> previous;
    for (const int id : ids) {
      const std::string piece = tok_->decode_next(previous, id);
      // The contract where it is well defined (the earlier text is not mid-character).
      const std::string before = tok_->decode(previous);
      const std::string after = tok_->decode(concat(previous, {id}));
      const bool partial = before.find("\xEF\xBF\xBD") != std::string::npos ||
                           after.find("\xEF\xBF\xBD") != std::string::npos;  // U+FFFD
      if (!partial && after.compare(0, before.size(), before) == 0) {
        EXPECT_EQ(piece, after.substr(before.size())) << "id " << id << " in [" << sentence << "]";
      }
      streamed += piece;
      previous.push_back(id);
    }
    EXPECT_EQ(streamed, tok_->decode(ids)) << "[" << sentence << "]";
  }
  // A "▁word" piece after other text yields " word", at the start of a text just "word".
  const auto car = tok_->encode("the car", false);
  ASSERT_GE(car.size(), 2u);
  EXPECT_EQ(tok_->decode_next({car.begin(), car.end() - 1}, car.back()),
            tok_->decode(car).substr(tok_->decode({car.begin(), car.end() - 1}).size()));
  EXPECT_EQ(tok_->decode_next({1}, car.front()), tok_->decode({car.front()}));
  EXPECT_EQ(tok_->decode_next({1, kImageId}, car.front()), tok_->decode({car.front()}));
  EXPECT_EQ(tok_->decode_next(car, 2), "");
}

TEST_P(TokenizerTest, DecodeNextHoldsBackPartialCharacters) {
  // 🚗 is not in the corpus: byte fallback, <0xF0><0x9F><0x9A><0x97> after the "▁" piece.
  const auto ids = tok_->encode("go 🚗", false);
  ASSERT_GE(ids.size(), 5u);
  std::vector<int> previous;
  std::vector<std::string> pieces;
  for (const int id : ids) {
    pieces.push_back(tok_->decode_next(previous, id));
    previous.push_back(id);
  }
  const size_t n = pieces.size();
  EXPECT_EQ(pieces[n - 5], " ");
  EXPECT_EQ(pieces[n - 4] + pieces[n - 3] + pieces[n - 2], "") << "no partial UTF-8 is emitted";
  EXPECT_EQ(pieces[n - 1], "🚗");
  // A character that never completes still comes out, as SentencePiece renders it, once the
  // next piece shows it is broken.
  const std::vector<int> broken(ids.begin(), ids.end() - 1);
  const auto car = tok_->encode("car", false);
  std::string streamed;
  std::vector<int> prefix;
  for (const int id : concat(broken, car)) {
    streamed += tok_->decode_next(prefix, id);
    prefix.push_back(id);
  }
  EXPECT_EQ(streamed, tok_->decode(concat(broken, car)));
  EXPECT_NE(streamed.find("\xEF\xBF\xBD"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Tokenizer, TokenizerTest,
                         ::testing::Values(Flavour::kLlama, Flavour::kNmt),
                         [](const auto& info) {
                           return info.param == Flavour::kLlama ? "Llama" : "Nmt";
                         });

// ModelError whose message contains `needle` (and the message, for the log).
::testing::AssertionResult load_fails_with(const std::string& dir, const std::string& needle) {
  try {
    Tokenizer::load(dir);
  } catch (const ModelError& e) {
    if (std::string(e.what()).find(needle) != std::string::npos) {
      return ::testing::AssertionSuccess() << e.what();
    }
    return ::testing::AssertionFailure() << "message lacks [" << needle << "]: " << e.what();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "not a ModelError: " << e.what();
  }
  return ::testing::AssertionFailure() << "no error loading " << dir;
}

TEST(TokenizerConfigTest, AddedTokensDecoderLongestMatchFirstAndSpecialNames) {
  const std::string dir = make_dir(
      "tok_config",
      {{"tokenizer_config.json",
        R"({"added_tokens_decoder": {
              "0": {"content": "<unk>", "special": true},
              "800": {"content": "<im>", "special": true},
              "801": {"content": "<im>_end", "special": false}},
            "bos_token": "<s>", "eos_token": {"content": "</s>"}, "pad_token": null})"},
       {"special_tokens_map.json", R"({"pad_token": {"content": "<im>"}})"}});
  const auto tok = Tokenizer::load(dir);
  EXPECT_EQ(tok->vocab_size(), 802);
  EXPECT_EQ(tok->added_token_id("<im>_end"), 801);
  const auto ref = spm_encode(dir, {"a", " b", " c"});
  EXPECT_EQ(tok->encode("a<im>_end b<im> c", false),
            concat(concat(concat(ref[0], {801}), concat(ref[1], {800})), ref[2]));
  EXPECT_EQ(tok->encode("<unk>", false), std::vector<int>{0});
  EXPECT_EQ(tok->decode({801, 800, 801}), "<im>_end<im>_end") << "pad <im> is skipped";
}

TEST(TokenizerConfigTest, ModelAloneGivesSpmSpecialIds) {
  const std::string dir = make_dir("tok_plain", {});
  const auto tok = Tokenizer::load(dir);
  EXPECT_EQ(tok->unk_id(), 0);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->vocab_size(), kSpVocab);
  EXPECT_EQ(tok->added_token_id("<image>"), -1);
  EXPECT_EQ(tok->encode("USER: <image>", false), spm_encode(dir, {"USER: <image>"})[0]);
}

TEST(TokenizerErrorTest, MissingTokenizerModel) {
  const std::string dir = make_dir("tok_missing", {{"added_tokens.json", "{}"}}, false);
  EXPECT_TRUE(load_fails_with(dir, dir + "/tokenizer.model: missing"));
}

TEST(TokenizerErrorTest, GarbageTokenizerModel) {
  const std::string dir = make_dir("tok_garbage", {});
  std::mt19937 rng(1234);
  std::string bytes(4096, '\0');
  for (char& c : bytes) c = static_cast<char>(rng() & 0xFF);
  write_file(dir + "/tokenizer.model", bytes);
  EXPECT_TRUE(load_fails_with(dir, dir + "/tokenizer.model: not a readable SentencePiece model"));
  write_file(dir + "/tokenizer.model", "");
  EXPECT_TRUE(load_fails_with(dir, dir + "/tokenizer.model"));
}

TEST(TokenizerErrorTest, MalformedJsonNamesTheFile) {
  for (const std::string file :
       {"added_tokens.json", "tokenizer_config.json", "special_tokens_map.json"}) {
    const std::string dir = make_dir("tok_bad_" + file, {{file, "{\"<image>\": 32000,"}});
    EXPECT_TRUE(load_fails_with(dir, dir + "/" + file + ": malformed JSON"));
  }
  const std::string dir = make_dir("tok_bad_id", {{"added_tokens.json", R"({"<image>": "x"})"}});
  EXPECT_TRUE(load_fails_with(dir, dir + "/added_tokens.json: \"<image>\""));
  const std::string dir2 =
      make_dir("tok_bad_name", {{"special_tokens_map.json", R"({"eos_token": "<nope>"})"}});
  EXPECT_TRUE(load_fails_with(dir2, dir2 + "/special_tokens_map.json: eos_token \"<nope>\""));
}

TEST(TokenizerErrorTest, MalformedTokenizerJsonNamesTheFile) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"{\"normalizer\": ", "malformed JSON"},
      {"[1, 2]", "expected a JSON object"},
      {R"({"normalizer": 3})", "normalizer must be null or an object"},
      {R"({"normalizer": {"type": "Sequence"}})",
       "normalizer of type Sequence needs an array \"normalizers\""},
      {R"({"pre_tokenizer": {"type": "Sequence", "pretokenizers": {}}})",
       "pre_tokenizer of type Sequence needs an array \"pretokenizers\""},
      {R"({"pre_tokenizer": {"type": "Metaspace", "prepend_scheme": "sometimes"}})",
       "pre_tokenizer Metaspace prepend_scheme \"sometimes\""},
      {R"({"pre_tokenizer": {"type": "Metaspace", "add_prefix_space": "yes"}})",
       "pre_tokenizer Metaspace add_prefix_space"},
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    const std::string dir =
        make_dir("tok_bad_fast_" + std::to_string(i), {{"tokenizer.json", bad[i].first}});
    EXPECT_TRUE(load_fails_with(dir, dir + "/tokenizer.json: " + bad[i].second)) << i;
  }
  const std::string dir = make_dir("tok_bad_legacy", {{"tokenizer_config.json",
                                                       R"({"legacy": "no"})"}});
  EXPECT_TRUE(load_fails_with(dir, dir + "/tokenizer_config.json: legacy"));
  const std::string dir2 = make_dir(
      "tok_bad_special",
      {{"tokenizer_config.json", R"({"added_tokens_decoder": {"800": {"content": "<x>",
                                                                  "special": 1}}})"}});
  EXPECT_TRUE(load_fails_with(dir2, dir2 + "/tokenizer_config.json: added_tokens_decoder.800"));
  const std::string dir3 = make_dir(
      "tok_bad_additional",
      {{"special_tokens_map.json", R"({"additional_special_tokens": "<x>"})"}});
  EXPECT_TRUE(load_fails_with(dir3, dir3 + "/special_tokens_map.json: additional_special_tokens"));
}

// The shim is opened once per process, so these run in a fresh process (threadsafe death
// tests re-execute the binary) with MUSTDROP_SPM_SHIM pointing somewhere wrong.
TEST(TokenizerShimDeathTest, BadShimPathIsReportedWithDlerror) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::string dir = model_dir(Flavour::kLlama);
  ASSERT_FALSE(dir.empty());
  const std::string not_elf = dir + "/added_tokens.json";
  const auto try_load = [&](const std::string& shim) {
    setenv("MUSTDROP_SPM_SHIM", shim.c_str(), 1);
    try {
      Tokenizer::load(dir);
    } catch (const ModelError& e) {
      std::fprintf(stderr, "%s\n", e.what());
      std::exit(3);
    }
    std::exit(0);
  };
  EXPECT_EXIT(try_load(not_elf), ::testing::ExitedWithCode(3),
              "SentencePiece shim.*added_tokens.json: .*(invalid ELF header|too short)");
  EXPECT_EXIT(try_load("/nonexistent/shim.so"), ::testing::ExitedWithCode(3),
              "/nonexistent/shim.so: no such file");
}

}  // namespace
}  // namespace mustdrop::model::test_tokenizer
