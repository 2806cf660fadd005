// Special tokens in decode (which added tokens are skipped, which rendered) and TextStream:
// pushing ids one by one, then finish(), gives decode() of them all, on random id sequences
// full of byte-fallback pieces and broken UTF-8. The reference is spm_decode on the models of
// tokenizer_support.h.
#include "model/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "tokenizer_support.h"

namespace mustdrop::model::test_tokenizer {
namespace {

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
}  // namespace mustdrop::model::test_tokenizer
