// One camera of `mustdrop monitor`: a supervisor thread keeps the source connected (the first
// connection retried too), feeds its session on the shared runtime, records states, outages and
// scene changes as events. Nothing is reloaded when a camera drops: the session and the model stay.
#include <algorithm>
#include <cmath>
#include <ctime>

#include "app/monitor.h"
#include "core/error.h"
#include "core/log.h"
#include "video/source.h"

namespace mustdrop::app::monitor {
namespace {

using Clock = std::chrono::steady_clock;

// Forwards a source and counts the frames it gave (thread-safe), for the metrics.
class Counted : public video::Source {
 public:
  Counted(std::unique_ptr<video::Source> inner, std::atomic<int64_t>& n) : inner_(std::move(inner)), n_(n) {}
  const video::StreamInfo& info() const override { return inner_->info(); }
  std::optional<video::Frame> next() override {
    std::optional<video::Frame> f = inner_->next();
    if (f) ++n_;
    return f;
  }
  bool seek(double t) override { return inner_->seek(t); }
  std::optional<std::vector<double>> frame_times() override { return inner_->frame_times(); }
  bool rewind() override { return inner_->rewind(); }
  video::SourceStats stats() const override { return inner_->stats(); }
  void request_stop() override {
    Source::request_stop();
    inner_->request_stop();
  }
  void set_connection_hook(ConnectionHook hook) override { inner_->set_connection_hook(std::move(hook)); }

