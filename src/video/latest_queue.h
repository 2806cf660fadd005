// A bounded queue. For live sources it keeps the newest items: pushing into a full queue drops
// the oldest and counts it, so a slow consumer never builds latency. For files it blocks the
// producer instead (nothing may be lost). Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>

namespace mustdrop::video {

template <class T>
class LatestQueue {
 public:
  explicit LatestQueue(size_t capacity, bool drop_oldest = true)
      : capacity_(capacity == 0 ? 1 : capacity), drop_oldest_(drop_oldest) {}

  // Adds an item: when full, drops the oldest (drop_oldest) or waits for room. Ignored after close().
  void push(T item) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (!drop_oldest_) room_.wait(lock, [&] { return closed_ || items_.size() < capacity_; });
      if (closed_) return;
      if (items_.size() >= capacity_) {
        items_.pop_front();
        ++n_dropped_;
      }
      items_.push_back(std::move(item));
      ++n_pushed_;
    }
    cv_.notify_one();
  }

  // Waits up to `timeout` for an item; nullopt on timeout or when closed and empty.
  std::optional<T> pop(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return !items_.empty() || closed_; });
    if (items_.empty()) return std::nullopt;
    T item = std::move(items_.front());
    items_.pop_front();
    lock.unlock();
    room_.notify_one();
    return item;
  }

  // No more pushes; waiting consumers wake and drain what is left.
  void close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    cv_.notify_all();
    room_.notify_all();
  }

  bool closed_and_empty() const {
    std::lock_guard<std::mutex> lock(mu_);
    return closed_ && items_.empty();
  }
  int64_t n_dropped() const {
    std::lock_guard<std::mutex> lock(mu_);
    return n_dropped_;
  }
  int64_t n_pushed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return n_pushed_;
  }
  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return items_.size();
  }

 private:
  size_t capacity_;
  bool drop_oldest_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable room_;
  std::deque<T> items_;
  bool closed_ = false;
  int64_t n_dropped_ = 0;
  int64_t n_pushed_ = 0;
};

}  // namespace mustdrop::video
