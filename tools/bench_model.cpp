// Load time, vision encoding, prefill and decode speed of a model on this machine: a Hugging
// Face directory (--model) or a published shape with random weights (--preset). With
// --text-tokens the prompt is that many text tokens and only the decoder runs (the shape of a
// llama.cpp llama-bench run); decode is then timed at that depth.
#include <CLI/CLI.hpp>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <iostream>

#include "core/error.h"
#include "core/sysinfo.h"
#include "config/config.h"
#include "model/attention.h"
#include "model/device.h"
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
  int llm_layers = 0, vision_layers = 0, frames = 1, new_tokens = 32, threads = 2, repeats = 3, text_tokens = 0;
  std::string dtype_name = "f32", attention = "auto", device = "cpu";
  bool json = false;
  cli.add_option("--model", dir, "Hugging Face model directory");
  cli.add_option("--preset", preset, "shape preset with random weights (llava-1.5-7b, video-llava-7b, ...)");
  cli.add_option("--llm-layers", llm_layers, "preset: decoder layers");
  cli.add_option("--vision-layers", vision_layers, "preset: vision layers");
  cli.add_option("--frames", frames, "frames encoded and placed in the prompt");
  cli.add_option("--new-tokens", new_tokens, "decode steps timed");
  cli.add_option("--threads", threads, "LibTorch intra-op threads");
  cli.add_option("--repeats", repeats, "timed repetitions (median reported)");
  cli.add_option("--text-tokens", text_tokens, "text-only prompt of this many tokens (decoder only; decode at that depth)");
  cli.add_option("--dtype", dtype_name, "compute dtype: f32, bf16, f16 (GPU) or auto (bf16 on a GPU or where the CPU "
                                        "computes it natively)")
      ->check(CLI::IsMember({"f32", "bf16", "f16", "auto"}));
  cli.add_option("--device", device, "cpu, cuda or cuda:N (default cpu)");
  cli.add_option("--attention", attention,
                 "attention core: auto, blocked (AVX-512 kernel), reference (ATen) or fused (LibTorch >= 2.1)")
      ->check(CLI::IsMember({"auto", "blocked", "reference", "fused"}));
  cli.add_flag("--json", json, "one JSON object instead of the table");
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
    model::set_default_attention_path(attention == "blocked"     ? model::AttentionPath::kBlocked
                                      : attention == "reference" ? model::AttentionPath::kReference
                                      : attention == "fused"     ? model::AttentionPath::kFused
                                                                 : model::AttentionPath::kAuto);
    const model::LoadOptions lo =
        model::load_options(config::defaults_with({"model.device=" + device, "model.dtype=" + dtype_name}).model);
    // On a GPU the work is queued: every timer reads after the queue has drained.
    auto sync = [&] { model::synchronize(lo.device); };
    auto t0 = Clock::now();
    std::unique_ptr<model::VisionLanguageModel> m =
        dir.empty() ? model::VisionLanguageModel::random(model::preset_config(preset, llm_layers, vision_layers), 1, lo)
                    : model::VisionLanguageModel::load(dir, lo);
    sync();
    double load_ms = ms_since(t0);
    const model::ModelConfig& c = m->config();
    int s = m->image_size();
    at::Tensor pixels = at::randn({frames, 3, s, s});
    std::vector<double> vis, pre, dec;
    int64_t prompt_len = 0;
    for (int r = 0; r < repeats + 1; ++r) {  // the first round warms up
      model::DenseKvCache cache(m->llm().n_layers(), new_tokens);  // as a session sizes it
      at::Tensor logits;
      double vis_ms = 0, pre_ms = 0;
      if (text_tokens > 0) {
        std::vector<int> ids(static_cast<size_t>(text_tokens));
        for (int i = 0; i < text_tokens; ++i) ids[static_cast<size_t>(i)] = 3 + (i * 7919) % (c.text.vocab_size - 3);
        model::LlmForward f;
        f.hidden = m->llm().embed(ids);
        f.positions = at::arange(text_tokens, at::kLong);
        f.cache = &cache;
        prompt_len = text_tokens;
        auto t2 = Clock::now();
        logits = m->llm().forward(f).logits;
        sync();
        pre_ms = ms_since(t2);
      } else {
        auto t1 = Clock::now();
        at::Tensor vision = m->encode_frames(pixels);
        sync();
        vis_ms = ms_since(t1);
        model::PromptLayout layout =
            m->build_prompt("What is happening in this video? Describe it briefly.", vision.size(0));
        prompt_len = static_cast<int64_t>(layout.ids.size());
        auto t2 = Clock::now();
        logits = m->prefill(layout, vision, cache).logits;
        sync();
        pre_ms = ms_since(t2);
      }
      model::GenerationOptions o;
      o.max_new_tokens = new_tokens;
      model::GenerationResult g;
      if (new_tokens > 0) g = model::generate(m->llm(), cache, logits, prompt_len, o, nullptr);
      if (r == 0) continue;
      vis.push_back(vis_ms);
      pre.push_back(pre_ms);
      dec.push_back(g.ids.empty() ? 0.0 : g.decode_ms / static_cast<double>(g.ids.size()));
    }
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    if (json) {
      std::printf("{\"load_ms\": %.1f, \"dtype\": \"%s\", \"attention\": \"%s\", \"threads\": %d, "
                  "\"prompt_tokens\": %lld, \"vision_ms\": %.2f, \"prefill_ms\": %.2f, \"prefill_tok_s\": %.2f, "
                  "\"decode_tokens\": %d, \"decode_ms_per_token\": %.3f}\n",
                  load_ms, model::compute_dtype_name(lo.dtype), attention.c_str(), threads,
                  static_cast<long long>(prompt_len), median(vis), median(pre), prompt_len / (median(pre) / 1000.0),
                  new_tokens, median(dec));
      return 0;
    }
    std::printf("model: %s (%s), vision %dx%d @%dpx, text %dx%d, vocab %d, %s, attention %s, %d threads\n",
                dir.empty() ? preset.c_str() : dir.c_str(), c.architecture.c_str(), c.vision.num_hidden_layers,
                c.vision.hidden_size, s, c.text.num_hidden_layers, c.text.hidden_size, c.text.vocab_size,
                model::compute_dtype_name(lo.dtype), attention.c_str(), threads);
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
