#include "session/comparison.h"

#include <algorithm>
#include <cstdarg>

#include "model/flops.h"

namespace mustdrop::session {

using nlohmann::json;

namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// printf onto the end of `out`.
__attribute__((format(printf, 2, 3))) void appendf(std::string& out, const char* f, ...) {
  va_list args, again;
  va_start(args, f);
  va_copy(again, args);
  const int n = std::vsnprintf(nullptr, 0, f, args);
  va_end(args);
  if (n > 0) {
    const size_t at = out.size();
    out.resize(at + static_cast<size_t>(n) + 1);
    std::vsnprintf(&out[at], static_cast<size_t>(n) + 1, f, again);
    out.resize(at + static_cast<size_t>(n));
  }
  va_end(again);
}

}  // namespace

double full_depth_flops(const model::ModelConfig& full, const MemorySnapshot& memory,
                        const std::vector<int64_t>& llm_tokens_per_layer) {
  const int n = full.vision.num_hidden_layers, index = full.vision_feature_layer;
  const int tower_layers = index < 0 ? n + 1 + index : index;  // hidden_states[index] = output of layer index-1
  auto extend = [](const std::vector<int64_t>& v, int depth) {
    std::vector<int64_t> out(static_cast<size_t>(depth), v.empty() ? 0 : v.back());
    for (size_t i = 0; i < v.size() && i < out.size(); ++i) out[i] = v[i];
    return out;
  };
  double total = 0;
  for (const auto& f : memory.frames) {
    total += model::vision_flops(full.vision, 1, extend(f->tokens_per_vision_layer, tower_layers));
    for (int64_t t : f->cls_only_tokens) total += model::cls_row_flops(full.vision, t);
  }
  return total + model::prefill_flops(full.text, extend(llm_tokens_per_layer, full.text.num_hidden_layers));
}

void measure_answer(Measure& m, const MemorySnapshot& memory, const std::vector<prune::StageRecord>& vision_records,
                    const model::ModelConfig& config, const AnswerStats& a, const model::ModelConfig* full) {
  m.acc = account(memory, vision_records, config, {a});
  m.prefill_ms = a.prefill_ms;
  m.ttft_ms = a.ttft_ms;
  m.decode_ms_per_token = a.decode_ms_per_token;
  m.kv_bytes_peak = a.kv_bytes_peak;
  m.ids = a.ids;
  if (full) {
    std::vector<int64_t> llm;
    const int64_t n_text = a.n_prompt_tokens - a.n_vision_tokens;
    for (int64_t v : a.vision_per_layer) llm.push_back(v + n_text);
    m.flops_full_depth = full_depth_flops(*full, memory, llm);
  }
}

