// `mustdrop inspect`: one video through a pipeline and one question, with every stage's decision
// traced (prune::Chain::set_trace), drawn per frame over the square the tower saw
// (inspect_draw.h), with index.html side by side and inspect.json for machines.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "app/exit_codes.h"
#include "app/inspect_draw.h"
#include "app/inspect_fate.h"
#include "app/report.h"
#include "config/pipeline_config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/timing.h"
#include "pipeline/runtime.h"
#include "session/session.h"
#include "video/png_writer.h"
#include "video/preprocess.h"
#include "video/source.h"

namespace mustdrop::app {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// What the stages and the memory node report while the session runs (two graph threads).
struct Collected {
  std::mutex mu;
  std::vector<prune::StageTrace> traces;
  std::map<int64_t, pipeline::FrameNews> news;  // by frame seq
};

// Creates `dir` and proves it can be written, before anything expensive runs.
void prepare_out_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw InputError(dir + ": cannot create the output directory (" + ec.message() + ")");
  const fs::path probe = fs::path(dir) / ".inspect-write-test";
  std::ofstream(probe.string()) << "x";
  if (!fs::exists(probe, ec)) throw InputError(dir + ": cannot write in the output directory");
  fs::remove(probe, ec);
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += ch;
    }
  }
  return out;
}

std::string css(const Rgb& c) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", c[0], c[1], c[2]);
  return buf;
}

