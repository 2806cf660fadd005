// `mustdrop batch`, before inference: the job and its hashes, shards, the preflight of the
// dataset, the work list, and what an earlier run already wrote.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "app/batch.h"
#include "app/report.h"
#include "core/error.h"
#include "core/log.h"
#include "eval/jsonl.h"
#include "model/presets.h"
#include "prune/registry.h"
#include "video/source.h"

namespace mustdrop::app::batch {

namespace fs = std::filesystem;
using nlohmann::json;

Shard parse_shard(const std::string& text) {
  Shard s;
  size_t slash = text.find('/');
  try {
    if (slash == std::string::npos) throw std::invalid_argument("no slash");
    size_t used = 0;
    s.index = std::stoi(text.substr(0, slash), &used);
    if (used != slash) throw std::invalid_argument("index");
    std::string n = text.substr(slash + 1);
    s.count = std::stoi(n, &used);
    if (used != n.size()) throw std::invalid_argument("count");
  } catch (const std::exception&) {
    throw ConfigError("--shard " + text + ": expected i/N, e.g. --shard 0/4");
  }
  if (s.count < 1 || s.index < 0 || s.index >= s.count) {
    throw ConfigError("--shard " + text + ": expected 0 <= i < N (shards are numbered from 0)");
  }
  return s;
}

bool in_shard(const std::string& id, const Shard& shard) {
  return eval::stable_hash(id) % static_cast<uint64_t>(shard.count) == static_cast<uint64_t>(shard.index);
}

std::string shard_dir(const std::string& output_dir, const Shard& shard) {
  if (shard.count == 1) return output_dir;
  return (fs::path(output_dir) / ("shard-" + std::to_string(shard.index) + "-of-" + std::to_string(shard.count)))
      .string();
}

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The vision stages of a pipeline and their settings: pipelines with the same signature compute
// the same features from the same frames.
std::string vision_signature(const config::PipelineConfig& p) {
  std::string sig;
  for (const auto& name : p.chain) {
    for (const auto& e : prune::registry()) {
      if (name != e.name) continue;
      if (e.stage == prune::Stage::VisionLayer || e.stage == prune::Stage::VisionOutput) {
        sig += name + "\n" + prune::options_yaml(p, name) + "\n";
      }
    }
  }
  return sig;
}

}  // namespace

Job load_job(const BatchArgs& args) {
  Job job;
  job.job_path = args.job;
  job.config = config::load_job(args.job, args.overrides);
  const config::JobConfig& c = job.config;
  if (c.dataset.split.empty()) throw ConfigError(args.job + ": dataset.split: name the split (e.g. test)");
  if (c.dataset.dir.empty()) throw ConfigError(args.job + ": dataset.dir: where the annotation files are");
  if (c.dataset.video_dir.empty()) throw ConfigError(args.job + ": dataset.video_dir: where the videos are");
  if (c.output_dir.empty()) throw ConfigError(args.job + ": output_dir: where the predictions go");
  if (c.pipelines.empty()) throw ConfigError(args.job + ": pipelines: list at least one pipeline YAML");
  if (!c.judge.endpoint.empty() && c.judge.model.empty()) {
    throw ConfigError(args.job + ": judge.model: name the judge's model (it is recorded with every verdict)");
  }
  std::set<std::string> names;
  std::string pipelines_text;
  for (const auto& path : c.pipelines) {
    Pipeline p;
    p.path = path;
    p.config = config::load_pipeline(path);
    if (!names.insert(p.config.name).second) {
      throw ConfigError(args.job + ": pipelines: two pipelines are named '" + p.config.name + "' (" + path +
                        "); predictions are keyed by the name");
    }
    p.chain = prune::Chain::build(p.config, path);
    p.vision_signature = vision_signature(p.config);
    pipelines_text += prune::pipeline_yaml(p.config);
    job.pipelines.push_back(std::move(p));
  }
  job.shard = args.shard.empty() ? Shard{} : parse_shard(args.shard);
  job.limit = args.limit;
  job.dir = shard_dir(c.output_dir, job.shard);

  config::Config base;
  base.model = c.model;
  job.model_args = args.model;
  job.model_source = model_source(args.model, base, "batch");
  if (job.model_source.rfind("preset:", 0) == 0) {
    job.model_hash = eval::stable_hash_hex(job.model_source + ":" + std::to_string(args.model.llm_layers) + ":" +
                                           std::to_string(args.model.vision_layers));
  } else {
    std::string cfg = read_text((fs::path(job.model_source) / "config.json").string());
    if (cfg.empty()) throw ModelError(job.model_source + "/config.json: missing or empty (not a model directory?)");
    job.model_hash = eval::stable_hash_hex(cfg);
  }

  // The hash covers what decides a prediction; paths, threads, workers, scorers and the judge
  // may change between a run and its resumption (another machine, another judge).
  config::JobConfig h = c;
  h.log_level = "info";
  h.dataset.dir.clear();
  h.dataset.video_dir.clear();
  h.dataset.type_names.clear();
  h.pipelines.clear();
  h.model.dir.clear();
  h.threads = {};
  h.video.decoder_threads = 0;
  h.video.live = {};
  h.workers = 1;
  h.feature_cache = true;
  h.output_dir.clear();
  h.scorers.clear();
  h.judge = {};
  h.on_missing_video = "skip";
  h.progress_interval_sec = 10;
  if (h.replay == "clip") h.memory.max_tokens = 0, h.memory.max_mb = 0, h.memory.evict_to = 0.9;
  // model.device is not covered either: its line leaves the text hashed, so a job started before
  // the setting existed, or on another device, keeps its hash.
  std::string text = config::to_yaml(h);
  const std::string device_line = "\n  device: " + h.model.device + "\n";
  if (size_t at = text.find("\nmodel:\n"); at != std::string::npos) {
    if (size_t d = text.find(device_line, at); d != std::string::npos) text.erase(d, device_line.size() - 1);
  }
  job.config_hash = eval::stable_hash_hex(text + pipelines_text + job.model_hash);
  return job;
}

