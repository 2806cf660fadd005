// EventLog: JSON lines with ts/seq, size rotation against an independently computed cap, torn
// tail repair, concurrent writers, disabled log, open errors and I/O failures that do not throw.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "serve/event_log.h"
#include "support/test_support.h"

namespace mustdrop::serve {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A fresh, empty directory for one test.
std::string fresh_dir(const std::string& name) {
  const std::string dir = test::temp_dir() + "/event_log/" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path, std::ios::binary);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

TEST(EventLog, LinesAreJsonWithTsAndSeq) {
  const std::string path = fresh_dir("basic") + "/events.jsonl";
  EventLog log({path});
  EXPECT_EQ(log.path(), path);
  const auto before = std::chrono::system_clock::now();
  log.write({{"kind", "answer"}, {"text", "two\nlines"}});
  log.write({{"kind", "given"}, {"ts", "kept"}, {"seq", -7}});
  log.write(42);                                        // not an object: wrapped
  log.write({{"text", std::string("bad utf8 \xff")}});  // must not throw
  EXPECT_EQ(log.n_written(), 4);
  EXPECT_EQ(log.n_failed(), 0);

  const std::string text = test::read_file(path);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 4);  // the embedded newline stays escaped
  const auto lines = lines_of(path);
  ASSERT_EQ(lines.size(), 4u);
  std::vector<json> events;
  for (const auto& line : lines) events.push_back(json::parse(line));

  EXPECT_EQ(events[0]["kind"], "answer");
  EXPECT_EQ(events[0]["text"], "two\nlines");
  EXPECT_EQ(events[0]["seq"], 0);
  const std::string ts = events[0]["ts"];
  ASSERT_TRUE(std::regex_match(ts, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)"))) << ts;
  std::tm tm{};
  ASSERT_NE(strptime(ts.c_str(), "%Y-%m-%dT%H:%M:%S", &tm), nullptr);
  const double ts_sec = static_cast<double>(timegm(&tm)) + std::stoi(ts.substr(20, 3)) / 1000.0;
  const double now_sec = std::chrono::duration<double>(before.time_since_epoch()).count();
  EXPECT_NEAR(ts_sec, now_sec, 5.0);  // UTC, not local time

  EXPECT_EQ(events[1]["ts"], "kept");
  EXPECT_EQ(events[1]["seq"], -7);
  EXPECT_EQ(events[2]["data"], 42);
  EXPECT_EQ(events[2]["seq"], 2);
  EXPECT_EQ(events[3]["seq"], 3);
  EXPECT_EQ(log.bytes_on_disk(), static_cast<int64_t>(text.size()));
}

TEST(EventLog, RotationCapsBytesAndKeepsOrder) {
  const std::string dir = fresh_dir("rotate");
  const std::string path = dir + "/events.jsonl";
  const int64_t max_file_bytes = 1024;
  const int max_files = 3;
  const int64_t cap = 4096;  // 1 KiB live + 3 rotated files of 1 KiB, by hand
  const int n_events = 5000;
  {
    EventLog log({path, max_file_bytes, max_files});
    for (int i = 0; i < n_events; ++i) log.write({{"i", i}, {"pad", std::string(static_cast<size_t>(i % 37), 'x')}});
    EXPECT_EQ(log.n_written(), n_events);
    EXPECT_EQ(log.n_failed(), 0);

    int64_t total = 0;
    for (const std::string& name : {path, path + ".1", path + ".2", path + ".3"}) {
      ASSERT_TRUE(fs::exists(name)) << name;
      EXPECT_LE(static_cast<int64_t>(fs::file_size(name)), max_file_bytes) << name;
      total += static_cast<int64_t>(fs::file_size(name));
    }
    EXPECT_LE(total, cap);
    EXPECT_EQ(log.bytes_on_disk(), total);
  }
  int n_files = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    (void)entry;
    ++n_files;
  }
  EXPECT_EQ(n_files, 1 + max_files);  // path.4 was deleted each time, nothing else left behind

