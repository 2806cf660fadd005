// The OpenAI-compatible server against fake handlers: status codes, reply shapes, and the SSE
// stream read by an independent Python client (tests/unit/serve/sse_client.py) and by a C++
// client that times each chunk.
#include "serve/api_server.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <chrono>
#include <ctime>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "core/error.h"
#include "support/test_support.h"

namespace mustdrop::serve {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// A chat handler that answers from its own thread, one piece at a time with a pause between.
class FakeChat {
 public:
  struct Config {
    std::vector<std::string> pieces{"Two ", "cars ", "are ", "parked."};
    int piece_delay_ms = 5;
    Admit admit;           // returned as is; the answer only runs when accepted
    int fail_status = 0;   // != 0: fail with this status after `fail_after` pieces
    size_t fail_after = 0;
    bool echo = false;     // answer the question back, one character per piece
    json extra = {{"source", "cam1"}, {"frames", 3}};
  };
  std::atomic<int> n_cancelled{0};     // answers that saw the cancelled flag
  std::atomic<bool> finished{false};
  std::atomic<double> finished_at{0};  // seconds after t0 when the last piece was handed over
  const Clock::time_point t0 = Clock::now();

  ~FakeChat() {
    for (auto& w : workers_) w.join();
  }
  // Changes the configuration for the next requests (under the lock the handler reads it with).
  template <typename F>
  void configure(F change) {
    std::lock_guard<std::mutex> lock(mu_);
    change(config_);
  }
  Config config() {
    std::lock_guard<std::mutex> lock(mu_);
    return config_;
  }
  Admit operator()(const ChatRequest& request, std::shared_ptr<ChatSink> sink) {
    std::lock_guard<std::mutex> lock(mu_);
    requests_.push_back(request);
    const Config c = config_;
    if (c.admit.admission != Admission::kAccepted) return c.admit;
    std::vector<std::string> answer = c.pieces;
    if (c.echo) {
      answer.clear();
      for (char ch : request.question) answer.emplace_back(1, ch);
    }
    workers_.emplace_back([this, sink, answer, c] {
      for (size_t i = 0; i <= answer.size(); ++i) {
        if (sink->cancelled()->load()) {
          ++n_cancelled;
          return;
        }
        if (c.fail_status != 0 && i == c.fail_after) return sink->fail(c.fail_status, "camera lost");
        if (i == answer.size()) break;
        sink->text(answer[i]);
        if (i + 1 == answer.size()) finished_at = seconds_since(t0);
        std::this_thread::sleep_for(std::chrono::milliseconds(c.piece_delay_ms));
      }
      finished = true;
      sink->done({12, static_cast<int64_t>(answer.size())}, "stop", c.extra);
    });
    return c.admit;
  }
  ChatRequest last_request() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_.empty() ? ChatRequest{} : requests_.back();
  }
  size_t n_requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_.size();
  }
  bool wait_cancelled(double timeout_sec, int n = 1) {
    const auto t = Clock::now();
    while (n_cancelled < n && seconds_since(t) < timeout_sec) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return n_cancelled >= n;
  }

 private:
  std::mutex mu_;
  Config config_;
  std::vector<ChatRequest> requests_;
  std::vector<std::thread> workers_;
};

struct Fixture {
  FakeChat chat;
  std::atomic<bool> healthy{true};
  std::mutex mu;
  std::vector<std::pair<std::string, bool>> pauses;  // under mu (written on server threads)

  std::vector<std::pair<std::string, bool>> paused() {
    std::lock_guard<std::mutex> lock(mu);
    return pauses;
  }

