// Tokenizer tests. The reference is the SentencePiece CLI (spm_encode / spm_decode) on models
// trained here with spm_train from tools/data/tiny_corpus.txt, so nothing is compared against
// this code's own earlier output. Two models: "llama" has the settings of Llama's
// tokenizer.model (identity normalisation, whitespace kept, digits split, byte fallback);
// "nmt" has spm_train's defaults (nmt_nfkc, extra whitespace removed), like tools/ trains.
// The prefix-space rules are checked against spm_encode on those models and on copies with
// add_dummy_prefix turned off, the rule applied by hand per stretch (docs/model.md).
//
// These run in a LibTorch-free binary; tests/unit/model/vlm_test.cpp loads the same tokenizer
// inside a LibTorch process (the protobuf clash the dlopen'ed shim exists for).
#include "model/tokenizer.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "support/test_support.h"


namespace mustdrop::model {
namespace {

namespace fs = std::filesystem;
using test::run_process;

constexpr int kSpVocab = 800;  // SentencePiece pieces; added tokens get the ids after them
constexpr int kImageId = kSpVocab;
constexpr int kVideoId = kSpVocab + 1;
constexpr int kPadId = kSpVocab + 2;

enum class Flavour { kLlama, kNmt };

void write_file(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
  ASSERT_TRUE(out.good()) << path;
}

// A model directory (once per process): tokenizer.model from spm_train plus a LLaVA-style
// added_tokens.json and special_tokens_map.json. "" (and a test failure) if spm_train fails.
const std::string& model_dir(Flavour flavour) {
  static std::map<Flavour, std::string> dirs;
  auto [it, fresh] = dirs.emplace(flavour, "");
  if (!fresh) return it->second;
  const std::string dir =
      test::temp_dir() + (flavour == Flavour::kLlama ? "/tok_llama" : "/tok_nmt");
  fs::create_directories(dir);
  std::vector<std::string> argv = {
      "spm_train",
      "--input=" + test::source_dir() + "/tools/data/tiny_corpus.txt",
      "--model_prefix=" + dir + "/tokenizer",
      "--vocab_size=" + std::to_string(kSpVocab),
      "--model_type=unigram",
      "--character_coverage=1.0",
      "--byte_fallback=true",
      "--num_threads=4",
  };
  if (flavour == Flavour::kLlama) {
    argv.insert(argv.end(), {"--normalization_rule_name=identity",
                             "--remove_extra_whitespaces=false", "--split_digits=true",
                             "--allow_whitespace_only_pieces=true"});
  }
  const auto r = run_process(argv);
  if (r.exit_code != 0) {
    ADD_FAILURE() << "spm_train failed (" << r.exit_code << "):\n" << r.err;
    return it->second;
  }
  write_file(dir + "/added_tokens.json",
             "{\"<image>\": 800, \"<video>\": 801, \"<pad>\": 802}\n");
  write_file(dir + "/special_tokens_map.json",
             R"({"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>",
                 "unk_token": "<unk>", "pad_token": "<pad>"})");
  it->second = dir;
  return it->second;
}

// One text per line for the CLI (no '\n' inside a line).
std::string lines_file(const std::string& name, const std::vector<std::string>& lines) {
  const std::string path = test::temp_dir() + "/" + name;
  std::string content;
  for (const auto& line : lines) content += line + "\n";
  write_file(path, content);
  return path;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// spm_encode --output_format=id, one id list per input line.
std::vector<std::vector<int>> spm_encode(const std::string& dir,
                                         const std::vector<std::string>& lines) {
  const auto r = run_process({"spm_encode", "--model=" + dir + "/tokenizer.model",
                              "--output_format=id", "--input=" + lines_file("enc.txt", lines)});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::vector<int>> out;
  for (const auto& line : split_lines(r.out)) {
    std::vector<int> ids;
    std::istringstream in(line);
    for (int id; in >> id;) ids.push_back(id);
    out.push_back(ids);
  }
  EXPECT_EQ(out.size(), lines.size()) << r.out;
  out.resize(lines.size());
  return out;
}

// spm_decode --input_format=id, one text per id list.
std::vector<std::string> spm_decode(const std::string& dir,
                                    const std::vector<std::vector<int>>& id_lists) {
  std::vector<std::string> lines;
  for (const auto& ids : id_lists) {
    std::string line;
    for (const int id : ids) line += (line.empty() ? "" : " ") + std::to_string(id);
    lines.push_back(line);
  }
  const auto r = run_process({"spm_decode", "--model=" + dir + "/tokenizer.model",
                              "--input_format=id", "--input=" + lines_file("dec.txt", lines)});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto out = split_lines(r.out);
  EXPECT_EQ(out.size(), lines.size()) << r.out;
  out.resize(lines.size());
  return out;
}

std::vector<int> concat(std::vector<int> a, const std::vector<int>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

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

// A directory with the llama tokenizer.model copied in and the given JSON files written.
std::string make_dir(const std::string& name, const std::map<std::string, std::string>& files,
                     bool with_model = true) {
  const std::string dir = test::temp_dir() + "/" + name;
  fs::create_directories(dir);
  if (with_model) {
    const std::string& src = model_dir(Flavour::kLlama);
    EXPECT_FALSE(src.empty());
    fs::copy_file(src + "/tokenizer.model", dir + "/tokenizer.model",
                  fs::copy_options::overwrite_existing);
  }
  for (const auto& [file, content] : files) write_file(dir + "/" + file, content);
  return dir;
}

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

// ---- Prefix-space rule (docs/model.md) ----------------------------------------------------
// References: spm_encode on the llama model, or on a copy whose add_dummy_prefix is turned off
// by 4 appended bytes (a second normalizer_spec holding add_dummy_prefix = false, which
// protobuf merges into the first); the rule is applied here by hand, per stretch.

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

// ---- Special tokens in decode, and TextStream -------------------------------------------

// <image> special, <video> and <act> not, <tool> special through tokenizer_config.json's
// additional_special_tokens, <named> through special_tokens_map.json's, <old> only in
// added_tokens.json (so special), <pad> the pad token.
const std::string& special_dir() {
  static const std::string dir = make_dir(
      "tok_special",
      {{"added_tokens.json",
        R"({"<image>": 800, "<video>": 801, "<pad>": 802, "<old>": 803, "<named>": 807})"},
       {"tokenizer_config.json", R"({"added_tokens_decoder": {
           "800": {"content": "<image>", "special": true},
           "801": {"content": "<video>", "special": false},
           "802": {"content": "<pad>"},
           "804": {"content": "<act>", "special": false},
           "805": {"content": "<tool>", "special": false},
           "806": {"content": "<plain>"}},
         "additional_special_tokens": ["<tool>"], "pad_token": "<pad>"})"},
       {"special_tokens_map.json", R"({"additional_special_tokens": [{"content": "<named>"}]})"}});
  return dir;
}

TEST(TokenizerSpecialTest, DecodeSkipsSpecialTokensAndRendersOthers) {
  const auto tok = Tokenizer::load(special_dir());
  EXPECT_EQ(tok->vocab_size(), 808);
  const auto ref = spm_encode(special_dir(), {"a", "b"});  // "▁a", "▁b"
  ASSERT_EQ(spm_decode(special_dir(), {ref[0], ref[1]}), (std::vector<std::string>{"a", "b"}));
  // Skipped: <image>, <old>, <tool>, <named>, <pad>, unk, bos, eos. Rendered: <video>, <act>,
  // <plain> ("special" absent means false).
  EXPECT_EQ(tok->decode(concat(concat(ref[0], {800, 801, 803, 804, 805, 806, 807, 802, 0, 1, 2}),
                               ref[1])),
            "a<video><act><plain>b");
  // Skipped tokens do not split the SentencePiece run: "▁a" + "▁b" decode as "a b".
  EXPECT_EQ(tok->decode(concat(concat(ref[0], {800, 803, 805, 807, 802, 0, 1, 2}), ref[1])),
            spm_decode(special_dir(), {concat(ref[0], ref[1])})[0]);
  EXPECT_EQ(tok->decode(concat(ref[0], ref[1])), "a b");
  // Encoding is unchanged: typed special tokens still become their ids.
  EXPECT_EQ(tok->encode("a<tool>b<old><named><image>", false),
            concat(concat(concat(ref[0], {805}), ref[1]), {803, 807, 800}));
  // Streaming follows the same rule.
  const std::vector<int> ids = concat(concat(ref[0], {800, 801, 805, 2}), ref[1]);
  std::string streamed;
  std::vector<int> previous;
  for (const int id : ids) {
    streamed += tok->decode_next(previous, id);
    previous.push_back(id);
  }
  EXPECT_EQ(streamed, "a<video>b");
  TextStream stream(*tok);
  std::string text;
  for (const int id : ids) text += stream.push(id);
  EXPECT_EQ(text + stream.finish(), "a<video>b");
  EXPECT_EQ(stream.ids(), ids);
}

// Random id sequences for the model in `dir`: normal pieces, byte-fallback pieces forming valid,
// truncated and stray UTF-8, long byte runs, added and special tokens; a third end inside a
// character.
std::vector<std::vector<int>> random_sequences(const std::string& dir,
                                               const std::vector<int>& added, unsigned seed) {
  // 🚗 is byte fallback, its last byte 0x97; byte pieces are consecutive <0x00>..<0xFF>.
  const auto words = spm_encode(dir, {"the red car drives past 3 people and a dog", "🚗"});
  const std::vector<int>& normal = words[0];
  EXPECT_FALSE(normal.empty());
  EXPECT_FALSE(words[1].empty());
  if (normal.empty() || words[1].empty()) return {};
  const int byte0 = words[1].back() - 0x97;
  std::mt19937 rng(seed);
  const auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  // A code point of 1..4 UTF-8 bytes as byte pieces, `drop` trailing bytes removed.
  const auto utf8 = [&](std::vector<int>* ids, size_t drop) {
    static const uint32_t ranges[][2] = {{0x21, 0x7E}, {0x80, 0x7FF}, {0x800, 0xD7FF},
                                         {0x10000, 0x10FFFF}};
    const size_t len = 1 + pick(4);
    const uint32_t cp = ranges[len - 1][0] + rng() % (ranges[len - 1][1] - ranges[len - 1][0]);
    std::vector<int> bytes;
    if (len == 1) {
      bytes = {static_cast<int>(cp)};
    } else {
      static const int lead_bits[] = {0, 0, 0xC0, 0xE0, 0xF0};
      for (size_t k = 0; k + 1 < len; ++k) {  // continuation bytes, last first
        bytes.insert(bytes.begin(), 0x80 | static_cast<int>((cp >> (6 * k)) & 0x3F));
      }
      bytes.insert(bytes.begin(), lead_bits[len] | static_cast<int>(cp >> (6 * (len - 1))));
    }
    bytes.resize(bytes.size() - std::min(drop, bytes.size() - 1));
    for (const int b : bytes) ids->push_back(byte0 + b);
  };
  std::vector<std::vector<int>> out;
  for (int n = 0; n < 400; ++n) {
    std::vector<int> ids;
    const size_t len = pick(30);
    for (size_t k = 0; k < len; ++k) {
      switch (pick(12)) {
        case 0: case 1: case 2: case 3:
          ids.push_back(normal[pick(normal.size())]);
          break;
        case 4: case 5:
          utf8(&ids, 0);
          break;
        case 6:
          utf8(&ids, 1 + pick(2));  // truncated, unless it had fewer bytes
          break;
        case 7:
          ids.push_back(byte0 + 0x80 + static_cast<int>(pick(0x40)));  // stray continuation
          break;
        case 8:
          ids.push_back(added[pick(added.size())]);
          break;
        case 9:
          ids.push_back(static_cast<int>(pick(3)));  // unk, bos, eos
          break;
        case 10:
          if (pick(4) == 0) {
            for (int r = 0; r < 30; ++r) utf8(&ids, pick(8) == 0 ? 1 : 0);  // a long byte run
          }
          break;
        default:
          ids.push_back(byte0 + static_cast<int>(pick(256)));
          break;
      }
    }
    if (n % 3 == 0) {  // ends inside a multi-byte character
      ids.push_back(byte0 + 0xF0);
      for (size_t k = pick(3); k > 0; --k) {
        ids.push_back(byte0 + 0x80 + static_cast<int>(pick(0x40)));
      }
    }
    out.push_back(ids);
  }
  return out;
}

void expect_stream_equals_decode(const Tokenizer& tok, const std::string& dir,
                                 const std::vector<int>& added) {
  size_t n_incomplete = 0;
  for (const auto& ids : random_sequences(dir, added, 7)) {
    TextStream stream(tok);
    std::string streamed;
    for (const int id : ids) streamed += stream.push(id);
    const std::string all = tok.decode(ids);
    if (streamed != all) ++n_incomplete;  // held back at the end, which finish() must give
    ASSERT_EQ(streamed + stream.finish(), all) << ::testing::PrintToString(ids);
    ASSERT_EQ(stream.ids(), ids);
  }
  // Without finish() many streams would lose their end (a test that ignores it fails).
  EXPECT_GT(n_incomplete, 100u);
}

TEST(TokenizerStreamTest, PushThenFinishEqualsDecode) {
  const auto tok = Tokenizer::load(special_dir());
  expect_stream_equals_decode(*tok, special_dir(), {800, 801, 802, 803, 804, 805, 806, 807});
  const std::string& nmt = model_dir(Flavour::kNmt);
  ASSERT_FALSE(nmt.empty());
  expect_stream_equals_decode(*Tokenizer::load(nmt), nmt, {kImageId, kVideoId, kPadId});
}

TEST(TokenizerStreamTest, FinishRendersATruncatedCharacter) {
  const std::string& dir = model_dir(Flavour::kLlama);
  const auto tok = Tokenizer::load(dir);
  // 🚗 is byte fallback; its last byte never comes.
  auto ids = tok->encode("go 🚗", false);
  ids.pop_back();
  TextStream stream(*tok);
  std::string text;
  for (const int id : ids) text += stream.push(id);
  EXPECT_EQ(text, "go ");
  const std::string rest = stream.finish();
  EXPECT_EQ(rest, spm_decode(dir, {ids})[0].substr(3));
  EXPECT_NE(rest.find("\xEF\xBF\xBD"), std::string::npos);  // U+FFFD
  EXPECT_EQ(TextStream(*tok).finish(), "");
}


}  // namespace
}  // namespace mustdrop::model
