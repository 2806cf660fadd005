#include "prune/chain.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <unordered_set>

#include "core/error.h"
#include "core/timing.h"
#include "model/device.h"
#include "model/flops.h"

namespace mustdrop::prune {
namespace {

bool acts_after(const Needs& needs, int layer) {
  return std::find(needs.layers.begin(), needs.layers.end(), layer) != needs.layers.end();
}

// Applies the vision stages at one tower layer to the tokens of one frame (batch of 1).
class VisionStages : public model::VisionHook {
 public:
  VisionStages(std::vector<TokenPruner*> pruners, int n_layers, int feature_layer, int grid,
               std::vector<TokenInfo>& ledger, std::vector<StageRecord>& records, const std::string& origin,
               const TraceSink& trace, int64_t frame_seq)
      : pruners_(std::move(pruners)), n_layers_(n_layers), feature_layer_(feature_layer), grid_(grid),
        ledger_(ledger), records_(records), origin_(origin), trace_(trace), frame_seq_(frame_seq) {}

  void after_layer(int layer, model::VisionTokens& tokens, const at::Tensor& cls_attention) override {
    for (TokenPruner* p : pruners_) {
      if (acts_after(p->needs(n_layers_), layer)) run(*p, layer, tokens, cls_attention);
    }
  }

  // Runs `p` at `layer` over `tokens` ([1, T, ...]); `cls_attention` [1, T-1] or undefined.
  void run(TokenPruner& p, int layer, model::VisionTokens& tokens, const at::Tensor& cls_attention) {
    const std::vector<int>& cls_layers = p.needs(n_layers_).vision_cls_attention;
    bool reads_cls = std::count_if(cls_layers.begin(), cls_layers.end(), [&](int l) {
                       return (l < 0 ? n_layers_ + l : l) == layer;
                     }) > 0;
    if (reads_cls && cls_attention.defined() && cls_attention.size(1) + 1 != static_cast<int64_t>(ledger_.size())) {
      throw ConfigError(origin_ + ": " + p.name() + " reads the CLS attention of ViT layer " + std::to_string(layer) +
                        ", but an earlier stage at the same layer changed the tokens; move it to a later layer");
    }
    auto t0 = Clock::now();
    int64_t n_in = static_cast<int64_t>(ledger_.size());
    View v;
    v.stage = p.stage();
    v.layer = layer;
    v.tokens = &ledger_;
    v.hidden = tokens.hidden.select(0, 0);
    v.grid = grid_;
    v.n_layers = n_layers_;
    v.feature_layer = feature_layer_;
    if (cls_attention.defined()) v.cls_attention = cls_attention.select(0, 0);
    KeepPlan plan = p.decide(v);
    if (trace_) trace_(StageTrace{p.name(), p.stage(), layer, frame_seq_, 0, ledger_, plan});
    n_windows_compared_ += plan.n_windows_compared;
    n_windows_changed_ += plan.n_windows_changed;
    at::Tensor hidden = tokens.hidden.select(0, 0), size = tokens.size.select(0, 0);
    at::Tensor patch = tokens.patch_index.select(0, 0);
    PlanTarget target;
    target.merged = {&hidden};
    target.gathered = {&patch};
    target.size = &size;
    target.ledger = &ledger_;
    target.protect_first = true;
    std::vector<Growth> g = apply_plan(plan, target, p.name());
    growths_.insert(growths_.end(), g.begin(), g.end());
    tokens.hidden = hidden.unsqueeze(0);
    tokens.size = size.unsqueeze(0);
    tokens.patch_index = patch.unsqueeze(0);
    record_stage(records_, p.name(), p.stage(), layer, n_in, static_cast<int64_t>(ledger_.size()), ms_since(t0));
  }

  std::vector<Growth> growths_;
  int64_t n_windows_compared_ = 0, n_windows_changed_ = 0;

 private:
  std::vector<TokenPruner*> pruners_;
  int n_layers_, feature_layer_, grid_;
  std::vector<TokenInfo>& ledger_;
  std::vector<StageRecord>& records_;
  const std::string& origin_;
  const TraceSink& trace_;
  int64_t frame_seq_;
};

// Applies the prefill stages between LLM layers and remembers which vision tokens each layer cached.
class PrefillStages : public model::LayerHook {
 public:
  PrefillStages(std::vector<TokenPruner*> pruners, const View& base, PrefillRun& run, std::vector<TokenInfo> ledger,
                const std::string& origin, bool ground, const TraceSink& trace)
      : pruners_(std::move(pruners)), base_(base), run_(run), ledger_(std::move(ledger)), origin_(origin),
        ground_(ground), trace_(trace) {}

