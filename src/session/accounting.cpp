#include "session/accounting.h"

#include "prune/chain.h"

namespace mustdrop::session {

using nlohmann::json;

double mean(const std::vector<int64_t>& v) {
  if (v.empty()) return 0;
  double s = 0;
  for (int64_t x : v) s += static_cast<double>(x);
  return s / static_cast<double>(v.size());
}

json transfers_json(const model::TransferStats& t) {
  return {{"to_device", t.to_device},
          {"to_device_bytes", t.to_device_bytes},
          {"to_host", t.to_host},
          {"to_host_bytes", t.to_host_bytes}};
}

Accounting account(const MemorySnapshot& memory, const std::vector<prune::StageRecord>& vision_records,
                   const model::ModelConfig& mc, const std::vector<AnswerStats>& answers) {
  const AnswerStats* answer = answers.empty() ? nullptr : &answers.front();
  Accounting a;
  a.n_vision_tokens_to_llm = memory.n_tokens;
  // Tower tokens and FLOPs of every frame given to the memory, evicted ones included.
  a.n_vision_tokens_in = memory.seen.n_tower_tokens;
  a.flops_vision = memory.seen.vision_flops;
  const double vision_full = memory.seen.vision_flops_unpruned;
  std::vector<std::vector<int64_t>> per_frame;  // stage FLOPs: over the frames still in memory
  for (const auto& frame : memory.frames) {
    for (const auto& e : frame->ledger) a.n_vision_tokens_in_s += e.in_s ? 1 : 0;
    per_frame.push_back(frame->tokens_per_vision_layer);
  }
  a.flops_total = a.flops_vision;
  a.flops_unpruned = vision_full;
  for (const auto& q : answers) {
    a.flops_total += q.flops_prefill + q.flops_decode;
    a.flops_unpruned += q.flops_prefill_unpruned + q.flops_decode_unpruned;
  }
  if (answer) {
    a.n_vision_tokens_layer_avg = mean(answer->vision_per_layer);
    a.n_vision_kv_after_decode = answer->n_vision_kv_after_decode;
  }
  std::vector<prune::StageRecord> records = vision_records;
  prune::attribute_flops(records, mc, per_frame, {}, 0);
  if (answer) records.insert(records.end(), answer->stages.begin(), answer->stages.end());
  a.stages = json::array();
  for (const auto& r : records) {
    a.stages.push_back({{"name", r.name},
                        {"stage", prune::stage_name(r.stage)},
                        {"layer", r.layer},
                        {"calls", r.calls},
                        {"n_in", r.n_in},
                        {"n_out", r.n_out},
                        {"ms", r.ms},
                        {"flops", r.flops}});
  }
  return a;
}

}  // namespace mustdrop::session
