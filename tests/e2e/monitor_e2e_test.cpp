// `mustdrop monitor` end to end with the tiny model: scene changes on a cut and none on a static
// scene, the HTTP API (SSE read by an independent Python client, every error code, two clients),
// a question while frames flow, two cameras with independent budgets, an accelerated soak, SIGINT,
// and against the local RTSP server: a first connection before the camera is up, and a camera
// killed and restarted 5 times.
#include <httplib.h>
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <thread>

#include "e2e/e2e_util.h"

namespace mustdrop::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Every line of an events file, each checked to be one JSON object.
std::vector<json> read_events(const std::string& path) {
  std::vector<json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    json j = json::parse(line, nullptr, false);
    EXPECT_TRUE(j.is_object()) << path << ": not a JSON object: " << line;
    if (j.is_object()) out.push_back(j);
  }
  return out;
}

std::vector<json> of_type(const std::vector<json>& events, const std::string& type) {
  std::vector<json> out;
  for (const auto& e : events) {
    if (e.value("type", "") == type) out.push_back(e);
  }
  return out;
}

// A monitor config: `sources` and `rest` are YAML text; events go to `events`.
std::string write_config(const std::string& name, const std::string& sources, const std::string& rest,
                         const std::string& events) {
  std::string path = temp_dir() + "/" + name + ".yaml";
  std::ofstream f(path);
  f << "pipeline: " << source_dir() << "/pipelines/mustdrop.yaml\n"
    << "model:\n  dir: " << tiny_model() << "\n"
    << "generation:\n  max_new_tokens: 6\n"
    << "sources:\n" << sources << rest << "events:\n  path: " << events << "\n";
  return path;
}