  // Asked by the LLM before each layer runs; the rows are kept for after_layer().
  std::vector<int64_t> attention_rows(int layer, int64_t n_tokens) override {
    std::set<int64_t> rows;
    View v = view(layer, n_tokens);
    for (const TokenPruner* p : pruners_) {
      if (!acts_after(p->needs(base_.n_layers), layer)) continue;
      for (int64_t r : p->attention_rows(v)) rows.insert(r);
    }
    if (ground_ && layer == base_.n_layers - 1 && n_tokens > 0) rows.insert(n_tokens - 1);
    rows_.assign(rows.begin(), rows.end());
    return rows_;
  }

  void after_layer(model::LayerState& st) override {
    run_.layer_vision.push_back(ledger_);  // what this layer cached
    if (st.layer == base_.n_layers - 1) {
      run_.final_positions = st.positions;
      if (ground_) record_grounding(st);
    }
    bool changed = false;
    for (TokenPruner* p : pruners_) {
      if (!acts_after(p->needs(base_.n_layers), st.layer)) continue;
      auto t0 = Clock::now();
      int64_t n_in = static_cast<int64_t>(ledger_.size());
      View v = view(st.layer, st.hidden.size(0));
      if (changed && !p->attention_rows(v).empty()) {
        throw ConfigError(origin_ + ": " + p->name() + " reads attention after LLM layer " + std::to_string(st.layer) +
                          ", but an earlier stage at the same layer changed the tokens; move it to another layer");
      }
      v.hidden = st.hidden;
      v.rows = rows_;
      v.attention = st.attention;
      KeepPlan plan = p->decide(v);
      if (trace_) trace_(StageTrace{p->name(), p->stage(), st.layer, -1, 0, ledger_, plan});
      PlanTarget target;
      target.merged = {&st.hidden};
      target.gathered = {&st.positions};
      target.offset = base_.vision_begin;
      target.ledger = &ledger_;
      apply_plan(plan, target, p->name());
      record_stage(run_.records, p->name(), p->stage(), st.layer, n_in, static_cast<int64_t>(ledger_.size()),
                   ms_since(t0));
      // Rows asked for belong to the sequence before this plan.
      changed = changed || static_cast<int64_t>(ledger_.size()) != n_in;
    }
  }

 private:
  // The last row's attention over this layer's vision block, one weight per ledger entry.
  void record_grounding(const model::LayerState& st) {
    const int64_t n = st.hidden.size(0);
    auto it = std::find(rows_.begin(), rows_.end(), n - 1);
    if (!st.attention.defined() || it == rows_.end()) return;
    at::Tensor row = model::to_host(st.attention[it - rows_.begin()]).to(at::kDouble).contiguous();  // read below
    const int64_t n_vision = static_cast<int64_t>(ledger_.size());
    if (base_.vision_begin + n_vision > row.size(0)) return;
    const double* w = row.data_ptr<double>() + base_.vision_begin;
    run_.ground_tokens = ledger_;
    run_.ground_attention.assign(w, w + n_vision);
  }

  View view(int layer, int64_t n_tokens) {
    View v = base_;
    v.layer = layer;
    v.tokens = &ledger_;
    v.n_vision = static_cast<int64_t>(ledger_.size());
    v.n_tokens = n_tokens;
    return v;
  }

  std::vector<TokenPruner*> pruners_;
  View base_;
  PrefillRun& run_;
  std::vector<TokenInfo> ledger_;
  std::vector<int64_t> rows_;  // query rows the current layer returns attention for
  const std::string& origin_;
  bool ground_;
  const TraceSink& trace_;
};

// The decode stages that choose, at each decode step, which vision entries the layers above
// their layer read (Needs::decode_read_after); one hook for the whole generation, told each step.
class DecodeReads : public model::LayerHook {
 public:
  // `readers`: each reading stage with the layer after which it reads (Needs::decode_read_after,
  // asked once: these hooks run for every layer of every decode step).
  DecodeReads(std::vector<std::pair<TokenPruner*, int>> readers, PrefillRun& run, int n_layers, TraceSink trace)
      : readers_(std::move(readers)), run_(run), n_layers_(n_layers), trace_(std::move(trace)) {}

  // A new decode step, after `steps_done` steps: earlier selections no longer hold.
  void begin_step(int steps_done) {
    step_ = steps_done;
    selections_.clear();
  }