std::vector<PipelineEntry> load_compared_pipelines(const std::vector<std::string>& paths, size_t* ref) {
  std::vector<PipelineEntry> entries;
  for (const auto& path : paths) {
    PipelineEntry e{path, config::load_pipeline(path), nullptr};
    e.chain = prune::Chain::build(e.config, path);
    entries.push_back(std::move(e));
  }
  auto is_none = [](const PipelineEntry& e) { return e.config.chain.empty(); };
  if (std::none_of(entries.begin(), entries.end(), is_none)) {
    PipelineEntry e{"(built in)", config::PipelineConfig{}, nullptr};
    e.chain = prune::Chain::build(e.config, e.path);
    entries.insert(entries.begin(), std::move(e));  // the reference every ratio is against
  }
  *ref = static_cast<size_t>(std::find_if(entries.begin(), entries.end(), is_none) - entries.begin());
  return entries;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n == 0 ? 0 : (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
}

Measure summarize(const std::vector<Measure>& runs) {
  Measure m = runs.back();  // counts and answers are the same every repeat (greedy, fixed seed)
  auto med = [&](double Measure::*field) {
    std::vector<double> v;
    for (const auto& r : runs) v.push_back(r.*field);
    return median(v);
  };
  m.vit_ms = med(&Measure::vit_ms);
  m.prefill_ms = med(&Measure::prefill_ms);
  m.ttft_ms = med(&Measure::ttft_ms);
  m.decode_ms_per_token = med(&Measure::decode_ms_per_token);
  return m;
}

Comparison compare(const std::vector<ComparisonRow>& rows, size_t ref, int max_new_tokens, int repeats,
                   const std::string& computing, bool full) {
  Comparison c;
  std::string& out = c.table;
  const size_t n_match = std::min(kMatchTokens, static_cast<size_t>(std::max(0, max_new_tokens)));
  const Measure& none = rows[ref].m;
  auto match = [&](const Measure& m) {
    size_t n = std::min(n_match, std::max(m.ids.size(), none.ids.size()));
    bool same = m.ids.size() >= n && none.ids.size() >= n && std::equal(m.ids.begin(), m.ids.begin() + n, none.ids.begin());
    return same ? "yes" : "no";
  };
  const bool traffic = std::any_of(rows.begin(), rows.end(), [](const ComparisonRow& r) {
    return r.m.transfers.to_device + r.m.transfers.to_host > 0;
  });
  appendf(out,
               "| pipeline | tokens in | to LLM | layer avg | KV after decode | FLOPs | FLOPs vs none | ViT ms | prefill ms | "
               "prefill vs none | TTFT ms | decode ms/tok | KV MB | peak RSS MB | first %zu tokens = none |%s%s\n",
               n_match, full ? " full-depth FLOPs | full-depth vs none |" : "",
               traffic ? " host->device MB (copies) | device->host MB (copies) |" : "");
  appendf(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|%s%s\n",
               full ? "---:|---:|" : "", traffic ? "---:|---:|" : "");
  json& out_rows = c.rows;
  out_rows = json::array();
  for (const ComparisonRow& row : rows) {
    const Measure& m = row.m;
    double fr = m.acc.flops_total / none.acc.flops_total, pr = m.prefill_ms / none.prefill_ms;
    appendf(out, "| %s | %lld | %lld | %.1f | %lld | %.3g | %.3f | %.0f | %.0f | %.3f | %.0f | %.1f | %.1f | %.0f | %s |",
                 row.name.c_str(), static_cast<long long>(m.acc.n_vision_tokens_in),
                 static_cast<long long>(m.acc.n_vision_tokens_to_llm), m.acc.n_vision_tokens_layer_avg,
                 static_cast<long long>(m.acc.n_vision_kv_after_decode), m.acc.flops_total, fr, m.vit_ms, m.prefill_ms,
                 pr, m.ttft_ms, m.decode_ms_per_token, static_cast<double>(m.kv_bytes_peak) / 1e6,
                 static_cast<double>(m.peak_rss) / 1e6, match(m));
    if (full) {
      appendf(out, " %s | %s |", fmt("%.3g", m.flops_full_depth).c_str(),
                   fmt("%.3f", m.flops_full_depth / none.flops_full_depth).c_str());
    }
    if (traffic) {
      appendf(out, " %.1f (%lld) | %.1f (%lld) |", static_cast<double>(m.transfers.to_device_bytes) / 1e6,
                   static_cast<long long>(m.transfers.to_device), static_cast<double>(m.transfers.to_host_bytes) / 1e6,
                   static_cast<long long>(m.transfers.to_host));
    }
    appendf(out, "\n");
    json j{{"pipeline", row.name},
           {"file", row.file},
           {"n_vision_tokens_in", m.acc.n_vision_tokens_in},
           {"n_vision_tokens_to_llm", m.acc.n_vision_tokens_to_llm},
           {"n_vision_tokens_layer_avg", m.acc.n_vision_tokens_layer_avg},
           {"n_vision_kv_after_decode", m.acc.n_vision_kv_after_decode},
           {"flops_total", m.acc.flops_total},
           {"flops_ratio_vs_none", fr},
           {"vit_ms", m.vit_ms},
           {"prefill_ms", m.prefill_ms},
           {"prefill_ratio_vs_none", pr},
           {"ttft_ms", m.ttft_ms},
           {"decode_ms_per_token", m.decode_ms_per_token},
           {"kv_bytes_peak", m.kv_bytes_peak},
           {"peak_rss_bytes", m.peak_rss},
           {"answer_ids", m.ids},
           {"first_tokens_match_none", std::string(match(m)) == "yes"},
           {"transfers", transfers_json(m.transfers)},
           {"stages", m.acc.stages}};
    if (full) {
      j["flops_full_depth"] = m.flops_full_depth;
      j["flops_full_depth_ratio_vs_none"] = m.flops_full_depth / none.flops_full_depth;
    }
    out_rows.push_back(j);
  }
  appendf(out,
          "\nFLOPs: vision + prefill + decode (analytic, src/model/flops.h); layer avg: vision tokens summed over LLM "
          "layers / layers; times: median of %d run(s), computing in %s.%s\n",
          repeats, computing.c_str(),
          full ? " Full depth: vision + prefill at the preset's full depth (layers past the ones run hold the last count)."
               : "");
  return c;
}

}  // namespace mustdrop::session