  Handlers handlers() {
    Handlers h;
    h.models = [] { return std::vector<std::string>{"cam1", "cam2"}; };
    h.source = [](const std::string& id) -> std::optional<json> {
      if (id != "cam1") return std::nullopt;
      return json{{"id", id}, {"state", "running"}};
    };
    h.pause = [this](const std::string& id, bool pause) -> std::optional<json> {
      if (id != "cam1") return std::nullopt;
      std::lock_guard<std::mutex> lock(mu);
      pauses.emplace_back(id, pause);
      return json{{"id", id}, {"paused", pause}};
    };
    h.metrics = [] { return std::string("# TYPE mustdrop_answers_total counter\nmustdrop_answers_total 3\n"); };
    h.healthy = [this] { return healthy.load(); };
    h.chat = [this](const ChatRequest& r, std::shared_ptr<ChatSink> s) { return chat(r, std::move(s)); };
    return h;
  }
};

httplib::Headers bearer(const std::string& token) { return {{"Authorization", "Bearer " + token}}; }

std::string chat_body(bool stream, const std::string& question = "How many cars?", const std::string& model = "cam1") {
  json body = {{"messages", {{{"role", "user"}, {"content", question}}}}, {"stream", stream}};
  if (!model.empty()) body["model"] = model;
  return body.dump();
}

// A streamed chat request whose body arrives, piece by piece, in `on_bytes` (false hangs up).
httplib::Request streaming_chat(std::function<bool(const char*, size_t)> on_bytes) {
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.body = chat_body(true);
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [on_bytes = std::move(on_bytes)](const char* data, size_t n, uint64_t, uint64_t) {
    return on_bytes(data, n);
  };
  return req;
}

// The error object of an OpenAI-style error body (fails the test if the shape is wrong).
json error_of(const httplib::Result& r) {
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  const json body = json::parse(r->body, nullptr, false);
  EXPECT_TRUE(body.is_object() && body.contains("error")) << r->body;
  if (!body.is_object() || !body.contains("error")) return json::object();
  const json& e = body["error"];
  EXPECT_TRUE(e["message"].is_string() && !e["message"].get<std::string>().empty()) << r->body;
  EXPECT_TRUE(e["type"].is_string()) << r->body;
  EXPECT_TRUE(e.contains("param") && e.contains("code")) << r->body;
  return e;
}

// The data of each server-sent event in `raw`; fails the test on anything else.
std::vector<std::string> sse_events(const std::string& raw) {
  std::vector<std::string> events;
  size_t pos = 0;
  for (size_t end; (end = raw.find("\n\n", pos)) != std::string::npos; pos = end + 2) {
    const std::string event = raw.substr(pos, end - pos);
    EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
    EXPECT_EQ(event.find('\n'), std::string::npos) << event;
    events.push_back(event.substr(6));
  }
  EXPECT_EQ(pos, raw.size()) << "trailing bytes: " << raw.substr(pos);
  return events;
}

// Content of a complete stream, checking the role chunk first and [DONE] last.
std::string stream_content(const std::string& raw) {
  const auto events = sse_events(raw);
  EXPECT_GE(events.size(), 3u);
  if (events.size() < 3) return "";
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_EQ(json::parse(events[0])["choices"][0]["delta"], json({{"role", "assistant"}, {"content", ""}}));
  std::string content;
  for (size_t i = 1; i + 2 < events.size(); ++i) content += json::parse(events[i])["choices"][0]["delta"]["content"].get<std::string>();
  return content;
}

json run_sse_client(int port, const std::string& body, const std::string& token = "") {
  std::vector<std::string> argv = {"/usr/bin/python3", test::source_dir() + "/tests/unit/serve/sse_client.py",
                                   "127.0.0.1", std::to_string(port), body};
  if (!token.empty()) argv.push_back(token);
  const test::ProcResult r = test::run_process(argv, 30);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const json summary = json::parse(r.out, nullptr, false);
  EXPECT_TRUE(summary.is_object()) << r.out << r.err;
  return summary.is_object() ? summary : json::object();
}