  std::vector<int64_t> attention_rows(int layer, int64_t n_tokens) override {
    for (const auto& [p, after] : readers_) {
      if (after == layer && n_tokens > 0) return {n_tokens - 1};  // the new token
    }
    return {};
  }

  void after_layer(model::LayerState& st) override {
    for (const auto& [p, after] : readers_) {
      if (after != st.layer) continue;
      auto t0 = Clock::now();
      if (st.layer >= static_cast<int>(run_.layer_vision.size())) return;
      std::vector<TokenInfo>& ledger = run_.layer_vision[static_cast<size_t>(st.layer)];
      const int64_t n_entries = st.n_past + st.hidden.size(0);
      if (!st.attention.defined() || st.attention.size(1) != n_entries) {
        throw InternalError(p->name() + ": decode step " + std::to_string(step_) + ": no attention over all " +
                            std::to_string(n_entries) + " entries of LLM layer " + std::to_string(st.layer) +
                            " (another stage's selection applies there)");
      }
      View v;
      v.stage = Stage::Decode;
      v.layer = st.layer;
      v.n_layers = n_layers_;
      v.tokens = &ledger;
      v.vision_begin = run_.vision_begin;
      v.n_vision = static_cast<int64_t>(ledger.size());
      v.n_tokens = n_entries;
      v.rows = {n_entries - 1};
      v.attention = st.attention;
      v.step = step_;
      v.final_ids = &run_.final_ids;
      KeepPlan plan = p->decide(v);
      if (trace_) trace_(StageTrace{p->name(), Stage::Decode, st.layer, -1, step_, ledger, plan, true});
      check_plan(plan, ledger, false, p->name());
      if (!plan.merges.empty() || !plan.absorbed.empty() || !plan.important.empty()) {
        throw InternalError("pruner " + p->name() + ": a decode read selection can only keep entries");
      }
      if (plan.keep.size() < ledger.size()) {
        Selection sel;
        sel.from_layer = st.layer + 1;
        for (const TokenInfo& e : ledger) sel.shown.insert(e.id);
        for (int64_t i : plan.keep) sel.kept.insert(ledger[static_cast<size_t>(i)].id);
        selections_.push_back(std::move(sel));
      }
      record_stage(run_.records, p->name(), Stage::Decode, st.layer + 1, v.n_vision,
                   static_cast<int64_t>(plan.keep.size()), ms_since(t0));
    }
  }

  // Every entry outside the layer's vision block, and its vision entries that every selection
  // made below it keeps (or never saw).
  at::Tensor read_entries(int layer, int64_t n_entries) override {
    bool any = false;
    for (const Selection& s : selections_) any = any || s.from_layer <= layer;
    if (!any || layer >= static_cast<int>(run_.layer_vision.size())) return at::Tensor();
    const std::vector<TokenInfo>& ledger = run_.layer_vision[static_cast<size_t>(layer)];
    const int64_t begin = run_.vision_begin, n_vision = static_cast<int64_t>(ledger.size());
    if (begin + n_vision > n_entries) {
      throw InternalError("decode: layer " + std::to_string(layer) + " holds " + std::to_string(n_entries) +
                          " entries, fewer than its vision block ends at (" + std::to_string(begin + n_vision) + ")");
    }
    std::vector<int64_t> read;
    read.reserve(static_cast<size_t>(n_entries));
    for (int64_t i = 0; i < begin; ++i) read.push_back(i);
    for (int64_t j = 0; j < n_vision; ++j) {
      const int64_t id = ledger[static_cast<size_t>(j)].id;
      bool keep = true;
      for (const Selection& s : selections_) {
        if (s.from_layer <= layer && s.shown.count(id) > 0 && s.kept.count(id) == 0) keep = false;
      }
      if (keep) read.push_back(begin + j);
    }
    for (int64_t i = begin + n_vision; i < n_entries; ++i) read.push_back(i);
    // An index list, so on the host (the layer checks it there and moves it next to its keys).
    return at::tensor(read, at::TensorOptions().dtype(at::kLong));
  }

