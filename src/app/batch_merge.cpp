// `mustdrop batch merge`: the shards of one job into one predictions file and summary, after
// checking that they belong together and that every question is answered exactly once per
// pipeline. A shard that is absent, still running or answered twice fails the merge, naming ids.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "app/batch.h"
#include "app/exit_codes.h"
#include "app/report.h"
#include "core/error.h"
#include "core/log.h"
#include "eval/jsonl.h"

namespace mustdrop::app {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InputError(path + ": cannot read");
  json j = json::parse(in, nullptr, false);
  if (j.is_discarded()) throw InputError(path + ": not valid JSON");
  return j;
}

// The shard directories named by `args`: each one itself, or the shard-*-of-* directories below it.
std::vector<std::string> shard_dirs(const std::vector<std::string>& args) {
  std::vector<std::string> dirs;
  for (const auto& a : args) {
    if (fs::exists(fs::path(a) / "job.json")) {
      dirs.push_back(a);
      continue;
    }
    std::vector<std::string> below;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(a, ec)) {
      std::string name = e.path().filename().string();
      if (e.is_directory() && name.rfind("shard-", 0) == 0 && fs::exists(e.path() / "job.json")) {
        below.push_back(e.path().string());
      }
    }
    if (ec) throw InputError(a + ": cannot list (" + ec.message() + ")");
    if (below.empty()) throw InputError(a + ": neither a shard directory (no job.json) nor one holding shard-*-of-*");
    std::sort(below.begin(), below.end());
    dirs.insert(dirs.end(), below.begin(), below.end());
  }
  return dirs;
}

std::string list_ids(const std::vector<std::string>& ids, size_t max = 20) {
  std::string out;
  for (size_t i = 0; i < ids.size() && i < max; ++i) out += (i ? ", " : "") + ids[i];
  if (ids.size() > max) out += ", ... (" + std::to_string(ids.size() - max) + " more)";
  return out;
}

}  // namespace

