// Helpers shared by the tokenizer tests; see tokenizer_support.h.
#include "tokenizer_support.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "support/test_support.h"

namespace mustdrop::model::test_tokenizer {

namespace fs = std::filesystem;
using test::run_process;

void write_file(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
  ASSERT_TRUE(out.good()) << path;
}

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

std::string make_dir(const std::string& name, const std::map<std::string, std::string>& files,
                     bool with_model) {
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

}  // namespace mustdrop::model::test_tokenizer
