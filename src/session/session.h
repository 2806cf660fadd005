// Per-stream state: the vision tokens remembered from the frames seen so far (with a ledger of
// where each came from) and the answering of questions over them, streamed token by token.
// The model is shared and immutable; a Session belongs to one stream.
#pragma once

#include <ATen/core/Tensor.h>

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "model/generate.h"
#include "model/vlm.h"
#include "prune/chain.h"

namespace mustdrop::session {

// Where one remembered vision token came from (frame, grid position, merged size, frame span,
// membership in S): the prune module's ledger entry.
using LedgerEntry = prune::TokenInfo;

// The vision tokens of one encoded frame.
struct FrameTokens {
  int64_t seq = 0;
  double t_sec = 0;
  model::Media media = model::Media::kVideo;  // kImage: a still image (the source's only picture)
  at::Tensor tokens;                  // [n, text hidden] projected
  std::vector<LedgerEntry> ledger;    // n entries
  int64_t n_tower_tokens = 0;         // tokens out of the tower before any dropping
  std::vector<int64_t> tokens_per_vision_layer;  // tokens each full ViT layer processed
  std::vector<int64_t> cls_only_tokens;          // tokens of each CLS-row-only pass (S past the feature layer)
  std::vector<prune::Growth> growths;  // earlier frames' tokens that absorbed tokens of this frame
};

// The memory entry of frame `seq` encoded as `frame`, its features projected to `tokens`.
FrameTokens frame_tokens(prune::EncodedFrame frame, at::Tensor tokens, int64_t seq, double t_sec,
                         model::Media media = model::Media::kVideo);

struct AnswerStats {
  std::string question;
  std::string answer;
  std::vector<int> ids;                 // generated token ids
  at::Tensor first_logits;              // [1, vocab] the prefill's last row (the first token's scores)
  at::Tensor final_positions;           // [n] RoPE positions of the tokens that reached the last LLM layer
  int64_t n_vision_tokens = 0;          // entering the LLM
  int64_t n_prompt_tokens = 0;
  std::vector<int64_t> vision_per_layer;  // vision tokens present in each LLM layer
  int64_t n_vision_kv_after_decode = 0;   // vision KV entries per layer after decoding (mean over layers)
  int64_t n_generated = 0;
  bool stopped_by_eos = false;
  bool interrupted = false;
  double ttft_ms = 0;   // question in to first token out (prefill included)
  double prefill_ms = 0;
  double decode_ms_per_token = 0;
  int64_t kv_bytes_peak = 0;
  double flops_prefill = 0;
  double flops_decode = 0;
  double flops_prefill_unpruned = 0;
  double flops_decode_unpruned = 0;
  std::vector<prune::StageRecord> stages;  // prefill and decode stages of this answer
};

// Receives each piece of answer text as it is generated.
using TextCallback = std::function<void(const std::string& piece)>;

class Session {
 public:
  // `chain` (copied: its per-stream memory belongs to this session) drops tokens; none: keep all.
  // Stages that can never act on `model` (layers past its depth) are logged as warnings.
  explicit Session(const model::VisionLanguageModel& model, const prune::Chain* chain = nullptr);

  // Encodes one frame ([1, 3, S, S]) through the tower for `media` with the chain's vision
  // stages (frames must come in sequence order; one caller at a time). Features are not
  // projected yet.
  prune::EncodedFrame encode_frame(const at::Tensor& pixels, int64_t seq, double t_sec,
                                   model::Media media = model::Media::kVideo);
  // Remembers a frame's tokens (frames arrive in sequence order) and grows the earlier tokens
  // that absorbed some of its tokens.
  void add_frame(FrameTokens frame);
  const std::vector<FrameTokens>& frames() const { return frames_; }
  int64_t n_vision_tokens() const;
  // kImage when the memory holds one still image (asked about as an image), else kVideo.
  model::Media media() const;
  const prune::Chain& chain() const { return *chain_; }
  const model::VisionLanguageModel& model() const { return model_; }

  // Answers `question` over every remembered token: prefill (with the chain's prefill stages),
  // then generation streamed through `on_text` (with its decode stages). A memory that holds
  // one still image is asked about as an image (Video-LLaVA: "<image>"), else as a video. `stop` (optional)
  // ends generation early when it becomes true.
  AnswerStats answer(const std::string& question, const model::GenerationOptions& options, const TextCallback& on_text,
                     const std::atomic<bool>* stop = nullptr) const;

 private:
  const model::VisionLanguageModel& model_;
  std::unique_ptr<prune::Chain> chain_;
  std::vector<FrameTokens> frames_;
};

}  // namespace mustdrop::session
