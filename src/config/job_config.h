// Typed form of configs/jobs/<name>.yaml: a batch job over a video-QA dataset (`mustdrop batch`).
// Decoded strictly by the visit() machinery of config.h; the model, video, generation, memory and
// thread sections are the same structs as in configs/default.yaml.
#pragma once

#include <string>
#include <vector>

#include "config/config.h"

namespace mustdrop::config {

// Field names of a `format: jsonl` dataset (one JSON object per line).
struct JsonlFields {
  std::string id = "question_id";  // the question's id (string or integer)
  std::string video = "video";     // the video's name (resolved like videollava's video_name)
  std::string question = "question";
  std::string answer = "answer";   // "" = the file carries no answers
  std::string type = "type";       // the question type (absent on a line = none; "" = never read)

  template <class V>
  void visit(V& v) {
    v("id", id, any());
    v("video", video, any());
    v("question", question, any());
    v("answer", answer, any());
    v("type", type, any());
  }
};

// Where the questions, answers and videos are.
struct DatasetConfig {
  std::string format = "videollava";  // videollava: <dir>/<split>_q.json + <split>_a.json | jsonl: <dir>/<split>.jsonl
  std::string split;                  // which split, named explicitly (e.g. test)
  std::string dir;                    // the annotation files' directory
  std::string video_dir;              // the videos' directory
  std::string name_template = "{video_name}";  // a video's file name without extension ({video_name} is replaced)
  std::vector<std::string> extensions = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif"};  // tried in order
  std::vector<std::string> type_names;  // names of the integer question types, in order ([] = print the numbers)
  JsonlFields fields;

  template <class V>
  void visit(V& v) {
    v("format", format, one_of({"videollava", "jsonl"}));
    v("split", split, any());
    v("dir", dir, any());
    v("video_dir", video_dir, any());
    v("name_template", name_template, any());
    v("extensions", extensions, any());
    v("type_names", type_names, any());
    v("fields", fields);
  }
};

// An optional LLM judge on an OpenAI-compatible endpoint (the Video-ChatGPT protocol).
struct JudgeConfig {
  std::string endpoint;                      // base URL, e.g. http://127.0.0.1:8000/v1 ("" = no judge)
  std::string model;                         // the judge's model name (recorded with every verdict)
  std::string api_key_env = "OPENAI_API_KEY";  // environment variable holding the bearer token ("" or unset = none)
  double temperature = 0.0;                  // sampling temperature sent to the judge
  int max_retries = 3;                       // retries of a failed request (doubling delay)
  int retry_delay_ms = 1000;                 // first delay between retries
  double timeout_sec = 60;                   // per request

  template <class V>
  void visit(V& v) {
    v("endpoint", endpoint, any());
    v("model", model, any());
    v("api_key_env", api_key_env, any());
    v("temperature", temperature, range(0, 2));
    v("max_retries", max_retries, range(0, 100));
    v("retry_delay_ms", retry_delay_ms, range(0, 600000));
    v("timeout_sec", timeout_sec, range(0.1, 3600));
  }
};

// The whole job.
struct JobConfig {
  std::string log_level = "info";
  DatasetConfig dataset;
  std::vector<std::string> pipelines = {"pipelines/none.yaml"};  // pipeline YAMLs, all on the same sampled frames
  std::string replay = "clip";  // clip: the sampled frames all at once | stream: frames in order through a bounded memory
  ModelSettings model;
  VideoConfig video;
  GenerationConfig generation;
  MemoryConfig memory;          // the session memory (its budget matters with replay: stream)
  ThreadsConfig threads;
  int workers = 1;              // videos answered at once in this process (the model is loaded once)
  bool feature_cache = true;    // encode each video once for every pipeline with the same vision stages
  std::string output_dir;       // predictions.jsonl, job.json, summary.{md,json} (a shard: shard-<i>-of-<N>/ below it)
  std::vector<std::string> scorers = {"exact", "contains"};  // local scorers: exact | contains
  JudgeConfig judge;
  std::string on_missing_video = "skip";  // skip: record the questions as missing_video and go on | fail: stop before inference
  double progress_interval_sec = 10;      // progress lines when stderr is not a terminal

  template <class V>
  void visit(V& v) {
    v("log_level", log_level, one_of({"trace", "debug", "info", "warn", "error", "off"}));
    v("dataset", dataset);
    v("pipelines", pipelines, any());
    v("replay", replay, one_of({"clip", "stream"}));
    v("model", model);
    v("video", video);
    v("generation", generation);
    v("memory", memory);
    v("threads", threads);
    v("workers", workers, range(1, 256));
    v("feature_cache", feature_cache, any());
    v("output_dir", output_dir, any());
    v("scorers", scorers, one_of({"exact", "contains"}));
    v("judge", judge);
    v("on_missing_video", on_missing_video, one_of({"skip", "fail"}));
    v("progress_interval_sec", progress_interval_sec, range(0.1, 86400));
  }
};

// Reads a job file, then applies `overrides` ("dataset.split=test"). ConfigError with
// file:line:col for unknown keys, wrong types and out-of-range values.
JobConfig load_job(const std::string& path, const std::vector<std::string>& overrides = {});
// Same, from YAML text; `origin` names the text in messages.
JobConfig load_job_string(const std::string& yaml, const std::string& origin,
                          const std::vector<std::string>& overrides = {});
// The effective job as YAML (every key, in declaration order).
std::string to_yaml(const JobConfig& job);
// Every key path of a job ("dataset.split", ...) in declaration order.
std::vector<std::string> job_key_paths();

}  // namespace mustdrop::config
