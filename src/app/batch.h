// Pieces of `mustdrop batch` shared by its files: the job as loaded (pipelines, hashes, shard,
// output directory), the preflight of the dataset, the work list, and the running of it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "config/job_config.h"
#include "config/pipeline_config.h"
#include "eval/dataset.h"
#include "prune/chain.h"

namespace mustdrop::app::batch {

// Which part of the questions this process answers: those whose id hashes to `index` mod `count`.
struct Shard {
  int index = 0;
  int count = 1;
};
// "i/N" with 0 <= i < N. ConfigError naming the argument otherwise.
Shard parse_shard(const std::string& text);
// Whether question `id` belongs to `shard` (a stable hash of the id, the same on every machine).
bool in_shard(const std::string& id, const Shard& shard);
// Where a shard writes: output_dir itself for 1 shard, else output_dir/shard-<i>-of-<N>.
std::string shard_dir(const std::string& output_dir, const Shard& shard);

// One pipeline of the job.
struct Pipeline {
  std::string path;
  config::PipelineConfig config;
  std::unique_ptr<prune::Chain> chain;
  std::string vision_signature;  // its vision stages and their settings ("" = none): equal = same features
};

// The job as it will run.
struct Job {
  std::string job_path;
  config::JobConfig config;
  std::vector<Pipeline> pipelines;
  ModelArgs model_args;      // --model / --preset and its depth
  std::string model_source;  // a directory or "preset:..."
  std::string model_hash;    // of the model's config.json (or the preset's shapes)
  std::string config_hash;   // of everything that decides a prediction (not threads, paths, scorers, judge)
  Shard shard;
  int64_t limit = 0;         // answer at most this many questions of the shard (0 = all)
  std::string dir;           // this shard's output directory
};

// Loads the job file and its pipelines, resolves the model and computes the hashes. ConfigError
// for a bad job (no split, no output_dir, two pipelines with one name, ...).
Job load_job(const BatchArgs& args);

// The dataset checked before any inference.
struct Preflight {
  eval::JoinReport join;
  std::map<std::string, std::string> video_paths;  // video name -> file ("" = missing)
  std::vector<std::string> missing_videos;         // names, with the paths tried in `missing_tried`
  std::map<std::string, std::vector<std::string>> missing_tried;
  std::map<std::string, std::string> unreadable_videos;  // name -> why it cannot be opened
};
// Reads and joins the dataset and opens every video's container once.
Preflight preflight(const Job& job);
// The preflight as JSON (counts and lists) for preflight.json and the summary.
nlohmann::json preflight_json(const Preflight& p);

// One question of the shard, with its video resolved.
struct WorkItem {
  const eval::QaItem* qa = nullptr;
  std::string video_path;  // "" = missing
  std::string video_error;  // preflight could not open it
};
// The shard's questions grouped by video, in dataset order, at most job.limit of them.
std::vector<std::vector<WorkItem>> work_by_video(const Job& job, const Preflight& p);

// Every record of predictions.jsonl read back (torn last line repaired), and the (pipeline,
// question id) pairs already answered. ConfigError when a record was made by another config hash.
struct Existing {
  std::vector<nlohmann::json> records;
  std::set<std::pair<std::string, std::string>> done;
  int64_t n_torn_bytes = 0;
};
Existing read_existing(const Job& job, const std::string& predictions_path);

// Runs every pending (question, pipeline) pair, appending to predictions.jsonl; returns the
// number that failed. Stops early (returning) after Ctrl-C / SIGTERM, keeping what was written.
struct RunResult {
  int64_t n_done = 0;
  int64_t n_failed = 0;
  bool interrupted = false;
};
RunResult run_work(const Job& job, const std::vector<std::vector<WorkItem>>& work, const Existing& existing,
                   const std::string& predictions_path);

// Stops the runtime answering now, if any (the job's signal handler calls it).
void stop_running();

// Scores every record of this job (judge included when configured) and writes summary.{json,md}
// into `dir`; returns the markdown.
std::string write_summary(const config::JobConfig& config, const std::vector<std::string>& pipeline_names,
                          const std::vector<nlohmann::json>& records, const nlohmann::json& preflight,
                          const std::string& dir);

}  // namespace mustdrop::app::batch
