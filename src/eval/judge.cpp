// LLM judge, following the Video-ChatGPT quantitative evaluation
// (mbzuai-oryx/Video-ChatGPT, quantitative_evaluation/evaluate_activitynet_qa.py): a system
// message describing the task (compare meaning, accept synonyms and paraphrases) and a user
// message with the question, the correct answer and the predicted answer that asks for a Python
// dict string {'pred': 'yes'|'no', 'score': <integer 0..5>}. The wording below is our own.
// Deviations: the reference's example reply shows a fractional score (4.8) although it asks for
// an integer; ours shows an integer. A fractional score that still arrives is truncated, as the
// reference's int() does when it averages. The reference accepts any 'pred' containing "yes" or
// "no"; we accept exactly yes/no (any case, surrounding spaces ignored).
#include "eval/judge.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "eval/jsonl.h"

namespace mustdrop::eval {
namespace {

const char kSystemPrompt[] =
    "You assess answers to questions about videos. Compare the predicted answer with the correct "
    "answer and decide whether they mean the same thing.\n"
    "## Instructions:\n"
    "- Judge by meaning, not by exact wording.\n"
    "- Synonyms and paraphrases count as matching.\n"
    "- Rate how correct the predicted answer is with respect to the correct answer.";

const char kUserTemplate[] =
    "Assess this question-answer pair about a video:\n\n"
    "Question: {question}\n"
    "Correct Answer: {answer}\n"
    "Predicted Answer: {prediction}\n\n"
    "Give a yes/no verdict and an integer score from 0 to 5, where 5 means the predicted answer "
    "matches the correct answer fully in meaning. Write your reply as a Python dictionary string "
    "with the keys 'pred' and 'score': 'pred' is the string 'yes' or 'no', and 'score' is an "
    "INTEGER, not a string. Reply with that dictionary only, with no explanation or other text. "
    "Example of a reply: {'pred': 'no', 'score': 2}.";

// The trivial pair check() sends.
const char kCheckQuestion[] = "What color is the sky on a clear day?";
const char kCheckAnswer[] = "blue";

// kUserTemplate with its three placeholders filled in one pass (filled text is not re-scanned).
std::string fill_user_prompt(const std::string& question, const std::string& gold, const std::string& prediction) {
  const std::string tpl = kUserTemplate;
  std::string out;
  size_t pos = 0;
  while (pos < tpl.size()) {
    const size_t open = tpl.find('{', pos);
    if (open == std::string::npos) break;
    const size_t close = tpl.find('}', open);
    const std::string name = close == std::string::npos ? "" : tpl.substr(open + 1, close - open - 1);
    const std::string* value = name == "question" ? &question : name == "answer" ? &gold
                               : name == "prediction"                          ? &prediction
                                                                               : nullptr;
    if (value == nullptr) {  // a literal brace (the example dict)
      out += tpl.substr(pos, open + 1 - pos);
      pos = open + 1;
      continue;
    }
    out += tpl.substr(pos, open - pos);
    out += *value;
    pos = close + 1;
  }
  out += tpl.substr(pos);
  return out;
}

std::string excerpt(const std::string& text, size_t max_chars = 200) {
  std::string out = text.substr(0, max_chars);
  std::replace(out.begin(), out.end(), '\n', ' ');
  std::replace(out.begin(), out.end(), '\r', ' ');
  if (text.size() > max_chars) out += "...";
  return out;
}

std::string trim_lower(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  std::string out = s.substr(b, e - b + 1);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// The value of key `name` inside a dict body: quoted key ('name' or "name"), ':', then a quoted
// string or a bare token up to ',' or the end. False when the key is absent.
bool find_dict_value(const std::string& body, const std::string& name, std::string* value) {
  for (size_t q = body.find_first_of("'\""); q != std::string::npos; q = body.find_first_of("'\"", q + 1)) {
    const char quote = body[q];
    if (body.compare(q + 1, name.size(), name) != 0 || q + 1 + name.size() >= body.size() ||
        body[q + 1 + name.size()] != quote) {
      continue;
    }
    size_t p = body.find_first_not_of(" \t\r\n", q + name.size() + 2);
    if (p == std::string::npos || body[p] != ':') continue;
    p = body.find_first_not_of(" \t\r\n", p + 1);
    if (p == std::string::npos) return false;
    if (body[p] == '\'' || body[p] == '"') {
      const size_t end = body.find(body[p], p + 1);
      if (end == std::string::npos) return false;
      *value = body.substr(p + 1, end - p - 1);
    } else {
      const size_t end = body.find(',', p);
      *value = body.substr(p, end == std::string::npos ? std::string::npos : end - p);
    }
    return true;
  }
  return false;
}

// The text of choices[0].message.content in an OpenAI chat completion; false when absent.
bool completion_text(const std::string& body, std::string* text) {
  const nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return false;
  auto choices = j.find("choices");
  if (choices == j.end() || !choices->is_array() || choices->empty()) return false;
  const nlohmann::json& first = (*choices)[0];
  if (!first.is_object() || !first.contains("message") || !first["message"].is_object()) return false;
  const nlohmann::json& message = first["message"];
  if (!message.contains("content") || !message["content"].is_string()) return false;
  *text = message["content"].get<std::string>();
  return true;
}

}  // namespace

bool parse_judge_reply(const std::string& text, bool* yes, int* score) {
  const size_t open = text.find('{');
  if (open == std::string::npos) return false;
  const size_t close = text.find('}', open);
  if (close == std::string::npos) return false;
  const std::string body = text.substr(open + 1, close - open - 1);
  std::string pred_text, score_text;
  if (!find_dict_value(body, "pred", &pred_text) || !find_dict_value(body, "score", &score_text)) return false;
  const std::string pred = trim_lower(pred_text);
  if (pred != "yes" && pred != "no") return false;
  const std::string number = trim_lower(score_text);
  if (number.empty()) return false;
  char* end = nullptr;
  const double value = std::strtod(number.c_str(), &end);
  if (end != number.c_str() + number.size() || !(value >= 0 && value <= 5)) return false;
  *yes = pred == "yes";
  *score = static_cast<int>(value);
  return true;
}

Judge::Judge(JudgeSettings settings, JudgeTransport transport, std::string cache_path)
    : settings_(std::move(settings)), transport_(std::move(transport)), cache_path_(std::move(cache_path)) {
  prompt_hash_ = stable_hash_hex(std::string(kSystemPrompt) + "\n" + kUserTemplate);
  if (!transport_) throw InternalError("Judge: no transport given");
  if (cache_path_.empty()) return;
  const JsonlContents contents = read_jsonl(cache_path_, /*repair=*/true);
  if (contents.n_torn_bytes > 0) {
    MD_LOG_WARN("eval", cache_path_ << ": cut off a torn last line of " << contents.n_torn_bytes << " bytes");
  }
  for (size_t i = 0; i < contents.records.size(); ++i) {
    const nlohmann::json& r = contents.records[i];
    Verdict v;
    try {
      v.yes = r.at("yes").get<bool>();
      v.score = r.at("score").get<int>();
      v.raw = r.at("raw").get<std::string>();
      v.judge_model = r.at("judge_model").get<std::string>();
      v.endpoint = r.at("endpoint").get<std::string>();
      v.prompt_hash = r.at("prompt_hash").get<std::string>();
      v.temperature = r.at("temperature").get<double>();
      v.attempts = r.at("attempts").get<int>();
      v.cached = true;
      const std::string key = nlohmann::json::array({r.at("key"), r.at("question"), r.at("gold"),
                                                     r.at("prediction"), v.judge_model, v.endpoint,
                                                     v.prompt_hash, v.temperature})
                                  .dump();
      cache_[key] = std::move(v);
    } catch (const nlohmann::json::exception& e) {
      throw InputError(cache_path_ + ":" + std::to_string(i + 1) + ": not a judge verdict record: " + e.what());
    }
  }
  appender_ = std::make_unique<JsonlAppender>(cache_path_);
  MD_LOG_INFO("eval", "judge cache " << cache_path_ << ": " << cache_.size() << " verdicts");
}

Judge::~Judge() = default;

std::string Judge::cache_key(const std::string& key, const std::string& question, const std::string& gold,
                             const std::string& prediction) const {
  return nlohmann::json::array({key, question, gold, prediction, settings_.model, settings_.endpoint,
                                prompt_hash_, settings_.temperature})
      .dump();
}

Verdict Judge::ask(const std::string& question, const std::string& gold, const std::string& prediction) {
  std::string url = settings_.endpoint;
  while (!url.empty() && url.back() == '/') url.pop_back();
  url += "/chat/completions";
  const nlohmann::json request = {
      {"model", settings_.model},
      {"temperature", settings_.temperature},
      {"messages",
       nlohmann::json::array({{{"role", "system"}, {"content", kSystemPrompt}},
                              {{"role", "user"}, {"content", fill_user_prompt(question, gold, prediction)}}})}};
  const std::string body = request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);

