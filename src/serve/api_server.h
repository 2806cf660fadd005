// An OpenAI-compatible local HTTP server (chat completions with SSE streaming, models, sources,
// Prometheus metrics, health). It knows nothing about models: the embedding program supplies
// the handlers. cpp-httplib stays inside api_server.cpp.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mustdrop::serve {

struct ServerOptions {
  std::string bind = "127.0.0.1";    // address to listen on
  int port = 0;                      // 0 = any free port (port() tells which)
  int64_t max_body_bytes = 1 << 20;  // larger request bodies get 413
  std::string bearer_token;          // "" = open; else /v1/* and /metrics need "Authorization: Bearer <token>" (401 otherwise); /healthz stays open
  int threads = 8;                   // connection threads; each open stream holds one
};

// One chat completion request, reduced to what an answer needs.
struct ChatRequest {
  std::string source_id;     // the request's "model"; "" when absent
  std::string question;      // the text of the last message with role "user"
  std::string system;        // the text of the system/developer messages, joined by '\n'; "" if none
  int max_tokens = 0;        // "max_tokens" or "max_completion_tokens"; 0 = not given
  double temperature = -1;   // < 0 = not given
  bool stream = false;       // answer as server-sent events
  bool include_usage = false;  // stream_options.include_usage
};

struct ChatUsage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

// The answer's side of one chat completion, implemented by the server and shared with the
// answer, which may finish after the client left. Thread-safe; the first done()/fail() ends
// it, and anything after that, or after cancellation, is ignored.
class ChatSink {
 public:
  virtual ~ChatSink() = default;
  // One piece of the answer's text (may split a UTF-8 character; the server reassembles it).
  virtual void text(const std::string& piece) = 0;
  // The answer finished; finish_reason is "stop" or "length"; `extra` goes under "mustdrop" in
  // the response (and in the last chunk), and extra["source"] names the model when the
  // request did not.
  virtual void done(const ChatUsage& usage, const std::string& finish_reason, const nlohmann::json& extra) = 0;
  // The answer failed (before or after streaming began); http_status outside 400..599 means 500.
  virtual void fail(int http_status, const std::string& message) = 0;
  // Becomes true when the client disconnects mid-stream or the server stops; the answer polls it.
  virtual const std::atomic<bool>* cancelled() const = 0;
};

enum class Admission { kAccepted, kUnknownSource, kBusy, kUnavailable };

// What the chat handler decides at once: 404, 429 or 503 unless accepted.
struct Admit {
  Admission admission = Admission::kAccepted;
  int retry_after_sec = 1;  // sent as Retry-After with 429 and 503
  std::string message;      // error message; "" = a default one
  std::string source_id;    // the source chosen when the request named none (the reply's "model")
};

// Every handler may be empty (its route then answers 404; /healthz says ok) and may throw
// (the request then gets a 500 and the exception is logged). They run on connection threads.
struct Handlers {
  std::function<std::vector<std::string>()> models;                                       // GET /v1/models
  std::function<std::optional<nlohmann::json>(const std::string& id)> source;            // GET /v1/sources/{id}; nullopt -> 404
  std::function<std::optional<nlohmann::json>(const std::string& id, bool pause)> pause;  // POST /v1/sources/{id}/pause|resume; nullopt -> 404; the json is the body returned
  std::function<std::string()> metrics;                                                   // GET /metrics, Prometheus text format 0.0.4
  std::function<bool()> healthy;                                                          // GET /healthz: 200 "ok\n" or 503
  std::function<Admit(const ChatRequest&, std::shared_ptr<ChatSink>)> chat;               // returns at once; the answer then runs elsewhere and calls the sink
};

// Listens from construction until stop() or destruction.
class ApiServer {
 public:
  // Binds and starts listening; InputError naming address:port and the reason if it cannot,
  // ConfigError if port is outside 0..65535 or threads/max_body_bytes < 1.
  ApiServer(ServerOptions options, Handlers handlers);
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // The port listened on (the chosen one when options.port was 0).
  int port() const;
  // The address listened on, as given in options.bind.
  const std::string& address() const;
  // Stops accepting, cancels every open sink, waits for the open connections to end; idempotent.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mustdrop::serve
