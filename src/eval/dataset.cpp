// Dataset readers (videollava, jsonl) and the join of answers to questions by question_id.
#include "eval/dataset.h"

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace mustdrop::eval {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

const char kPlaceholder[] = "{video_name}";

// An answer record of a videollava answers file.
struct AnswerRecord {
  std::string question_id;
  std::string answer;
  std::string type;
};

// How a field may be absent or null.
enum class Presence {
  kRequired,  // present and a string or an integer
  kNullable,  // present; null means "no value"
  kOptional,  // absent or null means "no value"
};

std::string json_kind(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null: return "null";
    case Json::value_t::object: return "an object";
    case Json::value_t::array: return "an array";
    case Json::value_t::string: return "a string";
    case Json::value_t::boolean: return "a boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned: return "an integer";
    case Json::value_t::number_float: return "a floating-point number";
    case Json::value_t::binary: return "binary data";
    case Json::value_t::discarded: return "nothing";
  }
  return "an unknown value";
}

std::string read_text(const std::string& path) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (!fs::exists(status)) {
    if (ec && ec != std::errc::no_such_file_or_directory) {
      throw InputError(path + ": cannot access (" + ec.message() + ")");
    }
    throw InputError(path + ": no such file");
  }
  if (fs::is_directory(status)) throw InputError(path + ": is a directory, expected a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open (" + std::strerror(errno) + ")");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw InputError(path + ": cannot read (" + std::strerror(errno) + ")");
  return text.str();
}

// nlohmann's message without its "[json.exception...] parse error at line l, column c: " prefix
// (the caller names the position itself).
std::string parse_message(const Json::parse_error& e) {
  std::string what = e.what();
  size_t start = what.find("parse error");
  if (start == std::string::npos) return what;
  size_t colon = what.find(": ", start);
  return colon == std::string::npos ? what : what.substr(colon + 2);
}

