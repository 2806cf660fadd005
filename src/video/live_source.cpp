#include <algorithm>
#include <chrono>
#include <thread>

#include "core/error.h"
#include "core/log.h"
#include "video/media_reader.h"
#include "video/source_impls.h"

namespace mustdrop::video {
namespace {

using Clock = std::chrono::steady_clock;


// A live stream. Timestamps (t_sec) stay continuous across reconnects: a new connection
// continues from the last frame's time plus the wall-clock time the stream was away.
class LiveSource : public Source {
 public:
  LiveSource(const std::string& url, const config::VideoConfig& config) : live_(config.live) {
    options_.url = url;
    options_.network = true;
    options_.live = true;
    options_.rtsp_transport = live_.transport;
    options_.read_timeout_ms = live_.read_timeout_ms;
    options_.open_timeout_ms = live_.open_timeout_ms;
    options_.watchdog_sec = live_.watchdog_sec;
    options_.decoder_threads = config.decoder_threads;
    options_.stop = &stop_;
    connect_first();
  }

  const StreamInfo& info() const override { return info_; }

  std::optional<Frame> next() override {
    for (;;) {
      if (stop_requested()) return std::nullopt;
      if (!reader_ && !reconnect()) return std::nullopt;
      try {
        double pts = 0;
        AvFramePtr image = reader_->read_frame(&pts);
        if (!image) {
          if (stop_requested()) return std::nullopt;
          throw StreamError(info_.url + ": the stream ended");
        }
        const bool after_outage = !conn_first_pts_ && next_index_ > 0;
        if (!conn_first_pts_) conn_first_pts_ = pts;
        Frame frame;
        frame.image = std::move(image);
        frame.pts_sec = pts;
        frame.t_sec = t_offset_ + (pts - *conn_first_pts_);
        if (next_index_ > 0 && frame.t_sec <= last_t_) {
          // The stream's clock ran backwards (a new session, an RTP wrap): rebase on this frame.
          double period = info_.avg_fps > 0 ? 1.0 / info_.avg_fps : 1e-3;
          frame.t_sec = last_t_ + period;
          t_offset_ = frame.t_sec;
          conn_first_pts_ = pts;
        }
        frame.index = next_index_++;
        frame.after_outage = after_outage;
        frame.rotation_deg = info_.rotation_deg;
        last_t_ = frame.t_sec;
        return frame;
      } catch (const StreamError& e) {
        disconnect(e.what());
      }
    }
  }

  bool seek(double) override { return false; }
  std::optional<std::vector<double>> frame_times() override { return std::nullopt; }
  bool rewind() override { return false; }

  SourceStats stats() const override {
    SourceStats s = closed_;
    if (reader_) add_stats(s, reader_->stats());
    return s;
  }

 private:
  void connect_first() {
    auto give_up_at = Clock::now() + std::chrono::duration<double>(live_.initial_connect_sec);
    int delay_ms = live_.reconnect.initial_delay_ms;
    for (;;) {
      try {
        reader_ = std::make_unique<MediaReader>(options_);
        info_ = reader_->info();
        disconnected_at_ = Clock::now();
        return;
      } catch (const StreamError& e) {
        if (stop_requested() || Clock::now() + std::chrono::milliseconds(delay_ms) >= give_up_at) {
          throw InputError(std::string(e.what()) + " (no connection within " +
                           std::to_string(live_.initial_connect_sec) + " s)");
        }
        MD_LOG_DEBUG("video", e.what() << "; retrying in " << delay_ms << " ms");
        sleep_ms(delay_ms);
        delay_ms = std::min(std::max(1, delay_ms * 2), live_.reconnect.max_delay_ms);
      }
    }
  }

  void disconnect(const std::string& why) {
    MD_LOG_WARN("video", why << "; reconnecting");
    if (reader_) add_stats(closed_, reader_->stats());
    reader_.reset();
    ++closed_.n_disconnects;
    disconnected_at_ = Clock::now();
    notify_connection(false, why);
  }

  // Reopens with exponential backoff. Returns false on stop; throws StreamError after
  // max_attempts consecutive failures.
  bool reconnect() {
    int delay_ms = live_.reconnect.initial_delay_ms;
    for (int attempt = 1;; ++attempt) {
      if (!sleep_ms(delay_ms)) return false;
      try {
        reader_ = std::make_unique<MediaReader>(options_);
        ++closed_.n_reconnects;
        double away = std::chrono::duration<double>(Clock::now() - disconnected_at_).count();
        t_offset_ = last_t_ + away;
        conn_first_pts_.reset();
        MD_LOG_INFO("video", info_.url << ": reconnected after " << attempt << " attempt(s)");
        notify_connection(true, "");
        return true;
      } catch (const StreamError& e) {
        if (stop_requested()) return false;
        if (live_.reconnect.max_attempts > 0 && attempt >= live_.reconnect.max_attempts) {
          throw StreamError(std::string(e.what()) + " (gave up after " + std::to_string(attempt) + " reconnect attempts)");
        }
        MD_LOG_DEBUG("video", e.what() << "; retry " << attempt << " in " << delay_ms << " ms");
        delay_ms = std::min(std::max(1, delay_ms * 2), live_.reconnect.max_delay_ms);
      }
    }
  }

  // Sleeps in short slices so a stop request ends the wait; false if stopped.
  bool sleep_ms(int ms) {
    auto until = Clock::now() + std::chrono::milliseconds(ms);
    while (Clock::now() < until) {
      if (stop_requested()) return false;
      std::this_thread::sleep_for(std::min<Clock::duration>(until - Clock::now(), std::chrono::milliseconds(20)));
    }
    return !stop_requested();
  }

  config::LiveConfig live_;
  ReaderOptions options_;
  std::unique_ptr<MediaReader> reader_;
  StreamInfo info_;
  SourceStats closed_;  // counters of finished connections, plus disconnects and reconnects
  Clock::time_point disconnected_at_;
  std::optional<double> conn_first_pts_;
  double t_offset_ = 0;
  double last_t_ = 0;
  int64_t next_index_ = 0;
};

}  // namespace

std::unique_ptr<Source> make_live_source(const std::string& url, const config::VideoConfig& config) {
  return std::make_unique<LiveSource>(url, config);
}

}  // namespace mustdrop::video