  const int max_attempts = 1 + std::max(0, settings_.max_retries);
  std::string reason;
  for (int attempt = 1; attempt <= max_attempts; ++attempt) {
    if (attempt > 1) {
      const int64_t delay_ms = static_cast<int64_t>(std::max(0, settings_.retry_delay_ms)) << std::min(attempt - 2, 20);
      MD_LOG_WARN("eval", "judge " << settings_.endpoint << ": attempt " << attempt - 1 << " failed (" << reason
                                   << "); retrying in " << delay_ms << " ms");
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    }
    ++n_requests_;
    const HttpReply reply = transport_(url, body, settings_.api_key, settings_.timeout_sec);
    if (reply.status == 0) {
      reason = "network error: " + reply.error;
      continue;
    }
    if (reply.status < 200 || reply.status >= 300) {
      reason = "HTTP " + std::to_string(reply.status) + ": " + excerpt(reply.body);
      if (reply.status == 429 || reply.status >= 500) continue;
      throw InputError("judge at " + url + ": " + reason + " (not retried)");
    }
    Verdict v;
    if (!completion_text(reply.body, &v.raw)) {
      reason = "not a chat completion: " + excerpt(reply.body);
      continue;
    }
    if (!parse_judge_reply(v.raw, &v.yes, &v.score)) {
      reason = "unparsable verdict: " + excerpt(v.raw);
      continue;
    }
    v.judge_model = settings_.model;
    v.endpoint = settings_.endpoint;
    v.prompt_hash = prompt_hash_;
    v.temperature = settings_.temperature;
    v.attempts = attempt;
    return v;
  }
  throw InputError("judge at " + url + ": " + reason + " (after " + std::to_string(max_attempts) + " attempts)");
}

void Judge::check() {
  const Verdict v = ask(kCheckQuestion, kCheckAnswer, kCheckAnswer);
  MD_LOG_INFO("eval", "judge " << settings_.endpoint << " (" << settings_.model << ") answers: " << excerpt(v.raw));
}

Verdict Judge::judge(const std::string& key, const std::string& question, const std::string& gold,
                     const std::string& prediction) {
  const std::string ck = cache_key(key, question, gold, prediction);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = cache_.find(ck);
    if (it != cache_.end()) return it->second;
  }
  // Asked without the lock so that threads judge in parallel; two threads asking for the same
  // prediction at once both ask, and the cache keeps the later answer.
  Verdict v = ask(question, gold, prediction);
  if (appender_) {
    appender_->append({{"key", key},
                       {"question", question},
                       {"gold", gold},
                       {"prediction", prediction},
                       {"yes", v.yes},
                       {"score", v.score},
                       {"raw", v.raw},
                       {"judge_model", v.judge_model},
                       {"endpoint", v.endpoint},
                       {"prompt_hash", v.prompt_hash},
                       {"temperature", v.temperature},
                       {"attempts", v.attempts},
                       {"cached", false}});
  }
  Verdict stored = v;
  stored.cached = true;
  std::lock_guard<std::mutex> lock(mu_);
  cache_[ck] = std::move(stored);
  return v;
}

}  // namespace mustdrop::eval
