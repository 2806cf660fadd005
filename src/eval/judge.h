// LLM-as-judge scoring in the Video-ChatGPT protocol: an OpenAI-compatible chat model is shown
// the question, the correct answer and the predicted answer and replies with a dict
// {'pred': 'yes'|'no', 'score': 0..5}. Verdicts are cached in a crash-safe JSONL file. The HTTP
// transport is passed in, so this module does not depend on any HTTP library.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace mustdrop::eval {

class JsonlAppender;

struct JudgeSettings {
  std::string endpoint;     // base URL ending in /v1; requests go to endpoint + "/chat/completions"
  std::string model;        // judge model name sent in the request
  std::string api_key;      // sent as a bearer token when non-empty
  double temperature = 0;   // sampling temperature of the judge
  int max_retries = 3;      // retries after the first attempt (network, 429, 5xx, unparsable)
  int retry_delay_ms = 1000;  // delay before the first retry; doubles for each further one
  double timeout_sec = 60;  // per-request timeout handed to the transport
};

struct HttpReply {
  int status = 0;     // HTTP status; 0 = no response
  std::string body;   // response body
  std::string error;  // why there was no response
};

// Sends a JSON POST and returns the reply; must not throw for network failures.
using JudgeTransport = std::function<HttpReply(const std::string& url, const std::string& json_body,
                                               const std::string& bearer, double timeout_sec)>;

struct Verdict {
  bool yes = false;          // the judge's 'pred': the prediction matches the answer
  int score = 0;             // the judge's 'score', 0..5
  std::string raw;           // the judge's reply text
  std::string judge_model;   // JudgeSettings::model at judging time
  std::string endpoint;      // JudgeSettings::endpoint at judging time
  std::string prompt_hash;   // stable_hash_hex of the prompt template
  double temperature = 0;    // JudgeSettings::temperature at judging time
  int attempts = 0;          // requests it took (1 = first try)
  bool cached = false;       // true when read from the cache rather than asked now
};

// Parses a judge reply text: the first {...} in it must hold 'pred' (yes/no) and 'score' (a
// number in 0..5, truncated to an integer), keys and strings in single or double quotes.
// False when it does not.
bool parse_judge_reply(const std::string& text, bool* yes, int* score);

class Judge {
 public:
  // Reads `cache_path` (a JSONL file of verdicts; torn last line repaired; "" = no cache file)
  // and opens it for appending. InputError naming the file when it is damaged or unwritable.
  Judge(JudgeSettings settings, JudgeTransport transport, std::string cache_path);
  ~Judge();
  Judge(const Judge&) = delete;
  Judge& operator=(const Judge&) = delete;

  // Asks one trivial question (not cached). InputError naming the endpoint and the reason (HTTP
  // status and body excerpt, network error, unparsable reply) when the judge cannot answer.
  void check();
  // The verdict for one prediction, from the cache when this (key, question, gold, prediction,
  // model, endpoint, prompt hash, temperature) was judged before; else asked and appended to the
  // cache. Retries network errors, 429, 5xx and unparsable replies with doubling delay; other
  // 4xx fail at once. InputError naming the endpoint and the last reason. Thread-safe.
  Verdict judge(const std::string& key, const std::string& question, const std::string& gold,
                const std::string& prediction);

  // stable_hash_hex of the system message plus the user message template.
  const std::string& prompt_hash() const { return prompt_hash_; }
  // HTTP requests sent so far.
  int64_t n_requests() const { return n_requests_.load(); }

 private:
  // Asks the judge with retries; throws InputError on failure.
  Verdict ask(const std::string& question, const std::string& gold, const std::string& prediction);
  std::string cache_key(const std::string& key, const std::string& question, const std::string& gold,
                        const std::string& prediction) const;

  JudgeSettings settings_;
  JudgeTransport transport_;
  std::string cache_path_;
  std::string prompt_hash_;
  std::atomic<int64_t> n_requests_{0};
  std::mutex mu_;  // guards cache_
  std::unordered_map<std::string, Verdict> cache_;
  std::unique_ptr<JsonlAppender> appender_;
};

}  // namespace mustdrop::eval
