// `mustdrop batch` and `mustdrop batch merge`: the order of a job (load, set aside or resume,
// preflight, judge check, inference, summary) and the verified merge of shards.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

#include "app/batch.h"
#include "app/exit_codes.h"
#include "app/report.h"
#include "app/signals.h"
#include "core/error.h"
#include "core/log.h"
#include "eval/jsonl.h"
#include "eval/judge.h"
#include "eval/summary.h"
#include "serve/http_client.h"

namespace mustdrop::app {

namespace fs = std::filesystem;
using nlohmann::json;

namespace batch {
namespace {

constexpr const char* kPredictions = "predictions.jsonl";
constexpr const char* kJudgeCache = "judge.jsonl";

std::unique_ptr<eval::Judge> make_judge(const config::JudgeConfig& c, const std::string& dir) {
  if (c.endpoint.empty()) return nullptr;
  eval::JudgeSettings s;
  s.endpoint = c.endpoint;
  s.model = c.model;
  if (!c.api_key_env.empty()) {
    if (const char* key = std::getenv(c.api_key_env.c_str())) s.api_key = key;
  }
  s.temperature = c.temperature;
  s.max_retries = c.max_retries;
  s.retry_delay_ms = c.retry_delay_ms;
  s.timeout_sec = c.timeout_sec;
  auto transport = [](const std::string& url, const std::string& body, const std::string& bearer, double timeout) {
    serve::HttpResponse r = serve::http_post_json(url, body, bearer, timeout);
    return eval::HttpReply{r.status, r.body, r.error};
  };
  return std::make_unique<eval::Judge>(s, transport, (fs::path(dir) / kJudgeCache).string());
}

// Holds an exclusive lock on `dir` for the life of the object: two runs of one shard at once would
// append the same answers twice. InputError when another process holds it.
class DirLock {
 public:
  explicit DirLock(const std::string& dir) : path_((fs::path(dir) / ".lock").string()) {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw InputError(path_ + ": cannot open the output directory's lock: " + std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd_);
      throw InputError(dir + ": another mustdrop batch is writing here (" + path_ +
                       " is locked); wait for it, or give this run another output_dir or --shard");
    }
  }
  ~DirLock() { ::close(fd_); }
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

 private:
  std::string path_;
  int fd_ = -1;
};

// Moves earlier output of `dir` aside (name.old-<time>): --fresh never deletes anything.
void set_aside(const std::string& dir) {
  char stamp[32];
  std::time_t t = std::time(nullptr);
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&t));
  for (const char* name : {kPredictions, kJudgeCache, "job.json", "preflight.json", "summary.json", "summary.md"}) {
    fs::path p = fs::path(dir) / name;
    if (!fs::exists(p)) continue;
    fs::path to = p;
    to += std::string(".old-") + stamp;
    for (int n = 2; fs::exists(to); ++n) {  // a second --fresh within the same second
      to = p;
      to += std::string(".old-") + stamp + "-" + std::to_string(n);
    }
    fs::rename(p, to);
    MD_LOG_INFO("batch", "--fresh: " << p.string() << " -> " << to.string());
  }
}

void print_preflight(const Preflight& p, const std::string& dir) {
  std::fprintf(stderr,
               "batch: preflight: %zu questions (%lld read, %lld answers) over %zu videos; %zu missing, %zu "
               "unreadable videos; %zu duplicate question ids, %zu duplicate answer ids, %zu questions without an "
               "answer, %zu answers without a question (details: %s/preflight.json)\n",
               p.join.items.size(), static_cast<long long>(p.join.n_questions_read),
               static_cast<long long>(p.join.n_answers_read), p.video_paths.size(), p.missing_videos.size(),
               p.unreadable_videos.size(), p.join.duplicate_question_ids.size(), p.join.duplicate_answer_ids.size(),
               p.join.unanswered_ids.size(), p.join.orphan_answer_ids.size(), dir.c_str());
  size_t shown = 0;
  for (const auto& name : p.missing_videos) {
    if (shown++ == 10) break;
    std::fprintf(stderr, "batch:   missing video %s (tried %s ...)\n", name.c_str(), p.missing_tried.at(name).front().c_str());
  }
  for (const auto& [name, why] : p.unreadable_videos) {
    if (shown++ == 20) break;
    std::fprintf(stderr, "batch:   unreadable video %s: %s\n", name.c_str(), why.c_str());
  }
}

}  // namespace

