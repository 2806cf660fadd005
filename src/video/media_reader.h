// Demux + decode of one libav input (file, HTTP URL or live stream), following FFmpeg's
// demux/decode examples: EAGAIN and EOF are normal, the decoder is flushed at the end.
// Private to src/video; FileSource and LiveSource build on it.
#pragma once

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "video/av_ptr.h"
#include "video/frame.h"

namespace mustdrop::video {

struct ReaderOptions {
  std::string url;                   // path or URL as the user gave it
  bool network = false;              // apply read/open timeouts (HTTP, RTSP, ...)
  bool live = false;                 // EOF and read errors are disconnects (StreamError)
  std::string rtsp_transport = "tcp";
  int read_timeout_ms = 5000;        // libav `timeout` option and interrupt deadline for reads
  int open_timeout_ms = 10000;       // interrupt deadline for open and close
  double watchdog_sec = 0;           // live: no decoded frame for this long is a disconnect (0 = off)
  int decoder_threads = 0;           // 0 = libav chooses
  const std::atomic<bool>* stop = nullptr;  // set by another thread to abort blocking calls
};

// Routes libav's own log lines into the log facade (at debug level); idempotent.
void install_av_log_bridge();

class MediaReader {
 public:
  // Opens the input and its decoder. Files: InputError naming the file (missing, not a video,
  // no video stream, no decoder). Live/network: StreamError (retryable) for connection failures.
  explicit MediaReader(ReaderOptions options);
  ~MediaReader();
  MediaReader(const MediaReader&) = delete;
  MediaReader& operator=(const MediaReader&) = delete;

  const StreamInfo& info() const { return info_; }
  const SourceStats& stats() const { return stats_; }

  // Next picture and its container time, or nullptr at the end of the data (or on stop).
  // Live: end of file, read errors, timeouts and the watchdog throw StreamError.
  AvFramePtr read_frame(double* pts_sec);
  // Seeks to the keyframe at or before pts_sec and flushes the decoder; false if unsupported.
  bool seek(double pts_sec);
  // Presentation time (container clock, seconds) of every video packet from the current read
  // position to the end of the data, sorted, without decoding. nullopt when the packets cannot
  // tell when their pictures show (a packet without pts; a reordering codec whose pts never run
  // backwards). Leaves the reader at the end: call it on a reader opened for the scan alone.
  std::optional<std::vector<double>> scan_packet_times();

 private:
  static int interrupt_callback(void* opaque);
  void arm_deadline(int timeout_ms);
  bool av_read_packet(int* error);
  void note_end_of_data(int read_error);
  std::string describe() const { return options_.url; }

  ReaderOptions options_;
  FormatContextPtr format_;
  CodecContextPtr decoder_;
  PacketPtr packet_;
  int stream_index_ = -1;
  AVRational time_base_{1, 1};
  double frame_period_sec_ = 0;
  double last_pts_sec_ = 0;
  bool have_last_pts_ = false;
  bool draining_ = false;
  bool finished_ = false;
  StreamInfo info_;
  SourceStats stats_;
  std::chrono::steady_clock::time_point deadline_;
  std::chrono::steady_clock::time_point last_frame_at_;
  bool watchdog_fired_ = false;
};

}  // namespace mustdrop::video
