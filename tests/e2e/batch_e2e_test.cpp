// `mustdrop batch` end to end: the generated dataset in the Video-LLaVA layout (one missing and
// one corrupt video), two and three pipelines, the feature cache, kill -9 and resume, shards and
// their merge, streaming replay, the judge on a fake local endpoint, and bad jobs.
#include <fcntl.h>
#include <httplib.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "e2e/e2e_util.h"

namespace mustdrop::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The dataset of samples/batch/make_dataset.sh, built once per test process.
const std::string& dataset() {
  static const std::string dir = [] {
    std::string d = temp_dir() + "/batch-dataset";
    ProcResult r = run_process({"bash", source_dir() + "/samples/batch/make_dataset.sh", d}, 300);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    return d;
  }();
  return dir;
}

// A job file over the dataset writing to `out`, with extra YAML lines.
std::string job(const std::string& name, const std::string& out, const std::vector<std::string>& pipelines,
                const std::string& extra = "") {
  std::string path = temp_dir() + "/" + name + ".yaml";
  std::ofstream f(path);
  f << "dataset:\n  format: videollava\n  split: test\n  dir: " << dataset() << "\n  video_dir: " << dataset()
    << "/videos\n  name_template: \"v_{video_name}\"\npipelines:\n";
  for (const auto& p : pipelines) f << "  - " << source_dir() << "/pipelines/" << p << ".yaml\n";
  f << "model:\n  dir: " << tiny_model() << "\nvideo:\n  sampler:\n    frames: 3\ngeneration:\n  max_new_tokens: 4\n"
    << "output_dir: " << out << "\n" << extra;
  return path;
}

std::vector<json> read_jsonl_strict(const std::string& path) {
  std::vector<json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    json j = json::parse(line, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << path << ": not JSON: " << line;
    out.push_back(j);
  }
  return out;
}

// (pipeline, question id) -> how often it is in the file.
std::map<std::pair<std::string, std::string>, int> counts(const std::vector<json>& records) {
  std::map<std::pair<std::string, std::string>, int> c;
  for (const auto& r : records) ++c[{r["pipeline"].get<std::string>(), r["question_id"].get<std::string>()}];
  return c;
}

// The question ids of the dataset, read from its file independently of mustdrop.
std::vector<std::string> dataset_ids() {
  std::vector<std::string> ids;
  for (const auto& q : read_json(dataset() + "/test_q.json")) ids.push_back(q["question_id"]);
  return ids;
}

// Waits (up to 2 min) until `path` holds at least `n` records.
void wait_for_records(const std::string& path, size_t n) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline && read_jsonl_strict(path).size() < n) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// Bytes after the last newline.
int64_t eval_torn_bytes(const std::string& path) {
  std::string text = read_file(path);
  size_t nl = text.rfind('\n');
  return static_cast<int64_t>(text.size() - (nl == std::string::npos ? 0 : nl + 1));
}

void expect_each_once(const std::vector<json>& records, const std::vector<std::string>& pipelines) {
  auto c = counts(records);
  EXPECT_EQ(c.size(), pipelines.size() * dataset_ids().size());
  for (const auto& p : pipelines) {
    for (const auto& id : dataset_ids()) EXPECT_EQ((c[{p, id}]), 1) << p << " " << id;
  }
}