 private:
  std::unique_ptr<video::Source> inner_;
  std::atomic<int64_t>& n_;
};

}  // namespace

std::string redact_url(const std::string& text) {
  std::string out = text;
  for (size_t scheme = out.find("://"); scheme != std::string::npos; scheme = out.find("://", scheme + 3)) {
    const size_t host = scheme + 3;
    const size_t end = out.find_first_of("/ \t\n\"'", host);
    const size_t at = out.rfind('@', end == std::string::npos ? out.size() : end);
    if (at == std::string::npos || at < host) continue;
    out.replace(host, at - host, "***");
  }
  return out;
}

const char* state_name(State s) {
  switch (s) {
    case State::kConnecting:
      return "connecting";
    case State::kLive:
      return "live";
    case State::kLost:
      return "lost";
    case State::kPaused:
      return "paused";
    case State::kEnded:
      return "ended";
    case State::kFailed:
      return "failed";
    case State::kStopped:
      return "stopped";
  }
  return "unknown";
}

Camera::Camera(const config::MonitorSource& spec, const config::MonitorConfig& config,
               const model::VisionLanguageModel& model, const prune::Chain& chain, pipeline::Runtime& runtime,
               double epoch_unix, Emit emit, OnScene on_scene)
    : spec_(spec), video_(config.video), scene_(config.scene_change), model_(model), runtime_(runtime),
      epoch_unix_(epoch_unix), emit_(std::move(emit)), on_scene_(std::move(on_scene)) {
  session_ = std::make_unique<session::Session>(model, &chain, config.memory);
  session_->ground_answers(true);
  video_.sampler.kind = spec.sampler.kind;
  video_.sampler.interval_sec = spec.sampler.interval_sec;
  video_.sampler.fps = spec.sampler.fps;
  video_.sampler.frames = spec.sampler.frames;
  video_.live.transport = spec.transport;
  video_.live.reconnect = spec.reconnect;
  // One attempt per open: the supervisor retries with the source's backoff, forever if asked to.
  video_.live.initial_connect_sec = 0;
}

Camera::~Camera() {
  stop();
  join();
}

void Camera::start() { thread_ = std::thread([this] { supervise(); }); }

// Never calls into the run while holding mu_: the run's reader thread may be in the connection
// hook waiting for mu_ while the run holds its own lock to join that thread.
void Camera::stop() {
  stop_.store(true);
  std::shared_ptr<pipeline::SourceRun> run;
  {
    std::lock_guard<std::mutex> lock(mu_);
    run = run_;
    cv_.notify_all();
  }
  if (run) run->stop();
}

void Camera::join() {
  if (thread_.joinable()) thread_.join();
}

bool Camera::pause() {
  if (finished() || paused_.exchange(true)) return false;
  std::shared_ptr<pipeline::SourceRun> run;
  {
    std::lock_guard<std::mutex> lock(mu_);
    run = run_;
    stopped_by_pause_ = run != nullptr;  // the supervisor must not take the run's end for the source's
    cv_.notify_all();
  }
  if (run) run->stop();
  return true;
}

bool Camera::resume() {
  if (finished() || !paused_.exchange(false)) return false;
  std::lock_guard<std::mutex> lock(mu_);
  cv_.notify_all();
  return true;
}

bool Camera::finished() const {
  State s = state_.load();
  return s == State::kEnded || s == State::kFailed || s == State::kStopped;
}

double Camera::sample_rate() const {
  return spec_.sampler.kind == config::SamplerKind::kFps ? spec_.sampler.fps : 1.0 / spec_.sampler.interval_sec;
}

CameraCounters Camera::counters() const {
  CameraCounters c;
  pipeline::PerceptionStats s;
  std::shared_ptr<pipeline::SourceRun> run;
  {
    std::lock_guard<std::mutex> lock(mu_);  // one consistent copy: finished runs and the current one
    c = counters_;
    s = closed_;
    run = run_;
  }
  c.state = state_.load();
  if (run) {
    pipeline::PerceptionStats now = run->stats();
    s.n_frames_sampled += now.n_frames_sampled;
    s.n_frames_dropped += now.n_frames_dropped;
    s.n_frames_encoded += now.n_frames_encoded;
  }
  c.n_frames_decoded = n_decoded_.load();
  c.n_frames_sampled = s.n_frames_sampled;
  c.n_frames_dropped = s.n_frames_dropped;
  c.n_frames_encoded = s.n_frames_encoded;
  return c;
}

void Camera::count_answer(bool answered) {
  std::lock_guard<std::mutex> lock(mu_);
  ++(answered ? counters_.n_answered : counters_.n_missed);
}

nlohmann::json Camera::status() const {
  CameraCounters c = counters();
  auto snap = session_->snapshot();
  nlohmann::json j = {{"id", spec_.id},
                      {"url", redact_url(spec_.url)},
                      {"state", state_name(c.state)},
                      {"frames", {{"decoded", c.n_frames_decoded},
                                  {"sampled", c.n_frames_sampled},
                                  {"encoded", c.n_frames_encoded},
                                  {"dropped", c.n_frames_dropped}}},
                      {"reconnects", c.n_reconnects},
                      {"outages", c.n_outages},
                      {"scene_changes", c.n_scene_changes},
                      {"answers", {{"answered", c.n_answered}, {"missed", c.n_missed}}},
                      {"memory", {{"n_frames", snap->frames.size()},
                                  {"n_tokens", snap->n_tokens},
                                  {"bytes", snap->bytes},
                                  {"token_capacity", session_->memory().token_capacity()},
                                  {"peak_tokens", c.peak_memory_tokens},
                                  {"peak_bytes", c.peak_memory_bytes},
                                  {"n_evicted_tokens", snap->n_evicted_tokens}}}};
  if (!snap->frames.empty()) {
    j["memory"]["span_sec"] = {snap->t_first_sec, snap->t_last_sec};
    j["memory"]["span_utc"] = {iso8601_utc(unix_of(snap->t_first_sec)), iso8601_utc(unix_of(snap->t_last_sec))};
    j["lag_sec"] = c.state == State::kLive ? std::max(0.0, unix_now() - unix_of(snap->t_last_sec)) : 0.0;
  }
  return j;
}

void Camera::set_state(State s, const std::string& why) {
  State old = state_.exchange(s);
  if (old == s) return;
  if (s == State::kFailed) {
    std::lock_guard<std::mutex> lock(mu_);
    failure_ = redact_url(why);
  }
  nlohmann::json e = {{"type", "state"}, {"source", spec_.id}, {"from", state_name(old)}, {"to", state_name(s)}};
  if (!why.empty()) e["reason"] = redact_url(why);
  MD_LOG_INFO("monitor", spec_.id << ": " << state_name(old) << " -> " << state_name(s)
                                  << (why.empty() ? "" : " (" + redact_url(why) + ")"));
  emit_(std::move(e));
}

void Camera::outage_begins(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (in_outage_) return;
    in_outage_ = true;
    outage_start_unix_ = unix_now();
    outage_reason_ = why;
    ++counters_.n_outages;
  }
  set_state(State::kLost, why);
  emit_({{"type", "outage_start"}, {"source", spec_.id}, {"reason", redact_url(why)}});
}

