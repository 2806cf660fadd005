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

class TextStream;

class Tokenizer {
 public:
  // Loads DIR/tokenizer.model and, where present, added_tokens.json, special_tokens_map.json,
  // tokenizer_config.json (added tokens such as "<image>", special names, legacy) and
  // tokenizer.json (its prefix-space settings only). Throws ModelError naming the file when
  // tokenizer.model is missing or unreadable, or a JSON file is malformed.
  static std::unique_ptr<Tokenizer> load(const std::string& dir);
  ~Tokenizer();

  // Token ids of `text`, as Hugging Face transformers encodes it (prefix-space rule in
  // docs/model.md). Added tokens written literally in the text (e.g. "<image>") become their
  // single id; the stretches between them go through SentencePiece. With add_bos, the BOS id
  // comes first. Throws ModelError if SentencePiece fails.
  std::vector<int> encode(const std::string& text, bool add_bos) const;
  // The text of `ids`; special tokens (bos/eos/unk/pad, control pieces, special added tokens)
  // are skipped. Throws ModelError for an id outside the vocabulary.
  std::string decode(const std::vector<int>& ids) const;
  // Text that `id` adds after `previous` ids, holding back a trailing incomplete UTF-8
  // character (TextStream flushes it at the end); cost independent of previous.size(). Throws
  // ModelError for an id outside the vocabulary.
  std::string decode_next(const std::vector<int>& previous, int id) const;

  int bos_id() const { return bos_id_; }
  int eos_id() const { return eos_id_; }
  int unk_id() const { return unk_id_; }
  // The id of an added token ("<image>"), or -1.
  int added_token_id(const std::string& text) const;
  // SentencePiece pieces plus added tokens.
  int vocab_size() const { return vocab_size_; }

 private:
  friend class TextStream;
  Tokenizer() = default;
  // What decode(ids) renders after the text decode_next has emitted for ids (a held-back
  // incomplete UTF-8 character as U+FFFD), computed on the last few ids.
  std::string held_back_text(const std::vector<int>& ids) const;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::map<std::string, int> added_;  // added token text -> id
  int bos_id_ = 1;
  int eos_id_ = 2;
  int unk_id_ = 0;
  int vocab_size_ = 0;
};

// Streams the text of generated ids: the concatenation of every push() and the final finish()
// equals decode(all ids pushed), exactly. Per-stream state; the Tokenizer must outlive it.
class TextStream {
 public:
  // An empty stream over `tokenizer`.
  explicit TextStream(const Tokenizer& tokenizer);
  // Text that became final with `id` ("" while a character is incomplete); ModelError for an
  // id outside the vocabulary (the id is not kept then).
  std::string push(int id);
  // What is still held back, rendered as decode() renders it; call once, at the end.
  std::string finish();
  // Every id pushed so far.
  const std::vector<int>& ids() const { return ids_; }

 private:
  const Tokenizer* tokenizer_;
  std::vector<int> ids_;
};

}  // namespace mustdrop::model
