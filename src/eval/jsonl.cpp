#include "eval/jsonl.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace mustdrop::eval {

JsonlContents read_jsonl(const std::string& path, bool repair) {
  JsonlContents out;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (access(path.c_str(), F_OK) != 0) return out;
    throw InputError(path + ": cannot read: " + std::strerror(errno));
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  const std::string text = buf.str();
  size_t pos = 0;
  int64_t line_no = 0;
  size_t good_end = 0;  // bytes up to and including the last complete, valid line
  while (pos < text.size()) {
    ++line_no;
    size_t nl = text.find('\n', pos);
    bool last = nl == std::string::npos || nl + 1 == text.size();
    std::string line = text.substr(pos, (nl == std::string::npos ? text.size() : nl) - pos);
    nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (nl == std::string::npos || record.is_discarded()) {
      if (!last) throw InputError(path + ":" + std::to_string(line_no) + ": not a JSON line (the file is damaged before its end)");
      out.n_torn_bytes = static_cast<int64_t>(text.size() - pos);
      break;
    }
    out.records.push_back(std::move(record));
    pos = nl + 1;
    good_end = pos;
  }
  if (out.n_torn_bytes > 0 && repair) {
    if (truncate(path.c_str(), static_cast<off_t>(good_end)) != 0) {
      throw InputError(path + ": cannot cut off its torn last line: " + std::strerror(errno));
    }
  }
  return out;
}

JsonlAppender::JsonlAppender(const std::string& path, bool sync) : path_(path), sync_(sync) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) throw InputError(path + ": cannot open for appending: " + std::strerror(errno));
}

JsonlAppender::~JsonlAppender() {
  if (fd_ >= 0) ::close(fd_);
}

void JsonlAppender::append(const nlohmann::json& record) {
  // dump() escapes control characters, so the line holds no newline of its own; invalid UTF-8 in
  // a generated answer is replaced rather than thrown on.
  std::string line = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  std::lock_guard<std::mutex> lock(mu_);
  size_t done = 0;
  while (done < line.size()) {
    ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw InputError(path_ + ": cannot append a record: " + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  if (sync_ && ::fdatasync(fd_) != 0) throw InputError(path_ + ": cannot sync: " + std::strerror(errno));
}

uint64_t stable_hash(const std::string& text) {
  uint64_t h = 14695981039346656037ULL;  // the FNV-1a 64 offset basis
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

std::string stable_hash_hex(const std::string& text) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(stable_hash(text)));
  return buf;
}

}  // namespace mustdrop::eval
