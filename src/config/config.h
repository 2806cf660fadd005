// Typed configuration. Every struct lists its fields once in visit(); the YAML reader, the
// --set overrides and the printer (the visitors of decode.h) all walk that list, so a key, its type and its
// limits are declared in exactly one place. YAML keys are the C++ field names.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/decode.h"

namespace mustdrop::config {


// How a live source reconnects after a disconnect, timeout or stall.
struct ReconnectConfig {
  int initial_delay_ms = 500;   // first wait before reopening
  int max_delay_ms = 30000;     // the doubling delay stops growing here
  int max_attempts = 0;         // consecutive failed reopen attempts before giving up; 0 = unlimited

  template <class V>
  void visit(V& v) {
    v("initial_delay_ms", initial_delay_ms, range(0, 3600000));
    v("max_delay_ms", max_delay_ms, range(0, 3600000));
    v("max_attempts", max_attempts, range(0, 1e9));
  }
};

// Live sources (RTSP, and anything else read as a stream).
struct LiveConfig {
  std::string transport = "tcp";  // RTSP lower transport: tcp | udp
  int read_timeout_ms = 5000;     // socket I/O timeout (libav `timeout`) and per-call deadline
  int open_timeout_ms = 10000;    // deadline for one connection attempt and for closing
  double initial_connect_sec = 10.0;  // keep trying the first connection this long, then fail (input error)
  double watchdog_sec = 10.0;     // no decoded frame for this long forces a reconnect
  int queue_frames = 8;           // consumer queue; when full the oldest frame is dropped
  ReconnectConfig reconnect;

  template <class V>
  void visit(V& v) {
    v("transport", transport, one_of({"tcp", "udp"}));
    v("read_timeout_ms", read_timeout_ms, range(1, 3600000));
    v("open_timeout_ms", open_timeout_ms, range(1, 3600000));
    v("initial_connect_sec", initial_connect_sec, range(0, 86400));
    v("watchdog_sec", watchdog_sec, range(0.1, 86400));
    v("queue_frames", queue_frames, range(1, 100000));
    v("reconnect", reconnect);
  }
};

// How frames are chosen from a source.
enum class SamplerKind { kUniform, kFps, kInterval };
inline std::vector<const char*> enum_names(SamplerKind) { return {"uniform", "fps", "interval"}; }

// Which decoded frames are kept.
struct SamplerConfig {
  SamplerKind kind = SamplerKind::kUniform;  // uniform (N frames over a file) | fps | interval (live)
  int frames = 8;                  // uniform: frames per clip; fps/interval: stop after this many (0 = no limit)
  double fps = 1.0;                // fps sampler: frames per second of media time
  double interval_sec = 2.0;       // interval sampler: one frame every this many seconds
  double seek_threshold_sec = 2.0; // uniform: seek when the next target is further ahead than this

  template <class V>
  void visit(V& v) {
    v("kind", kind, any());
    v("frames", frames, range(0, 1000000));
    v("fps", fps, range(1e-6, 1000));
    v("interval_sec", interval_sec, range(1e-3, 86400));
    v("seek_threshold_sec", seek_threshold_sec, range(0, 86400));
  }
};

// Frame -> vision-tower input tensor [3, size, size].
struct PreprocessConfig {
  int size = 336;                // output side S (LLaVA-1.5: 336, Video-LLaVA: 224)
  std::string resize = "crop";   // crop: shortest side to S, centre crop (CLIP) | pad: pad to square with the mean colour (LLaVA-1.5)
  std::string interpolation = "bicubic";  // swscale kernel: bicubic | bilinear | area | lanczos
  std::vector<double> mean = {0.48145466, 0.4578275, 0.40821073};  // per-channel RGB mean (0..1)
  std::vector<double> stddev = {0.26862954, 0.26130258, 0.27577711};  // per-channel RGB std (0..1)

  template <class V>
  void visit(V& v) {
    v("size", size, range(8, 8192));
    v("resize", resize, one_of({"crop", "pad"}));
    v("interpolation", interpolation, one_of({"bicubic", "bilinear", "area", "lanczos"}));
    v("mean", mean, list_of(3, -10, 10));
    v("stddev", stddev, list_of(3, 1e-6, 10));
  }
};

// Everything about reading video.
struct VideoConfig {
  double frame_dir_fps = 1.0;  // timestamps of an image directory source: frame i is at i / frame_dir_fps
  int decoder_threads = 0;     // libav decoder threads; 0 = let libav choose
  SamplerConfig sampler;
  PreprocessConfig preprocess;
  LiveConfig live;