TEST(Batch, TwoPipelinesCompleteAndReportTheMissingAndTheCorruptVideo) {
  std::string out = temp_dir() + "/batch-two";
  ProcResult r = mustdrop({"batch", job("two", out, {"none", "mustdrop"})});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<json> records = read_jsonl_strict(out + "/predictions.jsonl");
  expect_each_once(records, {"none", "mustdrop"});
  std::map<std::string, int> by_status;
  for (const auto& rec : records) {
    std::string v = rec["video"];
    std::string expected = v == "gone" ? "missing_video" : v == "broken" ? "unreadable_video" : "ok";
    EXPECT_EQ(rec["status"], expected) << rec.dump();
    ++by_status[rec["status"]];
    if (expected == "ok") {
      EXPECT_TRUE(rec["prediction"].is_string());
      EXPECT_GT(rec["flops"]["total"].get<double>(), 0);
    } else {
      EXPECT_TRUE(rec["prediction"].is_null());
      EXPECT_FALSE(rec["error"].get<std::string>().empty());
    }
  }
  // The summary's counts add up to what the file holds.
  json s = read_json(out + "/summary.json");
  ASSERT_EQ(s["pipelines"].size(), 2u);
  for (const auto& p : s["pipelines"]) {
    EXPECT_EQ(p["n_items"].get<int>(), static_cast<int>(dataset_ids().size()));
    EXPECT_EQ(p["n_ok"].get<int>() + p["n_errors"].get<int>(), p["n_items"].get<int>());
    EXPECT_EQ(p["n_ok"].get<int>(), by_status["ok"] / 2);
    EXPECT_EQ(p["errors"]["missing_video"].get<int>(), by_status["missing_video"] / 2);
    EXPECT_EQ(p["errors"]["unreadable_video"].get<int>(), by_status["unreadable_video"] / 2);
    EXPECT_EQ(p["scorers"]["exact"]["n"].get<int>(), p["n_ok"].get<int>());
  }
  EXPECT_EQ(by_status["missing_video"], 2);
  EXPECT_EQ(by_status["unreadable_video"], 2);
  EXPECT_EQ(s["preflight"]["missing_videos"][0]["video"], "gone");
  EXPECT_EQ(s["preflight"]["unreadable_videos"][0]["video"], "broken");
  EXPECT_NE(r.out.find("| mustdrop |"), std::string::npos) << r.out;
  // MustDrop sends fewer tokens than none on every answered question.
  std::map<std::string, double> none_tokens;
  for (const auto& rec : records) {
    if (rec["status"] == "ok" && rec["pipeline"] == "none") none_tokens[rec["question_id"]] = rec["vision_tokens"]["to_llm"];
  }
  for (const auto& rec : records) {
    if (rec["status"] == "ok" && rec["pipeline"] == "mustdrop") {
      EXPECT_LT(rec["vision_tokens"]["to_llm"].get<double>(), none_tokens.at(rec["question_id"]));
    }
  }
}

