// Per-stream state: a bounded memory of the vision tokens kept from the frames seen so far (with
// a ledger of where each came from and the question-independent KV prefix), and the answering of
// questions over snapshots of it, streamed token by token. The model is shared and immutable; a
// Session belongs to one stream.
//
// Threading: one perception caller (encode_frame, add_frame, note_gap; frames in order) and any
// number of answers at the same time, each on the snapshot it was given.
#pragma once

#include <ATen/core/Tensor.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "config/config.h"
#include "model/generate.h"
#include "model/vlm.h"
#include "prune/chain.h"
#include "session/frame_memory.h"

namespace mustdrop::session {

// The memory entry of frame `seq` encoded as `frame`, its features projected to `tokens`.
FrameTokens frame_tokens(prune::EncodedFrame frame, at::Tensor tokens, int64_t seq, double t_sec,
                         model::Media media = model::Media::kVideo);

// The memory an answer used.
struct MemoryUse {
  uint64_t version = 0;  // the snapshot
  int64_t n_frames = 0;
  int64_t n_tokens = 0;
  double t_first_sec = 0;
  double t_last_sec = 0;
  std::vector<Gap> gaps;
  int64_t n_evicted_tokens = 0;  // evicted before this answer, since the session began
};

// A time range of the memory the answer looked at: the frames whose kept tokens drew `share` of
// the attention the last prompt row paid to the vision block in the last LLM layer.
struct GroundSpan {
  double t_from_sec = 0;
  double t_to_sec = 0;
  double share = 0;      // of the vision block's attention (0..1)
  int64_t n_tokens = 0;  // kept tokens behind it
};

struct AnswerStats {
  std::string question;
  std::string answer;
  std::vector<int> ids;                 // generated token ids
  at::Tensor first_logits;              // [1, vocab] the prefill's last row (the first token's scores)
  at::Tensor final_positions;           // [n] RoPE positions of the tokens that reached the last LLM layer
  MemoryUse memory;
  int64_t n_vision_tokens = 0;          // entering the LLM
  int64_t n_prompt_tokens = 0;
  std::vector<int64_t> vision_per_layer;  // vision tokens present in each LLM layer
  int64_t n_vision_kv_after_decode = 0;   // vision KV entries per layer after decoding (mean over layers)
  int64_t n_generated = 0;
  bool stopped_by_eos = false;
  bool interrupted = false;
  bool used_prefix = false;             // the cached prefix served layers 0..prefix_layer
  double ttft_ms = 0;   // question in to first token out (prefill included)
  double prefill_ms = 0;
  double decode_ms_per_token = 0;
  int64_t kv_bytes_peak = 0;
  double flops_prefill = 0;             // the prompt's prefill as the method runs it (cached rows counted)
  double flops_prefill_saved = 0;       // of which the prefix cache computed earlier, once for every question
  double flops_decode = 0;
  double flops_prefill_unpruned = 0;
  double flops_decode_unpruned = 0;
  std::vector<prune::StageRecord> stages;  // prefill and decode stages of this answer
  std::vector<GroundSpan> grounding;       // with ground_answers(): the most attended time ranges, largest share first
};

// Receives each piece of answer text as it is generated.
using TextCallback = std::function<void(const std::string& piece)>;

// Flags that end generation early when either becomes true (either may be null).
struct StopFlags {
  StopFlags(const std::atomic<bool>* a = nullptr, const std::atomic<bool>* b = nullptr) : a_(a), b_(b) {}
  bool operator()() const { return (a_ && a_->load()) || (b_ && b_->load()); }

 private:
  const std::atomic<bool>* a_;
  const std::atomic<bool>* b_;
};

class Session {
 public:
  // `chain` (copied: its per-stream memory belongs to this session) drops tokens; none: keep all.
  // `memory` bounds what is kept. Stages that can never act on `model` (layers past its depth)
  // are logged as warnings. ConfigError for a budget that leaves no room.
  explicit Session(const model::VisionLanguageModel& model, const prune::Chain* chain = nullptr,
                   const config::MemoryConfig& memory = {});

  // Encodes one frame ([1, 3, S, S]) through the tower for `media` with the chain's vision
  // stages (frames in sequence order; one perception caller). Features are not projected yet.
  prune::EncodedFrame encode_frame(const at::Tensor& pixels, int64_t seq, double t_sec,
                                   model::Media media = model::Media::kVideo);
  // Remembers a frame's tokens (FrameMemory::append); evicted tokens are forgotten by the vision
  // stages before the next frame.
  void add_frame(FrameTokens frame);
  // Records a gap before the next frame (dropped frames, an outage).
  void note_gap(Gap gap) { memory_->note_gap(std::move(gap)); }
  // Where a new source's frames start (thread-safe): numbers and times continue the frames
  // already remembered, so a session fed several sources in turn never reuses either (0 first;
  // then the last number + 1, and the last time + 1 s).
  int64_t next_frame_seq() const;
  double next_frame_time() const;

  // The memory now (thread-safe).
  std::shared_ptr<const MemorySnapshot> snapshot() const { return memory_->snapshot(); }
  const FrameMemory& memory() const { return *memory_; }
  const prune::Chain& chain() const { return *chain_; }
  // Vision-stage records summed over the frames encoded so far (thread-safe copy).
  std::vector<prune::StageRecord> vision_records() const;
  const model::VisionLanguageModel& model() const { return model_; }
  // Whether answers use the cached prefix.
  bool prefix_cache() const { return prefix_cache_; }
  // Answers from now on also say which time ranges they looked at (AnswerStats::grounding): the
  // last LLM layer then returns one attention row. Thread-safe.
  void ground_answers(bool on) { ground_.store(on); }

  // Answers `question` over `memory`: prefill (with the chain's prefill stages; layers
  // 0..prefix_layer from the cached prefix when there is one and use_prefix is set), then
  // generation streamed through `on_text` (with its decode stages). A memory that holds one still
  // image is asked about as an image (Video-LLaVA: "<image>"), else as a video. `stop` (optional)
  // ends generation early. `chain` (optional) answers with another chain's prefill and decode
  // stages over this memory: its prefix layer must equal this session's (InternalError otherwise),
  // so pipelines with the same vision stages and prefix depth share one memory. Thread-safe.
  // InputError on an empty memory.
  AnswerStats answer(const MemorySnapshot& memory, const std::string& question, const model::GenerationOptions& options,
                     const TextCallback& on_text, StopFlags stop = {}, bool use_prefix = true,
                     const prune::Chain* chain = nullptr) const;
  // The same over the current snapshot.
  AnswerStats answer(const std::string& question, const model::GenerationOptions& options, const TextCallback& on_text,
                     StopFlags stop = {}) const {
    return answer(*snapshot(), question, options, on_text, stop);
  }

 private:
  const model::VisionLanguageModel& model_;
  std::unique_ptr<prune::Chain> chain_;
  bool prefix_cache_;
  std::atomic<bool> ground_{false};
  std::unique_ptr<FrameMemory> memory_;
  mutable std::mutex encoder_mu_;      // the chain's vision stages and their records
  std::vector<int64_t> forget_;        // evicted ids the vision stages have not forgotten yet (under encoder_mu_)
  int64_t next_seq_ = 0;               // after the last frame added (under encoder_mu_)
  double next_t_ = 0;
};

}  // namespace mustdrop::session