void Camera::outage_ends(bool at_stop) {
  double start = 0;
  std::string why;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!in_outage_) return;
    in_outage_ = false;
    start = outage_start_unix_;
    why = outage_reason_;
    ++counters_.n_reconnects;
    frames_since_connect_ = 0;
  }
  const double seconds = unix_now() - start;
  const int64_t missed = static_cast<int64_t>(std::floor(seconds * sample_rate()));
  if (at_stop) {
    std::lock_guard<std::mutex> lock(mu_);
    --counters_.n_reconnects;  // closed by the stop, not regained
  }
  nlohmann::json e = {{"type", "outage_end"},
                      {"source", spec_.id},
                      {"started", iso8601_utc(start)},
                      {"seconds", seconds},
                      {"frames_missed", missed},
                      {"reason", redact_url(why)}};
  if (at_stop) e["at_stop"] = true;  // the monitor stopped before the source came back
  emit_(std::move(e));
}

bool Camera::sleep_ms(int ms) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, std::chrono::milliseconds(ms), [&] { return stop_.load() || paused_.load(); });
  return !stop_.load() && !paused_.load();
}

std::unique_ptr<video::Source> Camera::open() {
  std::unique_ptr<video::Source> src = video::open_source(spec_.url, video_);
  const bool live = src->info().live;
  if (!live && (spec_.realtime || spec_.loop)) src = video::make_paced_source(std::move(src), spec_.realtime, spec_.loop);
  return std::make_unique<Counted>(std::move(src), n_decoded_);
}

int Camera::next_delay(int delay_ms) const {
  return std::min(std::max(1, delay_ms * 2), spec_.reconnect.max_delay_ms);
}

void Camera::supervise() {
  int delay_ms = spec_.reconnect.initial_delay_ms;
  int failures = 0;
  bool ever_connected = false;
  bool was_paused = false;
  double last_t = -1;
  // Remote inputs come back by themselves; a local file or directory that fails will not.
  const video::InputKind kind = video::classify_input(spec_.url);
  const bool remote = kind == video::InputKind::kLive || kind == video::InputKind::kNetworkFile;
  while (!stop_.load()) {
    if (paused_.load()) {
      was_paused = true;
      set_state(State::kPaused);
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_.load() || !paused_.load(); });
      continue;
    }
    if (!ever_connected || state_.load() == State::kPaused) set_state(State::kConnecting);
    std::unique_ptr<video::Source> src;
    try {
      src = open();
    } catch (const Error& e) {
      ++failures;
      if (failures == 1 || failures % 10 == 0) {
        MD_LOG_WARN("monitor", spec_.id << ": " << redact_url(e.what()) << " (attempt " << failures << ", next in "
                                         << delay_ms << " ms)");
      }
      if (!remote) {
        set_state(State::kFailed, e.what());
        return;
      }
      if (ever_connected) outage_begins(e.what());
      if (spec_.reconnect.max_attempts > 0 && failures >= spec_.reconnect.max_attempts) {
        set_state(State::kFailed, std::string(e.what()) + " (gave up after " + std::to_string(failures) + " attempts)");
        return;
      }
      if (!sleep_ms(delay_ms)) continue;
      delay_ms = next_delay(delay_ms);
      continue;
    }
    src->set_connection_hook([this](bool up, const std::string& why) {
      if (up) {
        outage_ends();
        set_state(State::kLive);
      } else {
        outage_begins(why);
      }
    });
    outage_ends();
    const double t_start = unix_now() - epoch_unix_;
    if (last_t >= 0 && t_start > last_t) {
      session_->note_gap({last_t, t_start, 0, was_paused ? "paused" : "outage"});
    }
    was_paused = false;
    ever_connected = true;
    ever_live_.store(true);
    {
      std::lock_guard<std::mutex> lock(mu_);
      frames_since_connect_ = 0;
    }
    set_state(State::kLive);
    pipeline::SourceOptions options;
    options.video = video_;
    if (spec_.sampler.frames > 0) {  // the limit counts over reconnections
      std::lock_guard<std::mutex> lock(mu_);
      options.video.sampler.frames = static_cast<int>(std::max<int64_t>(1, spec_.sampler.frames - closed_.n_frames_sampled));
    }
    options.t_start_sec = t_start;
    run_t_start_.store(std::max(t_start, session_->next_frame_time()));
    options.on_frame = [this](const pipeline::FrameNews& news) { on_frame(news); };
    std::shared_ptr<pipeline::SourceRun> run;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_.load() || paused_.load()) continue;
      run = run_ = runtime_.add_source(std::move(src), *session_, options);
    }
    const pipeline::PerceptionStats got = run->wait();
    std::exception_ptr error = run->error();
    bool by_pause = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_.n_frames_sampled += got.n_frames_sampled;
      closed_.n_frames_dropped += got.n_frames_dropped;
      closed_.n_frames_encoded += got.n_frames_encoded;
      run_.reset();
      by_pause = stopped_by_pause_;
      stopped_by_pause_ = false;
    }
    if (got.n_frames_encoded > 0) {  // the backoff starts over only once a connection gave frames
      failures = 0;
      delay_ms = spec_.reconnect.initial_delay_ms;
    }
    last_t = session_->next_frame_time() - 1.0;  // the newest frame's time
    if (stop_.load()) break;
    if (paused_.load() || by_pause) {  // a resume may already have come: reconnect, the gap is a pause
      was_paused = true;
      continue;
    }
    if (spec_.sampler.frames > 0 && !error) {
      std::unique_lock<std::mutex> lock(mu_);
      if (closed_.n_frames_sampled >= spec_.sampler.frames) {
        lock.unlock();
        set_state(State::kEnded, "the frame limit was reached");
        return;
      }
    }
    if (error) {
      std::string why;
      try {
        std::rethrow_exception(error);
      } catch (const std::exception& e) {
        why = e.what();
      }
      if (!remote) {
        set_state(State::kFailed, why);  // a local file that cannot be read will not get better
        return;
      }
      outage_begins(why);
      ++failures;
      // A live source gives up only after its own reconnect attempts; a network file counts here.
      if (spec_.reconnect.max_attempts > 0 && (kind == video::InputKind::kLive || failures >= spec_.reconnect.max_attempts)) {
        set_state(State::kFailed, why);
        return;
      }
      if (sleep_ms(delay_ms)) delay_ms = next_delay(delay_ms);
      continue;
    }
    if (kind == video::InputKind::kLive) {
      outage_begins("the stream ended");
      ++failures;
      if (sleep_ms(delay_ms)) delay_ms = next_delay(delay_ms);
      continue;
    }
    set_state(State::kEnded, "the file ended");
    return;
  }
  outage_ends(true);  // an outage still open is closed in the record
  set_state(State::kStopped, "the monitor is stopping");
}

