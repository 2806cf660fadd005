// Reads and samples a source on its own thread into a LatestQueue, so blocking libav reads
// never stall the consumer and a slow consumer sees the newest frames (drops are counted).
#pragma once

#include <exception>
#include <memory>
#include <optional>
#include <thread>

#include "video/latest_queue.h"
#include "video/sampler.h"
#include "video/source.h"

namespace mustdrop::video {

class AsyncReader {
 public:
  // Starts the reader thread at once; `queue_frames` bounds the frames waiting for the consumer.
  // A live source drops the oldest waiting frame when the queue is full; a file waits.
  AsyncReader(std::unique_ptr<Source> source, std::unique_ptr<Sampler> sampler, size_t queue_frames);
  // Stops the reader (interrupting a blocking read) and joins it.
  ~AsyncReader();

  // The next sampled frame, waiting up to `timeout`; nullopt on timeout or at the end.
  // At the end, rethrows the error that stopped the reader, if any.
  std::optional<Frame> pop(std::chrono::milliseconds timeout);
  // True once the reader has finished and every queued frame was taken.
  bool done() const { return queue_.closed_and_empty(); }
  // Frames dropped because the consumer was slower than the source.
  int64_t n_dropped() const { return queue_.n_dropped(); }
  // Stops reading (thread-safe); frames already queued can still be popped.
  void stop() {
    source_->request_stop();
    queue_.close();
  }
  // Stops reading and waits for the reader thread to end; source() may then be read.
  void join() {
    stop();
    if (thread_.joinable()) thread_.join();
  }
  // Frames the sampler has taken so far.
  int64_t n_sampled() const { return queue_.n_pushed(); }
  const Source& source() const { return *source_; }

 private:
  void run();

  std::unique_ptr<Source> source_;
  std::unique_ptr<Sampler> sampler_;
  LatestQueue<Frame> queue_;
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace mustdrop::video
