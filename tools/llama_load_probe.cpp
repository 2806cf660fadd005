// How long llama.cpp takes to load a GGUF model inside its process (its defaults: the file is
// mapped), for tools/bench_vs_llamacpp to set beside bench_model's own load time. Compiled by that
// script against the user's llama.cpp build; not part of mustdrop's build.
//
// Usage: llama_load_probe MODEL.gguf   prints {"load_ms": X}
#include <chrono>
#include <cstdio>

#include "ggml-backend.h"
#include "llama.h"

namespace {

void quiet(ggml_log_level, const char*, void*) {}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: llama_load_probe MODEL.gguf\n");
    return 2;
  }
  llama_log_set(quiet, nullptr);
  ggml_backend_load_all();  // the CPU backend is a library of its own next to libllama
  llama_backend_init();
  const auto t0 = std::chrono::steady_clock::now();
  llama_model* model = llama_model_load_from_file(argv[1], llama_model_default_params());
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (model == nullptr) {
    std::fprintf(stderr, "llama_load_probe: cannot load %s\n", argv[1]);
    return 1;
  }
  std::printf("{\"load_ms\": %.1f}\n", ms);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