  // Oldest to newest: path.3, path.2, path.1, path; seq (== i) contiguous, ending at the last event.
  const std::vector<std::string> order = {path + ".3", path + ".2", path + ".1", path};
  int64_t expected_seq = -1;
  for (size_t f = 0; f < order.size(); ++f) {
    const auto lines = lines_of(order[f]);
    ASSERT_FALSE(lines.empty()) << order[f];
    for (const auto& line : lines) {
      const json event = json::parse(line);
      if (expected_seq < 0) expected_seq = event["seq"];
      EXPECT_EQ(event["seq"], expected_seq) << order[f];
      EXPECT_EQ(event["i"], expected_seq);
      ++expected_seq;
    }
    // A file was rotated only because the next line would not fit in it.
    if (f + 1 < order.size()) {
      const auto next_first = lines_of(order[f + 1]).front().size() + 1;
      EXPECT_GT(static_cast<int64_t>(fs::file_size(order[f]) + next_first), max_file_bytes) << order[f];
    }
  }
  EXPECT_EQ(expected_seq, n_events);
}

TEST(EventLog, OversizedLineIsAloneInItsFile) {
  const std::string path = fresh_dir("oversized") + "/events.jsonl";
  EventLog log({path, 100, 2});
  log.write({{"n", 0}});
  log.write({{"n", 1}, {"big", std::string(300, 'b')}});
  log.write({{"n", 2}});
  ASSERT_EQ(lines_of(path + ".2").size(), 1u);
  ASSERT_EQ(lines_of(path + ".1").size(), 1u);
  ASSERT_EQ(lines_of(path).size(), 1u);
  EXPECT_EQ(json::parse(lines_of(path + ".2")[0])["n"], 0);
  EXPECT_EQ(json::parse(lines_of(path + ".1")[0])["n"], 1);
  EXPECT_GT(fs::file_size(path + ".1"), 300u);
  EXPECT_EQ(json::parse(lines_of(path)[0])["n"], 2);
  EXPECT_EQ(log.n_written(), 3);
}

TEST(EventLog, ReopenAppendsAndCutsATornLine) {
  const std::string dir = fresh_dir("torn");
  const std::string path = dir + "/events.jsonl";
  {
    EventLog log({path});
    log.write({{"run", 1}});
    log.write({{"run", 1}});
  }
  {
    EventLog log({path});  // a restart keeps the history
    log.write({{"run", 2}});
  }
  ASSERT_EQ(lines_of(path).size(), 3u);
  EXPECT_EQ(json::parse(lines_of(path)[2])["run"], 2);

  // Killed mid-line: the fragment goes, the complete lines stay byte for byte.
  const std::string good = "{\"seq\":0,\"a\":1}\n{\"seq\":1,\"a\":2}\n";
  write_raw(path, good + "{\"seq\":2,\"te");
  {
    EventLog log({path});
    log.write({{"after", true}});
  }
  const std::string text = test::read_file(path);
  ASSERT_EQ(text.substr(0, good.size()), good);
  const auto lines = lines_of(path);
  ASSERT_EQ(lines.size(), 3u);
  for (const auto& line : lines) EXPECT_NO_THROW(json::parse(line)) << line;
  EXPECT_EQ(json::parse(lines[2])["after"], true);

  // No newline at all: nothing complete to keep.
  write_raw(path, "{\"half");
  { EventLog log({path}); }
  EXPECT_EQ(fs::file_size(path), 0u);
}

