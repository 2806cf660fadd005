// One Source abstraction over files, HTTP(S) URLs, live streams (RTSP) and image directories.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"
#include "video/frame.h"

namespace mustdrop::video {

// A stream of decoded frames in presentation order. Not thread-safe, except request_stop().
class Source {
 public:
  virtual ~Source() = default;

  // Stream facts, known once the source is open.
  virtual const StreamInfo& info() const = 0;
  // The next decoded frame, or nullopt at the end of the data. Damage (corrupt packets, a
  // truncated file) is counted in stats() and reading goes on. Throws InputError when the
  // input cannot be read at all, StreamError when a live source gives up reconnecting.
  virtual std::optional<Frame> next() = 0;
  // Positions reading so that next() returns frames at or after t_sec (decoding from the
  // keyframe before it). Returns false when the source cannot seek.
  virtual bool seek(double t_sec) = 0;
  // t_sec of every frame the data holds, sorted, found by demuxing only (never from headers,
  // never decoding); nullopt when the source cannot tell (live, or packets without timestamps).
  // The read position is not changed.
  virtual std::optional<std::vector<double>> frame_times() = 0;
  // Restarts reading at the very first frame, exactly as a fresh open would; false if the
  // source cannot (live).
  virtual bool rewind() = 0;
  // Counters so far.
  virtual SourceStats stats() const = 0;
  // Asks a blocking next() to return soon (thread-safe); later calls return nullopt.
  virtual void request_stop() { stop_.store(true); }
  bool stop_requested() const { return stop_.load(); }
  // Called on the reading thread when a live source loses its connection (up = false, `why` says
  // what ended it) and when it has one again (up = true). Set before reading starts.
  using ConnectionHook = std::function<void(bool up, const std::string& why)>;
  virtual void set_connection_hook(ConnectionHook hook) { connection_hook_ = std::move(hook); }

 protected:
  void notify_connection(bool up, const std::string& why) {
    if (connection_hook_) connection_hook_(up, why);
  }
  std::atomic<bool> stop_{false};
  ConnectionHook connection_hook_;
};

// What kind of input a string names: an existing directory, a live URL, a network file URL
// or a local file path.
enum class InputKind { kFile, kNetworkFile, kLive, kFrameDir };
InputKind classify_input(const std::string& input);

// Opens `input` with the video settings of `config`. Throws InputError naming the input when it
// is missing, not a video, has no video stream, or (live) cannot connect in time.
std::unique_ptr<Source> open_source(const std::string& input, const config::VideoConfig& config);

// `inner` (a file or image directory) delivered as a camera would: each frame no sooner than its
// time after the first (realtime), and from the start again at its end (loop; times keep rising).
// Not seekable.
std::unique_ptr<Source> make_paced_source(std::unique_ptr<Source> inner, bool realtime, bool loop);

// Decoded `frames` kept in memory as a source (benchmarks, tests): given `repeats` times in a row,
// times continuing. InputError when `frames` is empty.
std::unique_ptr<Source> make_frame_list_source(std::vector<Frame> frames, StreamInfo info, int repeats = 1);

}  // namespace mustdrop::video
