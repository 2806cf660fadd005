// Subcommands of the mustdrop executable. Each returns an exit code or throws mustdrop::Error.
#pragma once

#include <string>
#include <vector>

#include "config/config.h"

namespace mustdrop::app {

struct ProbeArgs {
  std::string input;
  std::string sampler;  // "" = from config
  int frames = -1;      // -1 = from config
  double fps = -1;      // -1 = from config
  double interval_sec = -1;
  int size = -1;
  bool json = false;
  std::string dump_dir;  // "" = no dump
  std::string save_frames;  // "" = none; else a safetensors file of the preprocessed frames
};

// `mustdrop probe`: stream facts and sampled timestamps; --dump writes preprocessed PNGs,
// --save-frames the preprocessed frames as one tensor (for bench_table on machines without video).
int run_probe(const ProbeArgs& args, config::Config config);

// Which model: a directory, or a shape preset with random weights.
struct ModelArgs {
  std::string dir;        // "" = $MUSTDROP_MODEL, then model.dir from config
  std::string preset;     // instead of a directory: a shape preset with random weights
  int llm_layers = 0;     // preset: decoder layers (0 = the preset's)
  int vision_layers = 0;  // preset: vision layers
};

struct RunArgs {
  std::string video;
  ModelArgs model;
  std::vector<std::string> questions;  // at least one
  std::string pipeline;                // pipelines/<name>.yaml; "" = none
  int frames = -1;                     // -1 = from config
  int max_new_tokens = -1;
  double temperature = -1;
  int seed = -1;
  std::string json_path;               // "" = no report
};

// `mustdrop run`: encode the video once, answer every question with streamed tokens.
int run_run(const RunArgs& args, config::Config config);

struct InspectArgs {
  std::string video;
  ModelArgs model;
  std::string pipeline;       // pipelines/<name>.yaml (required)
  std::string question;       // "" = vision stages only (prefill and decode stages need a question)
  std::string out_dir;        // where the PNGs, index.html and inspect.json go (created)
  int frames = -1;            // -1 = from config
  int max_new_tokens = -1;    // -1 = from config
  int scale = 2;              // overlay pixels per pixel of the tower's input square
};

// `mustdrop inspect`: per sampled frame, a PNG of what each stage kept (merged windows, temporal
// merges, S, prefill drops, decode evictions), with index.html and inspect.json (docs/pruning.md).
int run_inspect(const InspectArgs& args, config::Config config);

struct BenchArgs {
  ModelArgs model;
  std::string video;
  std::string question;
  std::vector<std::string> pipelines;   // pipeline YAML paths; `none` is added when missing
  int repeats = 3;                      // timed runs per pipeline (the median is reported)
  int warmup = 1;                       // untimed warm-up runs (none, first frame, 2 tokens) first
  int frames = -1;                      // -1 = from config
  int max_new_tokens = 16;
  std::string json_path;
};

// `mustdrop bench`: pipelines side by side on the same frames and question (markdown table).
int run_bench(const BenchArgs& args, config::Config config);

struct BenchSessionArgs {
  ModelArgs model;
  std::string video;
  std::string question = "What is happening in this video?";
  std::vector<std::string> pipelines;  // pipeline YAML paths
  int frames = -1;                     // frames in the warm memory (-1 = from config)
  int max_new_tokens = 8;
  int stream_frames = 120;             // frames fed to the budgeted memory
  int budget_tokens = 1024;            // memory.max_tokens for the stream
  std::string json_path;
};

// `mustdrop bench session`: warm vs cold time to first token, one more frame vs re-prefilling,
// memory over a stream many times the budget.
int run_bench_session(const BenchSessionArgs& args, config::Config config);

struct BenchIngestArgs {
  std::string input;      // "" = generate a 1080p30 H.264 clip
  double seconds = 20.0;  // length of the generated clip
  int size = 336;
  std::string work_dir;   // where the generated clip goes ("" = a temporary directory)
};

// `mustdrop bench ingest`: decode + sample + preprocess every frame, against the ffmpeg CLI.
int run_bench_ingest(const BenchIngestArgs& args, config::Config config);

struct BatchArgs {
  std::string job;                     // configs/jobs/<name>.yaml
  std::vector<std::string> overrides;  // --set KEY=VALUE on the job
  ModelArgs model;                     // overrides model.dir
  std::string shard;                   // "i/N"; "" = the whole dataset
  bool fresh = false;                  // set earlier output aside and start over
  int64_t limit = 0;                   // answer at most this many questions (0 = all)
  std::string log_level;               // "" = the job's log_level
};

// `mustdrop batch`: a video-QA dataset through one or more pipelines; resumable, sharded, scored.
int run_batch(const BatchArgs& args);

struct BatchMergeArgs {
  std::vector<std::string> dirs;  // shard directories, or output directories holding shard-*-of-* ones
  std::string out;                // where the merged predictions and summary go
};

// `mustdrop batch merge`: combines the shards of one job, checking every question is answered
// exactly once per pipeline.
int run_batch_merge(const BatchMergeArgs& args);

struct MonitorArgs {
  std::string config;                  // configs/monitor.yaml
  std::vector<std::string> overrides;  // --set KEY=VALUE on it
  ModelArgs model;                     // overrides model.dir
  std::string log_level;               // "" = the file's log_level
  bool interactive = false;            // read questions from stdin even when it is not a terminal
  bool no_interactive = false;         // never read stdin
  double duration_sec = 0;             // stop after this long (0 = until a signal or every source ended)
  double grace_sec = 10;               // at a stop, answers running get this long to finish, then are cut
  int64_t warmup_frames = 60;          // frames encoded (all sources) before the "warm" RSS is taken
};

// `mustdrop monitor`: cameras watched by one model; questions on a schedule, on scene changes, on
// stdin and over the local HTTP API; events and metrics.
int run_monitor(const MonitorArgs& args);

}  // namespace mustdrop::app