TEST(EventLog, ConcurrentWritersNeverInterleave) {
  const std::string path = fresh_dir("threads") + "/events.jsonl";
  const int n_threads = 8;
  const int n_each = 500;
  const int max_files = 16;  // ~300 KB written, room for 17 x 64 KiB: rotation happens, nothing is deleted
  {
    EventLog log({path, 64 << 10, max_files});
    std::vector<std::thread> threads;
    for (int t = 0; t < n_threads; ++t) {
      threads.emplace_back([&log, t] {
        for (int i = 0; i < n_each; ++i) log.write({{"t", t}, {"i", i}, {"text", std::string(20, 'a' + t)}});
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(log.n_written(), n_threads * n_each);
  }
  ASSERT_TRUE(fs::exists(path + ".1"));
  ASSERT_FALSE(fs::exists(path + "." + std::to_string(max_files)));
  std::vector<std::string> lines;
  for (int k = max_files; k >= 0; --k) {
    const std::string name = k == 0 ? path : path + "." + std::to_string(k);
    for (auto& line : lines_of(name)) lines.push_back(std::move(line));
  }
  ASSERT_EQ(lines.size(), static_cast<size_t>(n_threads * n_each));
  std::set<std::pair<int, int>> seen;
  int64_t last_seq = -1;
  for (const auto& line : lines) {
    json event;
    ASSERT_NO_THROW(event = json::parse(line)) << line;
    const int t = event["t"];
    EXPECT_EQ(event["text"], std::string(20, static_cast<char>('a' + t)));
    seen.emplace(t, event["i"].get<int>());
    EXPECT_EQ(event["seq"], last_seq + 1);  // seq follows file order
    last_seq = event["seq"];
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(n_threads * n_each));
}

TEST(EventLog, DisabledIsANoOp) {
  EventLog log(EventLogOptions{});
  log.write({{"x", 1}});
  EXPECT_EQ(log.path(), "");
  EXPECT_EQ(log.n_written(), 0);
  EXPECT_EQ(log.n_failed(), 0);
  EXPECT_EQ(log.bytes_on_disk(), 0);
}

TEST(EventLog, UnopenablePathThrowsNamingIt) {
  const std::string dir = fresh_dir("unopenable");
  write_raw(dir + "/blocker", "a file, not a directory");
  const std::string below_file = dir + "/blocker/sub/events.jsonl";
  try {
    EventLog log({below_file});
    FAIL() << "no InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(below_file), std::string::npos) << e.what();
  }
  try {
    EventLog log({dir});  // a directory
    FAIL() << "no InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(dir), std::string::npos) << e.what();
  }
  EXPECT_THROW(EventLog({dir + "/e.jsonl", 0, 4}), ConfigError);
  EXPECT_THROW(EventLog({dir + "/e.jsonl", 1024, -1}), ConfigError);
  // A missing parent directory is created.
  EventLog log({dir + "/new/deeper/events.jsonl"});
  log.write({{"ok", true}});
  EXPECT_EQ(lines_of(dir + "/new/deeper/events.jsonl").size(), 1u);
}

TEST(EventLog, FullDiskIsCountedNotThrown) {
  const std::string path = fresh_dir("full") + "/events.jsonl";
  if (::symlink("/dev/full", path.c_str()) != 0) GTEST_SKIP() << "cannot symlink to /dev/full";
  std::unique_ptr<EventLog> log;
  try {
    log = std::make_unique<EventLog>(EventLogOptions{path});
  } catch (const InputError& e) {
    GTEST_SKIP() << "/dev/full cannot be opened here: " << e.what();
  }
  for (int i = 0; i < 3; ++i) EXPECT_NO_THROW(log->write({{"i", i}}));
  EXPECT_EQ(log->n_failed(), 3);
  EXPECT_EQ(log->n_written(), 0);
}

// Lowers the soft file size limit (a write past it is cut short, then fails with EFBIG instead of
// SIGXFSZ) and restores both on scope exit.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    old_handler_ = ::signal(SIGXFSZ, SIG_IGN);
    ::getrlimit(RLIMIT_FSIZE, &old_);
    rlimit lowered = old_;
    lowered.rlim_cur = bytes;
    ok_ = ::setrlimit(RLIMIT_FSIZE, &lowered) == 0;
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &old_);
    ::signal(SIGXFSZ, old_handler_);
  }
  bool ok() const { return ok_; }

 private:
  rlimit old_{};
  sighandler_t old_handler_ = SIG_DFL;
  bool ok_ = false;
};

TEST(EventLog, ShortWriteIsCutAndTheNextLineRecovers) {
  const std::string path = fresh_dir("short") + "/events.jsonl";
  EventLog log({path});
  log.write({{"n", 0}});
  log.write({{"n", 1}});
  const auto good_size = fs::file_size(path);
  {
    FileSizeLimit limit(good_size + 10);  // room for 10 bytes of a ~40-byte line
    if (!limit.ok()) GTEST_SKIP() << "cannot lower RLIMIT_FSIZE";
    EXPECT_NO_THROW(log.write({{"n", 2}}));
    EXPECT_NO_THROW(log.write({{"n", 3}}));
  }
  EXPECT_EQ(log.n_failed(), 2);
  EXPECT_EQ(fs::file_size(path), good_size);  // the partial lines were cut
  log.write({{"n", 4}});
  EXPECT_EQ(log.n_written(), 3);
  const auto lines = lines_of(path);
  ASSERT_EQ(lines.size(), 3u);
  std::vector<int> seqs;
  for (const auto& line : lines) seqs.push_back(json::parse(line)["seq"]);
  EXPECT_EQ(seqs, (std::vector<int>{0, 1, 4}));  // the gap shows which lines were lost
}

}  // namespace
}  // namespace mustdrop::serve