TEST(ApiServer, HealthzModelsSourcesPauseAndMetrics) {
  Fixture f;
  ApiServer server({}, f.handlers());
  EXPECT_EQ(server.address(), "127.0.0.1");
  ASSERT_GT(server.port(), 0);
  httplib::Client cli("127.0.0.1", server.port());

  auto r = cli.Get("/healthz");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "ok\n");
  f.healthy = false;
  EXPECT_EQ(cli.Get("/healthz")->status, 503);

  r = cli.Get("/v1/models");
  ASSERT_EQ(r->status, 200);
  const json models = json::parse(r->body);
  EXPECT_EQ(models["object"], "list");
  ASSERT_EQ(models["data"].size(), 2u);
  EXPECT_EQ(models["data"][0], json({{"id", "cam1"}, {"object", "model"}, {"created", 0}, {"owned_by", "mustdrop"}}));
  EXPECT_EQ(models["data"][1]["id"], "cam2");

  r = cli.Get("/v1/sources/cam1");
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body), json({{"id", "cam1"}, {"state", "running"}}));
  r = cli.Get("/v1/sources/cam7");
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(error_of(r)["code"], "source_not_found");

  r = cli.Post("/v1/sources/cam1/pause", "", "application/json");
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body), json({{"id", "cam1"}, {"paused", true}}));
  r = cli.Post("/v1/sources/cam1/resume");  // no body at all
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body)["paused"], false);
  EXPECT_EQ(cli.Post("/v1/sources/cam7/pause")->status, 404);
  EXPECT_EQ(f.paused(), (std::vector<std::pair<std::string, bool>>{{"cam1", true}, {"cam1", false}}));

  r = cli.Get("/metrics");
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(r->body, "# TYPE mustdrop_answers_total counter\nmustdrop_answers_total 3\n");
}

TEST(ApiServer, UnknownPathsAre404AndWrongMethods405) {
  Fixture f;
  ApiServer server({}, f.handlers());
  httplib::Client cli("127.0.0.1", server.port());
  for (const char* path : {"/", "/v1/nothing", "/v1/sources/cam1/reboot", "/v2/models"}) {
    auto r = cli.Get(path);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404) << path;
    EXPECT_EQ(error_of(r)["code"], "not_found") << path;
  }
  auto r = cli.Get("/v1/chat/completions");
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->get_header_value("Allow"), "POST");
  error_of(r);
  EXPECT_EQ(cli.Post("/v1/models", "{}", "application/json")->status, 405);
  EXPECT_EQ(cli.Delete("/v1/models")->status, 405);
  EXPECT_EQ(cli.Get("/v1/sources/cam1/pause")->status, 405);
  EXPECT_EQ(cli.Post("/healthz")->status, 405);

  ApiServer bare({}, Handlers{});  // no handlers: only /healthz answers
  httplib::Client bare_cli("127.0.0.1", bare.port());
  EXPECT_EQ(bare_cli.Get("/healthz")->status, 200);
  EXPECT_EQ(bare_cli.Get("/v1/models")->status, 404);
  EXPECT_EQ(bare_cli.Post("/v1/chat/completions", chat_body(false), "application/json")->status, 404);
}

TEST(ApiServer, BearerTokenGuardsV1AndMetricsButNotHealthz) {
  Fixture f;
  ServerOptions opt;
  opt.bearer_token = "s3cret";
  ApiServer server(opt, f.handlers());
  httplib::Client cli("127.0.0.1", server.port());
  EXPECT_EQ(cli.Get("/healthz")->status, 200);
  for (const char* path : {"/v1/models", "/metrics", "/v1/sources/cam1"}) {
    auto r = cli.Get(path);
    EXPECT_EQ(r->status, 401) << path;
    EXPECT_EQ(r->get_header_value("WWW-Authenticate"), "Bearer") << path;
    EXPECT_EQ(error_of(r)["code"], "invalid_api_key");
    EXPECT_EQ(cli.Get(path, bearer("s3cre"))->status, 401) << path;
    EXPECT_EQ(cli.Get(path, bearer("s3cretX"))->status, 401) << path;
    EXPECT_EQ(cli.Get(path, {{"Authorization", "Basic s3cret"}})->status, 401) << path;
    EXPECT_EQ(cli.Get(path, bearer("s3cret"))->status, 200) << path;
  }
  EXPECT_EQ(cli.Get("/v1/models", {{"Authorization", "bearer s3cret"}})->status, 200);
  EXPECT_EQ(cli.Post("/v1/chat/completions", chat_body(false), "application/json")->status, 401);
  EXPECT_EQ(f.chat.n_requests(), 0u);
  auto r = cli.Post("/v1/chat/completions", bearer("s3cret"), chat_body(false), "application/json");
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(run_sse_client(server.port(), chat_body(true), "s3cret")["content"], "Two cars are parked.");
}

