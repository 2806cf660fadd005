// Dataset readers and the join by question_id: the real ActivityNet-QA annotations (in order and
// shuffled), hand-made datasets with every kind of join anomaly, error messages, video resolution.
#include "eval/dataset.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "support/test_support.h"

namespace mustdrop::eval {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

// id -> (video, question, answer, type)
using JoinMap = std::map<std::string, std::tuple<std::string, std::string, std::string, std::string>>;

// A fresh directory under the test's temporary directory.
std::string make_dir(const std::string& name) {
  std::string dir = test::temp_dir() + "/" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

config::DatasetConfig videollava_config(const std::string& dir) {
  config::DatasetConfig c;
  c.format = "videollava";
  c.split = "test";
  c.dir = dir;
  return c;
}

// A videollava dataset in a fresh directory from the two files' JSON texts.
config::DatasetConfig videollava_dataset(const std::string& name, const std::string& q, const std::string& a) {
  std::string dir = make_dir(name);
  write_file(dir + "/test_q.json", q);
  write_file(dir + "/test_a.json", a);
  return videollava_config(dir);
}

// The message of the E that `f` throws; fails the test when it throws nothing or something else.
template <class E>
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected another error kind, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected an error";
  return "";
}

std::vector<std::string> ids_of(const JoinReport& r) {
  std::vector<std::string> ids;
  for (const QaItem& item : r.items) ids.push_back(item.question_id);
  return ids;
}

JoinMap join_map(const JoinReport& r) {
  JoinMap m;
  for (const QaItem& i : r.items) m[i.question_id] = {i.video_name, i.question, i.answer, i.type};
  return m;
}

// "" when equal, else the sizes or the first id whose entry differs.
std::string first_difference(const JoinMap& got, const JoinMap& want) {
  if (got.size() != want.size()) {
    return "sizes differ: " + std::to_string(got.size()) + " vs " + std::to_string(want.size());
  }
  for (const auto& [id, entry] : want) {
    auto it = got.find(id);
    if (it == got.end()) return "missing id " + id;
    if (it->second != entry) {
      return "id " + id + ": got answer '" + std::get<2>(it->second) + "' type '" + std::get<3>(it->second) +
             "', want answer '" + std::get<2>(entry) + "' type '" + std::get<3>(entry) + "'";
    }
  }
  return "";
}

// ---------------------------------------------------------------------------------------------
// The real ActivityNet-QA test annotations.

// Their directory: $MUSTDROP_ACTIVITYNET_QA, else the copy in tests/data (Apache-2.0, see its
// README), else ../shared/data/activitynet-qa next to the checkout; "" when none holds both files.
std::string activitynet_qa_dir() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("MUSTDROP_ACTIVITYNET_QA"); env && *env) candidates.push_back(env);
  candidates.push_back(test::source_dir() + "/tests/data/activitynet-qa");
  candidates.push_back(test::source_dir() + "/../shared/data/activitynet-qa");
  for (const std::string& dir : candidates) {
    if (fs::is_regular_file(dir + "/test_q.json") && fs::is_regular_file(dir + "/test_a.json")) return dir;
  }
  return "";
}

// The join computed straight from the parsed files, by id.
JoinMap join_by_id(const Json& q, const Json& a) {
  std::map<std::string, const Json*> answer_of;
  for (const Json& e : a) answer_of[e.at("question_id").get<std::string>()] = &e;
  JoinMap m;
  for (const Json& e : q) {
    const Json& ans = *answer_of.at(e.at("question_id").get<std::string>());
    m[e.at("question_id").get<std::string>()] = {e.at("video_name").get<std::string>(),
                                                  e.at("question").get<std::string>(),
                                                  ans.at("answer").get<std::string>(),
                                                  std::to_string(ans.at("type").get<int>())};
  }
  return m;
}

