// Events JSONL over plain POSIX calls: one write(2) per line on an O_APPEND descriptor, size
// rotation by renames, a torn tail cut back to the last '\n' on open, I/O errors counted and
// logged once per burst instead of thrown.
#include "serve/event_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <system_error>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "core/timing.h"

namespace mustdrop::serve {
namespace {

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

// Offset just past the last '\n' in the first `size` bytes of `fd` (0 when there is none);
// -1 with errno set when reading fails.
int64_t clean_end(int fd, int64_t size) {
  std::vector<char> chunk(64 << 10);
  int64_t end = size;
  while (end > 0) {
    const int64_t begin = end > static_cast<int64_t>(chunk.size()) ? end - static_cast<int64_t>(chunk.size()) : 0;
    const auto want = static_cast<size_t>(end - begin);
    ssize_t got;
    do {
      got = ::pread(fd, chunk.data(), want, begin);
    } while (got < 0 && errno == EINTR);
    if (got < 0) return -1;
    if (static_cast<size_t>(got) != want) {
      errno = EIO;  // the file shrank under us
      return -1;
    }
    for (int64_t i = end - begin - 1; i >= 0; --i) {
      if (chunk[static_cast<size_t>(i)] == '\n') return begin + i + 1;
    }
    end = begin;
  }
  return 0;
}

}  // namespace

EventLog::EventLog(EventLogOptions options) : options_(std::move(options)) {
  if (options_.path.empty()) return;
  if (options_.max_file_bytes <= 0) {
    throw ConfigError("events log '" + options_.path + "': max_file_bytes must be > 0, got " +
                      std::to_string(options_.max_file_bytes));
  }
  if (options_.max_files < 0) {
    throw ConfigError("events log '" + options_.path + "': max_files must be >= 0, got " +
                      std::to_string(options_.max_files));
  }
  std::string error;
  if (!open_live_file(&error)) throw InputError(error);
}

EventLog::~EventLog() {
  if (fd_ >= 0) ::close(fd_);
}

bool EventLog::open_live_file(std::string* error) {
  const std::string& path = options_.path;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec) {
      *error = "events log '" + path + "': cannot create the directory '" + parent.string() + "': " + ec.message();
      return false;
    }
  }
  const int fd = ::open(path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    *error = "events log '" + path + "': cannot open for appending: " + errno_text(errno);
    return false;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    *error = "events log '" + path + "': fstat failed: " + errno_text(errno);
    ::close(fd);
    return false;
  }
  regular_ = S_ISREG(st.st_mode);
  int64_t size = regular_ ? static_cast<int64_t>(st.st_size) : 0;
  if (size > 0) {
    const int64_t end = clean_end(fd, size);
    if (end < 0 || (end != size && ::ftruncate(fd, end) != 0)) {
      *error = "events log '" + path + "': cannot repair its last line: " + errno_text(errno);
      ::close(fd);
      return false;
    }
    if (end != size) {
      MD_LOG_WARN("serve", "events log '" << path << "': the last line was torn (no final newline, the writer was "
                                          << "killed mid-line): removed " << (size - end) << " bytes");
      size = end;
    }
  }
  fd_ = fd;
  live_bytes_ = size;
  return true;
}