TEST(ApiServer, MalformedChatRequestsAre400) {
  Fixture f;
  ApiServer server({}, f.handlers());
  httplib::Client cli("127.0.0.1", server.port());
  const std::vector<std::pair<std::string, json>> cases = {
      {"{\"messages\": [", nullptr},
      {"", nullptr},
      {"[1, 2]", nullptr},
      {R"({"model": "cam1"})", "messages"},
      {R"({"messages": []})", "messages"},
      {R"({"messages": "hi"})", "messages"},
      {R"({"messages": [{"role": "system", "content": "be brief"}]})", "messages"},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, 3]})", "messages[2]"},
      {R"({"messages": [{"content": "hi"}]})", "messages[0].role"},
      {R"({"messages": [{"role": "user", "content": 5}]})", "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": [{"type": "text"}]}]})", "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": ""}]})", "messages"},
      {R"({"model": 7, "messages": [{"role": "user", "content": "hi"}]})", "model"},
      {R"({"max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]})", "max_tokens"},
      {R"({"max_tokens": "9", "messages": [{"role": "user", "content": "hi"}]})", "max_tokens"},
      {R"({"temperature": 3, "messages": [{"role": "user", "content": "hi"}]})", "temperature"},
      {R"({"stream": "yes", "messages": [{"role": "user", "content": "hi"}]})", "stream"},
      {R"({"stream_options": {"include_usage": 1}, "messages": [{"role": "user", "content": "hi"}]})", "stream_options"},
  };
  for (const auto& [body, param] : cases) {
    auto r = cli.Post("/v1/chat/completions", body, "application/json");
    ASSERT_TRUE(r) << body;
    EXPECT_EQ(r->status, 400) << body;
    const json e = error_of(r);
    EXPECT_EQ(e["type"], "invalid_request_error") << body;
    EXPECT_EQ(e["param"], param) << body << " -> " << r->body;
  }
  EXPECT_EQ(f.chat.n_requests(), 0u);
}

TEST(ApiServer, ChatRequestFieldsReachTheHandler) {
  Fixture f;
  ApiServer server({}, f.handlers());
  httplib::Client cli("127.0.0.1", server.port());
  const json body = {
      {"model", "cam2"},
      {"max_tokens", 64},
      {"temperature", 0.25},
      {"stream", false},
      {"messages",
       {{{"role", "system"}, {"content", "Be brief."}},
        {{"role", "user"}, {"content", "What was there?"}},
        {{"role", "assistant"}, {"content", "A truck."}},
        {{"role", "developer"}, {"content", [] { return json::array({{{"type", "text"}, {"text", "Count carefully."}}}); }()}},
        {{"role", "user"},
         {"content",
          {{{"type", "text"}, {"text", "How many cars"}},
           {{"type", "image_url"}, {"image_url", {{"url", "data:,"}}}},
           {{"type", "text"}, {"text", "are parked now?"}}}}}}}};
  auto r = cli.Post("/v1/chat/completions", body.dump(), "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  const ChatRequest got = f.chat.last_request();
  EXPECT_EQ(got.source_id, "cam2");
  EXPECT_EQ(got.question, "How many cars\nare parked now?");
  EXPECT_EQ(got.system, "Be brief.\nCount carefully.");
  EXPECT_EQ(got.max_tokens, 64);
  EXPECT_DOUBLE_EQ(got.temperature, 0.25);
  EXPECT_FALSE(got.stream);
  EXPECT_FALSE(got.include_usage);

  r = cli.Post("/v1/chat/completions",
               R"({"messages": [{"role": "user", "content": "hi"}], "stream": true, "stream_options": {"include_usage": true},
                   "max_completion_tokens": 5, "temperature": null})",
               "application/json");
  ASSERT_EQ(r->status, 200);
  const ChatRequest streamed = f.chat.last_request();
  EXPECT_EQ(streamed.source_id, "");
  EXPECT_EQ(streamed.system, "");
  EXPECT_EQ(streamed.max_tokens, 5);
  EXPECT_LT(streamed.temperature, 0);
  EXPECT_TRUE(streamed.stream);
  EXPECT_TRUE(streamed.include_usage);
}