  template <class V>
  void visit(V& v) {
    v("frame_dir_fps", frame_dir_fps, range(1e-6, 1000));
    v("decoder_threads", decoder_threads, range(0, 256));
    v("sampler", sampler);
    v("preprocess", preprocess);
    v("live", live);
  }
};

// The dtype weights and activations compute in (f16: on a GPU only).
enum class ComputeDtype { kAuto, kF32, kBf16, kF16 };
inline std::vector<const char*> enum_names(ComputeDtype) { return {"auto", "f32", "bf16", "f16"}; }

// Which model answers, and how it computes.
struct ModelSettings {
  std::string dir;                           // Hugging Face model directory ("" = --model or $MUSTDROP_MODEL)
  ComputeDtype dtype = ComputeDtype::kAuto;  // auto: bf16 on a GPU, or where the CPU computes bf16 natively (AVX512-BF16, AMX), else f32 | f32 | bf16 | f16 (GPU only)
  std::string device = "cpu";                // cpu | cuda | cuda:N (needs a CUDA-enabled LibTorch: docs/gpu.md)

  template <class V>
  void visit(V& v) {
    v("dir", dir, any());
    v("dtype", dtype, any());
    v("device", device, any());
  }
};

// How answers are generated.
struct GenerationConfig {
  int max_new_tokens = 64;  // stop after this many tokens
  double temperature = 0.0; // 0 = greedy; > 0 samples
  double top_p = 1.0;       // nucleus sampling mass (with temperature > 0)
  int seed = 0;             // sampling seed

  template <class V>
  void visit(V& v) {
    v("max_new_tokens", max_new_tokens, range(1, 100000));
    v("temperature", temperature, range(0, 100));
    v("top_p", top_p, range(1e-6, 1));
    v("seed", seed, range(0, 2147483647));
  }
};

// The memory of a session: a hard budget on its vision tokens and their cached keys/values.
struct MemoryConfig {
  int max_tokens = 0;         // vision tokens kept (0 = no limit but the model's context)
  double max_mb = 0;          // megabytes of vision tokens plus their cached prefix (0 = no limit)
  double evict_to = 0.9;      // when full, evict down to this share of the budget (fewer, larger evictions)
  bool prefix_cache = true;   // keep the question-independent KV prefix and extend it per frame
  int position_reserve = 512; // RoPE positions kept free after the memory for a question and its answer

  template <class V>
  void visit(V& v) {
    v("max_tokens", max_tokens, range(0, 1e9));
    v("max_mb", max_mb, range(0, 1e9));
    v("evict_to", evict_to, range(0.05, 1));
    v("prefix_cache", prefix_cache, any());
    v("position_reserve", position_reserve, range(16, 1e6));
  }
};

// The thread budget, split so oneTBB workers and LibTorch's intra-op threads never oversubscribe.
struct ThreadsConfig {
  int total = 0;             // cores to use; 0 = all hardware threads
  int torch_intra_op = 0;    // LibTorch threads per model task (an encoder or an answer); 0 = total
  int frames_in_flight = 4;  // frames decoded but not yet encoded (limiter)
  int answers = 1;           // answers computed at once (over all sessions); more queue

  template <class V>
  void visit(V& v) {
    v("total", total, range(0, 4096));
    v("torch_intra_op", torch_intra_op, range(0, 4096));
    v("frames_in_flight", frames_in_flight, range(1, 4096));
    v("answers", answers, range(1, 4096));
  }
};

// The whole configuration (configs/default.yaml documents every key).
struct Config {
  std::string log_level = "info";  // trace | debug | info | warn | error | off
  VideoConfig video;
  ModelSettings model;
  GenerationConfig generation;
  MemoryConfig memory;
  ThreadsConfig threads;

  template <class V>
  void visit(V& v) {
    v("log_level", log_level, one_of({"trace", "debug", "info", "warn", "error", "off"}));
    v("video", video);
    v("model", model);
    v("generation", generation);
    v("memory", memory);
    v("threads", threads);
  }
};

// Reads `path` over the defaults, then applies `overrides` ("a.b=value", YAML-typed values).
// Throws ConfigError quoting file:line:col and the key path for unknown keys, wrong types
// and out-of-range values; an override error names the --set argument.
Config load(const std::string& path, const std::vector<std::string>& overrides = {});
// Same, from YAML text; `origin` names the text in messages.
Config load_string(const std::string& yaml, const std::string& origin,
                   const std::vector<std::string>& overrides = {});
// Defaults plus overrides only (no file).
Config defaults_with(const std::vector<std::string>& overrides);
// The effective configuration as YAML (every key, in declaration order).
std::string to_yaml(const Config& config);
// Every key path ("video.sampler.kind", ...) in declaration order.
std::vector<std::string> key_paths();

}  // namespace mustdrop::config