 private:
  struct Selection {
    int from_layer = 0;                // layers >= this read it
    std::unordered_set<int64_t> shown;  // ids the stage judged
    std::unordered_set<int64_t> kept;   // ... and kept
  };
  std::vector<std::pair<TokenPruner*, int>> readers_;
  PrefillRun& run_;
  int n_layers_;
  TraceSink trace_;
  int step_ = 0;
  std::vector<Selection> selections_;  // this step's
};

}  // namespace

Chain::Chain(const Chain& other)
    : name_(other.name_), origin_(other.origin_), vision_records_(other.vision_records_), trace_(other.trace_) {
  for (const auto& p : other.pruners_) pruners_.push_back(p->clone());
}

void Chain::add(std::unique_ptr<TokenPruner> pruner) { pruners_.push_back(std::move(pruner)); }

void Chain::reset() {
  for (auto& p : pruners_) p->reset();
  vision_records_.clear();
}

void Chain::forget(const std::vector<int64_t>& ids) {
  for (auto& p : pruners_) p->forget(ids);
}

EncodedFrame Chain::encode_frame(const model::VisionLanguageModel& model, const at::Tensor& pixels, int64_t frame_seq,
                                 double t_sec, model::Media media) {
  const model::ClipVision& tower = model.tower(media);
  const int n_layers = tower.n_layers();
  const int grid = tower.grid(model.image_size());
  model::VisionRequest req;
  req.output_layer = model.feature_layer();
  std::vector<TokenPruner*> vision;
  for (auto& p : pruners_) {
    if (p->stage() != Stage::VisionLayer && p->stage() != Stage::VisionOutput) continue;
    vision.push_back(p.get());
    Needs n = p->needs(n_layers);
    for (int l : n.vision_cls_attention) {
      int layer = l < 0 ? n_layers + l : l;
      if (layer < 0 || layer >= n_layers) {
        throw ConfigError(origin_ + ": " + p->name() + " reads the CLS attention of ViT layer " + std::to_string(l) +
                          ", but the tower has " + std::to_string(n_layers) + " layers (0.." +
                          std::to_string(n_layers - 1) + ", or -1 for the last)");
      }
      req.cls_attention_layers.push_back(layer);
    }
    req.proportional_attention = req.proportional_attention || n.proportional_attention;
  }

  // The ledger starts with CLS and the patches in raster order.
  std::vector<TokenInfo> ledger;
  for (int64_t i = -1; i < int64_t(grid) * grid; ++i) {
    TokenInfo e;
    e.id = frame_seq * kIdsPerFrame + i + 1;
    e.frame_seq = e.first_frame = e.last_frame = frame_seq;
    e.patch = i;
    e.t_first_sec = e.t_last_sec = t_sec;
    ledger.push_back(e);
  }
  std::vector<TokenPruner*> in_tower;
  for (TokenPruner* p : vision) {
    if (p->stage() == Stage::VisionLayer) in_tower.push_back(p);
  }
  VisionStages stages(in_tower, n_layers, req.output_layer, grid, ledger, vision_records_, origin_, trace_, frame_seq);
  req.hook = &stages;
  model::VisionResult r = tower.forward(pixels, req);

  // Stages at layers past the feature layer (S from the last layer) act on the output tokens
  // with that layer's CLS row; VisionOutput stages act on the output tokens.
  for (TokenPruner* p : vision) {
    if (p->stage() == Stage::VisionOutput) {
      stages.run(*p, -1, r.tokens, at::Tensor());
      continue;
    }
    Needs needs = p->needs(n_layers);
    for (int l : needs.layers) {
      // Past the feature layer only CLS rows are computed: stages there read them, nothing else.
      bool reads_cls = std::count(req.cls_attention_layers.begin(), req.cls_attention_layers.end(), l) > 0;
      if (l <= req.output_layer || !reads_cls) continue;
      auto it = r.cls_attention.find(l);
      stages.run(*p, l, r.tokens, it == r.cls_attention.end() ? at::Tensor() : it->second);
    }
  }

  for (TokenPruner* p : vision) p->frame_done(ledger);
  EncodedFrame f;
  f.features = model.select_features(r.tokens, media).select(0, 0);
  if (!model.keeps_cls(media)) ledger.erase(ledger.begin());
  f.ledger = std::move(ledger);
  f.tokens_per_layer = std::move(r.tokens_per_layer);
  f.cls_only_tokens = std::move(r.cls_only_tokens);
  f.n_tower_tokens = model.tokens_per_frame(media);
  f.growths = std::move(stages.growths_);
  f.n_windows_compared = stages.n_windows_compared_;
  f.n_windows_changed = stages.n_windows_changed_;
  return f;
}

int Chain::prefix_layer(const model::VisionLanguageModel& model) const {
  const int n_layers = model.llm().n_layers();
  int k = n_layers - 1;
  for (const auto& p : pruners_) {
    if (p->stage() != Stage::Prefill) continue;
    for (int l : p->needs(n_layers).layers) k = std::min(k, std::max(0, l));
  }
  return k;
}

PrefillRun Chain::prefill(const model::VisionLanguageModel& model, const model::PromptLayout& layout,
                          at::Tensor vision, const std::vector<TokenInfo>& ledger, int64_t n_frames,
                          model::KvCache& cache, const at::Tensor& positions, const at::Tensor& prefix_hidden,
                          bool ground) const {
  if (static_cast<int64_t>(ledger.size()) != layout.n_vision) {
    throw InternalError("prefill: " + std::to_string(ledger.size()) + " ledger entries for " +
                        std::to_string(layout.n_vision) + " vision tokens");
  }
  PrefillRun run;
  run.vision_begin = layout.vision_begin;
  run.n_vision_in = layout.n_vision;
  const int64_t n_prompt = static_cast<int64_t>(layout.ids.size());
  at::Tensor all_positions =
      positions.defined() ? positions : at::arange(n_prompt, at::TensorOptions().dtype(at::kLong));
  if (all_positions.size(0) != n_prompt) {
    throw InternalError("prefill: " + std::to_string(all_positions.size(0)) + " positions for " +
                        std::to_string(n_prompt) + " prompt tokens");
  }
  at::Tensor embeddings = model.embed_prompt(layout, vision);
  vision.reset();  // the embeddings hold the rows now (26 MB for 8 frames of a 7B model)
  model::LlmForward f;
  f.cache = &cache;
  if (prefix_hidden.defined()) {
    // The system part and the vision block are cached up to the prefix layer: the text runs alone there.
    const int64_t n_cached = layout.text_begin();
    f.hidden = embeddings.narrow(0, n_cached, n_prompt - n_cached);
    f.positions = all_positions.narrow(0, n_cached, n_prompt - n_cached);
    f.cached.n = n_cached;
    f.cached.after_layer = prefix_layer(model);
    f.cached.hidden = prefix_hidden;
    f.cached.positions = all_positions.narrow(0, 0, n_cached);
  } else {
    f.hidden = embeddings;
    f.positions = all_positions;
  }

  std::vector<TokenPruner*> stages;
  for (const auto& p : pruners_) {
    if (p->stage() != Stage::Prefill && p->stage() != Stage::Decode) continue;
    run.stages.push_back(p->clone());  // this answer's own copy: answers never share a pruner
    if (p->stage() == Stage::Prefill) stages.push_back(run.stages.back().get());
  }
  View base;
  base.stage = Stage::Prefill;
  base.n_layers = model.llm().n_layers();
  base.vision_begin = layout.vision_begin;
  base.prompt_embeddings = embeddings;
  base.prompt_vision_begin = layout.vision_begin;
  base.prompt_n_vision = layout.n_vision;
  base.n_frames = std::max<int64_t>(1, n_frames);
  static std::atomic<int64_t> prefills{0};
  base.prefill_id = ++prefills;
  PrefillStages hook(stages, base, run, ledger, origin_, ground, trace_);
  f.hook = &hook;
  run.out = model.llm().forward(f);
  run.final_ids.clear();
  if (!run.layer_vision.empty()) {
    for (const auto& e : run.layer_vision.back()) run.final_ids.push_back(e.id);
  }
  return run;
}

std::vector<std::string> Chain::inactive_stages(const model::VisionLanguageModel& model) const {
  std::vector<std::string> out;
  const int vision_layers = model.tower().n_layers(), llm_layers = model.llm().n_layers();
  const int feature = model.feature_layer();
  for (const auto& p : pruners_) {
    switch (p->stage()) {
      case Stage::VisionLayer: {
        Needs n = p->needs(vision_layers);
        bool acts = false;
        for (int l : n.layers) {
          bool reads_cls = std::count(n.vision_cls_attention.begin(), n.vision_cls_attention.end(), l) > 0 ||
                           std::count(n.vision_cls_attention.begin(), n.vision_cls_attention.end(), l - vision_layers) > 0;
          acts = acts || (l >= 0 && (l <= feature || (reads_cls && l < vision_layers)));
        }
        if (!acts) {
          out.push_back(p->name() + " acts after no ViT layer up to the feature layer " + std::to_string(feature) +
                        ": it never acts");
        }
        break;
      }
      case Stage::VisionOutput:
        break;
      case Stage::Prefill:
      case Stage::Decode: {
        std::string past;
        for (int l : p->needs(llm_layers).layers) {
          if (l >= llm_layers) past += (past.empty() ? "" : ", ") + std::to_string(l);
        }
        if (!past.empty()) {
          out.push_back(p->name() + ": layer(s) " + past + " lie past the LLM's " + std::to_string(llm_layers) +
                        " layers; " + (p->stage() == Stage::Decode ? "nothing is evicted" : "it never acts there"));
        }
        break;
      }
    }
  }
  return out;
}

model::StepLayerHook Chain::decode_layer_hook(PrefillRun& run) const {
  const int n_layers = static_cast<int>(run.layer_vision.size());
  std::vector<std::pair<TokenPruner*, int>> readers;
  for (const auto& p : run.stages) {
    const int after = p->stage() == Stage::Decode ? p->needs(n_layers).decode_read_after : -1;
    if (after >= 0) readers.emplace_back(p.get(), after);
  }
  if (readers.empty()) return {};
  auto hook = std::make_shared<DecodeReads>(std::move(readers), run, n_layers, trace_);
  return [hook](int step) -> model::LayerHook* {
    hook->begin_step(step - 1);
    return hook.get();
  };
}

void Chain::after_decode_step(int step, model::KvCache& cache, PrefillRun& run) const {
  int n_layers = static_cast<int>(run.layer_vision.size());
  for (const auto& p : run.stages) {
    if (p->stage() != Stage::Decode || !p->acts_at_step(step)) continue;
    if (p->needs(n_layers).decode_read_after >= 0) continue;  // acts through decode_layer_hook()
    auto t0 = Clock::now();
    int64_t n_in = 0, n_out = 0;
    for (int l = 0; l < n_layers; ++l) {
      std::vector<TokenInfo>& ledger = run.layer_vision[static_cast<size_t>(l)];
      n_in += static_cast<int64_t>(ledger.size());
      View v;
      v.stage = Stage::Decode;
      v.layer = l;
      v.n_layers = n_layers;
      v.tokens = &ledger;
      v.vision_begin = run.vision_begin;
      v.n_vision = static_cast<int64_t>(ledger.size());
      v.n_tokens = cache.length(l);
      v.step = step;
      v.final_ids = &run.final_ids;
      KeepPlan plan = p->decide(v);
      if (trace_) trace_(StageTrace{p->name(), Stage::Decode, l, -1, step, ledger, plan});
      PlanTarget target;
      target.offset = run.vision_begin;
      target.ledger = &ledger;
      target.cache = &cache;
      target.cache_layer = l;
      apply_plan(plan, target, p->name());
      n_out += static_cast<int64_t>(ledger.size());
    }
    // Decode records count vision KV entries per layer (mean over layers).
    int64_t layers = std::max(1, n_layers);
    record_stage(run.records, p->name(), Stage::Decode, step, n_in / layers, n_out / layers, ms_since(t0));
  }
}

void attribute_flops(std::vector<StageRecord>& records, const model::ModelConfig& config,
                     const std::vector<std::vector<int64_t>>& vision_tokens_per_layer,
                     const std::vector<int64_t>& llm_tokens_per_layer, double decode_flops) {
  auto next_layer = [&](const StageRecord& r, int end) {
    int next = end;
    for (const auto& o : records) {
      bool same_part = (o.stage == Stage::Prefill) == (r.stage == Stage::Prefill);
      if (same_part && o.stage != Stage::Decode && o.layer > r.layer) next = std::min(next, o.layer);
    }
    return next;
  };
  for (auto& r : records) {
    r.flops = 0;
    switch (r.stage) {
      case Stage::VisionLayer:
      case Stage::VisionOutput:
        for (const auto& frame : vision_tokens_per_layer) {
          int end = static_cast<int>(frame.size()) - 1;
          for (int l = r.layer + 1; l <= next_layer(r, end) && l <= end && r.stage == Stage::VisionLayer; ++l) {
            r.flops += model::layer_flops(static_cast<double>(frame[static_cast<size_t>(l)]),
                                          config.vision.hidden_size, config.vision.intermediate_size);
          }
        }
        break;
      case Stage::Prefill: {
        int end = static_cast<int>(llm_tokens_per_layer.size()) - 1;
        for (int l = r.layer + 1; l <= next_layer(r, end) && l <= end; ++l) {
          r.flops += model::layer_flops(static_cast<double>(llm_tokens_per_layer[static_cast<size_t>(l)]),
                                        config.text.hidden_size, config.text.intermediate_size);
        }
        break;
      }
      case Stage::Decode:
        r.flops = decode_flops;
        break;
    }
  }
}

}  // namespace mustdrop::prune
