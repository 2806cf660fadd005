// JSON Lines files that survive a crash: torn last lines are cut off, damage before the end is
// refused, appends from several threads stay whole lines.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "core/error.h"
#include "eval/jsonl.h"
#include "support/test_support.h"

namespace mustdrop::eval {
namespace {

std::string write(const std::string& name, const std::string& text) {
  std::string path = test::temp_dir() + "/" + name;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
  return path;
}

TEST(Jsonl, MissingFileIsEmpty) {
  JsonlContents c = read_jsonl(test::temp_dir() + "/absent.jsonl", true);
  EXPECT_TRUE(c.records.empty());
  EXPECT_EQ(c.n_torn_bytes, 0);
}

TEST(Jsonl, ATornLastLineIsCutOffOnlyWhenRepairing) {
  const std::string good = "{\"a\":1}\n{\"a\":2}\n";
  for (const std::string torn : {"{\"a\":3", "{\"a\":3}", "{\"a\""}) {  // no newline, even when it parses
    std::string path = write("torn.jsonl", good + torn);
    JsonlContents c = read_jsonl(path, false);
    ASSERT_EQ(c.records.size(), 2u) << torn;
    EXPECT_EQ(c.n_torn_bytes, static_cast<int64_t>(torn.size()));
    EXPECT_EQ(std::filesystem::file_size(path), good.size() + torn.size());  // untouched without repair
    c = read_jsonl(path, true);
    EXPECT_EQ(c.records[1]["a"], 2);
    EXPECT_EQ(test::read_file(path), good);
  }
  std::string path = write("badlast.jsonl", good + "{not json}\n");
  JsonlContents c = read_jsonl(path, true);
  EXPECT_EQ(c.records.size(), 2u);
  EXPECT_EQ(test::read_file(path), good);
}

TEST(Jsonl, DamageBeforeTheLastLineIsRefusedNamingTheLine) {
  std::string path = write("damaged.jsonl", "{\"a\":1}\n{oops\n{\"a\":3}\n");
  try {
    read_jsonl(path, true);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(path + ":2:"), std::string::npos) << e.what();
  }
  EXPECT_EQ(test::read_file(path), "{\"a\":1}\n{oops\n{\"a\":3}\n");  // nothing cut
}

TEST(Jsonl, ConcurrentAppendsStayWholeLines) {
  std::string path = test::temp_dir() + "/concurrent.jsonl";
  std::filesystem::remove(path);
  {
    JsonlAppender out(path, /*sync=*/false);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&out, t] {
        for (int i = 0; i < 200; ++i) out.append({{"t", t}, {"i", i}, {"text", std::string(300, 'x') + "\nline"}});
      });
    }
    for (auto& th : threads) th.join();
  }
  JsonlContents c = read_jsonl(path, false);
  ASSERT_EQ(c.records.size(), 800u);
  EXPECT_EQ(c.n_torn_bytes, 0);
  std::vector<int> next(4, 0);
  for (const auto& r : c.records) {
    int t = r["t"];
    EXPECT_EQ(r["i"].get<int>(), next[t]++);  // each thread's records in its order
    EXPECT_EQ(r["text"].get<std::string>().size(), 305u);
  }
}

TEST(Jsonl, StableHashIsFnv1a) {
  // Published FNV-1a 64 test vectors.
  EXPECT_EQ(stable_hash(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(stable_hash("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(stable_hash("foobar"), 0x85944171f73967e8ULL);
  EXPECT_EQ(stable_hash_hex("a"), "af63dc4c8601ec8c");
}

}  // namespace
}  // namespace mustdrop::eval
