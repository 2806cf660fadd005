#include "video/async_reader.h"

namespace mustdrop::video {

AsyncReader::AsyncReader(std::unique_ptr<Source> source, std::unique_ptr<Sampler> sampler, size_t queue_frames)
    : source_(std::move(source)), sampler_(std::move(sampler)), queue_(queue_frames, source_->info().live) {
  thread_ = std::thread([this] { run(); });
}

AsyncReader::~AsyncReader() {
  stop();
  if (thread_.joinable()) thread_.join();
}

void AsyncReader::run() {
  try {
    while (auto frame = sampler_->next(*source_)) queue_.push(std::move(*frame));
  } catch (...) {
    error_ = std::current_exception();
  }
  queue_.close();
}

std::optional<Frame> AsyncReader::pop(std::chrono::milliseconds timeout) {
  std::optional<Frame> f = queue_.pop(timeout);
  if (!f && queue_.closed_and_empty() && error_) {
    // The reader thread has finished (the queue is closed only after error_ is set).
    std::exception_ptr e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
  return f;
}

}  // namespace mustdrop::video
