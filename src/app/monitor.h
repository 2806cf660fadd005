// Pieces of `mustdrop monitor` (app/monitor*.cpp): one Camera per configured source — its session,
// the supervisor that keeps it connected, its counters and scene changes.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "config/monitor_config.h"
#include "core/timing.h"
#include "pipeline/runtime.h"
#include "session/session.h"

namespace mustdrop::app::monitor {

enum class State { kConnecting, kLive, kLost, kPaused, kEnded, kFailed, kStopped };
const char* state_name(State s);
// `text` with the user:password@ of every URL in it replaced by ***@ (status and events never show
// a camera's credentials).
std::string redact_url(const std::string& text);


// Counters of one camera (a copy, for metrics and status).
struct CameraCounters {
  State state = State::kConnecting;
  int64_t n_frames_decoded = 0;
  int64_t n_frames_sampled = 0;
  int64_t n_frames_dropped = 0;
  int64_t n_frames_encoded = 0;
  int64_t n_reconnects = 0;       // connections regained (by the source or by the supervisor)
  int64_t n_outages = 0;
  int64_t n_scene_changes = 0;
  int64_t n_answered = 0;
  int64_t n_missed = 0;           // scheduled or triggered askings not answered (skipped, queue full, failed)
  int64_t peak_memory_tokens = 0;
  int64_t peak_memory_bytes = 0;
  double last_novelty = 0;        // share of the newest frame's windows unlike the same windows before it
  double newest_frame_unix = 0;   // wall time of the newest frame in memory (0: none yet)
};

class Camera {
 public:
  using Emit = std::function<void(nlohmann::json)>;
  using OnScene = std::function<void(Camera&, double novelty)>;

  // The session (with `chain`) starts empty; nothing connects before start().
  Camera(const config::MonitorSource& spec, const config::MonitorConfig& config, const model::VisionLanguageModel& model,
         const prune::Chain& chain, pipeline::Runtime& runtime, double epoch_unix, Emit emit, OnScene on_scene);
  ~Camera();

  void start();   // the supervisor thread
  void stop();    // ends the source for good (memory and events stay)
  void join();
  // Pausing disconnects the source; the memory, its cache and the counters stay. True if it changed.
  bool pause();
  bool resume();

  const std::string& id() const { return spec_.id; }
  const config::MonitorSource& spec() const { return spec_; }
  session::Session& session() { return *session_; }
  const session::Session& session() const { return *session_; }
  State state() const { return state_.load(); }
  bool finished() const;  // ended, failed or stopped: no more frames will come
  bool ever_live() const { return ever_live_.load(); }
  // Why the source failed ("" unless it did).
  std::string failure() const {
    std::lock_guard<std::mutex> lock(mu_);
    return failure_;
  }
  CameraCounters counters() const;
  void count_answer(bool answered);
  // State, memory span (session seconds and UTC), counters, memory budget.
  nlohmann::json status() const;
  // Session seconds -> Unix time.
  double unix_of(double t_sec) const { return epoch_unix_ + t_sec; }
  // Frames per second the sampler keeps (to estimate frames missed in an outage).
  double sample_rate() const;

 private:
  void supervise();
  void set_state(State s, const std::string& why = "");
  void outage_begins(const std::string& why);
  void outage_ends(bool at_stop = false);
  void on_frame(const pipeline::FrameNews& news);
  bool sleep_ms(int ms);  // false when stopped or paused meanwhile
  int next_delay(int delay_ms) const;  // the reconnect backoff: doubled, up to reconnect.max_delay_ms
  std::unique_ptr<video::Source> open();

  config::MonitorSource spec_;
  config::VideoConfig video_;
  config::SceneChangeConfig scene_;
  const model::VisionLanguageModel& model_;
  pipeline::Runtime& runtime_;
  double epoch_unix_;
  Emit emit_;
  OnScene on_scene_;
  std::unique_ptr<session::Session> session_;
  std::atomic<State> state_{State::kConnecting};
  std::atomic<bool> stop_{false};
  std::atomic<bool> paused_{false};
  std::atomic<int64_t> n_decoded_{0};
  std::atomic<bool> ever_live_{false};
  std::atomic<double> run_t_start_{0};  // session time of the current connection's first frame
  std::thread thread_;
  mutable std::mutex mu_;  // counters, run_, outage
  std::condition_variable cv_;
  std::shared_ptr<pipeline::SourceRun> run_;
  CameraCounters counters_;
  pipeline::PerceptionStats closed_;  // counters of finished runs
  int64_t frames_since_connect_ = 0;
  double last_scene_unix_ = -1e18;
  bool in_outage_ = false;
  double outage_start_unix_ = 0;
  std::string outage_reason_;
  std::string failure_;
  bool stopped_by_pause_ = false;  // pause() stopped the current run
};

}  // namespace mustdrop::app::monitor
