// Load time, vision encoding, prefill and decode speed of a model on this machine: a Hugging
// Face directory (--model) or a published shape with random weights (--preset).
#include <CLI/CLI.hpp>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <iostream>

#include "core/error.h"
#include "core/sysinfo.h"
#include "model/generate.h"
#include "model/presets.h"
#include "model/vlm.h"

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

}  // namespace

int main(int argc, char** argv) {
  using namespace mustdrop;
  CLI::App cli{"bench_model: load, vision, prefill and decode timings of one model"};
  std::string dir, preset;
  int llm_layers = 0, vision_layers = 0, frames = 1, new_tokens = 32, threads = 2, repeats = 3;
  cli.add_option("--model", dir, "Hugging Face model directory");
  cli.add_option("--preset", preset, "shape preset with random weights (llava-1.5-7b, video-llava-7b, ...)");
  cli.add_option("--llm-layers", llm_layers, "preset: decoder layers");
  cli.add_option("--vision-layers", vision_layers, "preset: vision layers");
  cli.add_option("--frames", frames, "frames encoded and placed in the prompt");
  cli.add_option("--new-tokens", new_tokens, "decode steps timed");
  cli.add_option("--threads", threads, "LibTorch intra-op threads");
  cli.add_option("--repeats", repeats, "timed repetitions (median reported)");
  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return cli.exit(e) == 0 ? 0 : 2;
  }
  if (dir.empty() == preset.empty()) {
    std::cerr << "bench_model: give exactly one of --model DIR or --preset NAME\n";
    return 2;
  }
  try {
    tune_allocator();
    at::set_num_threads(threads);
    c10::InferenceMode guard;
    auto t0 = Clock::now();
    std::unique_ptr<model::VisionLanguageModel> m =
        dir.empty() ? model::VisionLanguageModel::random(model::preset_config(preset, llm_layers, vision_layers), 1)
                    : model::VisionLanguageModel::load(dir);
    double load_ms = ms_since(t0);
    const model::ModelConfig& c = m->config();
    int s = m->image_size();
    at::Tensor pixels = at::randn({frames, 3, s, s});
    std::vector<double> vis, pre, dec;
    int64_t prompt_len = 0;
    for (int r = 0; r < repeats + 1; ++r) {  // the first round warms up
      auto t1 = Clock::now();
      at::Tensor vision = m->encode_frames(pixels);
      double vis_ms = ms_since(t1);
      model::PromptLayout layout = m->build_prompt("What is happening in this video? Describe it briefly.", vision.size(0));
      prompt_len = static_cast<int64_t>(layout.ids.size());
      model::DenseKvCache cache(m->llm().n_layers());
      auto t2 = Clock::now();
      at::Tensor logits = m->prefill(layout, vision, cache).logits;
      double pre_ms = ms_since(t2);
      model::GenerationOptions o;
      o.max_new_tokens = new_tokens;
      model::GenerationResult g = model::generate(m->llm(), cache, logits, prompt_len, o, nullptr);
      if (r == 0) continue;
      vis.push_back(vis_ms);
      pre.push_back(pre_ms);
      dec.push_back(g.decode_ms / std::max<size_t>(1, g.ids.size()));
    }
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    std::printf("model: %s (%s), vision %dx%d @%dpx, text %dx%d, vocab %d, %d threads\n",
                dir.empty() ? preset.c_str() : dir.c_str(), c.architecture.c_str(), c.vision.num_hidden_layers,
                c.vision.hidden_size, s, c.text.num_hidden_layers, c.text.hidden_size, c.text.vocab_size, threads);
    std::printf("| load ms | frames | prompt tokens | vision ms | prefill ms | prefill tok/s | decode ms/token |\n");
    std::printf("|---:|---:|---:|---:|---:|---:|---:|\n");
    std::printf("| %.0f | %d | %lld | %.1f | %.1f | %.0f | %.2f |\n", load_ms, frames, static_cast<long long>(prompt_len),
                median(vis), median(pre), prompt_len / (median(pre) / 1000.0), median(dec));
    return 0;
  } catch (const Error& e) {
    std::cerr << "bench_model: " << e.what() << "\n";
    return e.kind() == ErrorKind::kModel ? 4 : e.kind() == ErrorKind::kConfig ? 2 : 1;
  }
}