std::string write_summary(const config::JobConfig& config, const std::vector<std::string>& pipeline_names,
                          const std::vector<json>& records, const json& preflight, const std::string& dir) {
  eval::SummaryInput in;
  in.pipelines = pipeline_names;
  in.scorers = config.scorers;
  in.dataset = config.dataset;
  in.preflight = preflight;
  if (std::unique_ptr<eval::Judge> judge = make_judge(config.judge, dir)) {
    in.judge_meta = {{"model", config.judge.model},
                     {"endpoint", config.judge.endpoint},
                     {"temperature", config.judge.temperature},
                     {"prompt_hash", judge->prompt_hash()}};
    for (const auto& r : records) {
      if (stop_requested()) break;  // Ctrl-C: the verdicts so far are cached, the rest come next time
      if (r.value("status", "") != "ok" || !r.contains("answer") || r["answer"].is_null()) continue;
      const std::string pipeline = r.value("pipeline", ""), qid = r.value("question_id", "");
      try {
        eval::Verdict v = judge->judge(pipeline + "|" + qid, r.value("question", ""), r["answer"].get<std::string>(),
                                       r.value("prediction", ""));
        in.verdicts[{pipeline, qid}] = {v.yes, v.score};
      } catch (const Error& e) {
        ++in.n_judge_failures;
        MD_LOG_WARN("batch", "judge: " << qid << " (" << pipeline << "): " << e.what());
      }
    }
  }
  json summary = eval::summarize(records, in);
  std::string md = eval::summary_markdown(summary);
  write_report((fs::path(dir) / "summary.json").string(), summary);
  write_atomically((fs::path(dir) / "summary.md").string(), md);
  return md;
}

}  // namespace batch

int run_batch(const BatchArgs& args) {
  using namespace batch;
  Job job = load_job(args);
  log::set_level(log::parse_level(args.log_level.empty() ? job.config.log_level : args.log_level));
  install_stop_handlers([] { stop_running(); });
  std::error_code ec;
  fs::create_directories(job.dir, ec);
  if (ec) throw InputError(job.dir + ": cannot create the output directory (" + ec.message() + ")");
  DirLock lock(job.dir);
  if (args.fresh) set_aside(job.dir);
  const std::string predictions = (fs::path(job.dir) / kPredictions).string();
  Existing existing = read_existing(job, predictions);

  // Everything that can fail without inference fails first.
  Preflight pf = preflight(job);
  json pf_json = preflight_json(pf);
  write_report((fs::path(job.dir) / "preflight.json").string(), pf_json);
  print_preflight(pf, job.dir);
  if (job.config.on_missing_video == "fail" && !pf.missing_videos.empty()) {
    throw InputError(job.job_path + ": " + std::to_string(pf.missing_videos.size()) + " video(s) missing under " +
                     job.config.dataset.video_dir + " (first: " + pf.missing_videos.front() +
                     "; on_missing_video: fail); see " + job.dir + "/preflight.json");
  }
  if (std::unique_ptr<eval::Judge> judge = make_judge(job.config.judge, job.dir)) judge->check();

  std::vector<std::vector<WorkItem>> work = work_by_video(job, pf);
  json assigned = json::array(), all_ids = json::array();
  for (const auto& item : pf.join.items) all_ids.push_back(item.question_id);
  for (const auto& group : work) {
    for (const auto& w : group) assigned.push_back(w.qa->question_id);
  }
  std::vector<std::string> names;
  for (const auto& p : job.pipelines) names.push_back(p.config.name);
  write_report((fs::path(job.dir) / "job.json").string(),
               {{"job", job.job_path},
                {"config_hash", job.config_hash},
                {"model_hash", job.model_hash},
                {"model", job.model_source},
                {"shard", {{"index", job.shard.index}, {"count", job.shard.count}}},
                {"limit", job.limit},
                {"pipelines", names},
                {"config", config::to_yaml(job.config)},
                {"dataset_ids", all_ids},
                {"assigned_ids", assigned}});
  if (stop_requested()) return 130;  // Ctrl-C during the preflight: nothing was answered
  if (!existing.records.empty()) {
    MD_LOG_INFO("batch", "resuming: " << existing.records.size() << " prediction(s) already in " << predictions);
  }

  RunResult r;
  if (!stop_requested()) r = run_work(job, work, existing, predictions);
  r.interrupted = r.interrupted || stop_requested();

  // The summary covers every record of this shard's questions, earlier runs' included.
  std::set<std::string> wanted(assigned.begin(), assigned.end());
  std::vector<json> records;
  for (auto& rec : eval::read_jsonl(predictions, true).records) {
    if (wanted.count(rec.value("question_id", ""))) records.push_back(std::move(rec));
  }
  std::string md = write_summary(job.config, names, records, pf_json, job.dir);
  std::cout << md << std::flush;
  std::fprintf(stderr, "batch: %lld answered, %lld failed (recorded, not scored) in this run; %zu records; %s\n",
               static_cast<long long>(r.n_done), static_cast<long long>(r.n_failed), records.size(),
               predictions.c_str());
  if (r.interrupted) {
    MD_LOG_WARN("batch", "interrupted: what was answered is kept; run the same command again to resume");
    return 130;
  }
  return kExitOk;
}

}  // namespace mustdrop::app