TEST(ApiServer, NonStreamAnswerHasTheOpenAiShape) {
  Fixture f;
  ApiServer server({}, f.handlers());
  httplib::Client cli("127.0.0.1", server.port());
  const int64_t before = std::time(nullptr);
  auto r = cli.Post("/v1/chat/completions", chat_body(false, "How many cars?", "cam2"), "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  const json a = json::parse(r->body);
  EXPECT_EQ(a["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(a["object"], "chat.completion");
  EXPECT_GE(a["created"].get<int64_t>(), before);
  EXPECT_LE(a["created"].get<int64_t>(), std::time(nullptr));
  EXPECT_EQ(a["model"], "cam2");  // the request's model wins over extra["source"]
  ASSERT_EQ(a["choices"].size(), 1u);
  EXPECT_EQ(a["choices"][0],
            json({{"index", 0}, {"message", {{"role", "assistant"}, {"content", "Two cars are parked."}}}, {"finish_reason", "stop"}}));
  EXPECT_EQ(a["usage"], json({{"prompt_tokens", 12}, {"completion_tokens", 4}, {"total_tokens", 16}}));
  EXPECT_EQ(a["mustdrop"], f.chat.config().extra);

  r = cli.Post("/v1/chat/completions", chat_body(false, "again", ""), "application/json");
  const json b = json::parse(r->body);
  EXPECT_EQ(b["model"], "cam1");  // no model in the request: extra["source"]
  EXPECT_NE(b["id"], a["id"]);
}

TEST(ApiServer, AdmissionRefusalsAndFailures) {
  Fixture f;
  ApiServer server({}, f.handlers());
  httplib::Client cli("127.0.0.1", server.port());

  f.chat.configure([](FakeChat::Config& c) { c.admit = {Admission::kUnknownSource, 1, "", ""}; });
  auto r = cli.Post("/v1/chat/completions", chat_body(false, "q", "cam9"), "application/json");
  EXPECT_EQ(r->status, 404);
  json e = error_of(r);
  EXPECT_EQ(e["code"], "model_not_found");
  EXPECT_EQ(e["param"], "model");
  EXPECT_NE(e["message"].get<std::string>().find("cam9"), std::string::npos);

  f.chat.configure([](FakeChat::Config& c) { c.admit = {Admission::kBusy, 7, "two answers already run for cam1", ""}; });
  r = cli.Post("/v1/chat/completions", chat_body(true), "application/json");
  EXPECT_EQ(r->status, 429);
  EXPECT_EQ(r->get_header_value("Retry-After"), "7");
  EXPECT_EQ(error_of(r)["message"], "two answers already run for cam1");

  f.chat.configure([](FakeChat::Config& c) { c.admit = {Admission::kUnavailable, 3, "", ""}; });
  r = cli.Post("/v1/chat/completions", chat_body(false), "application/json");
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(error_of(r)["type"], "server_error");

  f.chat.configure([](FakeChat::Config& c) {
    c.admit = {};
    c.fail_status = 502;
    c.fail_after = 2;
  });
  r = cli.Post("/v1/chat/completions", chat_body(false), "application/json");
  EXPECT_EQ(r->status, 502);
  EXPECT_EQ(error_of(r)["message"], "camera lost");
  f.chat.configure([](FakeChat::Config& c) {
    c.fail_status = 200;  // not an error status: becomes 500
    c.fail_after = 0;
  });
  EXPECT_EQ(cli.Post("/v1/chat/completions", chat_body(false), "application/json")->status, 500);

  // After streaming began, a failure is one error event and then [DONE].
  f.chat.configure([](FakeChat::Config& c) {
    c.fail_status = 502;
    c.fail_after = 2;
  });
  const json s = run_sse_client(server.port(), chat_body(true));
  EXPECT_EQ(s["content"], "Two cars ");
  ASSERT_TRUE(s["error"].is_object()) << s.dump();
  EXPECT_EQ(s["error"]["message"], "camera lost");
  EXPECT_EQ(s["finish_reason"], nullptr);
}

TEST(ApiServer, HandlerExceptionsAre500) {
  Fixture f;
  Handlers h = f.handlers();
  h.models = []() -> std::vector<std::string> { throw std::runtime_error("registry is gone"); };
  h.chat = [](const ChatRequest&, std::shared_ptr<ChatSink>) -> Admit { throw 42; };
  ApiServer server({}, h);
  httplib::Client cli("127.0.0.1", server.port());
  auto r = cli.Get("/v1/models");
  EXPECT_EQ(r->status, 500);
  EXPECT_NE(error_of(r)["message"].get<std::string>().find("registry is gone"), std::string::npos);
  r = cli.Post("/v1/chat/completions", chat_body(true), "application/json");
  EXPECT_EQ(r->status, 500);
  EXPECT_EQ(error_of(r)["type"], "server_error");
  EXPECT_EQ(cli.Get("/healthz")->status, 200);  // still serving
}

TEST(ApiServer, OversizedBodiesAre413) {
  Fixture f;
  ServerOptions opt;
  opt.max_body_bytes = 1024;
  ApiServer server(opt, f.handlers());
  const std::string big = chat_body(false, std::string(4000, 'x'));
  {
    httplib::Client cli("127.0.0.1", server.port());
    auto r = cli.Post("/v1/chat/completions", big, "application/json");
    ASSERT_TRUE(r) << httplib::to_string(r.error());
    EXPECT_EQ(r->status, 413);
    EXPECT_EQ(error_of(r)["code"], "request_too_large");
  }
  {  // chunked: no Content-Length for httplib to check; 64 KiB sent in 1 KiB chunks
    httplib::Client cli("127.0.0.1", server.port());
    auto r = cli.Post(
        "/v1/chat/completions",
        [](size_t offset, httplib::DataSink& sink) {
          const std::string piece(1024, ' ');
          if (offset >= 64 * 1024) {
            sink.done();
            return true;
          }
          return sink.write(piece.data(), piece.size());
        },
        "application/json");
    ASSERT_TRUE(r) << httplib::to_string(r.error());
    EXPECT_EQ(r->status, 413);
    EXPECT_EQ(error_of(r)["code"], "request_too_large");
  }
  {  // a small chunked body is fine, and the server still answers
    httplib::Client cli("127.0.0.1", server.port());
    const std::string small = chat_body(false);
    auto r = cli.Post(
        "/v1/chat/completions",
        [&](size_t offset, httplib::DataSink& sink) {
          if (offset >= small.size()) {
            sink.done();
            return true;
          }
          return sink.write(small.data() + offset, std::min<size_t>(10, small.size() - offset));
        },
        "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
  }
  EXPECT_EQ(f.chat.n_requests(), 1u);
}

TEST(ApiServer, StreamReadByAnIndependentClient) {
  Fixture f;
  f.chat.configure([](FakeChat::Config& c) {
    c.piece_delay_ms = 20;
    c.pieces = {"Two ", "cars", " are ", "parked ", "by the ", "gate."};
  });
  ApiServer server({}, f.handlers());

  json body = json::parse(chat_body(true));
  body["stream_options"] = {{"include_usage", true}};
  json s = run_sse_client(server.port(), body.dump());
  EXPECT_EQ(s["content"], "Two cars are parked by the gate.");
  EXPECT_EQ(s["content_chunks"], 6);
  EXPECT_EQ(s["chunks"], 8);  // role + one per piece + final
  EXPECT_EQ(s["finish_reason"], "stop");
  EXPECT_EQ(s["model"], "cam1");
  EXPECT_EQ(s["mustdrop"], f.chat.config().extra);
  EXPECT_EQ(s["usage"], json({{"prompt_tokens", 12}, {"completion_tokens", 6}, {"total_tokens", 18}}));

  // Without include_usage no usage; a UTF-8 character split across pieces arrives whole.
  f.chat.configure([](FakeChat::Config& c) { c.pieces = {"caf\xC3", "\xA9 ", "\xE2\x82", "\xAC", "!"}; });
  s = run_sse_client(server.port(), chat_body(true));
  EXPECT_EQ(s["content"], "caf\xC3\xA9 \xE2\x82\xAC!");
  EXPECT_EQ(s["usage"], nullptr);

  // The model named by admission is in every chunk when the request names none.
  f.chat.configure([](FakeChat::Config& c) { c.admit.source_id = "cam9"; });
  s = run_sse_client(server.port(), chat_body(true, "q", ""));
  EXPECT_EQ(s["model"], "cam9");
}

TEST(ApiServer, StreamPiecesArriveAsTheyAreProduced) {
  Fixture f;
  f.chat.configure([](FakeChat::Config& c) {
    c.piece_delay_ms = 100;
    c.pieces = {"one ", "two ", "three ", "four ", "five"};
  });
  ApiServer server({}, f.handlers());
  httplib::Client cli("127.0.0.1", server.port());

  std::string raw;
  std::vector<std::pair<double, size_t>> arrivals;  // (seconds after t0, bytes received so far)
  httplib::Request req = streaming_chat([&](const char* data, size_t n) {
    raw.append(data, n);
    arrivals.emplace_back(seconds_since(f.chat.t0), raw.size());
    return true;
  });
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  ASSERT_TRUE(cli.send(req, res, error)) << httplib::to_string(error);
  EXPECT_EQ(res.status, 200);
  EXPECT_EQ(res.get_header_value("Content-Type"), "text/event-stream");
  EXPECT_EQ(res.get_header_value("Cache-Control"), "no-cache");
  EXPECT_EQ(stream_content(raw), "one two three four five");

  // When did the bytes holding the first piece arrive? Well before the producer's last piece.
  const size_t first_piece_end = raw.find("one ") + 4;
  double first_at = -1;
  for (const auto& [t, size] : arrivals) {
    if (size >= first_piece_end) {
      first_at = t;
      break;
    }
  }
  ASSERT_TRUE(f.chat.finished);
  EXPECT_GE(first_at, 0);
  EXPECT_LT(first_at + 0.25, f.chat.finished_at.load()) << "first piece at " << first_at << " s, last piece produced at "
                                                         << f.chat.finished_at.load() << " s";
  EXPECT_GE(arrivals.size(), 5u);
}

TEST(ApiServer, TwoStreamsAtOnceGetTheirOwnAnswers) {
  Fixture f;
  f.chat.configure([](FakeChat::Config& c) {
    c.echo = true;
    c.piece_delay_ms = 15;
  });
  ApiServer server({}, f.handlers());
  const std::vector<std::string> questions = {"alpha one two three", "bravo four five six"};
  std::vector<std::string> raws(questions.size());
  std::vector<int> statuses(questions.size(), 0);
  std::vector<std::thread> clients;
  for (size_t i = 0; i < questions.size(); ++i) {
    clients.emplace_back([&, i] {
      httplib::Client cli("127.0.0.1", server.port());
      cli.set_read_timeout(10);
      auto r = cli.Post("/v1/chat/completions", chat_body(true, questions[i]), "application/json");
      if (r) {
        statuses[i] = r->status;
        raws[i] = r->body;
      }
    });
  }
  for (auto& c : clients) c.join();
  for (size_t i = 0; i < questions.size(); ++i) {
    EXPECT_EQ(statuses[i], 200);
    EXPECT_EQ(stream_content(raws[i]), questions[i]);
  }
}

TEST(ApiServer, ClientDisconnectCancelsTheAnswer) {
  Fixture f;
  f.chat.configure([](FakeChat::Config& c) {
    c.piece_delay_ms = 30;
    c.pieces.assign(200, "word ");
  });
  ApiServer server({}, f.handlers());
  httplib::Client cli("127.0.0.1", server.port());
  std::string raw;
  httplib::Request req = streaming_chat([&](const char* data, size_t n) {
    raw.append(data, n);
    return raw.find("word") == std::string::npos;  // hang up after the first piece
  });
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  EXPECT_FALSE(cli.send(req, res, error));
  EXPECT_TRUE(f.chat.wait_cancelled(3)) << "the answer was not cancelled after the client left";
  EXPECT_FALSE(f.chat.finished);
}

TEST(ApiServer, StopCancelsOpenAnswersAndIsIdempotent) {
  Fixture f;
  f.chat.configure([](FakeChat::Config& c) {
    c.piece_delay_ms = 30;
    c.pieces.assign(200, "word ");
  });
  auto server = std::make_unique<ApiServer>(ServerOptions{}, f.handlers());
  const int port = server->port();
  int status = 0;
  std::thread waiting([&] {  // a non-streamed answer in progress
    httplib::Client cli("127.0.0.1", port);
    auto r = cli.Post("/v1/chat/completions", chat_body(false), "application/json");
    if (r) status = r->status;
  });
  std::atomic<bool> got_piece{false};
  std::string raw;
  std::thread streaming([&] {  // and a streamed one
    httplib::Client cli("127.0.0.1", port);
    httplib::Request req = streaming_chat([&](const char* data, size_t n) {
      raw.append(data, n);
      if (raw.find("word") != std::string::npos) got_piece = true;
      return true;
    });
    httplib::Response res;
    httplib::Error error = httplib::Error::Success;
    cli.send(req, res, error);
  });
  const auto t0 = Clock::now();
  while ((f.chat.n_requests() < 2 || !got_piece) && seconds_since(t0) < 5) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(got_piece);
  const auto t = Clock::now();
  server->stop();
  EXPECT_LT(seconds_since(t), 3.0);
  waiting.join();
  streaming.join();
  EXPECT_EQ(status, 503);
  EXPECT_EQ(raw.find("[DONE]"), std::string::npos);
  EXPECT_TRUE(f.chat.wait_cancelled(3, 2));
  EXPECT_EQ(f.chat.finished, false);
  server->stop();
  server.reset();
  httplib::Client cli("127.0.0.1", port);
  EXPECT_FALSE(cli.Get("/healthz"));  // nobody listens any more
}

TEST(ApiServer, BindFailuresAreInputErrors) {
  Fixture f;
  ApiServer first({}, f.handlers());
  ServerOptions same;
  same.port = first.port();
  try {
    ApiServer second(same, f.handlers());
    FAIL() << "a second server bound the same port";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("127.0.0.1:" + std::to_string(first.port())), std::string::npos) << what;
    EXPECT_NE(what.find("in use"), std::string::npos) << what;
  }
  ServerOptions bad;
  bad.bind = "192.0.2.1";  // TEST-NET-1: not an address of this machine
  bad.port = 8080;
  EXPECT_THROW(ApiServer(bad, f.handlers()), InputError);
}

}  // namespace
}  // namespace mustdrop::serve