// Line and column (1-based) in `text` of the byte a parse error reports.
std::pair<size_t, size_t> line_col(const std::string& text, size_t byte) {
  const size_t pos = std::min(byte > 0 ? byte - 1 : 0, text.size());
  size_t line = 1, line_start = 0;
  for (size_t i = 0; i < pos; ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return {line, pos - line_start + 1};
}

// The text of `key` in `obj` into *out: a string as is, an integer as its decimal text. Returns
// false for "no value" as `presence` allows it; InputError naming `where` and the field otherwise.
bool field_text(const Json& obj, const std::string& key, Presence presence, const std::string& where,
                std::string* out) {
  auto it = obj.find(key);
  if (it == obj.end()) {
    if (presence == Presence::kOptional) return false;
    throw InputError(where + ": missing field \"" + key + "\"");
  }
  if (it->is_null() && presence != Presence::kRequired) return false;
  if (it->is_string()) {
    *out = it->get<std::string>();
  } else if (it->is_number_integer()) {
    *out = it->dump();
  } else {
    throw InputError(where + ": field \"" + key + "\" must be a string or an integer, found " + json_kind(*it));
  }
  return true;
}

// A whole-file JSON array (videollava).
Json read_json_array(const std::string& path) {
  const std::string text = read_text(path);
  Json root;
  try {
    root = Json::parse(text);
  } catch (const Json::parse_error& e) {
    const auto [line, col] = line_col(text, e.byte);
    throw InputError(path + ":" + std::to_string(line) + ":" + std::to_string(col) + ": invalid JSON: " +
                     parse_message(e));
  }
  if (!root.is_array()) throw InputError(path + ": expected a JSON array at the top level, found " + json_kind(root));
  return root;
}

std::string element_where(const std::string& path, size_t i) {
  return path + ": element " + std::to_string(i);
}

const Json& element_object(const Json& array, size_t i, const std::string& path) {
  const Json& e = array[i];
  if (!e.is_object()) throw InputError(element_where(path, i) + ": expected an object, found " + json_kind(e));
  return e;
}

std::vector<QaItem> read_videollava_questions(const std::string& path) {
  const Json array = read_json_array(path);
  std::vector<QaItem> out;
  out.reserve(array.size());
  for (size_t i = 0; i < array.size(); ++i) {
    const Json& e = element_object(array, i, path);
    const std::string where = element_where(path, i);
    QaItem q;
    field_text(e, "question_id", Presence::kRequired, where, &q.question_id);
    field_text(e, "video_name", Presence::kRequired, where, &q.video_name);
    field_text(e, "question", Presence::kRequired, where, &q.question);
    q.index = static_cast<int64_t>(i);
    out.push_back(std::move(q));
  }
  return out;
}

std::vector<AnswerRecord> read_videollava_answers(const std::string& path) {
  const Json array = read_json_array(path);
  std::vector<AnswerRecord> out;
  out.reserve(array.size());
  for (size_t i = 0; i < array.size(); ++i) {
    const Json& e = element_object(array, i, path);
    const std::string where = element_where(path, i);
    AnswerRecord a;
    field_text(e, "question_id", Presence::kRequired, where, &a.question_id);
    field_text(e, "answer", Presence::kRequired, where, &a.answer);
    field_text(e, "type", Presence::kOptional, where, &a.type);
    out.push_back(std::move(a));
  }
  return out;
}

// One record per non-blank line; answers and types inline (has_answer set from the line).
std::vector<QaItem> read_jsonl_questions(const std::string& path, const config::JsonlFields& fields,
                                         int64_t* n_answers) {
  const std::string text = read_text(path);
  std::vector<QaItem> out;
  size_t start = 0;
  for (int64_t line_no = 1; start < text.size(); ++line_no) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    start = end + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;

    const std::string where = path + ":" + std::to_string(line_no);
    Json record;
    try {
      record = Json::parse(line);
    } catch (const Json::parse_error& e) {
      throw InputError(where + ":" + std::to_string(line_col(line, e.byte).second) + ": invalid JSON: " +
                       parse_message(e));
    }
    if (!record.is_object()) throw InputError(where + ": expected a JSON object, found " + json_kind(record));
    QaItem q;
    field_text(record, fields.id, Presence::kRequired, where, &q.question_id);
    field_text(record, fields.video, Presence::kRequired, where, &q.video_name);
    field_text(record, fields.question, Presence::kRequired, where, &q.question);
    if (!fields.answer.empty()) q.has_answer = field_text(record, fields.answer, Presence::kNullable, where, &q.answer);
    if (!fields.type.empty()) field_text(record, fields.type, Presence::kOptional, where, &q.type);
    if (q.has_answer) ++*n_answers;
    q.index = static_cast<int64_t>(out.size());
    out.push_back(std::move(q));
  }
  return out;
}

// The ids seen more than once, in the order of their first record.
template <class Records>
std::vector<std::string> repeated_ids(const Records& records, std::unordered_map<std::string, int>* counts) {
  std::vector<std::string> repeated;
  for (const auto& r : records) {
    if (++(*counts)[r.question_id] == 2) repeated.push_back(r.question_id);
  }
  return repeated;
}

// Fills `report` from the question records and, for videollava, the separate answer records
// (nullptr: the questions carry their answers inline).
void join(std::vector<QaItem> questions, const std::vector<AnswerRecord>* answers, JoinReport& report) {
  std::unordered_map<std::string, int> question_counts;
  report.duplicate_question_ids = repeated_ids(questions, &question_counts);

  std::unordered_map<std::string, int> answer_counts;
  std::unordered_map<std::string, const AnswerRecord*> answer_of;
  if (answers) {
    report.duplicate_answer_ids = repeated_ids(*answers, &answer_counts);
    std::unordered_set<std::string> orphans_seen;
    for (const AnswerRecord& a : *answers) {
      if (answer_counts[a.question_id] == 1) answer_of[a.question_id] = &a;
      if (!question_counts.count(a.question_id) && orphans_seen.insert(a.question_id).second) {
        report.orphan_answer_ids.push_back(a.question_id);
      }
    }
  }

  for (QaItem& q : questions) {
    if (question_counts[q.question_id] > 1) continue;
    if (answers) {
      auto it = answer_of.find(q.question_id);
      if (it != answer_of.end()) {
        q.answer = it->second->answer;
        q.type = it->second->type;
        q.has_answer = true;
      } else if (!answer_counts.count(q.question_id)) {
        report.unanswered_ids.push_back(q.question_id);
      }
    } else if (!q.has_answer) {
      report.unanswered_ids.push_back(q.question_id);
    }
    report.items.push_back(std::move(q));
  }
}