void Camera::on_frame(const pipeline::FrameNews& news) {
  auto snap = session_->snapshot();
  bool news_worthy = false;
  // No window compared (the first frame, or a pipeline without temporal merging): no news.
  const double novelty =
      news.n_windows_compared > 0 ? double(news.n_windows_changed) / double(news.n_windows_compared) : 0.0;
  const double now = unix_now();
  MD_LOG_DEBUG("monitor", spec_.id << ": frame " << news.seq << " at " << news.t_sec << " s: " << news.n_windows_changed
                                   << " of " << news.n_windows_compared << " windows unlike the memory (novelty "
                                   << novelty << "), " << news.n_folded << " of " << news.n_patch_tokens
                                   << " patch tokens folded into it");
  {
    std::lock_guard<std::mutex> lock(mu_);
    counters_.peak_memory_tokens = std::max(counters_.peak_memory_tokens, snap->n_tokens);
    counters_.peak_memory_bytes = std::max(counters_.peak_memory_bytes, snap->bytes);
    counters_.last_novelty = novelty;
    counters_.newest_frame_unix = unix_of(news.t_sec);
    ++frames_since_connect_;
    if (news.after_outage) frames_since_connect_ = 1;  // dropped frames (a busy encoder) do not restart the warm-up
    if (frames_since_connect_ > scene_.warmup_frames && novelty >= scene_.threshold &&
        now - last_scene_unix_ >= scene_.cooldown_sec) {
      news_worthy = true;
      last_scene_unix_ = now;
      ++counters_.n_scene_changes;
    }
  }
  if (!news_worthy) return;
  emit_({{"type", "scene_change"},
         {"source", spec_.id},
         {"frame", news.seq},
         {"t_sec", news.t_sec},
         {"stream_sec", news.t_sec - run_t_start_.load()},
         {"frame_utc", iso8601_utc(unix_of(news.t_sec))},
         {"share", novelty},
         {"threshold", scene_.threshold}});
  if (on_scene_) on_scene_(*this, novelty);
}

}  // namespace mustdrop::app::monitor