std::string fixed2(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

const char* fate_text(Fate f) {
  switch (f) {
    case Fate::kKept: return "kept to the end (reached the last LLM layer, KV kept after decoding)";
    case Fate::kImportant: return "kept to the end, in S (the important set)";
    case Fate::kAbsorbed: return "folded into an earlier frame's token (temporal merging); digits: that frame";
    case Fate::kVisionDropped: return "dropped by a vision stage";
    case Fate::kPrefillDropped: return "dropped at prefill; digits: the LLM layer after which it went";
    case Fate::kDecodeEvicted: return "KV entries evicted at decode";
    case Fate::kMemoryEvicted: return "evicted from the session memory (budget)";
  }
  return "";
}

// One frame's numbers: cells and tokens per fate, and where absorbed and prefill-dropped cells went.
json frame_counts(const FrameFates& f) {
  json cells = json::object(), tokens = json::object(), into = json::object(), layers = json::object();
  std::vector<int64_t> nc = f.n_cells(), nt = f.n_tokens();
  for (int k = 0; k < kNumFates; ++k) {
    cells[fate_name(static_cast<Fate>(k))] = nc[static_cast<size_t>(k)];
    tokens[fate_name(static_cast<Fate>(k))] = nt[static_cast<size_t>(k)];
  }
  for (const auto& c : f.cells) {
    if (c.fate == Fate::kAbsorbed) into[std::to_string(c.into_frame)] = into.value(std::to_string(c.into_frame), 0) + 1;
    if (c.fate == Fate::kPrefillDropped) layers[std::to_string(c.layer)] = layers.value(std::to_string(c.layer), 0) + 1;
  }
  return json{{"cells", cells}, {"tokens", tokens}, {"absorbed_into_frame", into}, {"prefill_dropped_after_layer", layers}};
}

void write_index(const std::string& path, const json& j) {
  std::ostringstream h;
  h << "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>mustdrop inspect: "
    << html_escape(j["pipeline"]["name"].get<std::string>()) << "</title>\n<style>\n"
    << "body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}"
       "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right;font-size:13px}th{background:#f2f2f2}"
       "td.l,th.l{text-align:left}.sw{display:inline-block;width:14px;height:14px;border:1px solid #888;"
       "vertical-align:middle;margin-right:3px}.frames td{vertical-align:top}img{image-rendering:pixelated;"
       "width:448px;height:448px}.q{background:#f7f7f7;padding:.4em .8em;border-left:4px solid #888}\n"
    << "</style></head><body>\n";
  h << "<h1>" << html_escape(j["pipeline"]["name"].get<std::string>()) << " on "
    << html_escape(j["video"].get<std::string>()) << "</h1>\n";
  h << "<p>pipeline <code>" << html_escape(j["pipeline"]["path"].get<std::string>()) << "</code>, model <code>"
    << html_escape(j["model"].get<std::string>()) << "</code>, " << j["frames"].size() << " frames, grid "
    << j["grid"].get<int>() << "&times;" << j["grid"].get<int>() << " patches of " << j["patch_px"].get<int>()
    << " px</p>\n";
  if (j.contains("question")) {
    h << "<p class=\"q\"><b>Q:</b> " << html_escape(j["question"].get<std::string>()) << "<br><b>A:</b> "
      << html_escape(j["answer"].get<std::string>()) << "</p>\n";
  } else {
    h << "<p class=\"q\">No question: prefill and decode stages did not run (give <code>--question</code>).</p>\n";
  }
  h << "<h2>Legend</h2>\n<table><tr><th>badge (top-left, every cell)</th><th>anchor (top-right, one per token)</th>"
       "<th>tint</th><th class=\"l\">the patch</th></tr>\n";
  for (int k = 0; k < kNumFates; ++k) {
    Fate f = static_cast<Fate>(k);
    std::string tint = f == Fate::kKept ? "none" : "<span class=\"sw\" style=\"background:" + css(tint_colour(f)) + "\"></span>";
    if (f == Fate::kAbsorbed) {
      tint.clear();
      for (int age = 1; age <= 4; ++age) {
        tint += "<span class=\"sw\" style=\"background:" + css(tint_colour(f, age)) + "\"></span>";
      }
      tint += " 1, 2, 3, 4+ frames back";
    }
    h << "<tr><td><span class=\"sw\" style=\"background:" << css(fate_colour(f)) << "\"></span>" << fate_name(f)
      << "</td><td><span class=\"sw\" style=\"background:" << css(anchor_colour(f)) << "\"></span></td><td>" << tint
      << "</td><td class=\"l\">" << fate_text(f) << "</td></tr>\n";
  }
  h << "<tr><td colspan=\"3\">white outline</td><td class=\"l\">cells merged into one token within the frame "
       "(LSM window, ToMe, contextual merge)</td></tr></table>\n";

  h << "<h2>Stages</h2>\n<table><tr><th class=\"l\">pruner</th><th class=\"l\">stage</th><th>layer</th>"
       "<th>calls</th><th>tokens in</th><th>tokens out</th><th>ms</th></tr>\n";
  for (const auto& s : j["stages"]) {
    h << "<tr><td class=\"l\">" << html_escape(s.value("name", "")) << "</td><td class=\"l\">" << s.value("stage", "")
      << "</td><td>" << s.value("layer", 0) << "</td><td>" << s.value("calls", 0) << "</td><td>" << s.value("n_in", 0)
      << "</td><td>" << s.value("n_out", 0) << "</td><td>" << fixed2(s.value("ms", 0.0)) << "</td></tr>\n";
  }
  h << "</table>\n<p>Vision stages: summed over frames; decode: vision KV entries per cache layer (mean over layers).</p>\n";

  h << "<h2>Frames</h2>\n<table class=\"frames\"><tr><th>frame</th><th>what the tower saw</th><th>what each stage "
       "kept</th><th class=\"l\">patches (cells) / tokens</th></tr>\n";
  for (const auto& f : j["frames"]) {
    h << "<tr><td>" << f["seq"].get<int64_t>() << "<br>" << f["t_sec"].get<double>() << " s</td><td><img src=\""
      << f["frame_png"].get<std::string>() << "\" alt=\"frame\"></td><td><img src=\"" << f["overlay_png"].get<std::string>()
      << "\" alt=\"overlay\"></td><td class=\"l\"><table><tr><th class=\"l\">fate</th><th>cells</th><th>tokens</th></tr>";
    for (int k = 0; k < kNumFates; ++k) {
      const char* name = fate_name(static_cast<Fate>(k));
      int64_t nc = f["drawn"]["cells"][name], nt = f["drawn"]["tokens"][name];
      if (nc == 0 && nt == 0) continue;
      h << "<tr><td class=\"l\"><span class=\"sw\" style=\"background:" << css(fate_colour(static_cast<Fate>(k)))
        << "\"></span>" << name << "</td><td>" << nc << "</td><td>" << nt << "</td></tr>";
    }
    h << "</table>";
    auto list = [&](const char* key, const char* what) {
      if (f["drawn"][key].empty()) return;
      h << what;
      for (const auto& [k, v] : f["drawn"][key].items()) h << " " << k << ": " << v.get<int64_t>() << ";";
      h << "<br>";
    };
    list("absorbed_into_frame", "folded into frame");
    list("prefill_dropped_after_layer", "dropped after LLM layer");
    h << "to the LLM: " << f["ledger"]["n_tokens"].get<int64_t>() << " tokens (" << f["ledger"]["n_in_s"].get<int64_t>()
      << " in S)</td></tr>\n";
  }
  h << "</table>\n</body></html>\n";
  write_atomically(path, h.str());
}

}  // namespace

