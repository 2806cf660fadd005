// The judge and the HTTP client against a fake OpenAI-compatible server inside the test.
#include "eval/judge.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "eval/jsonl.h"
#include "serve/http_client.h"
#include "support/test_support.h"

namespace mustdrop::eval {
namespace {

using json = nlohmann::json;

// An HTTP server on 127.0.0.1 (any free port) that records every request and answers through
// `handler`, which gets the 1-based number of the request.
class FakeServer {
 public:
  using Handler = std::function<void(const httplib::Request&, httplib::Response&, int n)>;

  explicit FakeServer(Handler handler) : handler_(std::move(handler)) {
    auto route = [this](const httplib::Request& req, httplib::Response& res) {
      int n = 0;
      {
        std::lock_guard<std::mutex> lock(mu_);
        requests_.push_back(req);
        n = static_cast<int>(requests_.size());
      }
      handler_(req, res, n);
    };
    server_.Post(".*", route);
    server_.Get(".*", route);
    port_ = server_.bind_to_any_port("127.0.0.1");
    if (port_ <= 0) throw std::runtime_error("fake server: cannot bind 127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~FakeServer() {
    server_.stop();
    thread_.join();
  }

  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string endpoint() const { return base_url() + "/v1"; }
  int n_seen() {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int>(requests_.size());
  }
  httplib::Request request(size_t i) {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_.at(i);
  }

 private:
  Handler handler_;
  httplib::Server server_;
  std::thread thread_;
  int port_ = -1;
  std::mutex mu_;
  std::vector<httplib::Request> requests_;
};

// A port that was free a moment ago and has no listener now.
int closed_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("cannot bind a probe socket");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string completion(const std::string& content) {
  json message = {{"role", "assistant"}, {"content", content}};
  json choice = {{"index", 0}, {"message", message}, {"finish_reason", "stop"}};
  return json{{"id", "x"}, {"object", "chat.completion"}, {"choices", json::array({choice})}}.dump();
}

void reply_verdict(httplib::Response& res, const std::string& content) {
  res.status = 200;
  res.set_content(completion(content), "application/json");
}

JudgeTransport http_transport() {
  return [](const std::string& url, const std::string& body, const std::string& bearer, double timeout_sec) {
    const serve::HttpResponse r = serve::http_post_json(url, body, bearer, timeout_sec);
    return HttpReply{r.status, r.body, r.error};
  };
}

JudgeSettings settings_for(const std::string& endpoint, const std::string& model = "judge-a") {
  JudgeSettings s;
  s.endpoint = endpoint;
  s.model = model;
  s.api_key = "sk-test";
  s.temperature = 0.25;
  s.max_retries = 3;
  s.retry_delay_ms = 1;
  s.timeout_sec = 10;
  return s;
}

// A fresh (absent) cache file for the current test.
std::string cache_file() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string path = test::temp_dir() + "/judge_" + info->test_suite_name() + "_" + info->name() + ".jsonl";
  std::remove(path.c_str());
  return path;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(JudgeReply, ParsesDictVariants) {
  bool yes = false;
  int score = -1;
  ASSERT_TRUE(parse_judge_reply("{'pred': 'yes', 'score': 4}", &yes, &score));
  EXPECT_TRUE(yes);
  EXPECT_EQ(score, 4);
  ASSERT_TRUE(parse_judge_reply("{\"pred\": \"no\", \"score\": 0}", &yes, &score));
  EXPECT_FALSE(yes);
  EXPECT_EQ(score, 0);
  ASSERT_TRUE(parse_judge_reply("Sure. {'score': 5, 'pred': 'Yes'} Hope this helps.", &yes, &score));
  EXPECT_TRUE(yes);
  EXPECT_EQ(score, 5);
  ASSERT_TRUE(parse_judge_reply("```python\n{'pred':'no','score':'2'}\n```", &yes, &score));
  EXPECT_FALSE(yes);
  EXPECT_EQ(score, 2);
  ASSERT_TRUE(parse_judge_reply("{'pred': 'yes', 'score': 4.8}", &yes, &score));
  EXPECT_EQ(score, 4);  // truncated, as the reference's int()
}

TEST(JudgeReply, RejectsBadReplies) {
  bool yes = false;
  int score = 0;
  EXPECT_FALSE(parse_judge_reply("yes, 4", &yes, &score));
  EXPECT_FALSE(parse_judge_reply("{'pred': 'maybe', 'score': 3}", &yes, &score));
  EXPECT_FALSE(parse_judge_reply("{'pred': 'yes'}", &yes, &score));
  EXPECT_FALSE(parse_judge_reply("{'score': 3}", &yes, &score));
  EXPECT_FALSE(parse_judge_reply("{'pred': 'yes', 'score': 6}", &yes, &score));
  EXPECT_FALSE(parse_judge_reply("{'pred': 'yes', 'score': -1}", &yes, &score));
  EXPECT_FALSE(parse_judge_reply("{'pred': 'yes', 'score': 'high'}", &yes, &score));
  EXPECT_FALSE(parse_judge_reply("{'pred': 'yes', 'score': 3", &yes, &score));
}

TEST(Judge, ParsesVerdictAndSendsTheProtocolRequest) {
  FakeServer server([](const httplib::Request&, httplib::Response& res, int) {
    reply_verdict(res, "{'pred': 'yes', 'score': 4}");
  });
  Judge judge(settings_for(server.endpoint()), http_transport(), cache_file());
  const Verdict v = judge.judge("q1", "What is the man holding?", "a red umbrella", "He holds an umbrella.");
  EXPECT_TRUE(v.yes);
  EXPECT_EQ(v.score, 4);
  EXPECT_EQ(v.raw, "{'pred': 'yes', 'score': 4}");
  EXPECT_EQ(v.judge_model, "judge-a");
  EXPECT_EQ(v.endpoint, server.endpoint());
  EXPECT_EQ(v.prompt_hash, judge.prompt_hash());
  EXPECT_EQ(v.prompt_hash.size(), 16u);
  EXPECT_DOUBLE_EQ(v.temperature, 0.25);
  EXPECT_EQ(v.attempts, 1);
  EXPECT_FALSE(v.cached);
  EXPECT_EQ(judge.n_requests(), 1);

  ASSERT_EQ(server.n_seen(), 1);
  const httplib::Request req = server.request(0);
  EXPECT_EQ(req.method, "POST");
  EXPECT_EQ(req.path, "/v1/chat/completions");
  EXPECT_EQ(req.get_header_value("Authorization"), "Bearer sk-test");
  EXPECT_EQ(req.get_header_value("Content-Type"), "application/json");
  const json body = json::parse(req.body);
  EXPECT_EQ(body.at("model"), "judge-a");
  EXPECT_DOUBLE_EQ(body.at("temperature").get<double>(), 0.25);
  ASSERT_EQ(body.at("messages").size(), 2u);
  EXPECT_EQ(body["messages"][0].at("role"), "system");
  EXPECT_EQ(body["messages"][1].at("role"), "user");
  const std::string user = body["messages"][1].at("content");
  EXPECT_TRUE(contains(user, "Question: What is the man holding?")) << user;
  EXPECT_TRUE(contains(user, "Correct Answer: a red umbrella")) << user;
  EXPECT_TRUE(contains(user, "Predicted Answer: He holds an umbrella.")) << user;
  EXPECT_TRUE(contains(user, "'pred'") && contains(user, "'score'")) << user;
}

TEST(Judge, PlaceholderTextInAnswersIsNotSubstituted) {
  FakeServer server([](const httplib::Request&, httplib::Response& res, int) {
    reply_verdict(res, "{'pred': 'no', 'score': 1}");
  });
  Judge judge(settings_for(server.endpoint()), http_transport(), "");
  judge.judge("k", "Q {answer}?", "gold {prediction}", "pred {question}");
  const std::string user = json::parse(server.request(0).body)["messages"][1]["content"];
  EXPECT_TRUE(contains(user, "Question: Q {answer}?\nCorrect Answer: gold {prediction}\nPredicted Answer: pred {question}\n"))
      << user;
}

TEST(Judge, RetriesServerErrorsThenSucceeds) {
  for (int status : {500, 503, 429}) {
    SCOPED_TRACE(status);
    const int n_failures = 2;
    FakeServer server([&](const httplib::Request&, httplib::Response& res, int n) {
      if (n <= n_failures) {
        res.status = status;
        res.set_content("busy", "text/plain");
      } else {
        reply_verdict(res, "{'pred': 'no', 'score': 1}");
      }
    });
    Judge judge(settings_for(server.endpoint()), http_transport(), "");
    const Verdict v = judge.judge("k", "q", "a", "p");
    EXPECT_FALSE(v.yes);
    EXPECT_EQ(v.score, 1);
    EXPECT_EQ(v.attempts, n_failures + 1);
    EXPECT_EQ(server.n_seen(), n_failures + 1);
    EXPECT_EQ(judge.n_requests(), n_failures + 1);
  }
}

TEST(Judge, RetriesUnparsableRepliesThenSucceeds) {
  FakeServer server([](const httplib::Request&, httplib::Response& res, int n) {
    if (n == 1) {
      reply_verdict(res, "I think the prediction is right.");
    } else if (n == 2) {
      res.status = 200;
      res.set_content("<html>not json</html>", "text/html");
    } else {
      reply_verdict(res, "{\"pred\": \"yes\", \"score\": 5}");
    }
  });
  Judge judge(settings_for(server.endpoint()), http_transport(), "");
  const Verdict v = judge.judge("k", "q", "a", "p");
  EXPECT_TRUE(v.yes);
  EXPECT_EQ(v.score, 5);
  EXPECT_EQ(v.attempts, 3);
  EXPECT_EQ(server.n_seen(), 3);
}

TEST(Judge, ExhaustedRetriesThrowNamingTheEndpoint) {
  FakeServer server([](const httplib::Request&, httplib::Response& res, int) {
    res.status = 500;
    res.set_content("internal trouble", "text/plain");
  });
  JudgeSettings s = settings_for(server.endpoint());
  s.max_retries = 2;
  Judge judge(s, http_transport(), "");
  try {
    judge.judge("k", "q", "a", "p");
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_TRUE(contains(e.what(), server.endpoint())) << e.what();
    EXPECT_TRUE(contains(e.what(), "HTTP 500")) << e.what();
    EXPECT_TRUE(contains(e.what(), "internal trouble")) << e.what();
  }
  EXPECT_EQ(server.n_seen(), 3);
}

TEST(Judge, GarbageRepliesExhaustRetries) {
  FakeServer server([](const httplib::Request&, httplib::Response& res, int) { reply_verdict(res, "no idea"); });
  JudgeSettings s = settings_for(server.endpoint());
  s.max_retries = 1;
  Judge judge(s, http_transport(), "");
  try {
    judge.judge("k", "q", "a", "p");
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_TRUE(contains(e.what(), server.endpoint())) << e.what();
    EXPECT_TRUE(contains(e.what(), "unparsable")) << e.what();
  }
  EXPECT_EQ(server.n_seen(), 2);
}

TEST(Judge, UnauthorizedIsNotRetried) {
  FakeServer server([](const httplib::Request&, httplib::Response& res, int) {
    res.status = 401;
    res.set_content("{\"error\": \"invalid api key\"}", "application/json");
  });
  Judge judge(settings_for(server.endpoint()), http_transport(), "");
  try {
    judge.judge("k", "q", "a", "p");
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_TRUE(contains(e.what(), "HTTP 401")) << e.what();
    EXPECT_TRUE(contains(e.what(), "invalid api key")) << e.what();
    EXPECT_TRUE(contains(e.what(), server.endpoint())) << e.what();
  }
  EXPECT_EQ(server.n_seen(), 1);
}

TEST(Judge, RetryDelayDoubles) {
  FakeServer server([](const httplib::Request&, httplib::Response& res, int) { res.status = 503; });
  JudgeSettings s = settings_for(server.endpoint());
  s.max_retries = 3;
  s.retry_delay_ms = 40;
  Judge judge(s, http_transport(), "");
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(judge.judge("k", "q", "a", "p"), InputError);
  const double elapsed_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(elapsed_ms, 40 + 80 + 160);  // constant delays would total 120 ms
  EXPECT_EQ(server.n_seen(), 4);
}

TEST(Judge, CacheServesASecondJudgeWithoutRequests) {
  FakeServer server([](const httplib::Request&, httplib::Response& res, int) {
    reply_verdict(res, "{'pred': 'yes', 'score': 3}");
  });
  const std::string path = cache_file();
  {
    Judge first(settings_for(server.endpoint()), http_transport(), path);
    const Verdict v = first.judge("q7", "How many dogs?", "3", "three dogs");
    EXPECT_FALSE(v.cached);
    const Verdict again = first.judge("q7", "How many dogs?", "3", "three dogs");
    EXPECT_TRUE(again.cached);
    EXPECT_EQ(first.n_requests(), 1);
  }
  Judge second(settings_for(server.endpoint()), http_transport(), path);
  const Verdict v = second.judge("q7", "How many dogs?", "3", "three dogs");
  EXPECT_TRUE(v.cached);
  EXPECT_TRUE(v.yes);
  EXPECT_EQ(v.score, 3);
  EXPECT_EQ(v.raw, "{'pred': 'yes', 'score': 3}");
  EXPECT_EQ(v.attempts, 1);
  EXPECT_EQ(second.n_requests(), 0);
  EXPECT_EQ(server.n_seen(), 1);
  // Any change in the judged text is a different verdict.
  EXPECT_FALSE(second.judge("q7", "How many dogs?", "3", "3 dogs").cached);
  EXPECT_EQ(server.n_seen(), 2);
}

TEST(Judge, CacheRecordHoldsEveryField) {
  FakeServer server([](const httplib::Request&, httplib::Response& res, int n) {
    if (n == 1) res.status = 502;
    else reply_verdict(res, "{'pred': 'no', 'score': 2}");
  });
  const std::string path = cache_file();
  Judge judge(settings_for(server.endpoint()), http_transport(), path);
  judge.judge("key1", "question?", "gold", "prediction");
  const JsonlContents file = read_jsonl(path, false);
  ASSERT_EQ(file.records.size(), 1u);
  const json& r = file.records[0];
  EXPECT_EQ(r.at("key"), "key1");
  EXPECT_EQ(r.at("question"), "question?");
  EXPECT_EQ(r.at("gold"), "gold");
  EXPECT_EQ(r.at("prediction"), "prediction");
  EXPECT_EQ(r.at("yes"), false);
  EXPECT_EQ(r.at("score"), 2);
  EXPECT_EQ(r.at("raw"), "{'pred': 'no', 'score': 2}");
  EXPECT_EQ(r.at("judge_model"), "judge-a");
  EXPECT_EQ(r.at("endpoint"), server.endpoint());
  EXPECT_EQ(r.at("prompt_hash"), judge.prompt_hash());
  EXPECT_DOUBLE_EQ(r.at("temperature").get<double>(), 0.25);
  EXPECT_EQ(r.at("attempts"), 2);
}

TEST(Judge, DifferentModelOrTemperatureAsksAgain) {
  FakeServer server([](const httplib::Request&, httplib::Response& res, int) {
    reply_verdict(res, "{'pred': 'yes', 'score': 5}");
  });
  const std::string path = cache_file();
  {
    Judge a(settings_for(server.endpoint(), "judge-a"), http_transport(), path);
    a.judge("k", "q", "g", "p");
  }
  {
    Judge b(settings_for(server.endpoint(), "judge-b"), http_transport(), path);
    const Verdict v = b.judge("k", "q", "g", "p");
    EXPECT_FALSE(v.cached);
    EXPECT_EQ(v.judge_model, "judge-b");
    EXPECT_EQ(b.n_requests(), 1);
  }
  EXPECT_EQ(json::parse(server.request(1).body).at("model"), "judge-b");
  {
    JudgeSettings s = settings_for(server.endpoint(), "judge-a");
    s.temperature = 0.7;
    Judge c(s, http_transport(), path);
    EXPECT_FALSE(c.judge("k", "q", "g", "p").cached);
  }
  // Every earlier verdict is still there for its own settings.
  Judge again(settings_for(server.endpoint(), "judge-b"), http_transport(), path);
  EXPECT_TRUE(again.judge("k", "q", "g", "p").cached);
  EXPECT_EQ(server.n_seen(), 3);
  EXPECT_EQ(read_jsonl(path, false).records.size(), 3u);
}

TEST(Judge, TornCacheLineIsRepaired) {
  FakeServer server([](const httplib::Request&, httplib::Response& res, int) {
    reply_verdict(res, "{'pred': 'yes', 'score': 4}");
  });
  const std::string path = cache_file();
  {
    Judge a(settings_for(server.endpoint()), http_transport(), path);
    a.judge("k", "q", "g", "p");
  }
  {
    std::FILE* f = std::fopen(path.c_str(), "ab");
    ASSERT_NE(f, nullptr);
    std::fputs("{\"key\": \"k2\", \"quest", f);  // a crash in the middle of an append
    std::fclose(f);
  }
  Judge b(settings_for(server.endpoint()), http_transport(), path);
  EXPECT_TRUE(b.judge("k", "q", "g", "p").cached);
  b.judge("k2", "q", "g", "p2");
  EXPECT_EQ(read_jsonl(path, false).records.size(), 2u);
  EXPECT_EQ(read_jsonl(path, false).n_torn_bytes, 0);
}

TEST(Judge, ConcurrentJudgingIsSafe) {
  FakeServer server([](const httplib::Request&, httplib::Response& res, int) {
    reply_verdict(res, "{'pred': 'no', 'score': 0}");
  });
  const std::string path = cache_file();
  Judge judge(settings_for(server.endpoint()), http_transport(), path);
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 8; ++i) {
        if (judge.judge(std::to_string(t) + "/" + std::to_string(i), "q", "g", "p").score == 0) ++ok;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 32);
  EXPECT_EQ(judge.n_requests(), 32);
  EXPECT_EQ(read_jsonl(path, false).records.size(), 32u);
}

TEST(Judge, CheckPassesAgainstAWorkingJudge) {
  FakeServer server([](const httplib::Request&, httplib::Response& res, int) {
    reply_verdict(res, "{'pred': 'yes', 'score': 5}");
  });
  const std::string path = cache_file();
  Judge judge(settings_for(server.endpoint()), http_transport(), path);
  EXPECT_NO_THROW(judge.check());
  EXPECT_EQ(server.n_seen(), 1);
  EXPECT_TRUE(read_jsonl(path, false).records.empty());  // the probe is not cached
}

TEST(Judge, CheckAgainstADownServerThrows) {
  const std::string endpoint = "http://127.0.0.1:" + std::to_string(closed_port()) + "/v1";
  JudgeSettings s = settings_for(endpoint);
  s.max_retries = 1;
  Judge judge(s, http_transport(), "");
  try {
    judge.check();
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_TRUE(contains(e.what(), endpoint)) << e.what();
    EXPECT_TRUE(contains(e.what(), "network error")) << e.what();
  }
  EXPECT_EQ(judge.n_requests(), 2);
}

TEST(Judge, CheckReportsAnAuthFailure) {
  FakeServer server([](const httplib::Request&, httplib::Response& res, int) {
    res.status = 403;
    res.set_content("forbidden model", "text/plain");
  });
  Judge judge(settings_for(server.endpoint()), http_transport(), "");
  try {
    judge.check();
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_TRUE(contains(e.what(), "HTTP 403")) << e.what();
    EXPECT_TRUE(contains(e.what(), "forbidden model")) << e.what();
  }
}

TEST(HttpClient, PostsJsonWithBearer) {
  FakeServer server([](const httplib::Request& req, httplib::Response& res, int) {
    res.status = 201;
    res.set_content("echo:" + req.body, "text/plain");
  });
  const serve::HttpResponse r = serve::http_post_json(server.base_url() + "/a/b?x=1", "{\"v\":1}", "tok", 5);
  EXPECT_EQ(r.status, 201);
  EXPECT_EQ(r.body, "echo:{\"v\":1}");
  EXPECT_TRUE(r.error.empty());
  const httplib::Request req = server.request(0);
  EXPECT_EQ(req.method, "POST");
  EXPECT_EQ(req.path, "/a/b");
  EXPECT_EQ(req.get_param_value("x"), "1");
  EXPECT_EQ(req.get_header_value("Authorization"), "Bearer tok");
  EXPECT_EQ(req.get_header_value("Content-Type"), "application/json");
}

TEST(HttpClient, GetWithoutBearerAndRootPath) {
  FakeServer server([](const httplib::Request&, httplib::Response& res, int) {
    res.status = 404;
    res.set_content("nope", "text/plain");
  });
  const serve::HttpResponse r = serve::http_get(server.base_url(), "", 5);
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body, "nope");
  const httplib::Request req = server.request(0);
  EXPECT_EQ(req.method, "GET");
  EXPECT_EQ(req.path, "/");
  EXPECT_FALSE(req.has_header("Authorization"));
}

TEST(HttpClient, ConnectionRefusedIsStatusZero) {
  const std::string url = "http://127.0.0.1:" + std::to_string(closed_port()) + "/v1/models";
  const serve::HttpResponse r = serve::http_get(url, "", 2);
  EXPECT_EQ(r.status, 0);
  EXPECT_FALSE(r.error.empty());
}

TEST(HttpClient, SlowServerTimesOut) {
  FakeServer server([](const httplib::Request&, httplib::Response& res, int) {
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    res.set_content("late", "text/plain");
  });
  const auto start = std::chrono::steady_clock::now();
  const serve::HttpResponse r = serve::http_post_json(server.endpoint(), "{}", "", 0.2);
  const double elapsed_sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r.status, 0);
  EXPECT_FALSE(r.error.empty());
  EXPECT_LT(elapsed_sec, 0.6);
}

TEST(HttpClient, HttpsIsTriedAndMalformedUrlsAreRejected) {
  {  // TLS to a port that does not listen: no response, no exception
    const serve::HttpResponse r = serve::http_get("https://127.0.0.1:1/v1", "", 1);
    EXPECT_EQ(r.status, 0);
    EXPECT_FALSE(r.error.empty());
  }
  for (const std::string url : {"127.0.0.1:8000/v1", "ftp://host/x", "http://", "http:///path", "http://host:/x",
                                "http://host:abc/", "http://host:70000/", "http://host:0/", "http://[::1/x",
                                "http://user@host/"}) {
    SCOPED_TRACE(url);
    try {
      serve::http_post_json(url, "{}", "", 1);
      ADD_FAILURE() << "expected ConfigError";
    } catch (const ConfigError& e) {
      EXPECT_TRUE(contains(e.what(), url)) << e.what();
    }
  }
  EXPECT_THROW(serve::http_get("http://127.0.0.1:1/", "", 0), ConfigError);
}

}  // namespace
}  // namespace mustdrop::eval