int run_batch_merge(const BatchMergeArgs& args) {
  std::vector<std::string> dirs = shard_dirs(args.dirs);
  json first;
  std::map<int, std::string> by_index;
  std::vector<json> records;
  for (const auto& dir : dirs) {
    json job = read_json_file((fs::path(dir) / "job.json").string());
    if (first.is_null()) first = job;
    if (job["config_hash"] != first["config_hash"]) {
      throw InputError("merge: " + dir + " has config hash " + job["config_hash"].get<std::string>() + ", " +
                       dirs.front() + " has " + first["config_hash"].get<std::string>() + ": not shards of one job");
    }
    if (job["shard"]["count"] != first["shard"]["count"]) {
      throw InputError("merge: " + dir + " is one of " + job["shard"]["count"].dump() + " shards, " + dirs.front() +
                       " one of " + first["shard"]["count"].dump());
    }
    if (job.value("limit", 0) != 0) throw InputError("merge: " + dir + " ran with --limit: it cannot stand for its shard");
    int index = job["shard"]["index"];
    if (!by_index.emplace(index, dir).second) {
      throw InputError("merge: shard " + std::to_string(index) + " given twice (" + by_index[index] + ", " + dir + ")");
    }
    std::string path = (fs::path(dir) / "predictions.jsonl").string();
    eval::JsonlContents c = eval::read_jsonl(path, /*repair=*/false);
    if (c.n_torn_bytes > 0) {
      throw InputError("merge: " + path + " ends in a torn line: the shard is still running or was killed; "
                       "run it again to resume, then merge");
    }
    for (auto& r : c.records) records.push_back(std::move(r));
  }
  const int n_shards = first["shard"]["count"];
  std::vector<std::string> dataset_ids = first["dataset_ids"].get<std::vector<std::string>>();
  std::vector<std::string> pipelines = first["pipelines"].get<std::vector<std::string>>();
  std::vector<std::string> absent;
  for (int i = 0; i < n_shards; ++i) {
    if (!by_index.count(i)) absent.push_back(std::to_string(i));
  }

  // Every (pipeline, id) exactly once.
  std::map<std::pair<std::string, std::string>, int> count;
  for (const auto& r : records) ++count[{r.value("pipeline", ""), r.value("question_id", "")}];
  std::ostringstream problems;
  std::set<std::string> expected(dataset_ids.begin(), dataset_ids.end());
  for (const auto& p : pipelines) {
    std::vector<std::string> missing, twice;
    for (const auto& id : dataset_ids) {
      int n = count[{p, id}];
      if (n == 0) missing.push_back(id);
      if (n > 1) twice.push_back(id);
    }
    if (!missing.empty()) problems << "\n  pipeline " << p << ": " << missing.size() << " question(s) missing: " << list_ids(missing);
    if (!twice.empty()) problems << "\n  pipeline " << p << ": " << twice.size() << " question(s) answered more than once: " << list_ids(twice);
  }
  std::vector<std::string> strangers;
  for (const auto& [key, n] : count) {
    if (!expected.count(key.second) || std::find(pipelines.begin(), pipelines.end(), key.first) == pipelines.end()) {
      strangers.push_back(key.first + "/" + key.second);
    }
  }
  if (!strangers.empty()) problems << "\n  " << strangers.size() << " record(s) not of this job: " << list_ids(strangers);
  if (!problems.str().empty()) {
    std::string msg = "merge: the shards do not cover the job exactly once";
    if (!absent.empty()) msg += " (shard(s) " + list_ids(absent) + " of " + std::to_string(n_shards) + " not given)";
    throw InputError(msg + ":" + problems.str());
  }

  // Merged output: records in dataset order, pipelines in job order.
  std::string out = args.out;
  if (out.empty()) out = (fs::path(dirs.front()).parent_path() / "merged").string();
  fs::create_directories(out);
  std::map<std::string, size_t> order;
  for (size_t i = 0; i < dataset_ids.size(); ++i) order[dataset_ids[i]] = i;
  std::map<std::string, size_t> porder;
  for (size_t i = 0; i < pipelines.size(); ++i) porder[pipelines[i]] = i;
  std::sort(records.begin(), records.end(), [&](const json& a, const json& b) {
    size_t ia = order[a.value("question_id", "")], ib = order[b.value("question_id", "")];
    if (ia != ib) return ia < ib;
    return porder[a.value("pipeline", "")] < porder[b.value("pipeline", "")];
  });
  std::string merged_path = (fs::path(out) / "predictions.jsonl").string();
  fs::remove(merged_path);
  {
    eval::JsonlAppender writer(merged_path, /*sync=*/false);
    for (const auto& r : records) writer.append(r);
  }
  json job = first;
  job["shard"] = {{"index", 0}, {"count", 1}};
  job["merged_from"] = dirs;
  job["assigned_ids"] = dataset_ids;
  write_report((fs::path(out) / "job.json").string(), job);
  // The shards' judge verdicts serve the merged summary (no question is judged twice).
  std::string judge_path = (fs::path(out) / "judge.jsonl").string();
  if (!fs::exists(judge_path)) {
    eval::JsonlAppender verdicts(judge_path, /*sync=*/false);
    for (const auto& dir : dirs) {
      for (const auto& v : eval::read_jsonl((fs::path(dir) / "judge.jsonl").string(), false).records) verdicts.append(v);
    }
  }
  config::JobConfig config = config::load_job_string(first["config"].get<std::string>(), dirs.front() + "/job.json");
  json preflight = json::object();
  if (fs::exists(fs::path(dirs.front()) / "preflight.json")) {
    preflight = read_json_file((fs::path(dirs.front()) / "preflight.json").string());
  }
  std::string md = batch::write_summary(config, pipelines, records, preflight, out);
  std::cout << md << std::flush;
  std::fprintf(stderr, "batch merge: %zu shard(s), %zu records -> %s\n", dirs.size(), records.size(), merged_path.c_str());
  return kExitOk;
}

}  // namespace mustdrop::app
