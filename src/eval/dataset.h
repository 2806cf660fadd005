// A video-QA dataset read from its annotation files (Video-LLaVA's <split>_q.json + <split>_a.json,
// or one JSONL file), with answers joined to questions by question_id, never by position, and
// every anomaly of the join (duplicates, unanswered questions, orphan answers) reported.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/job_config.h"

namespace mustdrop::eval {

// One question of the dataset. Ids, video names, answers and types given as JSON integers are
// kept as their decimal text.
struct QaItem {
  std::string question_id;  // the id as text
  std::string video_name;   // as in the annotations (resolve_video finds the file)
  std::string question;
  std::string answer;       // gold answer; "" when has_answer is false
  bool has_answer = false;
  std::string type;         // question type; "" when none
  int64_t index = 0;        // position among the questions file's records (0-based)
};

// The questions with their answers, and what did not join.
struct JoinReport {
  std::vector<QaItem> items;                        // questions with a unique id, in questions-file order
  std::vector<std::string> duplicate_question_ids;  // ids on more than one question (every copy left out of items)
  std::vector<std::string> duplicate_answer_ids;    // ids on more than one answer (their question stays, unanswered)
  std::vector<std::string> unanswered_ids;          // questions with no answer at all (not the duplicate-answer ones)
  std::vector<std::string> orphan_answer_ids;       // answers whose id is on no question
  int64_t n_questions_read = 0;                     // question records in the files
  int64_t n_answers_read = 0;                       // answer records in the files
};

// Reads the dataset `config` describes and joins answers to questions by question_id. Each id
// list holds an id once, in the order of its first record. ConfigError when split, dir or a
// required field name is empty; InputError naming the file for a missing, unreadable or
// malformed file (file:line:col for bad JSON, file:line for a bad JSONL line, the element index
// for a wrong-shaped array element), and the field that is missing or of the wrong type.
JoinReport read_dataset(const config::DatasetConfig& config);

// The video file for `video_name`: name_template with {video_name} replaced, under video_dir,
// each extension tried in order (a missing leading dot added); "" when none is a regular file.
// `tried`, if given, is set to the paths tried. ConfigError when video_dir or extensions is empty
// or the template lacks {video_name}.
std::string resolve_video(const config::DatasetConfig& config, const std::string& video_name,
                          std::vector<std::string>* tried = nullptr);

// The type's display name: type_names[i] when `type` is the decimal text of an integer i in range,
// else `type` itself.
std::string type_label(const config::DatasetConfig& config, const std::string& type);

}  // namespace mustdrop::eval
