// Writes a small random LLaVA-1.5 or Video-LLaVA model in the Hugging Face layout (config.json,
// safetensors, SentencePiece tokenizer.model, tokenizer/generation JSON files), for tests and
// samples. The weights are random: answers are meaningless words, by design.
#include <CLI/CLI.hpp>

#include <iostream>

#include "core/error.h"
#include "model/presets.h"
#include "model/tiny_model.h"

int main(int argc, char** argv) {
  using namespace mustdrop;
  CLI::App cli{"make_tiny_model: write a tiny random model in Hugging Face layout"};
  std::string dir;
  model::TinyModelOptions o;
  cli.add_option("dir", dir, "output directory (must be empty or absent)")->required();
  cli.add_option("--preset", o.preset, "tiny-llava | tiny-video-llava | llava-1.5-7b | llava-1.5-13b | video-llava-7b");
  cli.add_option("--llm-layers", o.llm_layers, "decoder layers (0 = the preset's)");
  cli.add_option("--vision-layers", o.vision_layers, "vision tower layers (0 = the preset's)");
  cli.add_option("--seed", o.seed, "random seed (same seed, same weights)");
  cli.add_option("--shards", o.shards, "number of safetensors shards (> 1 writes an index)");
  cli.add_option("--dtype", o.dtype, "f32 | f16 | bf16 on disk")->check(CLI::IsMember({"f32", "f16", "bf16"}));
  cli.add_flag("--new-prefixes", o.new_prefixes, "write model.language_model.* names (newer transformers)");
  cli.add_flag("--overwrite", o.overwrite, "replace an earlier tiny model in DIR");
  cli.add_option("--corpus", o.corpus, "tokenizer training text (default: tools/data/tiny_corpus.txt)");
  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return cli.exit(e) == 0 ? 0 : 2;
  }
  try {
    model::ModelConfig c = model::write_tiny_model(dir, o);
    std::cerr << dir << ": " << c.architecture << ", vision " << c.vision.num_hidden_layers << "x" << c.vision.hidden_size
              << " (" << c.vision.image_size << " px), text " << c.text.num_hidden_layers << "x" << c.text.hidden_size
              << ", vocab " << c.text.vocab_size << "\n";
    return 0;
  } catch (const Error& e) {
    std::cerr << "make_tiny_model: " << e.what() << "\n";
    return e.kind() == ErrorKind::kConfig ? 2 : 4;
  }
}
