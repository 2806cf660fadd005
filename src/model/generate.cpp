#include "model/generate.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <chrono>

#include "model/device.h"

namespace mustdrop::model {

int pick_token(const at::Tensor& logits_in, const GenerationOptions& o, at::Generator& gen) {
  at::Tensor logits = logits_in.reshape({-1});
  if (o.vocab_limit > 0 && o.vocab_limit < logits.size(0)) logits = logits.narrow(0, 0, o.vocab_limit);
  // Greedy: only the id leaves the device. Sampling draws on the host, from the seeded generator.
  if (o.temperature <= 0) return static_cast<int>(to_host(logits.argmax()).item<int64_t>());
  logits = to_host(logits).to(at::kFloat);
  at::Tensor probs = at::softmax(logits / o.temperature, -1);
  if (o.top_p < 1.0) {
    auto sorted = probs.sort(-1, true);
    at::Tensor values = std::get<0>(sorted), order = std::get<1>(sorted);
    at::Tensor cum = values.cumsum(0);
    // Keep every token whose preceding mass is below top_p (so at least the top one stays).
    at::Tensor drop = (cum - values) >= o.top_p;
    values.masked_fill_(drop, 0);
    probs = at::zeros_like(probs).scatter(0, order, values);
  }
  return static_cast<int>(at::multinomial(probs, 1, false, gen).item<int64_t>());
}

GenerationResult generate(const LlamaModel& llm, KvCache& cache, const at::Tensor& first_logits, int64_t next_position,
                          const GenerationOptions& o, const TokenCallback& on_token, const StepHook& on_step,
                          const StepLayerHook& step_layers) {
  GenerationResult r;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  auto t0 = std::chrono::steady_clock::now();
  at::Tensor logits = first_logits;
  for (int step = 1; step <= o.max_new_tokens; ++step) {
    int id = pick_token(logits, o, gen);
    if (std::find(o.stop_ids.begin(), o.stop_ids.end(), id) != o.stop_ids.end()) {
      r.stopped_by_eos = true;
      break;
    }
    r.ids.push_back(id);
    bool go_on = !on_token || on_token(id);
    if (!go_on || step == o.max_new_tokens) break;
    LlmForward f;
    f.hidden = llm.embed({id});
    f.positions = at::full({1}, next_position++, at::TensorOptions().dtype(at::kLong));
    f.cache = &cache;
    if (step_layers) f.hook = step_layers(step);
    logits = llm.forward(f).logits;
    if (on_step) on_step(step, cache);
  }
  r.decode_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace mustdrop::model