TEST(Batch, TheFeatureCacheGivesTheAnswersOfEncodingEveryPipeline) {
  // none, fastv and random have no vision stages: one encoding serves all three.
  std::vector<std::string> pipes = {"none", "fastv", "random"};
  std::string cached = temp_dir() + "/batch-cached", uncached = temp_dir() + "/batch-uncached";
  ASSERT_EQ(mustdrop({"batch", job("cached", cached, pipes), "--limit", "6"}).exit_code, 0);
  ProcResult r = mustdrop({"batch", job("uncached", uncached, pipes, "feature_cache: false\n"), "--limit", "6"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::map<std::pair<std::string, std::string>, json> a;
  int n_cached = 0, n_shared = 0;
  for (const auto& rec : read_jsonl_strict(cached + "/predictions.jsonl")) {
    a[{rec["pipeline"], rec["question_id"]}] = rec;
    if (rec.value("features_cached", false)) ++n_cached;
    if (rec.value("memory_shared", false)) ++n_shared;
    if (rec["status"] == "ok") {  // none builds its own prefix (every layer); fastv and random stop after layer 1
      EXPECT_EQ(rec["features_cached"], rec["pipeline"] != "none") << rec["pipeline"];
      EXPECT_EQ(rec["memory_shared"], rec["pipeline"] == "random") << rec["pipeline"];
    }
  }
  EXPECT_GT(n_cached, 0);
  EXPECT_GT(n_shared, 0);
  int compared = 0;
  for (const auto& rec : read_jsonl_strict(uncached + "/predictions.jsonl")) {
    EXPECT_FALSE(rec.value("features_cached", false));
    EXPECT_FALSE(rec.value("memory_shared", false));
    const json& other = a.at({rec["pipeline"], rec["question_id"]});
    EXPECT_EQ(rec["ids"], other["ids"]) << rec["question_id"] << " " << rec["pipeline"];
    EXPECT_EQ(rec["vision_tokens"]["to_llm"], other["vision_tokens"]["to_llm"]);
    // Which stages acted, and on how many tokens: a shared memory still answers with its own pipeline's stages.
    auto acted = [](const json& r) {
      std::vector<std::string> v;
      for (const auto& st : r["vision_tokens"]["stages"]) v.push_back(st["name"].get<std::string>() + ":" + st["n_in"].dump() + "->" + st["n_out"].dump());
      return v;
    };
    EXPECT_EQ(acted(rec), acted(other)) << rec["question_id"] << " " << rec["pipeline"];
    if (rec["status"] == "ok" && rec["pipeline"] != "none") {
      EXPECT_EQ(rec["vision_tokens"]["stages"][0]["name"], rec["pipeline"]);
    }
    ++compared;
  }
  EXPECT_EQ(compared, 18);
}

TEST(Batch, TwoWorkersGiveTheAnswersOfOne) {
  // One LibTorch thread per answer in both runs, so the arithmetic is the same.
  std::string one = temp_dir() + "/batch-w1", two = temp_dir() + "/batch-w2";
  std::string extra = "threads:\n  torch_intra_op: 1\n";
  ASSERT_EQ(mustdrop({"batch", job("w1", one, {"none", "mustdrop"}, extra)}).exit_code, 0);
  ProcResult r = mustdrop({"batch", job("w2", two, {"none", "mustdrop"}, extra + "workers: 2\n")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::map<std::pair<std::string, std::string>, json> a;
  for (const auto& rec : read_jsonl_strict(one + "/predictions.jsonl")) a[{rec["pipeline"], rec["question_id"]}] = rec;
  std::vector<json> b = read_jsonl_strict(two + "/predictions.jsonl");
  expect_each_once(b, {"none", "mustdrop"});
  std::set<int> workers;
  for (const auto& rec : b) {
    workers.insert(rec["worker"].get<int>());
    const json& o = a.at({rec["pipeline"], rec["question_id"]});
    EXPECT_EQ(rec["status"], o["status"]);
    EXPECT_EQ(rec.value("ids", json()), o.value("ids", json())) << rec["question_id"];
  }
  EXPECT_EQ(workers, (std::set<int>{0, 1}));  // both workers took videos
}

TEST(Batch, KilledMidRunThenResumedAnswersEveryQuestionOnce) {
  std::string out = temp_dir() + "/batch-kill";
  std::string path = job("kill", out, {"none", "mustdrop"});
  std::string predictions = out + "/predictions.jsonl";
  {
    Child run({mustdrop_binary(), "batch", path});
    wait_for_records(predictions, 5);
    run.signal(SIGKILL);
    run.wait(30);
  }
  std::vector<json> before = read_jsonl_strict(predictions);
  ASSERT_GE(before.size(), 5u);
  ASSERT_LT(before.size(), 2 * dataset_ids().size()) << "the run finished before the kill";
  {  // a write the kill cut in half
    std::ofstream torn(predictions, std::ios::app);
    torn << R"({"question_id": "v_tree_9", "pipeline": "none", "stat)";
  }
  ProcResult r = mustdrop({"batch", path, "--resume"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("torn"), std::string::npos) << r.err;
  std::vector<json> after = read_jsonl_strict(predictions);
  expect_each_once(after, {"none", "mustdrop"});
  for (size_t i = 0; i < before.size(); ++i) EXPECT_EQ(after[i], before[i]) << "line " << i + 1 << " changed";

  // Another config is refused without --fresh, and --fresh keeps the old file aside.
  r = mustdrop({"batch", path, "--set", "generation.max_new_tokens=3"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("config hash"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--fresh"), std::string::npos) << r.err;
  r = mustdrop({"batch", path, "--set", "generation.max_new_tokens=3", "--fresh", "--limit", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_jsonl_strict(predictions).size(), 4u);
  int old = 0;
  for (const auto& e : fs::directory_iterator(out)) old += e.path().filename().string().rfind("predictions.jsonl.old-", 0) == 0;
  EXPECT_EQ(old, 1);
}

TEST(Batch, CtrlCStopsCleanlyAndTheNextRunFinishes) {
  std::string out = temp_dir() + "/batch-int";
  std::string path = job("int", out, {"none", "mustdrop"});
  std::string predictions = out + "/predictions.jsonl";
  Child run({mustdrop_binary(), "batch", path});
  wait_for_records(predictions, 3);
  run.signal(SIGINT);
  EXPECT_EQ(run.wait(60), 130);
  std::vector<json> before = read_jsonl_strict(predictions);
  ASSERT_LT(before.size(), 2 * dataset_ids().size()) << "the run finished before Ctrl-C";
  EXPECT_EQ(eval_torn_bytes(predictions), 0) << "a clean stop leaves no torn line";
  ProcResult r = mustdrop({"batch", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_each_once(read_jsonl_strict(predictions), {"none", "mustdrop"});
}

TEST(Batch, ThreeShardsMergedEqualOneRunAndAMissingShardIsNamed) {
  std::string single = temp_dir() + "/batch-single", sharded = temp_dir() + "/batch-sharded";
  ASSERT_EQ(mustdrop({"batch", job("single", single, {"none", "mustdrop"})}).exit_code, 0);
  std::string path = job("sharded", sharded, {"none", "mustdrop"});
  std::set<std::string> seen;
  for (int i = 0; i < 3; ++i) {
    ProcResult r = mustdrop({"batch", path, "--shard", std::to_string(i) + "/3"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    for (const auto& rec : read_jsonl_strict(sharded + "/shard-" + std::to_string(i) + "-of-3/predictions.jsonl")) {
      EXPECT_TRUE(seen.insert(rec["pipeline"].get<std::string>() + "/" + rec["question_id"].get<std::string>()).second);
    }
  }
  ProcResult m = mustdrop({"batch", "merge", sharded, "--out", sharded + "/merged"});
  ASSERT_EQ(m.exit_code, 0) << m.err;
  std::map<std::pair<std::string, std::string>, json> one;
  for (const auto& rec : read_jsonl_strict(single + "/predictions.jsonl")) one[{rec["pipeline"], rec["question_id"]}] = rec;
  std::vector<json> merged = read_jsonl_strict(sharded + "/merged/predictions.jsonl");
  expect_each_once(merged, {"none", "mustdrop"});
  for (const auto& rec : merged) {
    const json& o = one.at({rec["pipeline"], rec["question_id"]});
    EXPECT_EQ(rec["status"], o["status"]);
    EXPECT_EQ(rec["prediction"], o["prediction"]) << rec["question_id"];
    EXPECT_EQ(rec.value("ids", json()), o.value("ids", json()));
  }
  json s1 = read_json(single + "/summary.json"), s3 = read_json(sharded + "/merged/summary.json");
  EXPECT_EQ(s1["pipelines"][1]["scorers"], s3["pipelines"][1]["scorers"]);

  // Without shard 1: the merge fails and names exactly shard 1's questions.
  std::set<std::string> shard1;
  for (const auto& rec : read_jsonl_strict(sharded + "/shard-1-of-3/predictions.jsonl")) shard1.insert(rec["question_id"]);
  ASSERT_FALSE(shard1.empty());
  m = mustdrop({"batch", "merge", sharded + "/shard-0-of-3", sharded + "/shard-2-of-3", "--out", sharded + "/m2"});
  EXPECT_EQ(m.exit_code, 3);
  EXPECT_NE(m.err.find("shard(s) 1 of 3 not given"), std::string::npos) << m.err;
  std::set<std::string> named;  // the words of the message
  std::string word;
  for (char ch : m.err + " ") {
    if (std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-') {
      word += ch;
    } else if (!word.empty()) {
      named.insert(word);
      word.clear();
    }
  }
  for (const auto& id : dataset_ids()) EXPECT_EQ(named.count(id), shard1.count(id)) << id << "\n" << m.err;
}

TEST(Batch, StreamReplayUnderASmallBudgetDiffersFromTheClip) {
  std::string clip_out = temp_dir() + "/batch-clip", stream_out = temp_dir() + "/batch-stream";
  std::string common = "memory:\n  max_tokens: 700\n";
  ASSERT_EQ(mustdrop({"batch", job("clipr", clip_out, {"none"}, common + "replay: clip\n"), "--limit", "3"}).exit_code, 0);
  ProcResult r = mustdrop({"batch", job("streamr", stream_out, {"none"}, common + "replay: stream\n"), "--limit", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<json> c = read_jsonl_strict(clip_out + "/predictions.jsonl"), s = read_jsonl_strict(stream_out + "/predictions.jsonl");
  ASSERT_EQ(c.size(), 3u);
  ASSERT_EQ(s.size(), 3u);
  for (size_t i = 0; i < c.size(); ++i) {
    ASSERT_EQ(c[i]["status"], "ok");
    ASSERT_EQ(s[i]["status"], "ok");
    // 3 frames of 576 tokens: the clip keeps all, the stream's budget of 700 keeps one frame.
    EXPECT_EQ(c[i]["vision_tokens"]["to_llm"].get<int>(), 3 * 576);
    EXPECT_LE(s[i]["vision_tokens"]["to_llm"].get<int>(), 700);
    EXPECT_GT(s[i]["memory"]["n_evicted_tokens_before"].get<int>(), 0);
  }
}

TEST(Batch, JudgedLaterWithoutInferenceAndFromTheCacheAfterwards) {
  std::string out = temp_dir() + "/batch-judge";
  std::string path = job("judge", out, {"none"});
  ASSERT_EQ(mustdrop({"batch", path, "--limit", "4"}).exit_code, 0);
  auto before = read_jsonl_strict(out + "/predictions.jsonl");

  httplib::Server fake;
  std::atomic<int> requests{0};
  fake.Post("/v1/chat/completions", [&](const httplib::Request& req, httplib::Response& res) {
    ++requests;
    json body = json::parse(req.body);
    std::string user = body["messages"].back()["content"];
    bool yes = user.find("blue") != std::string::npos;  // any fixed rule: the verdicts must reach the summary
    json reply{{"choices", {{{"message", {{"role", "assistant"}, {"content", yes ? "{'pred': 'yes', 'score': 4}" : "{'pred': 'no', 'score': 1}"}}}}}}};
    res.set_content(reply.dump(), "application/json");
  });
  int port = fake.bind_to_any_port("127.0.0.1");
  std::thread server([&] { fake.listen_after_bind(); });
  std::vector<std::string> judge_args = {"batch", path, "--limit", "4", "--set",
                                         "judge.endpoint=http://127.0.0.1:" + std::to_string(port) + "/v1",
                                         "--set", "judge.model=fake-judge"};
  ProcResult r = mustdrop(judge_args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_jsonl_strict(out + "/predictions.jsonl"), before);  // no inference ran again
  json s = read_json(out + "/summary.json");
  int n_ok = s["pipelines"][0]["n_ok"];
  EXPECT_EQ(s["pipelines"][0]["judge"]["n"].get<int>(), n_ok);
  EXPECT_EQ(s["judge"]["model"], "fake-judge");
  EXPECT_EQ(requests.load(), n_ok + 1);  // one check before the job, one per answer
  int expected_yes = 0;
  for (const auto& rec : before) expected_yes += rec["status"] == "ok" && rec["answer"].get<std::string>().find("blue") != std::string::npos;
  EXPECT_NEAR(s["pipelines"][0]["judge"]["accuracy"].get<double>(), double(expected_yes) / n_ok, 1e-9);
  r = mustdrop(judge_args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(requests.load(), n_ok + 2);  // only the check: every verdict came from the cache
  fake.stop();
  server.join();
}

TEST(BatchErrors, MissingVideosFailBeforeInferenceWhenAskedTo) {
  std::string out = temp_dir() + "/batch-fail";
  ProcResult r = mustdrop({"batch", job("fail", out, {"none"}, "on_missing_video: fail\n")});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("gone"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out + "/predictions.jsonl") && fs::file_size(out + "/predictions.jsonl") > 0);
}

TEST(BatchErrors, ASecondRunOnTheSameOutputIsRefused) {
  std::string out = temp_dir() + "/batch-locked";
  fs::create_directories(out);
  int fd = ::open((out + "/.lock").c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);  // as a running batch holds it
  ProcResult r = mustdrop({"batch", job("locked", out, {"none"})});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("another mustdrop batch is writing"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out + "/predictions.jsonl"));
  ::close(fd);
  r = mustdrop({"batch", job("locked", out, {"none"}), "--limit", "1"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(BatchErrors, BadJobsAreConfigErrorsWithTheirPlace) {
  std::string path = temp_dir() + "/bad.yaml";
  std::ofstream(path) << "dataset:\n  format: videollava\n  split: test\n  colour: red\n";
  ProcResult r = mustdrop({"batch", path});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(path + ":4:3"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("dataset.colour"), std::string::npos) << r.err;
  r = mustdrop({"batch", job("shardbad", temp_dir() + "/x", {"none"}), "--shard", "3/3"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("0 <= i < N"), std::string::npos) << r.err;
  std::string nosplit = temp_dir() + "/nosplit.yaml";
  std::ofstream(nosplit) << "dataset:\n  dir: x\n  video_dir: y\noutput_dir: z\n";
  r = mustdrop({"batch", nosplit});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("dataset.split"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace mustdrop::test
