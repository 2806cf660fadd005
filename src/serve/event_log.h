// The events JSONL of `mustdrop monitor`: one JSON object per line, appended by many threads,
// rotated by size so a service that runs for days keeps a bounded amount on disk.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

namespace mustdrop::serve {

struct EventLogOptions {
  std::string path;                   // the live file; "" = disabled (every call is a no-op)
  int64_t max_file_bytes = 64 << 20;  // rotate before a line would push the live file past this
  int max_files = 4;                  // rotated files kept (path.1 newest .. path.N oldest); 0 = none
  bool sync = false;                  // fdatasync after every line (durable across power loss, slower)
};

// Append-only JSONL writer with size rotation. Before a line would make the live file exceed
// max_file_bytes, path is renamed path.1 (path.1 -> path.2, ..., path.max_files is deleted) and
// a new empty path is started, so at most max_file_bytes * (max_files + 1) bytes stay on disk.
// Exception: a single line longer than max_file_bytes is still written, alone in its file.
// Each line goes out in one write(2) on an O_APPEND descriptor, so readers never see two lines
// interleaved. Assumes it is the only writer of `path`. Thread-safe.
class EventLog {
 public:
  // Opens (creating the parent directory and the file if missing) and appends to what is there;
  // a torn last line left by a killed process is cut off with a warning. InputError naming the
  // path when it cannot be opened; ConfigError when max_file_bytes <= 0 or max_files < 0.
  explicit EventLog(EventLogOptions options);
  ~EventLog();
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  // Appends `event` as one line, adding "ts" (UTC ISO-8601 with milliseconds) and "seq" (per
  // process, in file order) unless present; a non-object is wrapped as {"data": event}. Never
  // throws on I/O errors: a failed line is counted in n_failed(), logged once per burst of
  // failures, and the next line tries again (reopening the file if needed).
  void write(nlohmann::json event);

  // Lines written (and, with sync, made durable) since construction.
  int64_t n_written() const { return n_written_.load(); }
  // Lines lost to I/O errors since construction.
  int64_t n_failed() const { return n_failed_.load(); }
  // Bytes in the live file plus the rotated files path.1 .. path.max_files (0 when disabled).
  int64_t bytes_on_disk() const;
  // The live file's path ("" when disabled).
  const std::string& path() const { return options_.path; }

 private:
  // Opens the live file and cuts a torn tail; false with `error` set when it cannot.
  bool open_live_file(std::string* error);
  // Shifts path -> path.1 -> ... and opens a fresh live file; false when none could be opened.
  bool rotate(std::string* error);
  // Counts one lost line; logs `what` at the start of a burst of failures.
  void note_failure(const std::string& what);

  EventLogOptions options_;
  mutable std::mutex mutex_;
  int fd_ = -1;                   // live file, O_APPEND; -1 when disabled or after a failed reopen
  bool regular_ = true;           // false for a device or FIFO: no rotation, no truncation
  int64_t live_bytes_ = 0;        // size of the live file as this writer left it
  int64_t next_seq_ = 0;
  bool failing_ = false;          // inside a burst of failures (logged once)
  bool rotate_failing_ = false;   // the last rotation could not rename (logged once)
  int64_t burst_failures_ = 0;
  std::atomic<int64_t> n_written_{0};
  std::atomic<int64_t> n_failed_{0};
};

}  // namespace mustdrop::serve
