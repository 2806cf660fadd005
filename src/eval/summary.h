// The summary of a batch job from its prediction records: accuracy per scorer with a bootstrap
// 95% interval, per question type, the judge's verdicts, vision tokens, FLOPs, latency, errors,
// and how each pipeline's answers differ from a reference pipeline's.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/job_config.h"

namespace mustdrop::eval {

// A judge's verdict on one prediction.
struct JudgedItem {
  bool yes = false;
  int score = 0;
};

struct SummaryInput {
  std::vector<std::string> pipelines;  // in job order
  std::vector<std::string> scorers;    // exact | contains
  config::DatasetConfig dataset;       // for the type names
  std::string reference = "none";      // the pipeline others are compared with (when present)
  // (pipeline, question id) -> verdict; judge_meta describes the judge ({} = no judge).
  std::map<std::pair<std::string, std::string>, JudgedItem> verdicts;
  int64_t n_judge_failures = 0;
  nlohmann::json judge_meta = nlohmann::json::object();
  nlohmann::json preflight = nlohmann::json::object();
};

// Scores `records` (predictions.jsonl lines). Errors are counted per status, never scored;
// records without a gold answer are counted as unscored.
nlohmann::json summarize(const std::vector<nlohmann::json>& records, const SummaryInput& input);
// The summary as a markdown report (tables per pipeline, per type, against the reference).
std::string summary_markdown(const nlohmann::json& summary);

}  // namespace mustdrop::eval
