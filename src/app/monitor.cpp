// `mustdrop monitor`: cameras watched for days. One model, one runtime, one session per source;
// questions on a schedule, on scene changes, typed on stdin and over the local HTTP API; every
// answer, miss, state change, outage, scene change and eviction summary appended to the events
// file; metrics at /metrics and on stderr.
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <map>
#include <set>

#include "app/commands.h"
#include "app/exit_codes.h"
#include "app/monitor.h"
#include "app/report.h"
#include "app/signals.h"
#include "config/pipeline_config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/sysinfo.h"
#include "prune/mustdrop/lsm.h"
#include "serve/api_server.h"
#include "serve/event_log.h"
#include "serve/metrics.h"

namespace mustdrop::app {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using monitor::Camera;

enum class Submitted { kOk, kBusy, kEmpty, kStopping };

// One asking of a question about one camera.
struct AnswerJob {
  Camera* camera = nullptr;
  std::string question_id;  // "" for typed and HTTP questions
  std::string origin;       // schedule | scene_change | interactive | http
  std::string question;
  int max_new_tokens = 0;   // 0 = generation.max_new_tokens
  double temperature = -1;  // < 0 = generation.temperature
  session::TextCallback on_text;
  const std::atomic<bool>* cancel = nullptr;
  std::function<void(const session::AnswerStats*, const std::string& error)> done;
};

json grounding_json(const Camera& cam, const std::vector<session::GroundSpan>& spans) {
  json out = json::array();
  for (const auto& g : spans) {
    out.push_back({{"from_utc", iso8601_utc(cam.unix_of(g.t_from_sec))},
                   {"to_utc", iso8601_utc(cam.unix_of(g.t_to_sec))},
                   {"span_sec", {g.t_from_sec, g.t_to_sec}},
                   {"share", g.share},
                   {"n_tokens", g.n_tokens}});
  }
  return out;
}

class Monitor {
 public:
  ~Monitor() { clear_stop_handler(); }
  Monitor(const MonitorArgs& args, config::MonitorConfig config)
      : args_(args), config_(std::move(config)), epoch_(unix_now()) {
    config::Config base;
    base.model = config_.model;
    base.generation = config_.generation;
    const std::string source = model_source(args.model, base, "monitor");
    pipeline_ = config::load_pipeline(config_.pipeline);
    chain_ = prune::Chain::build(pipeline_, config_.pipeline);
    scene_ok_ = false;
    for (const auto& p : chain_->pruners()) {
      const auto* lsm = dynamic_cast<const prune::Lsm*>(p.get());
      scene_ok_ = scene_ok_ || (lsm && lsm->options().temporal_frames > 1);
    }
    for (const auto& q : config_.questions) {
      if (q.on == "scene_change" && !scene_ok_) {
        throw ConfigError(args.config + ": questions " + q.id + ": on: scene_change needs temporal merging, and " +
                          config_.pipeline + " has no mustdrop.lsm with temporal_frames > 1");
      }
    }
    serve::EventLogOptions eo;
    eo.path = config_.events.path;
    eo.max_file_bytes = static_cast<int64_t>(config_.events.max_file_mb * 1024 * 1024);
    eo.max_files = config_.events.max_files;
    eo.sync = config_.events.sync;
    events_ = std::make_unique<serve::EventLog>(eo);
    options_ = generation_options(base);
    declare_metrics();

    auto t0 = Clock::now();
    model_ = load_model(args.model, source, base);
    MD_LOG_INFO("monitor", "model " << source << " (" << model_->config().architecture << ") loaded in "
                                    << std::chrono::duration<double>(Clock::now() - t0).count() << " s; pipeline "
                                    << pipeline_.name << "; " << config_.sources.size() << " source(s)");
    runtime_ = std::make_unique<pipeline::Runtime>(config_.threads);
    max_in_flight_ = config_.threads.answers + config_.http.max_queued;
    for (const auto& spec : config_.sources) {
      cameras_.push_back(std::make_unique<Camera>(
          spec, config_, *model_, *chain_, *runtime_, epoch_, [this](json e) { emit(std::move(e)); },
          [this](Camera& cam, double) { scene_changed(cam); }));
    }
  }

