#include "session/session.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "core/error.h"
#include "core/log.h"
#include "core/sysinfo.h"
#include "core/timing.h"
#include "model/device.h"
#include "model/flops.h"
#include "model/kv_cache.h"

namespace mustdrop::session {

FrameTokens frame_tokens(prune::EncodedFrame frame, at::Tensor tokens, int64_t seq, double t_sec, model::Media media) {
  FrameTokens ft;
  ft.seq = seq;
  ft.t_sec = t_sec;
  ft.media = media;
  ft.tokens = std::move(tokens);
  ft.ledger = std::move(frame.ledger);
  ft.n_tower_tokens = frame.n_tower_tokens;
  ft.tokens_per_vision_layer = std::move(frame.tokens_per_layer);
  ft.cls_only_tokens = std::move(frame.cls_only_tokens);
  ft.growths = std::move(frame.growths);
  return ft;
}

Session::Session(const model::VisionLanguageModel& model, const prune::Chain* chain, const config::MemoryConfig& memory)
    : model_(model),
      chain_(chain ? std::make_unique<prune::Chain>(*chain) : std::make_unique<prune::Chain>()),
      prefix_cache_(memory.prefix_cache),
      memory_(std::make_unique<FrameMemory>(model, chain_->prefix_layer(model), memory)) {
  // Said once per process: a batch job makes a session per video and pipeline.
  static std::mutex said_mu;
  static std::set<std::string> said;
  for (const auto& line : chain_->inactive_stages(model_)) {
    std::lock_guard<std::mutex> lock(said_mu);
    if (said.insert(chain_->name() + ": " + line).second) MD_LOG_WARN("prune", chain_->name() << ": " << line);
  }
}

prune::EncodedFrame Session::encode_frame(const at::Tensor& pixels, int64_t seq, double t_sec, model::Media media) {
  std::lock_guard<std::mutex> lock(encoder_mu_);
  if (!forget_.empty()) {
    chain_->forget(forget_);
    forget_.clear();
  }
  return chain_->encode_frame(model_, pixels, seq, t_sec, media);
}

void Session::add_frame(FrameTokens frame) {
  const int64_t seq = frame.seq;
  const double t = frame.t_sec;
  std::vector<int64_t> evicted = memory_->append(std::move(frame));
  std::lock_guard<std::mutex> lock(encoder_mu_);
  next_seq_ = std::max(next_seq_, seq + 1);
  next_t_ = std::max(next_t_, t + 1.0);
  forget_.insert(forget_.end(), evicted.begin(), evicted.end());
}

int64_t Session::next_frame_seq() const {
  std::lock_guard<std::mutex> lock(encoder_mu_);
  return next_seq_;
}

double Session::next_frame_time() const {
  std::lock_guard<std::mutex> lock(encoder_mu_);
  return next_t_;
}

std::vector<prune::StageRecord> Session::vision_records() const {
  std::lock_guard<std::mutex> lock(encoder_mu_);
  return chain_->vision_records();
}

namespace {

// Attention per token grouped by the frame each token came from (a token merged over time spans
// its frames); the three largest groups, largest first.
std::vector<GroundSpan> ground_spans(const std::vector<prune::TokenInfo>& tokens, const std::vector<double>& weights) {
  std::map<int64_t, GroundSpan> by_frame;
  double total = 0;
  for (size_t i = 0; i < tokens.size() && i < weights.size(); ++i) {
    const prune::TokenInfo& t = tokens[i];
    auto [it, fresh] = by_frame.try_emplace(t.frame_seq);
    GroundSpan& g = it->second;
    if (fresh) {
      g.t_from_sec = t.t_first_sec;
      g.t_to_sec = t.t_last_sec;
    }
    g.t_from_sec = std::min(g.t_from_sec, t.t_first_sec);
    g.t_to_sec = std::max(g.t_to_sec, t.t_last_sec);
    g.share += weights[i];
    ++g.n_tokens;
    total += weights[i];
  }
  std::vector<GroundSpan> out;
  for (auto& [frame, g] : by_frame) out.push_back(g);
  std::sort(out.begin(), out.end(), [](const GroundSpan& a, const GroundSpan& b) { return a.share > b.share; });
  if (out.size() > 3) out.resize(3);
  for (auto& g : out) g.share = total > 0 ? g.share / total : 0;
  return out;
}

}  // namespace

AnswerStats Session::answer(const MemorySnapshot& memory, const std::string& question,
                            const model::GenerationOptions& options, const TextCallback& on_text, StopFlags stop,
                            bool use_prefix, const prune::Chain* chain) const {
  // Freed heap pages go back to the system before the answer (what encoding frames left), after
  // prefill (its activations: the KV cache is all that decode adds to) and at the end (the
  // answer's cache and activations; declared first, this runs last). A few ms each.
  struct ReleaseOnReturn {
    ~ReleaseOnReturn() { release_free_memory(); }
  } release;
  release_free_memory();
  if (memory.frames.empty()) throw InputError("no frame was encoded: nothing to answer about");
  const prune::Chain& stages = chain ? *chain : *chain_;
  if (chain && chain->prefix_layer(model_) != chain_->prefix_layer(model_)) {
    throw InternalError(chain->name() + " cannot answer over the memory of " + chain_->name() +
                        ": their prefix layers differ");
  }
  AnswerStats st;
  st.question = question;
  st.memory = MemoryUse{memory.version,     static_cast<int64_t>(memory.frames.size()),
                        memory.n_tokens,    memory.t_first_sec,
                        memory.t_last_sec,  memory.gaps,
                        memory.n_evicted_tokens};
  auto t0 = Clock::now();
  at::Tensor vision = memory.vision();
  std::vector<LedgerEntry> ledger = memory.ledger();
  model::PromptLayout layout = model_.build_prompt(question, vision.size(0), memory.media());
  st.n_vision_tokens = layout.n_vision;
  st.n_prompt_tokens = static_cast<int64_t>(layout.ids.size());
  // Positions: the system part 0..s-1, the memory's own, then the text after the memory.
  const int64_t n_text = st.n_prompt_tokens - layout.text_begin();
  at::Tensor positions = at::cat({at::arange(layout.vision_begin, at::TensorOptions().dtype(at::kLong)),
                                  memory.positions(),
                                  at::arange(memory.next_position, memory.next_position + n_text,
                                             at::TensorOptions().dtype(at::kLong))});
  const int64_t context = model_.config().text.max_position_embeddings;
  if (memory.next_position + n_text > context) {
    MD_LOG_WARN("answer", "the prompt reaches position " << memory.next_position + n_text
                                                        << ", past the model's context of " << context
                                                        << "; answers may degrade (use fewer --frames)");
  }
  // The cached prefix serves when it matches this prompt's system part (it always does, unless
  // the question changed how the text before the placeholder tokenizes).
  const bool prefix_fits =
      use_prefix && memory.prefix && layout.vision_begin == memory.prefix->n_system() &&
      std::equal(layout.ids.begin(), layout.ids.begin() + layout.vision_begin, memory.prefix->system_ids().begin()) &&
      memory.prefix->size() == layout.text_begin();
  const model::LlamaModel& llm = model_.llm();
  model::DenseKvCache cache(llm.n_layers(), options.max_new_tokens);  // room for the answer
  at::Tensor prefix_hidden;
  if (prefix_fits) {
    const bool in_place = memory.prefix->share_into(cache);
    MD_LOG_DEBUG("answer", "prefix of " << memory.prefix->size() << " entries " << (in_place ? "read in place" : "copied"));
    prefix_hidden = memory.prefix->hidden();
    st.used_prefix = true;
  }
  const int64_t n_frames = static_cast<int64_t>(memory.frames.size());
  prune::PrefillRun run = stages.prefill(model_, layout, std::move(vision), ledger, n_frames, cache, positions,
                                          prefix_hidden, ground_.load());
  const model::LlmOutput& out = run.out;
  model::synchronize(llm.device());  // on a GPU the work above is only queued
  st.prefill_ms = ms_since(t0);
  release_free_memory();
  // Decode stages: right after prefill (step 0) and after each step. The cache lengths at the
  // eviction tell the decode FLOPs.
  std::vector<int64_t> kv_lengths = out.tokens_per_layer;
  int evicted_at = -1;
  auto decode_stages = [&](int step, model::KvCache& c) {
    std::vector<int64_t> before;
    for (int l = 0; l < c.n_layers(); ++l) before.push_back(c.length(l));
    stages.after_decode_step(step, c, run);
    std::vector<int64_t> after;
    for (int l = 0; l < c.n_layers(); ++l) after.push_back(c.length(l));
    if (after != before && evicted_at < 0) {
      evicted_at = step;
      kv_lengths = after;
    }
  };
  decode_stages(0, cache);
  const int64_t n_not_vision = st.n_prompt_tokens - layout.n_vision;
  for (int64_t n : out.tokens_per_layer) st.vision_per_layer.push_back(n - n_not_vision);

  // Stream decoded text; the pieces add up to decode(generated ids), the held-back tail of an
  // unfinished character included (flushed at the end).
  const model::Tokenizer* tok = model_.tokenizer();
  std::optional<model::TextStream> text;
  if (tok) text.emplace(*tok);
  auto emit = [&](const std::string& piece) {
    st.answer += piece;
    if (on_text && !piece.empty()) on_text(piece);
  };
  bool first = true;
  model::GenerationOptions o = options;
  if (tok) {
    o.stop_ids.push_back(tok->eos_id());
    o.vocab_limit = tok->vocab_size();
  }
  const int64_t next_position = memory.next_position + n_text;
  model::GenerationResult g = model::generate(
      llm, cache, out.logits, next_position, o, [&](int id) {
        if (first) {
          st.ttft_ms = ms_since(t0);
          first = false;
        }
        emit(text ? text->push(id) : "<" + std::to_string(id) + ">");
        return !stop();
      },
      decode_stages, stages.decode_layer_hook(run));
  if (text) emit(text->finish());
  st.interrupted = stop();
  st.n_generated = static_cast<int64_t>(g.ids.size());
  st.ids = g.ids;
  st.first_logits = out.logits;
  st.final_positions = run.final_positions;
  st.stopped_by_eos = g.stopped_by_eos;
  st.decode_ms_per_token = g.ids.size() > 1 ? g.decode_ms / static_cast<double>(g.ids.size() - 1) : 0.0;
  st.kv_bytes_peak = cache.peak_bytes();
  // The ledger of each layer's cache follows every eviction.
  int64_t kv_vision = 0;
  for (const auto& layer : run.layer_vision) kv_vision += static_cast<int64_t>(layer.size());
  st.n_vision_kv_after_decode = run.layer_vision.empty() ? 0 : kv_vision / static_cast<int64_t>(run.layer_vision.size());

  // FLOPs of what ran, and of the same prompt without any dropping.
  const model::TextConfig& tc = model_.config().text;
  int64_t steps = std::max<int64_t>(0, st.n_generated - 1);
  st.flops_prefill = model::prefill_flops(tc, out.tokens_per_layer);
  st.flops_prefill_saved = st.flops_prefill - model::prefill_flops(tc, out.computed_per_layer);
  // Each layer cached what it ran; after an eviction at step D the rest runs on the smaller cache.
  int64_t full_steps = evicted_at < 0 ? steps : std::min<int64_t>(steps, evicted_at);
  st.flops_decode = model::decode_flops(tc, out.tokens_per_layer, full_steps) +
                    model::decode_flops(tc, kv_lengths, steps - full_steps);
  int64_t full_prompt = st.n_prompt_tokens - layout.n_vision;
  for (const auto& fr : memory.frames) full_prompt += fr->n_tower_tokens;
  std::vector<int64_t> full(static_cast<size_t>(llm.n_layers()), full_prompt);
  st.flops_prefill_unpruned = model::prefill_flops(tc, full);
  st.flops_decode_unpruned = model::decode_flops(tc, full, steps);
  st.grounding = ground_spans(run.ground_tokens, run.ground_attention);
  st.stages = run.records;
  prune::attribute_flops(st.stages, model_.config(), {}, out.tokens_per_layer,
                         model::decode_flops(tc, kv_lengths, steps - full_steps));
  MD_LOG_DEBUG("answer", "generation finished: " << st.n_generated << " tokens");
  return st;
}

}  // namespace mustdrop::session
