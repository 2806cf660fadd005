// Append-only JSON Lines files that survive a crash: each record is one line, written, flushed
// and synced before append() returns; a reader cuts off a torn last line (a write the crash
// interrupted) and refuses damage anywhere else. Used for predictions and judge verdicts.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mustdrop::eval {

struct JsonlContents {
  std::vector<nlohmann::json> records;  // every complete line, in file order
  int64_t n_torn_bytes = 0;             // bytes of a torn last line (cut off when repairing)
};

// Reads `path` ({} when it does not exist). A last line without its newline, or whose text is not
// JSON, is torn: with `repair` the file is truncated to the last complete line. InputError naming
// file:line for a bad line before the last one, or when the file cannot be read or repaired.
JsonlContents read_jsonl(const std::string& path, bool repair);

// Appends records to one file; thread-safe. InputError naming the file when it cannot be opened
// or written (the disk full, say).
class JsonlAppender {
 public:
  // Opens (creating) `path` for appending; `sync`: fsync after every record.
  explicit JsonlAppender(const std::string& path, bool sync = true);
  ~JsonlAppender();
  JsonlAppender(const JsonlAppender&) = delete;
  JsonlAppender& operator=(const JsonlAppender&) = delete;

  // Writes `record` as one line (compact JSON, no newline inside) and makes it durable.
  void append(const nlohmann::json& record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  bool sync_;
  int fd_ = -1;
  std::mutex mu_;
};

// 64-bit FNV-1a of `text` (stable across runs and machines) and its 16-digit hex form.
uint64_t stable_hash(const std::string& text);
std::string stable_hash_hex(const std::string& text);

}  // namespace mustdrop::eval