  int run() {
    emit({{"type", "start"},
          {"pipeline", pipeline_.name},
          {"sources", ids()},
          {"questions", config_.questions.size()},
          {"epoch_utc", iso8601_utc(epoch_)}});
    install_stop_handlers([this] { request_stop("signal"); });
    if (config_.http.enabled) start_http();  // a port in use fails before any camera connects
    for (auto& cam : cameras_) cam->start();
    std::thread scheduler([this] { schedule_loop(); });
    std::thread input;
    if (args_.interactive || (!args_.no_interactive && isatty(STDIN_FILENO))) {
      input_open_ = true;  // before the thread runs: the main loop must not see every source done and leave
      input = std::thread([this] { stdin_loop(); });
    }

    // Until a signal, --duration, or every source has ended (and its answers are written).
    const auto t_start = Clock::now();
    auto last_metrics = Clock::now();
    std::unique_lock<std::mutex> lock(mu_);
    while (!stopping_) {
      cv_.wait_for(lock, std::chrono::milliseconds(250));
      if (stopping_) break;
      lock.unlock();
      tick(last_metrics);
      lock.lock();
      if (args_.duration_sec > 0 && Clock::now() - t_start >= std::chrono::duration<double>(args_.duration_sec)) {
        stop_reason_ = "duration";
        break;
      }
      bool all_done = std::all_of(cameras_.begin(), cameras_.end(), [](const auto& c) { return c->finished(); });
      if (all_done && in_flight_ == 0 && !input_open_) {
        stop_reason_ = "every source ended";
        break;
      }
    }
    stopping_ = true;
    lock.unlock();
    shutdown();
    if (scheduler.joinable()) scheduler.join();
    if (input.joinable()) input.join();
    // Nothing could ever be read: that is an input error, not a quiet success.
    std::string failures;
    for (const auto& cam : cameras_) {
      if (cam->ever_live() || cam->state() != monitor::State::kFailed) return kExitOk;
      failures += "\n  " + cam->id() + ": " + cam->failure();
    }
    throw InputError("no source could be read:" + failures);
  }

 private:
  std::vector<std::string> ids() const {
    std::vector<std::string> out;
    for (const auto& c : cameras_) out.push_back(c->id());
    return out;
  }
  Camera* find(const std::string& id) {
    for (auto& c : cameras_) {
      if (c->id() == id) return c.get();
    }
    return nullptr;
  }

  void emit(json e) { events_->write(std::move(e)); }