// The join a reader pairing the i-th question with the i-th answer would make.
JoinMap join_by_position(const Json& q, const Json& a) {
  JoinMap m;
  for (size_t i = 0; i < q.size(); ++i) {
    m[q[i].at("question_id").get<std::string>()] = {q[i].at("video_name").get<std::string>(),
                                                    q[i].at("question").get<std::string>(),
                                                    a[i].at("answer").get<std::string>(),
                                                    std::to_string(a[i].at("type").get<int>())};
  }
  return m;
}

Json shuffled(const Json& array, unsigned seed) {
  std::vector<size_t> order(array.size());
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(seed));
  Json out = Json::array();
  for (size_t i : order) out.push_back(array[i]);
  return out;
}

class ActivityNetQa : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = activitynet_qa_dir();
    if (dir_.empty()) {
      GTEST_SKIP() << "ActivityNet-QA annotations not found in $MUSTDROP_ACTIVITYNET_QA nor in "
                   << test::source_dir() << "/../shared/data/activitynet-qa: set MUSTDROP_ACTIVITYNET_QA to "
                   << "the directory holding test_q.json and test_a.json";
    }
    q_ = Json::parse(test::read_file(dir_ + "/test_q.json"));
    a_ = Json::parse(test::read_file(dir_ + "/test_a.json"));
  }

  std::string dir_;
  Json q_, a_;
};

TEST_F(ActivityNetQa, ReadsEveryQuestionInFileOrderWithTheFilesCounts) {
  // Counts straight from the files.
  ASSERT_EQ(q_.size(), 8000u);
  ASSERT_EQ(a_.size(), 8000u);
  std::set<std::string> videos;
  for (const Json& e : q_) videos.insert(e.at("video_name").get<std::string>());
  std::map<int, int> types;
  for (const Json& e : a_) ++types[e.at("type").get<int>()];
  EXPECT_EQ(videos.size(), 800u);
  const std::map<int, int> expected_types = {{3, 2094}, {8, 1499}, {0, 800}, {1, 800}, {2, 800},
                                             {4, 697},  {7, 606},  {6, 386}, {5, 318}};
  EXPECT_EQ(types, expected_types);

  const JoinReport r = read_dataset(videollava_config(dir_));
  EXPECT_EQ(r.n_questions_read, 8000);
  EXPECT_EQ(r.n_answers_read, 8000);
  ASSERT_EQ(r.items.size(), q_.size());
  EXPECT_TRUE(r.duplicate_question_ids.empty());
  EXPECT_TRUE(r.duplicate_answer_ids.empty());
  EXPECT_TRUE(r.unanswered_ids.empty());
  EXPECT_TRUE(r.orphan_answer_ids.empty());

  std::set<std::string> item_videos;
  std::map<int, int> item_types;
  for (size_t i = 0; i < r.items.size(); ++i) {
    const QaItem& item = r.items[i];
    ASSERT_EQ(item.question_id, q_[i].at("question_id").get<std::string>()) << "item " << i;
    EXPECT_EQ(item.index, static_cast<int64_t>(i));
    EXPECT_EQ(item.video_name, q_[i].at("video_name").get<std::string>());
    EXPECT_EQ(item.question, q_[i].at("question").get<std::string>());
    EXPECT_TRUE(item.has_answer);
    item_videos.insert(item.video_name);
    ++item_types[std::stoi(item.type)];
  }
  EXPECT_EQ(item_videos.size(), 800u);
  EXPECT_EQ(item_types, expected_types);
  EXPECT_EQ(first_difference(join_map(r), join_by_id(q_, a_)), "");
}