Preflight preflight(const Job& job) {
  Preflight p;
  const config::DatasetConfig& d = job.config.dataset;
  p.join = eval::read_dataset(d);
  config::VideoConfig video = job.config.video;
  for (const auto& item : p.join.items) {
    if (p.video_paths.count(item.video_name)) continue;
    std::vector<std::string> tried;
    std::string path = eval::resolve_video(d, item.video_name, &tried);
    p.video_paths[item.video_name] = path;
    if (path.empty()) {
      p.missing_videos.push_back(item.video_name);
      p.missing_tried[item.video_name] = tried;
      continue;
    }
    try {
      video::open_source(path, video);  // opens the container and its video stream, decodes nothing
    } catch (const std::exception& e) {
      p.unreadable_videos[item.video_name] = e.what();
    }
  }
  return p;
}

json preflight_json(const Preflight& p) {
  json missing = json::array();
  for (const auto& name : p.missing_videos) missing.push_back({{"video", name}, {"tried", p.missing_tried.at(name)}});
  json unreadable = json::array();
  for (const auto& [name, why] : p.unreadable_videos) unreadable.push_back({{"video", name}, {"error", why}});
  return {{"n_questions_read", p.join.n_questions_read},
          {"n_answers_read", p.join.n_answers_read},
          {"n_questions", p.join.items.size()},
          {"n_videos", p.video_paths.size()},
          {"duplicate_question_ids", p.join.duplicate_question_ids},
          {"duplicate_answer_ids", p.join.duplicate_answer_ids},
          {"unanswered_ids", p.join.unanswered_ids},
          {"orphan_answer_ids", p.join.orphan_answer_ids},
          {"missing_videos", missing},
          {"unreadable_videos", unreadable}};
}

std::vector<std::vector<WorkItem>> work_by_video(const Job& job, const Preflight& p) {
  std::vector<std::vector<WorkItem>> groups;
  std::map<std::string, size_t> group_of;
  int64_t taken = 0;
  for (const auto& item : p.join.items) {
    if (!in_shard(item.question_id, job.shard)) continue;
    if (job.limit > 0 && taken >= job.limit) break;
    ++taken;
    auto [it, fresh] = group_of.emplace(item.video_name, groups.size());
    if (fresh) groups.emplace_back();
    WorkItem w;
    w.qa = &item;
    w.video_path = p.video_paths.at(item.video_name);
    auto bad = p.unreadable_videos.find(item.video_name);
    if (bad != p.unreadable_videos.end()) w.video_error = bad->second;
    groups[it->second].push_back(w);
  }
  return groups;
}

Existing read_existing(const Job& job, const std::string& predictions_path) {
  Existing e;
  eval::JsonlContents contents = eval::read_jsonl(predictions_path, /*repair=*/true);
  e.n_torn_bytes = contents.n_torn_bytes;
  if (e.n_torn_bytes > 0) {
    MD_LOG_WARN("batch", predictions_path << ": cut off a torn last line (" << e.n_torn_bytes
                                          << " bytes; a run was killed while writing it)");
  }
  for (auto& r : contents.records) {
    std::string hash = r.value("config_hash", "");
    if (hash != job.config_hash) {
      throw ConfigError(predictions_path + ": written by a job with config hash " + hash + ", this job's is " +
                        job.config_hash +
                        " (the dataset, pipelines, model, sampling or generation changed); pass --fresh to set "
                        "the old output aside and start over, or use another output_dir");
    }
    e.done.emplace(r.value("pipeline", ""), r.value("question_id", ""));
    e.records.push_back(std::move(r));
  }
  return e;
}

}  // namespace mustdrop::app::batch