  void request_stop(const std::string& why) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) stop_reason_ = why;
    stopping_ = true;
    cv_.notify_all();
  }

  // Stop accepting (HTTP, schedule, stdin), end the sources, let running answers finish for a
  // while, then cancel what is left; every answer is recorded; a summary closes the file.
  void shutdown() {
    MD_LOG_INFO("monitor", "stopping (" << stop_reason_ << ")");
    for (auto& cam : cameras_) cam->stop();
    for (auto& cam : cameras_) cam->join();
    {
      // New questions are refused now (HTTP: 503); those asked before may finish.
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::duration<double>(args_.grace_sec), [&] { return in_flight_ == 0; });
    }
    if (server_) server_->stop();  // open HTTP answers are cancelled
    runtime_->stop();  // answers still running end now (recorded as interrupted)
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return in_flight_ == 0; });
    }
    summarise_evictions();
    json sources = json::object();
    for (auto& cam : cameras_) sources[cam->id()] = cam->status();
    emit({{"type", "stop"},
          {"reason", stop_reason_},
          {"sources", sources},
          {"rss_bytes", rss_bytes()},
          {"rss_after_warmup_bytes", rss_warm_},
          {"events_failed", events_->n_failed()}});
  }

  // --- answers ---

  Submitted submit(AnswerJob job) {
    Camera& cam = *job.camera;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return Submitted::kStopping;
      if (cam.session().snapshot()->frames.empty()) return Submitted::kEmpty;
      if (in_flight_ >= max_in_flight_) return Submitted::kBusy;
      ++in_flight_;
    }
    model::GenerationOptions o = options_;
    if (job.max_new_tokens > 0) o.max_new_tokens = job.max_new_tokens;
    if (job.temperature >= 0) o.temperature = job.temperature;
    const std::string prompt =
        cam.spec().system_prompt.empty() ? job.question : cam.spec().system_prompt + "\n" + job.question;
    const double asked = unix_now();
    std::future<session::AnswerStats> future;
    try {
      future = runtime_->ask(cam.session(), pipeline::Ask{prompt, o, job.on_text, job.cancel, nullptr});
    } catch (const std::exception& e) {  // not queued: refused like a full queue (callers run on plain threads)
      MD_LOG_WARN("monitor", "cannot queue an answer: " << e.what());
      finish_one();
      return Submitted::kBusy;
    }
    // A waiter per answer (at most max_in_flight_ of them): records it as it completes.
    // Everything it holds (tensors, the HTTP sink) is released before finish_one(): the monitor
    // may end right after, and nothing of the answer may outlive it.
    std::thread waiter;
    try {
      waiter = std::thread([this, job = std::move(job), future = std::move(future), asked]() mutable {
      {
        AnswerJob mine = std::move(job);
        std::future<session::AnswerStats> result = std::move(future);
        std::string error;
        std::optional<session::AnswerStats> st;
        try {
          st = result.get();
        } catch (const std::exception& e) {
          error = e.what();
        }
        try {
          record(mine, asked, st ? &*st : nullptr, error);
        } catch (const std::exception& e) {
          MD_LOG_WARN("monitor", "recording an answer failed: " << e.what());
        }
        try {  // whoever waits for the answer (a typed line, an HTTP client) hears of it in any case
          if (mine.done) mine.done(st ? &*st : nullptr, error);
        } catch (const std::exception& e) {
          MD_LOG_WARN("monitor", "delivering an answer failed: " << e.what());
        }
      }
      finish_one();
    });
    } catch (const std::system_error& e) {  // no thread to be had: refused like a full queue
      MD_LOG_WARN("monitor", "cannot start an answer: " << e.what());
      finish_one();
      return Submitted::kBusy;
    }
    waiter.detach();
    return Submitted::kOk;
  }

  void finish_one() {
    std::lock_guard<std::mutex> lock(mu_);
    --in_flight_;
    cv_.notify_all();
  }

  void record(const AnswerJob& job, double asked, const session::AnswerStats* st, const std::string& error) {
    Camera& cam = *job.camera;
    const double total_ms = (unix_now() - asked) * 1000.0;
    json e = {{"type", st ? "answer" : "answer_failed"},
              {"source", cam.id()},
              {"question_id", job.question_id},
              {"origin", job.origin},
              {"question", job.question},
              {"asked_utc", iso8601_utc(asked)},
              {"total_ms", total_ms}};
    if (!st) {
      e["error"] = error;
      cam.count_answer(false);
      emit(std::move(e));
      return;
    }
    cam.count_answer(true);
    json memory = memory_use_json(*st);
    memory["span_utc"] = {iso8601_utc(cam.unix_of(st->memory.t_first_sec)), iso8601_utc(cam.unix_of(st->memory.t_last_sec))};
    bool outage = false;
    for (const auto& g : st->memory.gaps) outage = outage || g.reason == "outage";
    memory["spans_outage"] = outage;
    json stages = json::array();
    for (const auto& r : cam.session().vision_records()) {
      stages.push_back({{"name", r.name}, {"layer", r.layer}, {"n_in", r.n_in}, {"n_out", r.n_out}, {"over", "frames"}});
    }
    for (const auto& r : st->stages) {
      stages.push_back({{"name", r.name}, {"layer", r.layer}, {"n_in", r.n_in}, {"n_out", r.n_out}, {"over", "answer"}});
    }
    e["answer"] = st->answer;
    e["ttft_ms"] = st->ttft_ms;
    e["prefill_ms"] = st->prefill_ms;
    e["decode_ms_per_token"] = st->decode_ms_per_token;
    e["memory"] = memory;
    e["tokens"] = {{"vision_to_llm", st->n_vision_tokens},
                   {"prompt", st->n_prompt_tokens},
                   {"generated", st->n_generated},
                   {"vision_kv_after_decode", st->n_vision_kv_after_decode}};
    e["kv_bytes_peak"] = st->kv_bytes_peak;
    e["stages"] = stages;
    e["grounding"] = grounding_json(cam, st->grounding);
    e["interrupted"] = st->interrupted;
    e["stopped_by_eos"] = st->stopped_by_eos;
    const serve::Labels l = {{"source", cam.id()}};
    metrics_.observe("mustdrop_ttft_seconds", l, st->ttft_ms / 1000.0);
    if (st->decode_ms_per_token > 0) metrics_.observe("mustdrop_decode_tokens_per_second", l, 1000.0 / st->decode_ms_per_token);
    if (job.origin == "schedule" || job.origin == "scene_change") print_answer(cam, job, *st);
    emit(std::move(e));
  }

  void print_answer(const Camera& cam, const AnswerJob& job, const session::AnswerStats& st) {
    std::lock_guard<std::mutex> lock(out_mu_);
    std::cout << "[" << iso8601_utc(unix_now()) << "] " << cam.id() << " " << job.question_id << ": " << st.answer << std::endl;
  }

  void missed(Camera& cam, const config::MonitorQuestion& q, const std::string& origin, const std::string& reason) {
    cam.count_answer(false);
    MD_LOG_DEBUG("monitor", cam.id() << " " << q.id << ": not asked: " << reason);
    emit({{"type", "question_missed"}, {"source", cam.id()}, {"question_id", q.id}, {"origin", origin}, {"reason", reason}});
  }

  // Asks `q` about `cam` unless it cannot be now (then records why).
  void ask_triggered(Camera& cam, const config::MonitorQuestion& q, const std::string& origin) {
    const std::string key = q.id + "\n" + cam.id();
    if (cam.state() == monitor::State::kPaused) return missed(cam, q, origin, "the source is paused");
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (running_.count(key)) return missed(cam, q, origin, "the previous asking is still being answered");
      running_.insert(key);
    }
    AnswerJob job;
    job.camera = &cam;
    job.question_id = q.id;
    job.origin = origin;
    job.question = q.text;
    job.max_new_tokens = q.max_new_tokens;
    job.done = [this, key](const session::AnswerStats*, const std::string&) {
      std::lock_guard<std::mutex> lock(mu_);
      running_.erase(key);
    };
    Submitted s = submit(std::move(job));
    if (s == Submitted::kOk) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      running_.erase(key);
    }
    switch (s) {
      case Submitted::kOk:
        return;
      case Submitted::kBusy:
        return missed(cam, q, origin, "the answer queue is full");
      case Submitted::kEmpty:
        return missed(cam, q, origin, std::string("no frame in memory yet (source ") + state_name(cam.state()) + ")");
      case Submitted::kStopping:
        return missed(cam, q, origin, "the monitor is stopping");
    }
  }

  bool asks_about(const config::MonitorQuestion& q, const Camera& cam) const {
    return q.sources.empty() || std::count(q.sources.begin(), q.sources.end(), cam.id()) > 0;
  }

  void scene_changed(Camera& cam) {
    const auto now = Clock::now();
    for (const auto& q : config_.questions) {
      if (q.on != "scene_change" || !asks_about(q, cam)) continue;
      {
        std::lock_guard<std::mutex> lock(mu_);
        auto [it, fresh] = last_scene_ask_.try_emplace(q.id + "\n" + cam.id(), now);
        if (!fresh && now - it->second < std::chrono::duration<double>(q.cooldown_sec)) continue;
        it->second = now;
      }
      ask_triggered(cam, q, "scene_change");
    }
  }

  // Every every_sec, from the start; a schedule that fell behind (the machine was busy) records
  // the askings it skipped instead of running them all at once.
  void schedule_loop() {
    struct Due {
      const config::MonitorQuestion* q;
      Camera* cam;
      Clock::time_point next;
    };
    std::vector<Due> due;
    for (const auto& q : config_.questions) {
      if (q.every_sec <= 0) continue;
      for (auto& cam : cameras_) {
        if (asks_about(q, *cam)) due.push_back({&q, cam.get(), Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(q.every_sec))});
      }
    }
    std::unique_lock<std::mutex> lock(mu_);
    while (!stopping_) {
      cv_.wait_for(lock, std::chrono::milliseconds(100));
      if (stopping_) break;
      lock.unlock();
      const auto now = Clock::now();
      for (auto& d : due) {
        if (now < d.next || d.cam->finished()) continue;
        const auto period = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(d.q->every_sec));
        int64_t late = static_cast<int64_t>((now - d.next) / period);
        d.next += period * (late + 1);
        for (int64_t i = 0; i < std::min<int64_t>(late, 100); ++i) {
          missed(*d.cam, *d.q, "schedule", "the schedule fell behind (the machine was busy)");
        }
        ask_triggered(*d.cam, *d.q, "schedule");
      }
      lock.lock();
    }
  }

  // --- stdin ---

  void stdin_loop() {
    std::cerr << "monitor: type a question for " << cameras_.front()->id() << " (or @id question); Ctrl-D ends input\n";
    std::string buffer;
    char chunk[4096];
    while (!stopping()) {
      pollfd p{STDIN_FILENO, POLLIN, 0};
      int r = poll(&p, 1, 200);
      if (r <= 0) continue;
      ssize_t n = read(STDIN_FILENO, chunk, sizeof chunk);
      if (n <= 0) break;
      buffer.append(chunk, static_cast<size_t>(n));
      for (size_t nl; (nl = buffer.find('\n')) != std::string::npos;) {
        std::string line = buffer.substr(0, nl);
        buffer.erase(0, nl + 1);
        typed(line);
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    input_open_ = false;
  }

  bool stopping() {
    std::lock_guard<std::mutex> lock(mu_);
    return stopping_;
  }

  void typed(std::string line) {
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
    size_t b = line.find_first_not_of(" \t");
    if (b == std::string::npos) return;
    line = line.substr(b);
    Camera* cam = cameras_.front().get();
    if (line[0] == '@') {
      size_t sp = line.find(' ');
      std::string id = line.substr(1, sp == std::string::npos ? std::string::npos : sp - 1);
      cam = find(id);
      if (!cam) {
        std::cerr << "monitor: no source '" << id << "' (sources: " << nlohmann::json(ids()).dump() << ")\n";
        return;
      }
      line = sp == std::string::npos ? "" : line.substr(sp + 1);
      if (line.empty()) return;
    }
    // Shared with the answer's waiter: set_value() may still be inside the promise when this
    // thread wakes and leaves.
    auto finished = std::make_shared<std::promise<void>>();
    std::future<void> answered = finished->get_future();
    AnswerJob job;
    job.camera = cam;
    job.origin = "interactive";
    job.question = line;
    job.on_text = [this](const std::string& piece) {
      std::lock_guard<std::mutex> lock(out_mu_);
      std::cout << piece << std::flush;
    };
    job.done = [this, finished, cam](const session::AnswerStats* st, const std::string& error) {
      std::lock_guard<std::mutex> lock(out_mu_);
      if (st) {
        std::cout << std::endl;
        std::cerr << "  (" << cam->id() << ", " << st->memory.n_frames << " frames, ttft "
                  << static_cast<int>(st->ttft_ms) << " ms)\n";
      } else {
        std::cerr << "monitor: the answer failed: " << error << "\n";
      }
      finished->set_value();
    };
    Submitted s = submit(std::move(job));
    switch (s) {
      case Submitted::kOk:
        answered.wait();
        return;
      case Submitted::kBusy:
        std::cerr << "monitor: the answer queue is full; ask again in a moment\n";
        return;
      case Submitted::kEmpty:
        std::cerr << "monitor: " << cam->id() << " has no frame in memory yet (" << state_name(cam->state()) << ")\n";
        return;
      case Submitted::kStopping:
        return;
    }
  }

  // --- HTTP ---

  void start_http() {
    serve::ServerOptions so;
    so.bind = config_.http.bind;
    so.port = config_.http.port;
    so.max_body_bytes = static_cast<int64_t>(config_.http.max_body_kb * 1024);
    if (!config_.http.token_env.empty()) {
      const char* token = std::getenv(config_.http.token_env.c_str());
      if (!token || !*token) {
        throw ConfigError(args_.config + ": http.token_env names $" + config_.http.token_env + ", which is not set");
      }
      so.bearer_token = token;
    }
    so.threads = std::max(8, max_in_flight_ + 4);
    serve::Handlers h;
    h.models = [this] { return ids(); };
    h.source = [this](const std::string& id) -> std::optional<json> {
      Camera* cam = find(id);
      if (!cam) return std::nullopt;
      return cam->status();
    };
    h.pause = [this](const std::string& id, bool pause) -> std::optional<json> {
      Camera* cam = find(id);
      if (!cam) return std::nullopt;
      bool changed = pause ? cam->pause() : cam->resume();
      emit({{"type", pause ? "paused" : "resumed"}, {"source", id}, {"changed", changed}, {"by", "http"}});
      json j = cam->status();
      j["changed"] = changed;
      return j;
    };
    h.metrics = [this] {
      refresh_metrics();
      return metrics_.render();
    };
    h.healthy = [this] { return !stopping(); };
    h.chat = [this](const serve::ChatRequest& req, std::shared_ptr<serve::ChatSink> sink) { return chat(req, sink); };
    server_ = std::make_unique<serve::ApiServer>(so, h);
    MD_LOG_INFO("monitor", "HTTP API on http://" << server_->address() << ":" << server_->port() << "/v1");
    {
      std::lock_guard<std::mutex> lock(out_mu_);
      std::cerr << "monitor: listening on http://" << server_->address() << ":" << server_->port() << std::endl;
    }
    emit({{"type", "http"}, {"address", server_->address()}, {"port", server_->port()}});
  }

  serve::Admit chat(const serve::ChatRequest& req, const std::shared_ptr<serve::ChatSink>& sink) {
    serve::Admit admit;
    Camera* cam = req.source_id.empty() ? cameras_.front().get() : find(req.source_id);
    if (!cam) {
      admit.admission = serve::Admission::kUnknownSource;
      admit.message = "no source '" + req.source_id + "' (GET /v1/models lists them)";
      return admit;
    }
    admit.source_id = cam->id();
    AnswerJob job;
    job.camera = cam;
    job.origin = "http";
    job.question = req.system.empty() ? req.question : req.system + "\n" + req.question;
    job.max_new_tokens = req.max_tokens;
    job.temperature = req.temperature;
    job.cancel = sink->cancelled();
    job.on_text = [sink](const std::string& piece) { sink->text(piece); };
    job.done = [sink, cam](const session::AnswerStats* st, const std::string& error) {
      if (!st) return sink->fail(500, error);
      json extra = {{"source", cam->id()},
                    {"memory_span_utc", {iso8601_utc(cam->unix_of(st->memory.t_first_sec)), iso8601_utc(cam->unix_of(st->memory.t_last_sec))}},
                    {"n_frames", st->memory.n_frames},
                    {"vision_tokens", st->n_vision_tokens},
                    {"ttft_ms", st->ttft_ms},
                    {"grounding", grounding_json(*cam, st->grounding)}};
      sink->done({st->n_prompt_tokens, st->n_generated}, st->stopped_by_eos ? "stop" : "length", extra);
    };
    switch (submit(std::move(job))) {
      case Submitted::kOk:
        break;
      case Submitted::kBusy:
        admit.admission = serve::Admission::kBusy;
        admit.retry_after_sec = 2;
        admit.message = "the answer queue is full (" + std::to_string(max_in_flight_) + " answers); retry shortly";
        break;
      case Submitted::kEmpty:
        admit.admission = serve::Admission::kUnavailable;
        admit.retry_after_sec = 2;
        admit.message = "source '" + cam->id() + "' has no frame in memory yet (" + state_name(cam->state()) + ")";
        break;
      case Submitted::kStopping:
        admit.admission = serve::Admission::kUnavailable;
        admit.message = "the monitor is stopping";
        break;
    }
    return admit;
  }

  // --- metrics ---

  void declare_metrics() {
    auto& m = metrics_;
    m.counter("mustdrop_frames_decoded_total", "Frames decoded from the source");
    m.counter("mustdrop_frames_sampled_total", "Frames kept by the sampler");
    m.counter("mustdrop_frames_encoded_total", "Frames encoded into the session memory");
    m.counter("mustdrop_frames_dropped_total", "Sampled frames dropped because the encoder fell behind");
    m.counter("mustdrop_reconnects_total", "Connections regained after an outage");
    m.counter("mustdrop_outages_total", "Times the source was lost");
    m.gauge("mustdrop_source_state", "1 for the state the source is in");
    m.gauge("mustdrop_lag_seconds", "Wall time since the newest frame in memory was captured (live sources)");
    m.gauge("mustdrop_memory_tokens", "Vision tokens in the session memory");
    m.gauge("mustdrop_memory_kv_bytes", "Bytes of the memory's tokens plus their cached KV prefix");
    m.gauge("mustdrop_memory_budget_tokens", "Vision tokens the memory budget allows");
    m.gauge("mustdrop_tokens_kept", "Tokens left after each vision stage, summed over the frames so far");
    m.gauge("mustdrop_frame_novelty", "Share of the newest frame's windows unlike the same windows before it");
    m.counter("mustdrop_scene_changes_total", "Frames judged a scene change");
    m.counter("mustdrop_questions_answered_total", "Answers given");
    m.counter("mustdrop_questions_missed_total", "Scheduled or triggered askings not answered, and failed answers");
    m.histogram("mustdrop_ttft_seconds", "Question in to first answer token", {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60});
    m.histogram("mustdrop_decode_tokens_per_second", "Generated tokens per second after the first",
                {0.5, 1, 2, 5, 10, 20, 50, 100, 200});
    m.gauge("mustdrop_answers_in_flight", "Answers queued or running over all sources");
    m.gauge("mustdrop_rss_bytes", "Resident memory of the process");
  }

  void refresh_metrics() {
    auto& m = metrics_;
    for (auto& cam : cameras_) {
      const serve::Labels l = {{"source", cam->id()}};
      monitor::CameraCounters c = cam->counters();
      m.set("mustdrop_frames_decoded_total", l, double(c.n_frames_decoded));
      m.set("mustdrop_frames_sampled_total", l, double(c.n_frames_sampled));
      m.set("mustdrop_frames_encoded_total", l, double(c.n_frames_encoded));
      m.set("mustdrop_frames_dropped_total", l, double(c.n_frames_dropped));
      m.set("mustdrop_reconnects_total", l, double(c.n_reconnects));
      m.set("mustdrop_outages_total", l, double(c.n_outages));
      for (auto s : {monitor::State::kConnecting, monitor::State::kLive, monitor::State::kLost, monitor::State::kPaused,
                     monitor::State::kEnded, monitor::State::kFailed, monitor::State::kStopped}) {
        m.set("mustdrop_source_state", {{"source", cam->id()}, {"state", state_name(s)}}, c.state == s ? 1 : 0);
      }
      m.set("mustdrop_lag_seconds", l,
            c.state == monitor::State::kLive && c.newest_frame_unix > 0 ? std::max(0.0, unix_now() - c.newest_frame_unix) : 0);
      auto snap = cam->session().snapshot();
      m.set("mustdrop_memory_tokens", l, double(snap->n_tokens));
      m.set("mustdrop_memory_kv_bytes", l, double(snap->bytes));
      m.set("mustdrop_memory_budget_tokens", l, double(cam->session().memory().token_capacity()));
      for (const auto& r : cam->session().vision_records()) {
        m.set("mustdrop_tokens_kept", {{"source", cam->id()}, {"stage", r.name}}, double(r.n_out));
      }
      m.set("mustdrop_frame_novelty", l, c.last_novelty);
      m.set("mustdrop_scene_changes_total", l, double(c.n_scene_changes));
      m.set("mustdrop_questions_answered_total", l, double(c.n_answered));
      m.set("mustdrop_questions_missed_total", l, double(c.n_missed));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      m.set("mustdrop_answers_in_flight", {}, in_flight_);
    }
    m.set("mustdrop_rss_bytes", {}, double(rss_bytes()));
  }

  // Periodic work of the main thread: warm-up RSS, eviction summaries, the metrics line.
  void tick(Clock::time_point& last_metrics) {
    if (rss_warm_ == 0) {  // counted only until the warm RSS is taken
      int64_t encoded = 0;
      for (auto& cam : cameras_) encoded += cam->counters().n_frames_encoded;
      if (encoded >= args_.warmup_frames) {
        rss_warm_ = rss_bytes();
        emit({{"type", "warm"}, {"frames_encoded", encoded}, {"rss_bytes", rss_warm_}});
      }
    }
    if (Clock::now() - last_evictions_ >= std::chrono::seconds(kEvictionSummarySec)) {
      last_evictions_ = Clock::now();
      summarise_evictions();
    }
    const double interval = config_.metrics_interval_sec;
    const bool due = interval > 0 && Clock::now() - last_metrics >= std::chrono::duration<double>(interval);
    if (!due) return;
    last_metrics = Clock::now();
    for (auto& cam : cameras_) {
      auto snap = cam->session().snapshot();
      monitor::CameraCounters c = cam->counters();
      json st = cam->status();
      MD_LOG_INFO("metrics", cam->id() << ": " << state_name(c.state) << ", frames " << c.n_frames_decoded << " decoded / "
                                       << c.n_frames_sampled << " sampled / " << c.n_frames_encoded << " encoded / "
                                       << c.n_frames_dropped << " dropped, lag " << st.value("lag_sec", 0.0)
                                       << " s, memory " << snap->n_tokens << " tokens " << snap->bytes / 1024 << " KiB, "
                                       << c.n_reconnects << " reconnects, " << c.n_scene_changes << " scene changes, answers "
                                       << c.n_answered << " (missed " << c.n_missed << ")");
      emit({{"type", "metrics"}, {"source", cam->id()}, {"status", st}, {"rss_bytes", rss_bytes()}});
    }
  }

  // One event per source with the evictions since the last one (a busy camera evicts every frame).
  void summarise_evictions() {
    for (auto& cam : cameras_) {
      auto snap = cam->session().snapshot();
      int64_t& seen = evictions_seen_[cam->id()];
      int64_t& tokens_seen = evicted_tokens_seen_[cam->id()];
      if (snap->n_evictions > seen) {
        emit({{"type", "evictions"},
              {"source", cam->id()},
              {"n_evictions", snap->n_evictions - seen},
              {"n_tokens", snap->n_evicted_tokens - tokens_seen},
              {"memory_tokens", snap->n_tokens},
              {"memory_bytes", snap->bytes},
              {"memory_span_utc", {iso8601_utc(cam->unix_of(snap->t_first_sec)), iso8601_utc(cam->unix_of(snap->t_last_sec))}}});
        seen = snap->n_evictions;
        tokens_seen = snap->n_evicted_tokens;
      }
    }
  }

  const MonitorArgs& args_;
  config::MonitorConfig config_;
  double epoch_;
  config::PipelineConfig pipeline_;
  std::unique_ptr<prune::Chain> chain_;
  bool scene_ok_ = false;
  std::unique_ptr<serve::EventLog> events_;
  serve::Registry metrics_;
  model::GenerationOptions options_;
  std::unique_ptr<model::VisionLanguageModel> model_;
  std::unique_ptr<pipeline::Runtime> runtime_;
  std::vector<std::unique_ptr<Camera>> cameras_;
  std::unique_ptr<serve::ApiServer> server_;

  std::mutex mu_;  // everything below
  std::condition_variable cv_;
  bool stopping_ = false;
  bool input_open_ = false;
  std::string stop_reason_;
  int in_flight_ = 0;
  int max_in_flight_ = 1;
  std::set<std::string> running_;  // question + source of triggered askings being answered
  std::map<std::string, Clock::time_point> last_scene_ask_;
  int64_t rss_warm_ = 0;
  static constexpr int kEvictionSummarySec = 10;
  Clock::time_point last_evictions_ = Clock::now();
  std::map<std::string, int64_t> evictions_seen_, evicted_tokens_seen_;  // main thread only
  std::mutex out_mu_;  // stdout
};

}  // namespace

int run_monitor(const MonitorArgs& args) {
  config::MonitorConfig config = config::load_monitor(args.config, args.overrides);
  log::set_level(log::parse_level(args.log_level.empty() ? config.log_level : args.log_level));
  Monitor monitor(args, std::move(config));
  return monitor.run();
}

}  // namespace mustdrop::app