// A monitor running in the background (SIGKILLed at the end if still running).
struct Running {
  std::unique_ptr<Child> child;
  std::string events;
  int port = 0;
  // Waits for the "http" event and returns the port (0 on timeout).
  int wait_port(double timeout_sec = 60) {
    auto until = Clock::now() + std::chrono::duration<double>(timeout_sec);
    while (Clock::now() < until) {
      for (const auto& e : read_events(events)) {
        if (e.value("type", "") == "http") return port = e.value("port", 0);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return 0;
  }
  int stop() {
    child->signal(SIGINT);
    return child->wait(60);
  }
};

Running start_monitor(const std::string& config, const std::string& events, std::vector<std::string> extra = {}) {
  fs::remove(events);
  std::vector<std::string> argv = {mustdrop_binary(), "monitor", config, "--no-interactive"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  Running r;
  r.events = events;
  r.child = std::make_unique<Child>(argv);
  return r;
}

// A client of the monitor's API, with the bearer token when one is given.
httplib::Client api_client(int port, const std::string& token = "", int read_timeout_sec = 60) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(read_timeout_sec, 0);
  if (!token.empty()) c.set_bearer_token_auth(token);
  return c;
}

json get_json(httplib::Client& c, const std::string& path) {
  auto res = c.Get(path);
  EXPECT_TRUE(res) << path;
  if (!res) return json();
  EXPECT_EQ(res->status, 200) << path << ": " << res->body;
  return json::parse(res->body, nullptr, false);
}

// Polls GET /v1/sources/{id} until `pred` holds (or the timeout); returns the last status.
template <class Pred>
json wait_source(httplib::Client& c, const std::string& id, Pred pred, double timeout_sec = 60) {
  json s;
  auto until = Clock::now() + std::chrono::duration<double>(timeout_sec);
  while (Clock::now() < until) {
    auto res = c.Get("/v1/sources/" + id);
    if (res && res->status == 200) {
      s = json::parse(res->body, nullptr, false);
      if (pred(s)) return s;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return s;
}

int64_t encoded(const json& status) { return status.contains("frames") ? status["frames"].value("encoded", 0) : 0; }

std::string chat_body(const std::string& model, const std::string& question, bool stream, int max_tokens = 6) {
  json body = {{"messages", json::array({{{"role", "user"}, {"content", question}}})},
               {"stream", stream},
               {"max_tokens", max_tokens}};
  if (!model.empty()) body["model"] = model;
  return body.dump();
}

// The clip that cuts from one still scene (colour bars) to another (a test pattern) at 4 s.
std::string cut_clip() {
  return make_clip("cut.mp4",
                   "-f lavfi -i smptebars=size=320x240:rate=25:duration=4 -f lavfi -i "
                   "rgbtestsrc=size=320x240:rate=25:duration=4 -filter_complex [0:v][1:v]concat=n=2:v=1[v] -map [v] "
                   "-c:v libx264 -pix_fmt yuv420p");
}

std::string file_source(const std::string& id, const std::string& url, bool realtime, bool loop, double fps,
                        int frames = 0) {
  return "  - id: " + id + "\n    url: " + url + "\n    realtime: " + (realtime ? "true" : "false") +
         "\n    loop: " + (loop ? "true" : "false") + "\n    sampler: {kind: fps, fps: " + std::to_string(fps) +
         ", frames: " + std::to_string(frames) + "}\n";
}

TEST(Monitor, OneSceneChangeNearTheCutAndNoneOnAStaticScene) {
  const std::string events = temp_dir() + "/scene.jsonl";
  std::string config = write_config(
      "scene", file_source("cut", cut_clip(), false, false, 4),
      "questions:\n  - id: what\n    text: What changed?\n    on: scene_change\n    cooldown_sec: 0\nhttp:\n  enabled: false\n",
      events);
  ProcResult r = mustdrop({"monitor", config, "--no-interactive"}, 300);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto all = read_events(events);
  auto changes = of_type(all, "scene_change");
  ASSERT_EQ(changes.size(), 1u) << r.err;
  EXPECT_NEAR(changes[0]["stream_sec"].get<double>(), 4.0, 0.6) << changes[0].dump();
  EXPECT_GE(changes[0]["share"].get<double>(), 0.5);
  // The question triggered by it was answered.
  int answered = 0;
  for (const auto& a : of_type(all, "answer")) answered += a["origin"] == "scene_change" && a["question_id"] == "what";
  EXPECT_EQ(answered, 1);

  const std::string still_events = temp_dir() + "/still.jsonl";
  std::string still = make_clip("still.mp4", "-f lavfi -i smptebars=size=320x240:rate=25:duration=8 -c:v libx264 -pix_fmt yuv420p");
  config = write_config("still", file_source("still", still, false, false, 4),
                        "questions:\n  - id: what\n    text: What changed?\n    on: scene_change\nhttp:\n  enabled: false\n",
                        still_events);
  r = mustdrop({"monitor", config, "--no-interactive"}, 300);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  all = read_events(still_events);
  EXPECT_EQ(of_type(all, "scene_change").size(), 0u);
  auto stop = of_type(all, "stop");
  ASSERT_EQ(stop.size(), 1u);
  EXPECT_EQ(stop[0]["sources"]["still"]["frames"]["encoded"], 32);  // 8 s at 4 fps: every frame
}

TEST(Monitor, HttpApiStreamsAnswersAndReportsErrors) {
  const std::string events = temp_dir() + "/http.jsonl";
  setenv("MUSTDROP_TEST_TOKEN", "s3cret", 1);
  std::string config = write_config(
      "http", file_source("cam", clip(), true, true, 4) + file_source("yard", clip(), true, true, 1),
      "threads:\n  answers: 1\nhttp:\n  port: 0\n  max_body_kb: 4\n  max_queued: 1\n  token_env: MUSTDROP_TEST_TOKEN\n",
      events);
  Running mon = start_monitor(config, events);
  ASSERT_GT(mon.wait_port(), 0);
  httplib::Client c = api_client(mon.port, "s3cret");
  json s = wait_source(c, "cam", [](const json& j) { return encoded(j) >= 2; });
  ASSERT_GE(encoded(s), 2) << s.dump();

  // An answer asked while frames flow: the counters moved during it.
  const int64_t before = encoded(get_json(c, "/v1/sources/cam"));
  auto res = c.Post("/v1/chat/completions", chat_body("cam", "What is the red car doing?", false, 200), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  json reply = json::parse(res->body);
  EXPECT_EQ(reply["object"], "chat.completion");
  EXPECT_EQ(reply["model"], "cam");
  EXPECT_GT(reply["usage"]["completion_tokens"].get<int>(), 0);
  EXPECT_EQ(reply["usage"]["total_tokens"].get<int>(),
            reply["usage"]["prompt_tokens"].get<int>() + reply["usage"]["completion_tokens"].get<int>());
  EXPECT_FALSE(reply["choices"][0]["message"]["content"].get<std::string>().empty());
  const json extra = reply["mustdrop"];
  EXPECT_EQ(extra["source"], "cam");
  ASSERT_FALSE(extra["grounding"].empty());
  json after = wait_source(c, "cam", [&](const json& j) { return encoded(j) > before; }, 10);
  EXPECT_GT(encoded(after), before) << "no frame entered the memory while the answer ran";

  // Server-sent events, read by an independent client (Python's http.client).
  ProcResult py = run_process({"/usr/bin/python3", source_dir() + "/tests/unit/serve/sse_client.py", "127.0.0.1",
                               std::to_string(mon.port), chat_body("yard", "Describe the scene.", true, 8), "s3cret"},
                              120);
  ASSERT_EQ(py.exit_code, 0) << py.err;
  json summary = json::parse(py.out);
  EXPECT_GE(summary["content_chunks"].get<int>(), 2);
  EXPECT_EQ(summary["model"], "yard");

  // Two clients at once both get their answers.
  int ok[2] = {0, 0};
  std::thread t1([&] {
    httplib::Client c1 = api_client(mon.port, "s3cret");
    auto r1 = c1.Post("/v1/chat/completions", chat_body("cam", "Is it day?", false), "application/json");
    ok[0] = r1 ? r1->status : -1;
  });
  std::thread t2([&] {
    httplib::Client c2 = api_client(mon.port, "s3cret");
    auto r2 = c2.Post("/v1/chat/completions", chat_body("yard", "Is it night?", false), "application/json");
    ok[1] = r2 ? r2->status : -1;
  });
  t1.join();
  t2.join();
  EXPECT_EQ(ok[0], 200);
  EXPECT_EQ(ok[1], 200);

  // Errors: 400, 401, 404, 413, 429 with Retry-After.
  auto bad = c.Post("/v1/chat/completions", "{not json", "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  auto no_user = c.Post("/v1/chat/completions", R"({"messages":[{"role":"system","content":"x"}]})", "application/json");
  ASSERT_TRUE(no_user);
  EXPECT_EQ(no_user->status, 400);
  auto unknown = c.Post("/v1/chat/completions", chat_body("garage", "hi", false), "application/json");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
  auto big = c.Post("/v1/chat/completions", chat_body("cam", std::string(8000, 'a'), false), "application/json");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
  httplib::Client anon("127.0.0.1", mon.port);
  auto unauth = anon.Get("/v1/models");
  ASSERT_TRUE(unauth);
  EXPECT_EQ(unauth->status, 401);
  auto health = anon.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  {
    // One answer runs and one waits (threads.answers 1 + http.max_queued 1): a third is refused.
    std::vector<std::thread> long_ones;
    std::atomic<int> n429{0}, n200{0};
    std::string retry_after;
    std::mutex mu;
    for (int i = 0; i < 4; ++i) {
      long_ones.emplace_back([&] {
        httplib::Client ci = api_client(mon.port, "s3cret", 120);
        auto ri = ci.Post("/v1/chat/completions", chat_body("cam", "Tell me everything.", false, 400), "application/json");
        if (ri && ri->status == 429) {
          ++n429;
          std::lock_guard<std::mutex> lock(mu);
          retry_after = ri->get_header_value("Retry-After");
        }
        if (ri && ri->status == 200) ++n200;
      });
    }
    for (auto& t : long_ones) t.join();
    EXPECT_GE(n429.load(), 1);
    EXPECT_GE(n200.load(), 1);
    EXPECT_FALSE(retry_after.empty());
  }

  // Models, metrics, pause and resume (the memory stays).
  json models = get_json(c, "/v1/models");
  ASSERT_EQ(models["data"].size(), 2u);
  EXPECT_EQ(models["data"][0]["id"], "cam");
  auto metrics = c.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("mustdrop_frames_encoded_total{source=\"cam\"}"), std::string::npos);
  EXPECT_NE(metrics->body.find("mustdrop_ttft_seconds_bucket{source=\"cam\""), std::string::npos);
  auto paused = c.Post("/v1/sources/cam/pause", "", "application/json");
  ASSERT_TRUE(paused);
  ASSERT_EQ(paused->status, 200);
  json p = wait_source(c, "cam", [](const json& j) { return j["state"] == "paused"; }, 10);
  EXPECT_EQ(p["state"], "paused");
  const int64_t tokens_paused = p["memory"]["n_tokens"];
  EXPECT_GT(tokens_paused, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  json still = get_json(c, "/v1/sources/cam");
  EXPECT_EQ(encoded(still), encoded(p)) << "a paused source took frames";
  EXPECT_EQ(still["memory"]["n_tokens"], tokens_paused);
  auto resumed = c.Post("/v1/sources/cam/resume", "", "application/json");
  ASSERT_TRUE(resumed);
  json live = wait_source(c, "cam", [&](const json& j) { return j["state"] == "live" && encoded(j) > encoded(p); }, 20);
  EXPECT_GT(encoded(live), encoded(p));
  // A resume right after a pause, before the source has even stopped: it comes back, not ended.
  ASSERT_TRUE(c.Post("/v1/sources/cam/pause", "", "application/json"));
  ASSERT_TRUE(c.Post("/v1/sources/cam/resume", "", "application/json"));
  const int64_t before_quick = encoded(get_json(c, "/v1/sources/cam"));
  json back = wait_source(c, "cam", [&](const json& j) { return j["state"] == "live" && encoded(j) > before_quick; }, 20);
  EXPECT_EQ(back["state"], "live") << back.dump();
  auto missing = c.Post("/v1/sources/garage/pause", "", "application/json");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);

  EXPECT_EQ(mon.stop(), 0);
  auto all = read_events(events);
  ASSERT_EQ(of_type(all, "stop").size(), 1u);
  int http_answers = 0;
  for (const auto& a : of_type(all, "answer")) http_answers += a["origin"] == "http";
  EXPECT_GE(http_answers, 5);
}

TEST(Monitor, TwoCamerasOneModelIndependentBudgets) {
  const std::string events = temp_dir() + "/two.jsonl";
  std::string config = write_config(
      "two", file_source("busy", clip(), false, true, 8, 120) + file_source("calm", clip(), true, true, 1, 3),
      "memory:\n  max_tokens: 2000\nquestions:\n  - id: q\n    text: What is there?\n    every_sec: 0.5\n"
      "    max_new_tokens: 3\nhttp:\n  enabled: false\n",
      events);
  ProcResult r = mustdrop({"monitor", config, "--no-interactive"}, 300);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto all = read_events(events);
  std::map<std::string, int> answers;
  for (const auto& a : of_type(all, "answer")) ++answers[a["source"]];
  EXPECT_GE(answers["busy"], 1);
  EXPECT_GE(answers["calm"], 1);
  auto stop = of_type(all, "stop");
  ASSERT_EQ(stop.size(), 1u);
  const json busy = stop[0]["sources"]["busy"]["memory"], calm = stop[0]["sources"]["calm"]["memory"];
  EXPECT_LE(busy["peak_tokens"].get<int64_t>(), busy["token_capacity"].get<int64_t>());
  EXPECT_GT(busy["n_evicted_tokens"].get<int64_t>(), 0) << "120 frames should overflow 2000 tokens";
  EXPECT_EQ(calm["n_evicted_tokens"].get<int64_t>(), 0) << "the busy camera's evictions reached the calm one";
  EXPECT_EQ(stop[0]["sources"]["busy"]["frames"]["encoded"], 120);
  EXPECT_EQ(stop[0]["sources"]["calm"]["frames"]["encoded"], 3);
  // The model was loaded once for both.
  size_t loads = 0;
  for (size_t at = 0; (at = r.err.find("loaded in", at)) != std::string::npos; ++at) ++loads;
  EXPECT_EQ(loads, 1u);
}

TEST(Monitor, SoakOneHourAtOneFramePerSecondStaysInBudget) {
  // 3600 frames (one hour of a camera at 1 frame/s), fed as fast as the machine allows.
  const std::string events = temp_dir() + "/soak.jsonl";
  std::string config = write_config(
      "soak", file_source("cam", clip(), false, true, 5, 3600),
      "memory:\n  max_tokens: 1500\n  max_mb: 1.5\nquestions:\n  - id: q\n    text: What is the car doing?\n"
      "    every_sec: 2\n    max_new_tokens: 3\nhttp:\n  enabled: false\nmetrics_interval_sec: 5\n",
      events);
  auto t0 = Clock::now();
  ProcResult r = mustdrop({"monitor", config, "--no-interactive", "--warmup-frames", "300"}, 900);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto all = read_events(events);
  auto stop = of_type(all, "stop");
  ASSERT_EQ(stop.size(), 1u);
  const json cam = stop[0]["sources"]["cam"];
  EXPECT_EQ(cam["frames"]["encoded"], 3600);
  const json m = cam["memory"];
  const int64_t budget = int64_t(1.5 * 1024 * 1024);
  EXPECT_LE(m["peak_bytes"].get<int64_t>(), budget) << m.dump();
  EXPECT_LE(m["peak_tokens"].get<int64_t>(), m["token_capacity"].get<int64_t>());
  EXPECT_LE(m["token_capacity"].get<int64_t>(), 1500);
  // Every metrics sample along the way was within the budget too.
  int samples = 0;
  for (const auto& e : of_type(all, "metrics")) {
    ++samples;
    EXPECT_LE(e["status"]["memory"]["bytes"].get<int64_t>(), budget);
  }
  EXPECT_GT(cam["answers"]["answered"].get<int64_t>(), 0);
  const double warm = stop[0]["rss_after_warmup_bytes"], end = stop[0]["rss_bytes"];
  ASSERT_GT(warm, 0);
  std::printf("soak: 3600 frames in %.1f s, %d metrics samples; RSS after warm-up %.1f MB, at the end %.1f MB (%+.1f%%)\n",
              std::chrono::duration<double>(Clock::now() - t0).count(), samples, warm / 1e6, end / 1e6,
              100.0 * (end - warm) / warm);
}

TEST(Monitor, SigintStopsCleanlyAndKeepsEveryEvent) {
  const std::string events = temp_dir() + "/sigint.jsonl";
  std::string config = write_config("sigint", file_source("cam", clip(), true, true, 4),
                                    "questions:\n  - id: q\n    text: What is there?\n    every_sec: 1\n"
                                    "http:\n  port: 0\n",
                                    events);
  Running mon = start_monitor(config, events);
  ASSERT_GT(mon.wait_port(), 0);
  std::this_thread::sleep_for(std::chrono::seconds(4));
  EXPECT_EQ(mon.stop(), 0);
  auto all = read_events(events);
  ASSERT_FALSE(all.empty());
  EXPECT_EQ(all.back()["type"], "stop");
  EXPECT_EQ(all.back()["reason"], "signal");
  EXPECT_GE(of_type(all, "answer").size(), 1u);
}

TEST(Monitor, TypedQuestionsAreAnsweredOnStdout) {
  const std::string events = temp_dir() + "/typed.jsonl";
  std::string config = write_config("typed", file_source("cam", clip(), true, true, 4) + file_source("yard", clip(), true, true, 2),
                                    "http:\n  enabled: false\nmetrics_interval_sec: 0.25\n", events);
  // Lines come once both sources have frames in memory (as their metrics events say: a fixed
  // sleep is not enough on a loaded machine); then stdin ends and --duration stops the monitor.
  ProcResult r = run_process({"bash", "-c",
                              "EVENTS=\"$2\"; ready() { grep -F '\"source\":\"'$1'\"' \"$EVENTS\" 2>/dev/null | grep -q '\"n_frames\":[1-9]'; }; "
                              "(for i in $(seq 300); do ready cam && ready yard && break; sleep 0.2; done; "
                              "printf 'What is there?\\n@yard Is it red?\\n@garage hi\\n') | \"$0\" monitor \"$1\" "
                              "--interactive --duration 12",
                              mustdrop_binary(), config, events},
                             120);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("no source 'garage'"), std::string::npos) << r.err;
  std::map<std::string, std::string> typed;
  for (const auto& a : of_type(read_events(events), "answer")) {
    if (a["origin"] == "interactive") typed[a["source"]] = a["answer"];
  }
  ASSERT_EQ(typed.size(), 2u) << r.err;
  // Each answer was streamed to stdout as it was generated.
  EXPECT_NE(r.out.find(typed["cam"]), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(typed["yard"]), std::string::npos) << r.out;
}

TEST(Monitor, BadConfigNamesTheFileAndKey) {
  std::string path = temp_dir() + "/bad-monitor.yaml";
  std::ofstream(path) << "sources:\n  - id: a\n    url: x.mp4\n    sampler: {kind: uniform}\n";
  ProcResult r = mustdrop({"monitor", path, "--no-interactive"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(path + ":4:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("sources[0].sampler.kind"), std::string::npos) << r.err;
  std::ofstream(path) << "sources:\n  - id: a\n    url: x.mp4\nquestions:\n  - id: q\n    text: hi\n    sources: [b]\n    every_sec: 1\n";
  r = mustdrop({"monitor", path, "--no-interactive"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown source 'b'"), std::string::npos) << r.err;
  // A file that is not there: the source fails at once (no retrying a local path forever), the
  // events say why, and with nothing ever read the exit is an input error naming the file.
  const std::string events = temp_dir() + "/missing.jsonl";
  const std::string missing = temp_dir() + "/no-such-clip.mp4";
  std::string config = write_config("missing", file_source("gone", missing, true, false, 1), "http:\n  enabled: false\n", events);
  r = mustdrop({"monitor", config, "--no-interactive"}, 120);
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find(missing), std::string::npos) << r.err;
  bool failed = false;
  for (const auto& e : of_type(read_events(events), "state")) failed = failed || e["to"] == "failed";
  EXPECT_TRUE(failed);
}

#ifdef MUSTDROP_RTSP_SERVER

TEST(MonitorRtsp, FirstConnectionSucceedsOnceTheCameraComesUp) {
  // A free port with nothing behind it yet.
  RtspServer probe = start_rtsp_server();
  ASSERT_GT(probe.port, 0);
  const int port = probe.port;
  probe.child->signal(SIGKILL);
  probe.child->wait(10);
  const std::string events = temp_dir() + "/late.jsonl";
  std::string config = write_config(
      "late",
      "  - id: door\n    url: rtsp://viewer:s3cret@127.0.0.1:" + std::to_string(port) +
          "/stream\n    sampler: {kind: fps, fps: 2}\n    reconnect: {initial_delay_ms: 200, max_delay_ms: 500}\n",
      "video:\n  live:\n    read_timeout_ms: 1500\n    open_timeout_ms: 2000\n    watchdog_sec: 3\nhttp:\n  port: 0\n",
      events);
  Running mon = start_monitor(config, events);
  ASSERT_GT(mon.wait_port(), 0);
  httplib::Client c = api_client(mon.port);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  EXPECT_EQ(get_json(c, "/v1/sources/door")["state"], "connecting");
  RtspServer camera = start_rtsp_server(port);
  ASSERT_EQ(camera.port, port);
  json s = wait_source(c, "door", [](const json& j) { return encoded(j) >= 2; }, 60);
  EXPECT_EQ(s["state"], "live");
  EXPECT_EQ(s["url"].get<std::string>().find("s3cret"), std::string::npos) << "the status shows the camera's password";
  auto res = c.Post("/v1/chat/completions", chat_body("door", "Is anyone there?", false), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(mon.stop(), 0);
}

TEST(MonitorRtsp, AFrameLimitEndsALiveSource) {
  RtspServer camera = start_rtsp_server();
  ASSERT_GT(camera.port, 0);
  const std::string events = temp_dir() + "/limit.jsonl";
  std::string config = write_config("limit", "  - id: door\n    url: " + camera.url() + "\n    sampler: {kind: fps, fps: 4, frames: 6}\n",
                                    "http:\n  enabled: false\n", events);
  ProcResult r = mustdrop({"monitor", config, "--no-interactive"}, 120);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto all = read_events(events);
  EXPECT_EQ(of_type(all, "outage_start").size(), 0u);
  auto stop = of_type(all, "stop");
  ASSERT_EQ(stop.size(), 1u);
  EXPECT_EQ(stop[0]["reason"], "every source ended");
  EXPECT_EQ(stop[0]["sources"]["door"]["frames"]["encoded"], 6);
  EXPECT_EQ(stop[0]["sources"]["door"]["state"], "ended");
}

TEST(MonitorRtsp, CameraKilledAndRestartedFiveTimes) {
  RtspServer camera = start_rtsp_server();
  ASSERT_GT(camera.port, 0);
  const int port = camera.port;
  const std::string events = temp_dir() + "/restarts.jsonl";
  std::string config = write_config(
      "restarts",
      "  - id: door\n    url: " + camera.url() +
          "\n    sampler: {kind: fps, fps: 2}\n    reconnect: {initial_delay_ms: 100, max_delay_ms: 400}\n",
      "video:\n  live:\n    read_timeout_ms: 1500\n    open_timeout_ms: 2000\n    watchdog_sec: 3\n"
      "questions:\n  - id: q\n    text: Is anyone at the door?\n    every_sec: 1\n    max_new_tokens: 3\n"
      "http:\n  port: 0\n",
      events);
  Running mon = start_monitor(config, events);
  ASSERT_GT(mon.wait_port(), 0);
  httplib::Client c = api_client(mon.port, "", 30);
  int64_t last = encoded(wait_source(c, "door", [](const json& j) { return encoded(j) >= 2; }, 60));
  ASSERT_GE(last, 2);
  auto t_start = Clock::now();
  for (int round = 0; round < 5; ++round) {
    camera.child->signal(SIGKILL);
    camera.child->wait(10);
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    camera = start_rtsp_server(port);
    ASSERT_EQ(camera.port, port) << "round " << round << ": could not restart the camera";
    json s = wait_source(c, "door", [&](const json& j) { return j["state"] == "live" && encoded(j) >= last + 2; }, 60);
    ASSERT_GE(encoded(s), last + 2) << "round " << round << ": no frames after the restart: " << s.dump();
    last = encoded(s);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
  EXPECT_EQ(mon.stop(), 0);
  auto all = read_events(events);
  EXPECT_EQ(of_type(all, "start").size(), 1u) << "the monitor restarted";
  EXPECT_GE(of_type(all, "outage_start").size(), 5u);
  EXPECT_GE(of_type(all, "outage_end").size(), 5u);
  for (const auto& e : of_type(all, "outage_end")) {
    EXPECT_GT(e["seconds"].get<double>(), 0);
    EXPECT_TRUE(e.contains("frames_missed"));
  }
  int answered = 0, missed = 0;
  for (const auto& e : of_type(all, "answer")) answered += e["question_id"] == "q";
  for (const auto& e : of_type(all, "question_missed")) {
    missed += e["question_id"] == "q";
    EXPECT_FALSE(e.value("reason", "").empty());
  }
  // Every second was asked: answered or recorded as missed with a reason.
  EXPECT_GE(answered + missed, static_cast<int>(seconds) - 2) << answered << " answered, " << missed << " missed";
  EXPECT_GE(answered, 5);
  bool spans_outage = false;
  for (const auto& e : of_type(all, "answer")) spans_outage = spans_outage || e["memory"]["spans_outage"].get<bool>();
  EXPECT_TRUE(spans_outage) << "no answer said its memory spans an outage";
  // The model was loaded once: reconnects reload nothing.
  auto stop = of_type(all, "stop");
  ASSERT_EQ(stop.size(), 1u);
  EXPECT_GE(stop[0]["sources"]["door"]["reconnects"].get<int>(), 5);
}

#endif

}  // namespace
}  // namespace mustdrop::test
