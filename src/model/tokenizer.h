// SentencePiece tokenizer of a Hugging Face Llama/LLaVA checkpoint (`tokenizer.model` plus
// added tokens). LibTorch-free. SentencePiece itself lives in a small shim library loaded with
// dlopen(RTLD_LOCAL|RTLD_DEEPBIND): its bundled protobuf 3.14 would otherwise clash with
// LibTorch's protobuf 3.21 in one process and crash before main (docs/model.md).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace mustdrop::model {

class Tokenizer {
 public:
  // Loads DIR/tokenizer.model and, where present, added_tokens.json, special_tokens_map.json and
  // tokenizer_config.json (added tokens such as "<image>" and their ids; bos/eos/pad names).
  // Throws ModelError naming the file when tokenizer.model is missing or unreadable, or a JSON
  // file is malformed.
  static std::unique_ptr<Tokenizer> load(const std::string& dir);
  ~Tokenizer();

  // Token ids of `text`. Added/special tokens written literally in the text (e.g. "<image>")
  // become their single id; the pieces between them go through SentencePiece. With add_bos,
  // the BOS id comes first.
  std::vector<int> encode(const std::string& text, bool add_bos) const;
  // The text of `ids` (special tokens such as BOS/EOS are skipped).
  std::string decode(const std::vector<int>& ids) const;
  // Text that `id` adds when appended after `previous` ids (for streaming output), i.e.
  // decode(previous + id) minus decode(previous), computed cheaply.
  std::string decode_next(const std::vector<int>& previous, int id) const;

  int bos_id() const { return bos_id_; }
  int eos_id() const { return eos_id_; }
  int unk_id() const { return unk_id_; }
  // The id of an added token ("<image>"), or -1.
  int added_token_id(const std::string& text) const;
  // SentencePiece pieces plus added tokens.
  int vocab_size() const { return vocab_size_; }

 private:
  Tokenizer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::map<std::string, int> added_;  // added token text -> id
  int bos_id_ = 1;
  int eos_id_ = 2;
  int unk_id_ = 0;
  int vocab_size_ = 0;
};

}  // namespace mustdrop::model