bool EventLog::rotate(std::string* error) {
  const std::string& path = options_.path;
  auto numbered = [&path](int k) { return path + "." + std::to_string(k); };
  ::close(fd_);
  fd_ = -1;
  std::string rename_error;
  if (options_.max_files == 0) {
    if (::unlink(path.c_str()) != 0) rename_error = "unlink '" + path + "': " + errno_text(errno);
  } else {
    // The oldest file falls off, with any leftovers of a run that kept more files.
    for (int k = options_.max_files;; ++k) {
      if (::unlink(numbered(k).c_str()) != 0) {
        if (errno != ENOENT) rename_error = "unlink '" + numbered(k) + "': " + errno_text(errno);
        break;
      }
    }
    for (int k = options_.max_files - 1; k >= 1; --k) {
      if (::rename(numbered(k).c_str(), numbered(k + 1).c_str()) != 0 && errno != ENOENT) {
        rename_error = "rename '" + numbered(k) + "': " + errno_text(errno);
      }
    }
    if (::rename(path.c_str(), numbered(1).c_str()) != 0) {
      rename_error = "rename '" + path + "' to '" + numbered(1) + "': " + errno_text(errno);
    }
  }
  // A failed rename only costs the size cap: keep appending to whatever `path` is now.
  if (!rename_error.empty() && !rotate_failing_) {
    MD_LOG_WARN("serve", "events log '" << path << "': rotation failed (" << rename_error
                                        << "); the file keeps growing until a rotation succeeds");
  }
  rotate_failing_ = !rename_error.empty();
  return open_live_file(error);
}

void EventLog::note_failure(const std::string& what) {
  ++n_failed_;
  ++burst_failures_;
  if (!failing_) {
    failing_ = true;
    MD_LOG_WARN("serve", what << "; events are dropped until a write succeeds again");
  }
}

void EventLog::write(nlohmann::json event) {
  if (options_.path.empty()) return;
  if (!event.is_object()) event = nlohmann::json{{"data", std::move(event)}};
  std::lock_guard<std::mutex> lock(mutex_);
  // Stamped under the lock so that seq and ts follow the order of the lines in the file.
  const int64_t seq = next_seq_++;
  if (!event.contains("ts")) event["ts"] = iso8601_utc(unix_now());
  if (!event.contains("seq")) event["seq"] = seq;
  // Invalid UTF-8 (a model can split a character across tokens) becomes U+FFFD, never a throw.
  std::string line = event.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line += '\n';
  const auto n_bytes = static_cast<int64_t>(line.size());

  std::string error;
  if (fd_ < 0 && !open_live_file(&error)) return note_failure(error);
  if (regular_ && live_bytes_ > 0 && live_bytes_ + n_bytes > options_.max_file_bytes && !rotate(&error)) {
    return note_failure(error);
  }
  ssize_t n;
  do {
    n = ::write(fd_, line.data(), line.size());
  } while (n < 0 && errno == EINTR);
  if (n != n_bytes) {
    const std::string why = n < 0 ? errno_text(errno)
                                   : "short write (" + std::to_string(n) + " of " + std::to_string(n_bytes) +
                                         " bytes; disk full or file size limit)";
    // Never leave half a line for the next one to be glued to: cut it, or reopen (which repairs).
    if (n > 0 && (!regular_ || ::ftruncate(fd_, live_bytes_) != 0)) {
      ::close(fd_);
      fd_ = -1;
    }
    return note_failure("events log '" + options_.path + "': write failed: " + why);
  }
  live_bytes_ += n_bytes;
  if (options_.sync && ::fdatasync(fd_) != 0 && errno != EINVAL) {  // EINVAL: a device without sync
    return note_failure("events log '" + options_.path + "': fdatasync failed: " + errno_text(errno));
  }
  ++n_written_;
  if (failing_) {
    MD_LOG_INFO("serve", "events log '" << options_.path << "': writing again after " << burst_failures_
                                        << " lost line(s)");
    failing_ = false;
    burst_failures_ = 0;
  }
}

int64_t EventLog::bytes_on_disk() const {
  if (options_.path.empty()) return 0;
  std::lock_guard<std::mutex> lock(mutex_);
  int64_t total = 0;
  for (int k = 0; k <= options_.max_files; ++k) {
    const std::string name = k == 0 ? options_.path : options_.path + "." + std::to_string(k);
    struct stat st {};
    if (::stat(name.c_str(), &st) == 0 && S_ISREG(st.st_mode)) total += static_cast<int64_t>(st.st_size);
  }
  return total;
}

}  // namespace mustdrop::serve
