#include "eval/summary.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <sstream>

#include "eval/dataset.h"
#include "eval/score.h"

namespace mustdrop::eval {

using nlohmann::json;

namespace {

bool score_with(const std::string& scorer, const std::string& prediction, const std::string& gold) {
  return scorer == "exact" ? score_exact(prediction, gold) : score_contains(prediction, gold);
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / static_cast<double>(v.size());
}

// The nearest-rank percentile.
double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  return v[std::min(v.size(), std::max<size_t>(rank, 1)) - 1];
}

json accuracy_json(const std::vector<double>& hits) {
  Interval ci = bootstrap_ci(hits);
  return {{"accuracy", mean_of(hits)}, {"ci95", {ci.lo, ci.hi}}, {"n", hits.size()}};
}

std::string pct(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", 100 * v);
  return buf;
}

std::string num(double v, const char* f = "%.1f") {
  char buf[48];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

json summarize(const std::vector<json>& records, const SummaryInput& in) {
  // Per pipeline: the ok records with a gold answer, keyed by question id.
  std::map<std::string, std::map<std::string, const json*>> ok_by_pipeline;
  json out_pipelines = json::array();
  for (const auto& name : in.pipelines) {
    int64_t n_items = 0, n_ok = 0, n_unscored = 0;
    std::map<std::string, int64_t> errors;
    std::map<std::string, std::vector<double>> hits;                       // scorer -> 0/1 per question
    std::map<std::string, std::map<std::string, std::vector<double>>> by_type;  // type -> scorer -> hits
    std::vector<double> to_llm, layer_avg, latency, flops, flops_unpruned, judge_yes, judge_score;
    for (const auto& r : records) {
      if (r.value("pipeline", "") != name) continue;
      ++n_items;
      std::string status = r.value("status", "");
      if (status != "ok") {
        ++errors[status];
        continue;
      }
      ++n_ok;
      const json& vt = r.at("vision_tokens");
      to_llm.push_back(vt.value("to_llm", 0.0));
      layer_avg.push_back(vt.value("layer_avg", 0.0));
      latency.push_back(r.at("ms").value("answer", 0.0));
      flops.push_back(r.at("flops").value("total", 0.0));
      flops_unpruned.push_back(r.at("flops").value("unpruned", 0.0));
      if (!r.contains("answer") || r["answer"].is_null()) {
        ++n_unscored;
        continue;
      }
      const std::string qid = r.value("question_id", "");
      ok_by_pipeline[name][qid] = &r;
      const std::string pred = r.value("prediction", ""), gold = r["answer"].get<std::string>();
      std::string type = type_label(in.dataset, r.value("type", ""));
      for (const auto& s : in.scorers) {
        double hit = score_with(s, pred, gold) ? 1.0 : 0.0;
        hits[s].push_back(hit);
        if (!type.empty()) by_type[type][s].push_back(hit);
      }
      auto v = in.verdicts.find({name, qid});
      if (v != in.verdicts.end()) {
        judge_yes.push_back(v->second.yes ? 1.0 : 0.0);
        judge_score.push_back(v->second.score);
      }
    }
    json p{{"name", name}, {"n_items", n_items}, {"n_ok", n_ok}, {"n_errors", n_items - n_ok},
           {"errors", errors}, {"n_unscored", n_unscored}};
    json scorers = json::object();
    for (const auto& s : in.scorers) scorers[s] = accuracy_json(hits[s]);
    p["scorers"] = scorers;
    json types = json::object();
    for (const auto& [type, per] : by_type) {
      json t = json::object();
      for (const auto& [s, h] : per) t[s] = {{"accuracy", mean_of(h)}, {"n", h.size()}};
      types[type] = t;
    }
    p["per_type"] = types;
    if (!in.judge_meta.empty()) {
      Interval ci = bootstrap_ci(judge_yes);
      p["judge"] = {{"accuracy", mean_of(judge_yes)}, {"ci95", {ci.lo, ci.hi}}, {"mean_score", mean_of(judge_score)},
                    {"n", judge_yes.size()}};
    }
    double fu = 0, ft = 0;
    for (size_t i = 0; i < flops.size(); ++i) ft += flops[i], fu += flops_unpruned[i];
    p["vision_tokens_to_llm_mean"] = mean_of(to_llm);
    p["vision_tokens_layer_avg_mean"] = mean_of(layer_avg);
    p["flops_ratio_vs_none"] = fu > 0 ? ft / fu : 0.0;
    p["latency_ms"] = {{"mean", mean_of(latency)}, {"p95", percentile(latency, 0.95)}};
    out_pipelines.push_back(p);
  }

  // Against the reference pipeline: answers that changed, and correctness that flipped (by the
  // first scorer), over the questions both answered.
  json comparisons = json::array();
  auto ref = ok_by_pipeline.find(in.reference);
  if (ref != ok_by_pipeline.end()) {
    const std::string scorer = in.scorers.empty() ? "contains" : in.scorers.front();
    for (const auto& name : in.pipelines) {
      if (name == in.reference) continue;
      int64_t n = 0, changed = 0, lost = 0, gained = 0;
      for (const auto& [qid, r] : ok_by_pipeline[name]) {
        auto other = ref->second.find(qid);
        if (other == ref->second.end()) continue;
        ++n;
        const std::string a = r->value("prediction", ""), b = other->second->value("prediction", "");
        if (a != b) ++changed;
        const std::string gold = (*r)["answer"].get<std::string>();
        bool hit = score_with(scorer, a, gold), ref_hit = score_with(scorer, b, gold);
        lost += ref_hit && !hit;
        gained += hit && !ref_hit;
      }
      comparisons.push_back({{"pipeline", name}, {"reference", in.reference}, {"scorer", scorer}, {"n_compared", n},
                             {"n_changed", changed}, {"n_right_to_wrong", lost}, {"n_wrong_to_right", gained}});
    }
  }
  json judge = in.judge_meta;
  if (!judge.empty()) judge["n_failures"] = in.n_judge_failures;
  return {{"scorers", in.scorers}, {"pipelines", out_pipelines}, {"against_reference", comparisons}, {"judge", judge},
          {"preflight", in.preflight}};
}

std::string summary_markdown(const json& s) {
  std::ostringstream md;
  md << "# Batch summary\n\n";
  const json& pf = s.value("preflight", json::object());
  if (!pf.empty()) {
    md << "Preflight: " << pf.value("n_questions", 0) << " questions over " << pf.value("n_videos", 0)
       << " videos; " << pf["missing_videos"].size() << " missing and " << pf["unreadable_videos"].size()
       << " unreadable videos; " << pf["duplicate_question_ids"].size() << " duplicate question ids, "
       << pf["unanswered_ids"].size() << " questions without an answer, " << pf["orphan_answer_ids"].size()
       << " answers without a question.\n\n";
  }
  const std::vector<std::string> scorers = s.value("scorers", std::vector<std::string>{});
  bool judged = !s.value("judge", json::object()).empty();
  md << "| pipeline | answered | errors |";
  for (const auto& sc : scorers) md << " " << sc << " % (95% CI) |";
  if (judged) md << " judge % | judge score |";
  md << " vision tokens to LLM | layer-avg | FLOPs vs none | latency mean ms | p95 ms |\n|---|---:|---:|";
  for (size_t i = 0; i < scorers.size(); ++i) md << "---:|";
  if (judged) md << "---:|---:|";
  md << "---:|---:|---:|---:|---:|\n";
  for (const auto& p : s["pipelines"]) {
    md << "| " << p["name"].get<std::string>() << " | " << p["n_ok"] << " | " << p["n_errors"] << " |";
    for (const auto& sc : scorers) {
      const json& a = p["scorers"][sc];
      md << " " << pct(a["accuracy"]) << " (" << pct(a["ci95"][0]) << "–" << pct(a["ci95"][1]) << ") |";
    }
    if (judged) md << " " << pct(p["judge"]["accuracy"]) << " | " << num(p["judge"]["mean_score"], "%.2f") << " |";
    md << " " << num(p["vision_tokens_to_llm_mean"]) << " | " << num(p["vision_tokens_layer_avg_mean"]) << " | "
       << num(p["flops_ratio_vs_none"], "%.3f") << " | " << num(p["latency_ms"]["mean"], "%.0f") << " | "
       << num(p["latency_ms"]["p95"], "%.0f") << " |\n";
  }
  for (const auto& p : s["pipelines"]) {
    if (!p["errors"].empty()) {
      md << "\nErrors of " << p["name"].get<std::string>() << " (not scored):";
      for (const auto& [status, n] : p["errors"].items()) md << " " << status << " " << n.get<int64_t>() << ";";
      md << "\n";
    }
  }
  std::set<std::string> types;
  for (const auto& p : s["pipelines"]) {
    for (const auto& [t, v] : p["per_type"].items()) types.insert(t);
  }
  if (!types.empty() && !scorers.empty()) {
    md << "\n## Accuracy per question type (" << scorers.front() << ", %)\n\n| type |";
    for (const auto& p : s["pipelines"]) md << " " << p["name"].get<std::string>() << " |";
    md << "\n|---|";
    for (size_t i = 0; i < s["pipelines"].size(); ++i) md << "---:|";
    md << "\n";
    for (const auto& t : types) {
      md << "| " << t << " |";
      for (const auto& p : s["pipelines"]) {
        const json& per = p["per_type"];
        if (per.contains(t)) {
          md << " " << pct(per[t][scorers.front()]["accuracy"]) << " (n=" << per[t][scorers.front()]["n"] << ") |";
        } else {
          md << " – |";
        }
      }
      md << "\n";
    }
  }
  if (!s["against_reference"].empty()) {
    md << "\n## Against " << s["against_reference"][0]["reference"].get<std::string>() << " (same questions, "
       << s["against_reference"][0]["scorer"].get<std::string>()
       << ")\n\n| pipeline | compared | answer changed | right → wrong | wrong → right |\n|---|---:|---:|---:|---:|\n";
    for (const auto& c : s["against_reference"]) {
      md << "| " << c["pipeline"].get<std::string>() << " | " << c["n_compared"] << " | " << c["n_changed"] << " | "
         << c["n_right_to_wrong"] << " | " << c["n_wrong_to_right"] << " |\n";
    }
  }
  if (judged) {
    const json& j = s["judge"];
    md << "\nJudge: " << j.value("model", "") << " at " << j.value("endpoint", "") << ", temperature "
       << j.value("temperature", 0.0) << ", prompt " << j.value("prompt_hash", "") << "; "
       << j.value("n_failures", 0) << " verdict(s) failed (not scored).\n";
  }
  return md.str();
}

}  // namespace mustdrop::eval