TEST_F(ActivityNetQa, ShuffledFilesJoinExactlyAsTheOriginals) {
  const JoinMap want = join_by_id(q_, a_);
  const Json q = shuffled(q_, 1234), a = shuffled(a_, 98765);
  const std::string dir = make_dir("activitynet-qa-shuffled");
  write_file(dir + "/test_q.json", q.dump());
  write_file(dir + "/test_a.json", a.dump());

  // A join by position would go wrong on these files, for most questions.
  const JoinMap by_position = join_by_position(q, a);
  ASSERT_NE(first_difference(by_position, want), "");
  int n_wrong = 0;
  for (const auto& [id, entry] : want) n_wrong += by_position.at(id) != entry;
  EXPECT_GT(n_wrong, 4000);

  const JoinReport original = read_dataset(videollava_config(dir_));
  const JoinReport r = read_dataset(videollava_config(dir));
  EXPECT_EQ(r.n_questions_read, 8000);
  EXPECT_EQ(r.n_answers_read, 8000);
  ASSERT_EQ(r.items.size(), q.size());
  EXPECT_TRUE(r.unanswered_ids.empty());
  EXPECT_TRUE(r.orphan_answer_ids.empty());
  for (size_t i = 0; i < r.items.size(); ++i) {
    ASSERT_EQ(r.items[i].question_id, q[i].at("question_id").get<std::string>()) << "shuffled order, item " << i;
    EXPECT_EQ(r.items[i].index, static_cast<int64_t>(i));
  }
  EXPECT_EQ(first_difference(join_map(r), want), "");
  EXPECT_EQ(first_difference(join_map(r), join_map(original)), "");
}

// ---------------------------------------------------------------------------------------------
// Hand-made videollava datasets.

TEST(VideollavaJoin, DuplicateQuestionIdLeavesEveryCopyOut) {
  const JoinReport r = read_dataset(videollava_dataset(
      "dup-q",
      R"([{"video_name": "v1", "question": "q1", "question_id": "a"},
          {"video_name": "v2", "question": "q2", "question_id": "b"},
          {"video_name": "v3", "question": "q3", "question_id": "a"}])",
      R"([{"answer": "x", "type": 0, "question_id": "a"}, {"answer": "y", "type": 1, "question_id": "b"}])"));
  EXPECT_EQ(r.n_questions_read, 3);
  EXPECT_EQ(r.n_answers_read, 2);
  ASSERT_EQ(ids_of(r), std::vector<std::string>{"b"});
  EXPECT_EQ(r.items[0].index, 1);
  EXPECT_EQ(r.items[0].video_name, "v2");
  EXPECT_EQ(r.items[0].answer, "y");
  EXPECT_EQ(r.items[0].type, "1");
  EXPECT_EQ(r.duplicate_question_ids, std::vector<std::string>{"a"});
  EXPECT_TRUE(r.orphan_answer_ids.empty());  // "a" is a question's id, if a duplicated one
  EXPECT_TRUE(r.unanswered_ids.empty());
  EXPECT_TRUE(r.duplicate_answer_ids.empty());
}

TEST(VideollavaJoin, DuplicateAnswerIdLeavesTheQuestionUnanswered) {
  const JoinReport r = read_dataset(videollava_dataset(
      "dup-a",
      R"([{"video_name": "v1", "question": "q1", "question_id": "a"},
          {"video_name": "v2", "question": "q2", "question_id": "b"}])",
      R"([{"answer": "x", "type": 0, "question_id": "a"}, {"answer": "y", "type": 1, "question_id": "b"},
          {"answer": "z", "type": 2, "question_id": "a"}])"));
  ASSERT_EQ(ids_of(r), (std::vector<std::string>{"a", "b"}));
  EXPECT_FALSE(r.items[0].has_answer);
  EXPECT_EQ(r.items[0].answer, "");
  EXPECT_EQ(r.items[0].type, "");
  EXPECT_TRUE(r.items[1].has_answer);
  EXPECT_EQ(r.items[1].answer, "y");
  EXPECT_EQ(r.duplicate_answer_ids, std::vector<std::string>{"a"});
  EXPECT_TRUE(r.unanswered_ids.empty());  // a is listed as a duplicate, not as unanswered
  EXPECT_TRUE(r.duplicate_question_ids.empty());
  EXPECT_TRUE(r.orphan_answer_ids.empty());
}

