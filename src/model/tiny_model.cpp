#include "model/tiny_model.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/shell.h"
#include "model/presets.h"
#include "model/vlm.h"
#include "model/weights.h"

#ifndef MUSTDROP_SOURCE_DIR_FOR_DATA
#define MUSTDROP_SOURCE_DIR_FOR_DATA "."
#endif

namespace mustdrop::model {
namespace {

namespace fs = std::filesystem;

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw ModelError(path.string() + ": cannot write");
}

// The name a tensor has on disk: the older prefixes, or the newer ones when asked.
std::string disk_name(const std::string& canonical, bool new_prefixes) {
  if (!new_prefixes) return canonical;
  auto starts = [&](const char* p) { return canonical.rfind(p, 0) == 0; };
  if (starts("language_model.model.")) return "model.language_model." + canonical.substr(21);
  if (starts("language_model.lm_head.")) return canonical.substr(15);
  return "model." + canonical;
}

}  // namespace

void train_tokenizer(const std::string& prefix, int pieces, uint64_t seed, const std::string& corpus) {
  if (!fs::exists(corpus)) throw ModelError(corpus + ": tokenizer training text not found");
  // A small corpus yields only so many pieces (the bundled one about 1,800). A full vocabulary
  // (32,000 for LLaVA-1.5) is reached with placeholder pieces <unused_N>, declared as user-defined
  // symbols, so the learned pieces stay what the corpus supports and every id keeps its place.
  constexpr int kLearned = 1000;
  std::string symbols;
  if (pieces > kLearned) {
    const fs::path file = prefix + ".unused.txt";
    std::ofstream out(file, std::ios::trunc);
    for (int i = 0; i < pieces - kLearned; ++i) out << "<unused_" << i << ">\n";
    out.close();
    if (!out) throw ModelError(file.string() + ": cannot write");
    symbols = " --user_defined_symbols_file=" + shell_quote(file.string());
  }
  const std::string cmd = "spm_train --input=" + shell_quote(corpus) + " --model_prefix=" + shell_quote(prefix) +
                          " --vocab_size=" + std::to_string(pieces) + symbols +
                          " --model_type=unigram --character_coverage=1.0 --byte_fallback=true --random_seed=" +
                          std::to_string(seed) + " --num_threads=1 --minloglevel=2 > /dev/null 2>&1";
  const int rc = std::system(cmd.c_str());
  std::error_code ec;
  fs::remove(prefix + ".unused.txt", ec);
  if (rc != 0) throw ModelError(prefix + ".model: spm_train failed: " + cmd);
}

ModelConfig write_tiny_model(const std::string& dir_str, const TinyModelOptions& o) {
  fs::path dir(dir_str);
  std::error_code ec;
  const fs::path marker = dir / ".mustdrop-tiny-model";
  if (fs::exists(dir) && !fs::is_empty(dir, ec)) {
    if (!o.overwrite) throw ModelError(dir_str + ": exists and is not empty (--overwrite replaces an earlier tiny model)");
    if (!fs::exists(marker)) throw ModelError(dir_str + ": not written by make_tiny_model; refusing to overwrite it");
    fs::remove_all(dir, ec);
    if (ec) throw ModelError(dir_str + ": cannot remove the earlier tiny model (" + ec.message() + ")");
  }
  fs::create_directories(dir, ec);
  if (ec) throw ModelError(dir_str + ": cannot create (" + ec.message() + ")");
  ModelConfig c = preset_config(o.preset, o.llm_layers, o.vision_layers);

  // Tokenizer: SentencePiece unigram on the bundled corpus; added tokens right after its pieces.
  const int pieces = c.image_token_index;  // presets put <image> right after the pieces
  std::string corpus = o.corpus.empty() ? std::string(MUSTDROP_SOURCE_DIR_FOR_DATA) + "/tools/data/tiny_corpus.txt" : o.corpus;
  train_tokenizer((dir / "tokenizer").string(), pieces, o.seed, corpus);
  fs::remove(dir / "tokenizer.vocab", ec);

  nlohmann::ordered_json added = nlohmann::ordered_json::object();
  added["<image>"] = c.image_token_index;
  if (c.video_token_index >= 0) added["<video>"] = c.video_token_index;
  added["<pad>"] = c.pad_token_id;
  write_text(dir / "added_tokens.json", added.dump(2) + "\n");
  nlohmann::ordered_json decoder = nlohmann::ordered_json::object();
  for (auto& [text, id] : added.items()) decoder[std::to_string(id.get<int>())] = {{"content", text}, {"special", true}};
  write_text(dir / "tokenizer_config.json",
             nlohmann::ordered_json{{"tokenizer_class", "LlamaTokenizer"},
                                    {"bos_token", "<s>"},
                                    {"eos_token", "</s>"},
                                    {"unk_token", "<unk>"},
                                    {"pad_token", "<pad>"},
                                    {"legacy", true},
                                    {"added_tokens_decoder", decoder}}
                     .dump(2) + "\n");
  write_text(dir / "special_tokens_map.json",
             nlohmann::ordered_json{{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}, {"pad_token", "<pad>"}}
                     .dump(2) + "\n");
  write_text(dir / "generation_config.json",
             nlohmann::ordered_json{{"bos_token_id", c.bos_token_id}, {"eos_token_id", c.eos_token_id},
                                    {"pad_token_id", c.pad_token_id}}
                     .dump(2) + "\n");
  c.torch_dtype = o.dtype == "f16" ? "float16" : o.dtype == "bf16" ? "bfloat16" : "float32";
  write_text(dir / "config.json", model_config_to_json(c));
  write_text(marker, "written by make_tiny_model; safe to overwrite\n");

  DType dtype = o.dtype == "f16" ? DType::kF16 : o.dtype == "bf16" ? DType::kBF16 : DType::kF32;
  if (o.dtype != "f32" && o.dtype != "f16" && o.dtype != "bf16") throw ConfigError("tiny model dtype must be f32, f16 or bf16");
  // Drawn in float32 tensor by tensor and held in the file's dtype; each tensor leaves the map as
  // its bytes are taken, so a 7B checkpoint is never held twice (it fits a 24 GB machine).
  const at::ScalarType held = dtype == DType::kF16 ? at::kHalf : dtype == DType::kBF16 ? at::kBFloat16 : at::kFloat;
  std::map<std::string, at::Tensor> tensors = VisionLanguageModel::random_tensors(c, o.seed, held);
  int shards = std::max(1, o.shards);
  std::vector<std::vector<TensorData>> parts(static_cast<size_t>(shards));
  size_t i = 0;
  for (auto it = tensors.begin(); it != tensors.end(); it = tensors.erase(it)) {
    parts[i++ % parts.size()].push_back(to_tensor_data(disk_name(it->first, o.new_prefixes), it->second, dtype));
  }
  if (shards == 1) {
    write_safetensors((dir / "model.safetensors").string(), parts[0], {{"format", "pt"}});
  } else {
    nlohmann::ordered_json map = nlohmann::ordered_json::object();
    for (int s = 0; s < shards; ++s) {
      char name[64];
      std::snprintf(name, sizeof(name), "model-%05d-of-%05d.safetensors", s + 1, shards);
      write_safetensors((dir / name).string(), parts[static_cast<size_t>(s)], {{"format", "pt"}});
      for (const auto& t : parts[static_cast<size_t>(s)]) map[t.name] = name;
    }
    write_text(dir / "model.safetensors.index.json",
               nlohmann::ordered_json{{"metadata", {{"total_size", 0}}}, {"weight_map", map}}.dump(2) + "\n");
  }
  return c;
}

}  // namespace mustdrop::model