int run_inspect(const InspectArgs& args, config::Config config) {
  auto t0 = Clock::now();
  if (args.out_dir.empty()) throw ConfigError("inspect: give --out DIR");
  // Cheap checks first: the pipeline, the output directory and the video fail before the model loads.
  config::PipelineConfig pipeline_cfg = config::load_pipeline(args.pipeline);
  std::unique_ptr<prune::Chain> chain = prune::Chain::build(pipeline_cfg, args.pipeline);
  if (args.frames > 0) config.video.sampler.frames = args.frames;
  if (args.max_new_tokens > 0) config.generation.max_new_tokens = args.max_new_tokens;
  std::string model_dir = model_source(args.model, config, "inspect");
  prepare_out_dir(args.out_dir);
  if (video::open_source(args.video, config.video)->info().live && config.video.sampler.kind == config::SamplerKind::kUniform) {
    config.video.sampler.kind = config::SamplerKind::kInterval;
  }
  auto model = load_model(args.model, model_dir, config);
  Sampled sampled = sample_frames(args.video, config, *model);

  Collected got;
  chain->set_trace([&got](const prune::StageTrace& t) {
    std::lock_guard<std::mutex> lock(got.mu);
    got.traces.push_back(t);
  });
  session::Session session(*model, chain.get(), config.memory);  // copies the chain, sink included
  pipeline::Runtime runtime(config.threads);
  pipeline::SourceOptions options;
  options.video = config.video;
  options.every_frame = true;  // sampled above
  options.frames_in_flight = config.threads.frames_in_flight;
  options.on_frame = [&got](const pipeline::FrameNews& n) {
    std::lock_guard<std::mutex> lock(got.mu);
    got.news[n.seq] = n;
  };
  std::shared_ptr<pipeline::SourceRun> perceiving = runtime.add_source(replay(sampled), session, options);
  perceiving->wait();
  if (perceiving->error()) std::rethrow_exception(perceiving->error());
  std::shared_ptr<const session::MemorySnapshot> memory = session.snapshot();
  std::vector<session::AnswerStats> answers;
  if (!args.question.empty()) {
    pipeline::Ask ask;
    ask.question = args.question;
    ask.options = generation_options(config);
    answers.push_back(runtime.ask(session, std::move(ask)).get());
  }

  // Where every patch went, from the traces; the frames as the tower saw them.
  const model::Media media = memory->media();
  const int grid = model->tower(media).grid(model->image_size());
  OverlayGeometry geo = overlay_geometry(model->image_size(), grid, args.scale);
  std::vector<int64_t> seqs;
  for (const auto& [seq, n] : got.news) seqs.push_back(seq);
  std::set<int64_t> memory_ids;
  for (const auto& e : memory->ledger()) memory_ids.insert(e.id);
  std::vector<FrameFates> fates = follow_traces(got.traces, seqs, grid, memory_ids);
  config::PreprocessConfig pre = config.video.preprocess;
  pre.size = model->image_size();
  video::Preprocessor preprocess(pre);

  // The ledger side (inspect.json "ledger"): the session's memory and the memory node's counts.
  std::map<int64_t, const session::MemoryFrame*> in_memory;
  for (const auto& f : memory->frames) in_memory[f->seq] = f.get();
  json frames = json::array();
  for (size_t i = 0; i < fates.size() && i < sampled.frames.size(); ++i) {
    char name[40];
    std::snprintf(name, sizeof name, "frame_%04zu.png", i);
    std::string frame_png = name;
    std::snprintf(name, sizeof name, "overlay_%04zu.png", i);
    std::string overlay_png = name;
    video::RgbImage rgb = preprocess.to_rgb(sampled.frames[i]);
    video::write_png(rgb, (fs::path(args.out_dir) / frame_png).string());
    video::write_png(draw_overlay(rgb, fates[i], grid, geo), (fs::path(args.out_dir) / overlay_png).string());
    const pipeline::FrameNews& news = got.news[fates[i].seq];
    json ledger{{"n_tokens", 0}, {"n_in_s", 0}, {"size_sum", 0.0}, {"n_patch_tokens", news.n_patch_tokens},
                {"n_folded", news.n_folded}, {"n_kept", news.n_kept}};
    if (auto it = in_memory.find(fates[i].seq); it != in_memory.end()) {
      for (const auto& e : it->second->ledger) {
        if (e.patch < 0) continue;  // CLS
        ledger["n_tokens"] = ledger["n_tokens"].get<int64_t>() + 1;
        ledger["n_in_s"] = ledger["n_in_s"].get<int64_t>() + (e.in_s ? 1 : 0);
        ledger["size_sum"] = ledger["size_sum"].get<double>() + e.size;
      }
    }
    frames.push_back({{"seq", fates[i].seq}, {"t_sec", news.t_sec}, {"frame_png", frame_png},
                      {"overlay_png", overlay_png}, {"drawn", frame_counts(fates[i])}, {"ledger", ledger}});
  }
  Accounting acc = account(*memory, session.vision_records(), model->config(), answers);
  json palette = json::object(), anchors = json::object();
  for (int k = 0; k < kNumFates; ++k) {
    palette[fate_name(static_cast<Fate>(k))] = fate_colour(static_cast<Fate>(k));
    anchors[fate_name(static_cast<Fate>(k))] = anchor_colour(static_cast<Fate>(k));
  }
  json out{{"video", args.video},
           {"model", model_dir},
           {"pipeline", {{"name", pipeline_cfg.name}, {"path", args.pipeline}}},
           {"grid", grid},
           {"patch_px", model->image_size() / grid},
           {"geometry", {{"scale", geo.scale}, {"cell_px", geo.cell_px}, {"badge_px", geo.badge_px}}},
           {"palette", palette},
           {"anchor_palette", anchors},
           {"frames", frames},
           {"stages", acc.stages},
           {"n_vision_tokens_in", acc.n_vision_tokens_in},
           {"n_vision_tokens_to_llm", acc.n_vision_tokens_to_llm},
           {"n_vision_tokens_in_s", acc.n_vision_tokens_in_s},
           {"n_traces", got.traces.size()}};
  if (!answers.empty()) {
    const session::AnswerStats& a = answers.front();
    out["question"] = args.question;
    out["answer"] = a.answer;
    out["vision_per_layer"] = a.vision_per_layer;
    out["n_vision_kv_after_decode"] = a.n_vision_kv_after_decode;
  }
  out["seconds"] = ms_since(t0) / 1000.0;
  write_report((fs::path(args.out_dir) / "inspect.json").string(), out);
  write_index((fs::path(args.out_dir) / "index.html").string(), out);
  if (!answers.empty()) std::printf("Q: %s\nA: %s\n", args.question.c_str(), answers.front().answer.c_str());
  std::printf("%s\n", (fs::path(args.out_dir) / "index.html").string().c_str());
  MD_LOG_INFO("inspect", fates.size() << " frames, " << got.traces.size() << " stage decisions drawn in "
                                      << ms_since(t0) / 1000.0 << " s");
  return kExitOk;
}

}  // namespace mustdrop::app