TEST(VideollavaJoin, QuestionWithoutAnswerIsKeptAndListed) {
  const JoinReport r = read_dataset(videollava_dataset(
      "unanswered",
      R"([{"video_name": "v1", "question": "q1", "question_id": "a"},
          {"video_name": "v2", "question": "q2", "question_id": "b"},
          {"video_name": "v3", "question": "q3", "question_id": "c"}])",
      R"([{"answer": "for c", "type": 5, "question_id": "c"}, {"answer": "for a", "type": 3, "question_id": "a"}])"));
  ASSERT_EQ(ids_of(r), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(r.items[0].answer, "for a");
  EXPECT_EQ(r.items[0].type, "3");
  EXPECT_FALSE(r.items[1].has_answer);
  EXPECT_EQ(r.items[1].answer, "");
  EXPECT_EQ(r.items[2].answer, "for c");
  EXPECT_EQ(r.items[2].type, "5");
  EXPECT_EQ(r.unanswered_ids, std::vector<std::string>{"b"});
  EXPECT_EQ(r.n_answers_read, 2);
}

TEST(VideollavaJoin, OrphanAnswersAreListedOnceInFileOrder) {
  const JoinReport r = read_dataset(videollava_dataset(
      "orphan", R"([{"video_name": "v1", "question": "q1", "question_id": "a"}])",
      R"([{"answer": "1", "type": 0, "question_id": "z"}, {"answer": "2", "type": 0, "question_id": "y"},
          {"answer": "3", "type": 0, "question_id": "a"}, {"answer": "4", "type": 0, "question_id": "y"}])"));
  ASSERT_EQ(ids_of(r), std::vector<std::string>{"a"});
  EXPECT_EQ(r.items[0].answer, "3");
  EXPECT_EQ(r.orphan_answer_ids, (std::vector<std::string>{"z", "y"}));
  EXPECT_EQ(r.duplicate_answer_ids, std::vector<std::string>{"y"});
  EXPECT_EQ(r.n_answers_read, 4);
}

TEST(VideollavaJoin, IntegerIdsAndValuesBecomeDecimalTextAndJoinWithStrings) {
  const JoinReport r = read_dataset(videollava_dataset(
      "integer-ids",
      R"([{"video_name": 1001, "question": "how many", "question_id": 7},
          {"video_name": "v2", "question": "which", "question_id": "8"}])",
      R"([{"answer": "blue", "type": "color", "question_id": 8}, {"answer": 3, "type": 2, "question_id": 7}])"));
  ASSERT_EQ(ids_of(r), (std::vector<std::string>{"7", "8"}));
  EXPECT_EQ(r.items[0].video_name, "1001");
  EXPECT_EQ(r.items[0].answer, "3");
  EXPECT_EQ(r.items[0].type, "2");
  EXPECT_EQ(r.items[1].answer, "blue");
  EXPECT_EQ(r.items[1].type, "color");
}

TEST(VideollavaJoin, TypeIsOptional) {
  const JoinReport r = read_dataset(videollava_dataset(
      "no-type", R"([{"video_name": "v", "question": "q", "question_id": "a"},
                     {"video_name": "v", "question": "q", "question_id": "b"}])",
      R"([{"answer": "x", "question_id": "a"}, {"answer": "y", "type": null, "question_id": "b"}])"));
  ASSERT_EQ(r.items.size(), 2u);
  EXPECT_TRUE(r.items[0].has_answer);
  EXPECT_EQ(r.items[0].type, "");
  EXPECT_EQ(r.items[1].type, "");
}

TEST(VideollavaErrors, MalformedJsonNamesFileLineAndColumn) {
  config::DatasetConfig c = videollava_dataset(
      "malformed", "[\n  {\"video_name\": \"v\",\n   \"question\": \"q\" \"question_id\": \"a\"}\n]", "[]");
  const std::string e = error_of<InputError>([&] { read_dataset(c); });
  EXPECT_NE(e.find(c.dir + "/test_q.json:3:"), std::string::npos) << e;
  EXPECT_NE(e.find("invalid JSON"), std::string::npos) << e;
}

