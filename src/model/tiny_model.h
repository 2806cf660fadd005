// Writes a small random model in exactly the Hugging Face layout of a real checkpoint
// (config.json, safetensors, SentencePiece tokenizer.model and the JSON side files), so tests
// and samples load it through the same code path as llava-1.5 or Video-LLaVA.
#pragma once

#include <cstdint>
#include <string>

#include "model/hf_config.h"

namespace mustdrop::model {

struct TinyModelOptions {
  std::string preset = "tiny-llava";  // any preset_config() name (layers below apply)
  int llm_layers = 0;                 // 0: the preset's
  int vision_layers = 0;
  uint64_t seed = 1234;               // same seed, same weights
  int shards = 1;                     // > 1: model-0000i-of-0000n.safetensors + index
  std::string dtype = "f32";          // f32 | f16 | bf16 on disk
  bool new_prefixes = false;          // write "model.language_model.*" names instead of "language_model.model.*"
  std::string corpus;                 // tokenizer training text ("" = the bundled tools/data/tiny_corpus.txt)
  bool overwrite = false;             // replace a directory this function wrote before (it leaves a marker)
};

// Creates `dir` (which must be empty or absent, or hold an earlier tiny model when
// options.overwrite) and writes the model; trains the tokenizer with
// the sentencepiece CLI (spm_train). Throws ModelError naming the path on failure.
ModelConfig write_tiny_model(const std::string& dir, const TinyModelOptions& options);

// Trains a SentencePiece unigram model of exactly `pieces` pieces on `corpus` into prefix.model
// (and prefix.vocab); past what a small corpus yields, the rest are <unused_N> placeholders.
// ModelError on failure.
void train_tokenizer(const std::string& prefix, int pieces, uint64_t seed, const std::string& corpus);

}  // namespace mustdrop::model
