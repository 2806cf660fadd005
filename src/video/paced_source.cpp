#include <algorithm>
#include <chrono>
#include <exception>
#include <thread>

#include "video/source.h"

namespace mustdrop::video {
namespace {

using Clock = std::chrono::steady_clock;

// A file or image directory delivered as a camera would: frames no sooner than their time since
// the start (realtime, then reported live: a slow reader drops frames), from the beginning again
// at the end (loop). Times and indices keep increasing over loops; a loop is not an outage.
class PacedSource : public Source {
 public:
  PacedSource(std::unique_ptr<Source> inner, bool realtime, bool loop)
      : inner_(std::move(inner)), realtime_(realtime), loop_(loop) {
    info_ = inner_->info();
    info_.seekable = false;
    // Played in real time it behaves as a camera: a reader that falls behind drops frames
    // instead of the file waiting for it.
    info_.live = realtime;
  }

  const StreamInfo& info() const override { return info_; }

  std::optional<Frame> next() override {
    if (stop_requested()) return std::nullopt;
    std::optional<Frame> f = inner_->next();
    if (!f && loop_ && n_this_pass_ > 0) {
      try {
        if (stop_requested() || !inner_->rewind()) return std::nullopt;
      } catch (const std::exception&) {
        if (stop_requested()) return std::nullopt;  // the stop interrupted the reopen: an end, not an error
        throw;
      }
      ++n_loops_;
      // The next pass starts one frame period after the last frame.
      t_offset_ = last_t_ + period();
      n_this_pass_ = 0;
      f = inner_->next();
    }
    if (!f) return std::nullopt;
    if (n_this_pass_ == 0) pass_start_t_ = f->t_sec;
    ++n_this_pass_;
    f->t_sec = t_offset_ + (f->t_sec - pass_start_t_);
    f->index = next_index_++;
    last_t_ = f->t_sec;
    if (realtime_ && !wait_until(f->t_sec)) return std::nullopt;
    return f;
  }

  void request_stop() override {
    Source::request_stop();
    inner_->request_stop();
  }
  void set_connection_hook(ConnectionHook hook) override { inner_->set_connection_hook(std::move(hook)); }

  bool seek(double) override { return false; }
  std::optional<std::vector<double>> frame_times() override { return std::nullopt; }
  bool rewind() override { return false; }
  SourceStats stats() const override { return inner_->stats(); }

 private:
  double period() const { return info_.avg_fps > 0 ? 1.0 / info_.avg_fps : 0.04; }

  // Sleeps until `t_sec` after the first frame was delivered, in short slices (a stop ends it).
  bool wait_until(double t_sec) {
    if (!started_) {
      started_ = true;
      start_ = Clock::now() - std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(t_sec));
    }
    auto due = start_ + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(t_sec));
    while (Clock::now() < due) {
      if (stop_requested()) return false;
      std::this_thread::sleep_for(std::min<Clock::duration>(due - Clock::now(), std::chrono::milliseconds(20)));
    }
    return !stop_requested();
  }

  std::unique_ptr<Source> inner_;
  bool realtime_, loop_;
  StreamInfo info_;
  bool started_ = false;
  Clock::time_point start_;
  double t_offset_ = 0, pass_start_t_ = 0, last_t_ = 0;
  int64_t n_this_pass_ = 0, n_loops_ = 0, next_index_ = 0;
};

}  // namespace

std::unique_ptr<Source> make_paced_source(std::unique_ptr<Source> inner, bool realtime, bool loop) {
  return std::make_unique<PacedSource>(std::move(inner), realtime, loop);
}

}  // namespace mustdrop::video
