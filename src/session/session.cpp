#include "session/session.h"

#include <ATen/ATen.h>

#include <chrono>

#include "core/error.h"
#include "core/log.h"
#include "model/flops.h"
#include "model/kv_cache.h"

namespace mustdrop::session {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

}  // namespace

void Session::add_frame(FrameTokens frame) { frames_.push_back(std::move(frame)); }

int64_t Session::n_vision_tokens() const {
  int64_t n = 0;
  for (const auto& f : frames_) n += f.tokens.size(0);
  return n;
}

AnswerStats Session::answer(const std::string& question, const model::GenerationOptions& options,
                            const TextCallback& on_text, const std::atomic<bool>* stop) const {
  if (frames_.empty()) throw InputError("no frame was encoded: nothing to answer about");
  AnswerStats st;
  st.question = question;
  auto t0 = Clock::now();
  std::vector<at::Tensor> parts;
  for (const auto& f : frames_) parts.push_back(f.tokens);
  at::Tensor vision = at::cat(parts, 0);
  model::PromptLayout layout = model_.build_prompt(question, vision.size(0));
  st.n_vision_tokens = layout.n_vision;
  st.n_prompt_tokens = static_cast<int64_t>(layout.ids.size());
  if (st.n_prompt_tokens > model_.config().text.max_position_embeddings) {
    MD_LOG_WARN("answer", "the prompt has " << st.n_prompt_tokens << " tokens, more than the model's context of "
                                            << model_.config().text.max_position_embeddings
                                            << "; answers may degrade (use fewer --frames)");
  }

  const model::LlamaModel& llm = model_.llm();
  model::DenseKvCache cache(llm.n_layers());
  model::LlmOutput out = model_.prefill(layout, vision, cache);
  st.prefill_ms = ms_since(t0);
  int64_t n_text = st.n_prompt_tokens - layout.n_vision;
  for (int64_t n : out.tokens_per_layer) st.vision_per_layer.push_back(n - n_text);

  // Stream decoded text; the tokenizer turns ids into text pieces incrementally.
  const model::Tokenizer* tok = model_.tokenizer();
  std::vector<int> ids;
  bool first = true;
  model::GenerationOptions o = options;
  if (tok) {
    o.stop_ids.push_back(tok->eos_id());
    o.vocab_limit = tok->vocab_size();
  }
  model::GenerationResult g = model::generate(
      llm, cache, out.logits, st.n_prompt_tokens, o, [&](int id) {
        if (first) {
          st.ttft_ms = ms_since(t0);
          first = false;
        }
        std::string piece = tok ? tok->decode_next(ids, id) : "<" + std::to_string(id) + ">";
        ids.push_back(id);
        st.answer += piece;
        if (on_text && !piece.empty()) on_text(piece);
        return !(stop && stop->load());
      });
  st.interrupted = stop && stop->load();
  st.n_generated = static_cast<int64_t>(g.ids.size());
  st.stopped_by_eos = g.stopped_by_eos;
  st.decode_ms_per_token = g.ids.size() > 1 ? g.decode_ms / static_cast<double>(g.ids.size() - 1) : 0.0;
  st.kv_bytes_peak = cache.peak_bytes();
  // Layer 0 never evicts: its length tells how many generated tokens were fed back.
  int64_t fed = llm.n_layers() > 0 ? cache.length(0) - st.n_prompt_tokens : 0;
  int64_t kv_vision = 0;
  for (int l = 0; l < llm.n_layers(); ++l) kv_vision += cache.length(l) - n_text - fed;
  st.n_vision_kv_after_decode = llm.n_layers() > 0 ? kv_vision / llm.n_layers() : 0;

  // FLOPs of what ran, and of the same prompt without any dropping.
  const model::TextConfig& tc = model_.config().text;
  int64_t steps = std::max<int64_t>(0, st.n_generated - 1);
  st.flops_prefill = model::prefill_flops(tc, out.tokens_per_layer);
  st.flops_decode = model::decode_flops(tc, out.tokens_per_layer, steps);  // each layer cached what it ran
  int64_t full_prompt = n_text;
  for (const auto& fr : frames_) full_prompt += fr.n_tower_tokens;
  std::vector<int64_t> full(static_cast<size_t>(llm.n_layers()), full_prompt);
  st.flops_prefill_unpruned = model::prefill_flops(tc, full);
  st.flops_decode_unpruned = model::decode_flops(tc, full, steps);
  MD_LOG_DEBUG("answer", "generation finished: " << st.n_generated << " tokens");
  return st;
}

}  // namespace mustdrop::session