TEST(VideollavaErrors, WrongShapedElementNamesItsIndexAndField) {
  const std::string q_ok = R"([{"video_name": "v", "question": "q", "question_id": "a"}])";
  auto error_for = [](const std::string& name, const std::string& q, const std::string& a) {
    config::DatasetConfig c = videollava_dataset(name, q, a);
    return error_of<InputError>([&] { read_dataset(c); });
  };
  std::string e = error_for("not-object", R"([{"video_name": "v", "question": "q", "question_id": "a"}, "oops"])",
                            "[]");
  EXPECT_NE(e.find("test_q.json: element 1: expected an object, found a string"), std::string::npos) << e;

  e = error_for("missing-field", q_ok, R"([{"answer": "x", "question_id": "a"}, {"question_id": "b"}])");
  EXPECT_NE(e.find("test_a.json: element 1: missing field \"answer\""), std::string::npos) << e;

  e = error_for("float-id", R"([{"video_name": "v", "question": "q", "question_id": 1.5}])", "[]");
  EXPECT_NE(e.find("test_q.json: element 0: field \"question_id\" must be a string or an integer, found a "
                   "floating-point number"),
            std::string::npos)
      << e;

  e = error_for("top-object", q_ok, R"({"answer": "x"})");
  EXPECT_NE(e.find("test_a.json: expected a JSON array at the top level, found an object"), std::string::npos) << e;
}

TEST(VideollavaErrors, MissingFileIsAnInputErrorNamingIt) {
  std::string dir = make_dir("only-questions");
  write_file(dir + "/test_q.json", "[]");
  std::string e = error_of<InputError>([&] { read_dataset(videollava_config(dir)); });
  EXPECT_NE(e.find(dir + "/test_a.json: no such file"), std::string::npos) << e;
  e = error_of<InputError>([&] { read_dataset(videollava_config(dir + "/nowhere")); });
  EXPECT_NE(e.find(dir + "/nowhere/test_q.json: no such file"), std::string::npos) << e;
}