void require_name(const std::string& value, const std::string& key) {
  if (value.empty()) throw ConfigError("dataset." + key + " is empty: name it explicitly");
}

}  // namespace

JoinReport read_dataset(const config::DatasetConfig& config) {
  if (config.split.empty()) throw ConfigError("dataset.split is empty: name the split explicitly (e.g. test)");
  if (config.dir.empty()) throw ConfigError("dataset.dir is empty: name the annotation files' directory");
  const fs::path dir(config.dir);
  JoinReport report;
  if (config.format == "videollava") {
    std::vector<QaItem> questions = read_videollava_questions((dir / (config.split + "_q.json")).string());
    std::vector<AnswerRecord> answers = read_videollava_answers((dir / (config.split + "_a.json")).string());
    report.n_questions_read = static_cast<int64_t>(questions.size());
    report.n_answers_read = static_cast<int64_t>(answers.size());
    join(std::move(questions), &answers, report);
  } else if (config.format == "jsonl") {
    require_name(config.fields.id, "fields.id");
    require_name(config.fields.video, "fields.video");
    require_name(config.fields.question, "fields.question");
    std::vector<QaItem> questions =
        read_jsonl_questions((dir / (config.split + ".jsonl")).string(), config.fields, &report.n_answers_read);
    report.n_questions_read = static_cast<int64_t>(questions.size());
    join(std::move(questions), nullptr, report);
  } else {
    throw ConfigError("dataset.format \"" + config.format + "\" is unknown: expected videollava or jsonl");
  }
  return report;
}

std::string resolve_video(const config::DatasetConfig& config, const std::string& video_name,
                          std::vector<std::string>* tried) {
  if (config.video_dir.empty()) throw ConfigError("dataset.video_dir is empty: name the videos' directory");
  if (config.extensions.empty()) throw ConfigError("dataset.extensions is empty: list at least one (e.g. .mp4)");
  const std::string placeholder = kPlaceholder;
  if (config.name_template.find(placeholder) == std::string::npos) {
    throw ConfigError("dataset.name_template \"" + config.name_template + "\" lacks " + placeholder);
  }
  std::string stem;
  size_t from = 0;
  for (size_t at; (at = config.name_template.find(placeholder, from)) != std::string::npos;) {
    stem += config.name_template.substr(from, at - from) + video_name;
    from = at + placeholder.size();
  }
  stem += config.name_template.substr(from);

  if (tried) tried->clear();
  for (const std::string& ext : config.extensions) {
    const std::string suffix = ext.empty() || ext[0] == '.' ? ext : "." + ext;
    const std::string path = (fs::path(config.video_dir) / (stem + suffix)).string();
    if (tried) tried->push_back(path);
    std::error_code ec;
    if (fs::is_regular_file(path, ec)) return path;
  }
  return "";
}

std::string type_label(const config::DatasetConfig& config, const std::string& type) {
  // Only the canonical decimal text of a non-negative integer ("3", not "03" or "+3").
  if (type.empty() || type.size() > 9 || type.find_first_not_of("0123456789") != std::string::npos) return type;
  if (type.size() > 1 && type[0] == '0') return type;
  const size_t i = std::stoul(type);
  return i < config.type_names.size() ? config.type_names[i] : type;
}

}  // namespace mustdrop::eval
