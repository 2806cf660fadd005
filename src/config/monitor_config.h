// Typed form of configs/monitor.yaml: cameras watched by `mustdrop monitor`. Decoded strictly by
// the visit() machinery of config.h (lists of sections included); the model, video, generation,
// memory and thread sections are the same structs as in configs/default.yaml.
#pragma once

#include <string>
#include <vector>

#include "config/config.h"

namespace mustdrop::config {

// Which frames of a camera are kept.
struct MonitorSampler {
  SamplerKind kind = SamplerKind::kInterval;  // interval: one frame every interval_sec | fps: fps frames per second
  double interval_sec = 1.0;      // interval: seconds between kept frames (of the stream's own time)
  double fps = 1.0;               // fps: frames kept per second
  int frames = 0;                 // the source ends after this many kept frames (0 = never)

  template <class V>
  void visit(V& v) {
    v("kind", kind, one_of({"interval", "fps"}));
    v("interval_sec", interval_sec, range(1e-3, 86400));
    v("fps", fps, range(1e-3, 1000));
    v("frames", frames, range(0, 1e9));
  }
};

// One camera (or a file played as one, or an image directory).
struct MonitorSource {
  std::string id;                 // names the source in questions, events, HTTP (`model`) and metrics
  std::string url;                // rtsp://..., http(s)://..., a file path, or an image directory
  std::string transport = "tcp";  // RTSP lower transport: tcp | udp
  MonitorSampler sampler;
  ReconnectConfig reconnect;      // a dropped camera (and a first connection that fails) is retried with this backoff
  bool realtime = true;           // a file or image directory is delivered at its own pace, as a camera would
  bool loop = false;              // a file or image directory starts again at its end (else the source ends there)
  std::string system_prompt;      // context placed before every question about this source ("" = none)

  template <class V>
  void visit(V& v) {
    v("id", id, any());
    v("url", url, any());
    v("transport", transport, one_of({"tcp", "udp"}));
    v("sampler", sampler);
    v("reconnect", reconnect);
    v("realtime", realtime, any());
    v("loop", loop, any());
    v("system_prompt", system_prompt, any());
  }
};

// A question asked without anyone typing it.
struct MonitorQuestion {
  std::string id;                    // names the question in events
  std::string text;                  // the question
  std::vector<std::string> sources;  // source ids it is asked about ([] = every source)
  double every_sec = 0;              // asked every this many seconds (0 = not on a schedule)
  std::string on;                    // "scene_change": asked when a source's scene changes ("" = never)
  double cooldown_sec = 30;          // on: scene_change: at most once per this many seconds per source
  int max_new_tokens = 0;            // answer length (0 = generation.max_new_tokens)

  template <class V>
  void visit(V& v) {
    v("id", id, any());
    v("text", text, any());
    v("sources", sources, any());
    v("every_sec", every_sec, range(0, 86400 * 365));
    v("on", on, one_of({"", "scene_change"}));
    v("cooldown_sec", cooldown_sec, range(0, 86400 * 365));
    v("max_new_tokens", max_new_tokens, range(0, 100000));
  }
};

// When a frame is news: temporal merging compares each window of a new frame with the same
// window of the frames before it; a frame whose share of unlike windows passes `threshold` is news.
struct SceneChangeConfig {
  double threshold = 0.5;      // share of a frame's windows unlike the same windows before it (0..1)
  int warmup_frames = 2;       // frames of a (re)connected source before changes count
  double cooldown_sec = 10;    // scene_change events of one source at most this often

  template <class V>
  void visit(V& v) {
    v("threshold", threshold, range(0, 1));
    v("warmup_frames", warmup_frames, range(1, 1000000));
    v("cooldown_sec", cooldown_sec, range(0, 86400));
  }
};

// The local HTTP API (OpenAI-compatible chat completions, sources, /metrics, /healthz).
struct HttpConfig {
  bool enabled = true;
  std::string bind = "127.0.0.1";  // listen address; anything beyond loopback must be set here on purpose
  int port = 8080;                 // 0 = any free port (printed at start)
  double max_body_kb = 64;         // larger request bodies get 413
  std::string token_env;           // environment variable holding a bearer token every request must carry ("" = none)
  int max_queued = 4;              // answers waiting over all sources; more get 429 with Retry-After

  template <class V>
  void visit(V& v) {
    v("enabled", enabled, any());
    v("bind", bind, any());
    v("port", port, range(0, 65535));
    v("max_body_kb", max_body_kb, range(1, 1e6));
    v("token_env", token_env, any());
    v("max_queued", max_queued, range(1, 100000));
  }
};

// The events file: every answer, schedule miss, scene change, state change, outage, eviction.
struct EventsConfig {
  std::string path = "monitor-events.jsonl";  // appended, one JSON object per line ("" = no file)
  double max_file_mb = 64;   // rotated to path.1, path.2, ... past this size
  int max_files = 4;         // rotated files kept (the oldest goes): at most (max_files + 1) * max_file_mb on disk
  bool sync = false;         // fdatasync after every line (slower; survives power loss)

  template <class V>
  void visit(V& v) {
    v("path", path, any());
    v("max_file_mb", max_file_mb, range(0.001, 1e6));
    v("max_files", max_files, range(0, 1000));
    v("sync", sync, any());
  }
};

// The whole monitor.
struct MonitorConfig {
  std::string log_level = "info";
  ModelSettings model;
  std::string pipeline = "pipelines/mustdrop.yaml";  // the method's pipeline YAML (relative: to the working directory)
  VideoConfig video;            // preprocessing and live-stream timeouts (per-source settings override the sampler, transport, reconnect)
  GenerationConfig generation;
  MemoryConfig memory;          // the budget of each source's memory (every source has its own)
  ThreadsConfig threads;
  std::vector<MonitorSource> sources;
  std::vector<MonitorQuestion> questions;
  SceneChangeConfig scene_change;
  HttpConfig http;
  EventsConfig events;
  double metrics_interval_sec = 60;  // a metrics line per source on stderr this often (0 = never)

  template <class V>
  void visit(V& v) {
    v("log_level", log_level, one_of({"trace", "debug", "info", "warn", "error", "off"}));
    v("model", model);
    v("pipeline", pipeline, any());
    v("video", video);
    v("generation", generation);
    v("memory", memory);
    v("threads", threads);
    v("sources", sources);
    v("questions", questions);
    v("scene_change", scene_change);
    v("http", http);
    v("events", events);
    v("metrics_interval_sec", metrics_interval_sec, range(0, 86400));
  }
};

// Reads a monitor file, applies `overrides` ("http.port=0", "sources.0.url=..."), then checks
// what the types cannot: ids present and unique, questions naming known sources with a trigger.
// ConfigError with file:line:col (or the --set argument, or the key path) otherwise.
MonitorConfig load_monitor(const std::string& path, const std::vector<std::string>& overrides = {});
MonitorConfig load_monitor_string(const std::string& yaml, const std::string& origin,
                                  const std::vector<std::string>& overrides = {});
std::string to_yaml(const MonitorConfig& monitor);
// Every key path ("sources[].id", ...) in declaration order.
std::vector<std::string> monitor_key_paths();

}  // namespace mustdrop::config