TEST(DatasetConfigErrors, EmptySplitOrDirIsAConfigError) {
  config::DatasetConfig c = videollava_config(make_dir("config-errors"));
  c.split = "";
  EXPECT_NE(error_of<ConfigError>([&] { read_dataset(c); }).find("dataset.split"), std::string::npos);
  c.format = "jsonl";
  EXPECT_NE(error_of<ConfigError>([&] { read_dataset(c); }).find("dataset.split"), std::string::npos);
  c.split = "test";
  c.dir = "";
  EXPECT_NE(error_of<ConfigError>([&] { read_dataset(c); }).find("dataset.dir"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// JSONL datasets.

config::DatasetConfig jsonl_dataset(const std::string& name, const std::string& text) {
  config::DatasetConfig c;
  c.format = "jsonl";
  c.split = "val";
  c.dir = make_dir(name);
  c.fields.id = "qid";
  c.fields.video = "clip";
  c.fields.question = "q";
  c.fields.answer = "gold";
  c.fields.type = "kind";
  write_file(c.dir + "/val.jsonl", text);
  return c;
}

TEST(Jsonl, ReadsCustomFieldNames) {
  const JoinReport r = read_dataset(jsonl_dataset(
      "jsonl-custom",
      "{\"qid\": 1, \"clip\": \"c1\", \"q\": \"what colour\", \"gold\": \"red\", \"kind\": 4}\r\n"
      "\n"
      "{\"qid\": \"x2\", \"clip\": \"c2\", \"q\": \"where\", \"gold\": null, \"kind\": null, \"answer\": \"no\"}\n"
      "{\"qid\": \"x3\", \"clip\": \"c1\", \"q\": \"who\", \"gold\": \"a man\", \"kind\": \"person\"}"));
  EXPECT_EQ(r.n_questions_read, 3);
  EXPECT_EQ(r.n_answers_read, 2);
  ASSERT_EQ(ids_of(r), (std::vector<std::string>{"1", "x2", "x3"}));
  EXPECT_EQ(r.items[0].video_name, "c1");
  EXPECT_EQ(r.items[0].question, "what colour");
  EXPECT_TRUE(r.items[0].has_answer);
  EXPECT_EQ(r.items[0].answer, "red");
  EXPECT_EQ(r.items[0].type, "4");
  EXPECT_FALSE(r.items[1].has_answer);  // null gold; the stray "answer" key is not the configured field
  EXPECT_EQ(r.items[1].answer, "");
  EXPECT_EQ(r.items[1].type, "");
  EXPECT_EQ(r.items[1].index, 1);
  EXPECT_EQ(r.items[2].answer, "a man");
  EXPECT_EQ(r.items[2].type, "person");
  EXPECT_EQ(r.items[2].index, 2);
  EXPECT_EQ(r.unanswered_ids, std::vector<std::string>{"x2"});
  EXPECT_TRUE(r.duplicate_answer_ids.empty());
  EXPECT_TRUE(r.orphan_answer_ids.empty());
}

TEST(Jsonl, WithoutAnswerAndTypeFieldsNothingIsAnswered) {
  config::DatasetConfig c = jsonl_dataset(
      "jsonl-no-answers", "{\"qid\": \"a\", \"clip\": \"c\", \"q\": \"q\", \"gold\": \"x\", \"kind\": 1}\n");
  c.fields.answer = "";
  c.fields.type = "";
  const JoinReport r = read_dataset(c);
  ASSERT_EQ(r.items.size(), 1u);
  EXPECT_FALSE(r.items[0].has_answer);
  EXPECT_EQ(r.items[0].answer, "");
  EXPECT_EQ(r.items[0].type, "");
  EXPECT_EQ(r.n_answers_read, 0);
  EXPECT_EQ(r.unanswered_ids, std::vector<std::string>{"a"});
}

TEST(Jsonl, DuplicateIdLeavesEveryCopyOut) {
  const JoinReport r = read_dataset(
      jsonl_dataset("jsonl-dup", "{\"qid\": \"a\", \"clip\": \"c\", \"q\": \"1\", \"gold\": \"x\", \"kind\": 1}\n"
                                 "{\"qid\": \"b\", \"clip\": \"c\", \"q\": \"2\", \"gold\": \"y\", \"kind\": 1}\n"
                                 "{\"qid\": \"a\", \"clip\": \"c\", \"q\": \"3\", \"gold\": \"z\", \"kind\": 1}\n"));
  EXPECT_EQ(ids_of(r), std::vector<std::string>{"b"});
  EXPECT_EQ(r.duplicate_question_ids, std::vector<std::string>{"a"});
  EXPECT_TRUE(r.duplicate_answer_ids.empty());
}

TEST(Jsonl, MissingFieldNamesFileLineAndField) {
  config::DatasetConfig c =
      jsonl_dataset("jsonl-missing", "{\"qid\": \"a\", \"clip\": \"c\", \"q\": \"q\", \"gold\": \"x\", \"kind\": 1}\n"
                                     "\n"
                                     "{\"qid\": \"b\", \"q\": \"q\", \"gold\": \"x\", \"kind\": 1}\n");
  std::string e = error_of<InputError>([&] { read_dataset(c); });
  EXPECT_NE(e.find(c.dir + "/val.jsonl:3: missing field \"clip\""), std::string::npos) << e;

  // A configured answer field is required on every line (null is allowed: no answer).
  c = jsonl_dataset("jsonl-missing-answer", "{\"qid\": \"a\", \"clip\": \"c\", \"q\": \"q\", \"kind\": 1}\n");
  e = error_of<InputError>([&] { read_dataset(c); });
  EXPECT_NE(e.find(c.dir + "/val.jsonl:1: missing field \"gold\""), std::string::npos) << e;
}

TEST(Jsonl, MalformedLineNamesFileAndLine) {
  config::DatasetConfig c =
      jsonl_dataset("jsonl-malformed", "{\"qid\": \"a\", \"clip\": \"c\", \"q\": \"q\", \"gold\": \"x\", \"kind\": 1}\n"
                                       "{\"qid\": \"b\", \"clip\": \n"
                                       "{\"qid\": \"c\", \"clip\": \"c\", \"q\": \"q\", \"gold\": \"x\", \"kind\": 1}\n");
  std::string e = error_of<InputError>([&] { read_dataset(c); });
  EXPECT_NE(e.find(c.dir + "/val.jsonl:2:"), std::string::npos) << e;
  EXPECT_NE(e.find("invalid JSON"), std::string::npos) << e;

  c = jsonl_dataset("jsonl-array-line", "[1, 2]\n");
  e = error_of<InputError>([&] { read_dataset(c); });
  EXPECT_NE(e.find(c.dir + "/val.jsonl:1: expected a JSON object, found an array"), std::string::npos) << e;
}

TEST(Jsonl, MissingFileIsAnInputErrorNamingIt) {
  config::DatasetConfig c = jsonl_dataset("jsonl-missing-file", "");
  c.split = "train";
  std::string e = error_of<InputError>([&] { read_dataset(c); });
  EXPECT_NE(e.find(c.dir + "/train.jsonl: no such file"), std::string::npos) << e;
}

// ---------------------------------------------------------------------------------------------
// Videos and type labels.

TEST(ResolveVideo, AppliesTheTemplateAndTriesExtensionsInOrder) {
  const std::string dir = make_dir("videos");
  for (const char* f : {"v_a.mp4", "v_a.avi", "v_b.avi", "a.mp4"}) write_file(dir + "/" + f, "x");
  fs::create_directories(dir + "/v_c.mp4");  // a directory is not a video
  config::DatasetConfig c;
  c.video_dir = dir;
  c.name_template = "v_{video_name}";
  c.extensions = {".mp4", ".avi"};

  std::vector<std::string> tried;
  EXPECT_EQ(resolve_video(c, "a", &tried), dir + "/v_a.mp4");
  EXPECT_EQ(tried, std::vector<std::string>{dir + "/v_a.mp4"});
  EXPECT_EQ(resolve_video(c, "b", &tried), dir + "/v_b.avi");
  EXPECT_EQ(tried, (std::vector<std::string>{dir + "/v_b.mp4", dir + "/v_b.avi"}));
  EXPECT_EQ(resolve_video(c, "c", &tried), "");
  EXPECT_EQ(tried, (std::vector<std::string>{dir + "/v_c.mp4", dir + "/v_c.avi"}));
  EXPECT_EQ(resolve_video(c, "d", &tried), "");
  EXPECT_EQ(tried, (std::vector<std::string>{dir + "/v_d.mp4", dir + "/v_d.avi"}));
  EXPECT_EQ(resolve_video(c, "d"), "");

  c.extensions = {"avi", ".mp4"};  // order decides; a missing dot is added
  EXPECT_EQ(resolve_video(c, "a"), dir + "/v_a.avi");
  c.name_template = "{video_name}";
  EXPECT_EQ(resolve_video(c, "a"), dir + "/a.mp4");
}

TEST(ResolveVideo, BadSettingsAreConfigErrors) {
  config::DatasetConfig c;
  c.video_dir = "";
  EXPECT_NE(error_of<ConfigError>([&] { resolve_video(c, "a"); }).find("dataset.video_dir"), std::string::npos);
  c.video_dir = make_dir("videos-bad");
  c.name_template = "clip";
  EXPECT_NE(error_of<ConfigError>([&] { resolve_video(c, "a"); }).find("{video_name}"), std::string::npos);
  c.name_template = "{video_name}";
  c.extensions.clear();
  EXPECT_NE(error_of<ConfigError>([&] { resolve_video(c, "a"); }).find("dataset.extensions"), std::string::npos);
}

TEST(TypeLabel, NamesIntegerTypesInRangeAndKeepOtherText) {
  config::DatasetConfig c;
  c.type_names = {"motion", "spatial", "temporal"};
  EXPECT_EQ(type_label(c, "0"), "motion");
  EXPECT_EQ(type_label(c, "2"), "temporal");
  EXPECT_EQ(type_label(c, "3"), "3");
  EXPECT_EQ(type_label(c, "02"), "02");
  EXPECT_EQ(type_label(c, "-1"), "-1");
  EXPECT_EQ(type_label(c, "color"), "color");
  EXPECT_EQ(type_label(c, ""), "");
  c.type_names.clear();
  EXPECT_EQ(type_label(c, "0"), "0");
}

}  // namespace
}  // namespace mustdrop::eval
