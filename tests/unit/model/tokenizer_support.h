// Helpers shared by the tokenizer tests (tokenizer_test.cpp, tokenizer_rule_test.cpp,
// tokenizer_stream_test.cpp). The reference is the SentencePiece CLI (spm_encode / spm_decode)
// on models trained here with spm_train from tools/data/tiny_corpus.txt, so nothing is compared
// against this code's own earlier output. Two models: "llama" has the settings of Llama's
// tokenizer.model (identity normalisation, whitespace kept, digits split, byte fallback);
// "nmt" has spm_train's defaults (nmt_nfkc, extra whitespace removed), like tools/ trains.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace mustdrop::model::test_tokenizer {

inline constexpr int kSpVocab = 800;  // SentencePiece pieces; added tokens get the ids after them
inline constexpr int kImageId = kSpVocab;
inline constexpr int kVideoId = kSpVocab + 1;
inline constexpr int kPadId = kSpVocab + 2;

enum class Flavour { kLlama, kNmt };

// Writes `content` to `path`; a test failure if the write fails.
void write_file(const std::string& path, const std::string& content);

// A model directory (once per process): tokenizer.model from spm_train plus a LLaVA-style
// added_tokens.json and special_tokens_map.json. "" (and a test failure) if spm_train fails.
const std::string& model_dir(Flavour flavour);

// One text per line for the CLI (no '\n' inside a line).
std::string lines_file(const std::string& name, const std::vector<std::string>& lines);

// `text` cut into its lines, without the '\n'.
std::vector<std::string> split_lines(const std::string& text);

// spm_encode --output_format=id, one id list per input line.
std::vector<std::vector<int>> spm_encode(const std::string& dir,
                                         const std::vector<std::string>& lines);

// spm_decode --input_format=id, one text per id list.
std::vector<std::string> spm_decode(const std::string& dir,
                                    const std::vector<std::vector<int>>& id_lists);

// `a` followed by `b`.
std::vector<int> concat(std::vector<int> a, const std::vector<int>& b);

// A directory with the llama tokenizer.model copied in and the given JSON files written.
std::string make_dir(const std::string& name, const std::map<std::string, std::string>& files,
                     bool with_model = true);

}  // namespace mustdrop::model::test_tokenizer
