// `mustdrop inspect`: where every original patch of every frame went, followed through the
// chain's stage traces (prune::Chain::set_trace): merged within its frame, folded into an earlier
// frame's token, dropped by a vision stage, dropped at prefill, evicted at decode, evicted by the
// memory budget, or kept to the end (in S or not).
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "prune/chain.h"

namespace mustdrop::app {

// Where a patch ended, one colour each in the overlays (inspect_draw.h).
enum class Fate {
  kKept,            // its token reached the end (the LLM's last layer and the cache after decoding)
  kImportant,       // ... and that token is in S
  kAbsorbed,        // folded into an earlier frame's token (temporal merging)
  kVisionDropped,   // dropped by a vision stage
  kPrefillDropped,  // dropped by a prefill stage
  kDecodeEvicted,   // its KV entries evicted by a decode stage
  kMemoryEvicted,   // left the session's memory (budget) before the answer
};
constexpr int kNumFates = 7;
// "kept", "important", "absorbed", "vision_dropped", "prefill_dropped", "decode_evicted", "memory_evicted".
const char* fate_name(Fate fate);

// One original patch.
struct CellFate {
  Fate fate = Fate::kKept;
  int64_t token_id = 0;     // the token it ended in (absorbed: the earlier frame's token)
  bool anchor = true;       // the cell is its token's own grid position (one per token; not for absorbed cells)
  int layer = -1;           // where it left: ViT layer (-1: after the tower), LLM layer, or first cache layer evicted
  std::string by;           // the pruner that decided ("" when kept)
  int64_t into_frame = -1;  // absorbed: the frame it was folded into
};

struct FrameFates {
  int64_t seq = 0;
  std::vector<CellFate> cells;  // grid * grid, raster order
  // Cells per fate, and tokens per fate (anchors: one per token that left the tower as itself).
  std::vector<int64_t> n_cells() const;
  std::vector<int64_t> n_tokens() const;
  // Per cell: the cells of this frame in the same token (1 unless merged within the frame;
  // absorbed cells count 1 each).
  std::vector<int64_t> group_sizes() const;
};

// Follows `traces` (as the stages ran: vision stages frame by frame, then the prefill and decode
// stages of one answer) over the frames `frame_seqs` of a `grid` x `grid` patch grid.
// `memory_ids`: the tokens in the session's memory when the question was asked (a token that left
// the tower but is not there was evicted by the budget). Ids no frame of `frame_seqs` owns are
// ignored (CLS, tokens a prefill stage made).
std::vector<FrameFates> follow_traces(const std::vector<prune::StageTrace>& traces,
                                      const std::vector<int64_t>& frame_seqs, int grid,
                                      const std::set<int64_t>& memory_ids);

}  // namespace mustdrop::app
