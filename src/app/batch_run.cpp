// `mustdrop batch`, inference: workers take whole videos; each video is decoded once, encoded
// once per set of pipelines with the same vision stages (the feature cache), and every pending
// (question, pipeline) pair is answered on the one runtime and appended to predictions.jsonl.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <thread>

#include "app/batch.h"
#include "app/report.h"
#include "app/signals.h"
#include "core/error.h"
#include "core/log.h"
#include "core/timing.h"
#include "eval/jsonl.h"
#include "model/device.h"
#include "pipeline/runtime.h"
#include "session/session.h"

namespace mustdrop::app::batch {

using nlohmann::json;

namespace {

std::string now_iso() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

std::string format_duration(double sec) {
  if (!(sec >= 0) || sec > 1e8) return "?";
  long s = static_cast<long>(sec + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s / 60) % 60);
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%lds", s);
  return buf;
}

// done/total, rate, ETA and failures on stderr: one redrawn line on a terminal, a plain line
// every `interval_sec` otherwise (logs, CI, a cluster's job output).
class Progress {
 public:
  Progress(int64_t total, double interval_sec) : total_(total), interval_sec_(interval_sec), tty_(isatty(2) == 1) {}
  void tick(bool failed) {
    std::lock_guard<std::mutex> lock(mu_);
    ++done_;
    if (failed) ++failed_;
    double since = std::chrono::duration<double>(Clock::now() - last_).count();
    if ((tty_ && since >= 0.2) || since >= interval_sec_ || done_ == total_) print();
  }
  void finish() {
    std::lock_guard<std::mutex> lock(mu_);
    if (tty_) std::fprintf(stderr, "\n");
  }

 private:
  void print() {
    last_ = Clock::now();
    double elapsed = std::chrono::duration<double>(last_ - start_).count();
    double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0;
    double eta = rate > 0 ? static_cast<double>(total_ - done_) / rate : -1;
    char line[200];
    int pct = total_ > 0 ? static_cast<int>(100 * done_ / total_) : 100;
    if (tty_) {
      char bar[21];
      int filled = pct / 5;
      for (int i = 0; i < 20; ++i) bar[i] = i < filled ? '#' : '.';
      bar[20] = 0;
      std::snprintf(line, sizeof line, "\r[%s] %lld/%lld %3d%%  %.2f answers/s  ETA %s  failures %lld ", bar,
                    static_cast<long long>(done_), static_cast<long long>(total_), pct, rate,
                    format_duration(eta).c_str(), static_cast<long long>(failed_));
    } else {
      std::snprintf(line, sizeof line, "batch: %lld/%lld (%d%%) %.2f answers/s, ETA %s, failures %lld\n",
                    static_cast<long long>(done_), static_cast<long long>(total_), pct, rate,
                    format_duration(eta).c_str(), static_cast<long long>(failed_));
    }
    std::fputs(line, stderr);
    std::fflush(stderr);
  }

  std::mutex mu_;
  int64_t total_, done_ = 0, failed_ = 0;
  double interval_sec_;
  bool tty_;
  Clock::time_point start_ = Clock::now(), last_ = Clock::now();
};

// A remembered frame as it entered the memory: what a session with the same vision stages is
// given instead of encoding the frame again.
session::FrameTokens as_frame_tokens(const session::MemoryFrame& f) {
  session::FrameTokens t;
  t.seq = f.seq;
  t.t_sec = f.t_sec;
  t.media = f.media;
  t.tokens = f.tokens;
  t.ledger = f.ledger;
  t.n_tower_tokens = f.n_tower_tokens;
  t.tokens_per_vision_layer = f.tokens_per_vision_layer;
  t.cls_only_tokens = f.cls_only_tokens;
  return t;  // growths are already in the earlier frames' ledgers
}

// One video's features for one vision signature.
struct Features {
  std::shared_ptr<const session::MemorySnapshot> memory;
  std::vector<prune::StageRecord> vision_records;
  double encode_ms = 0;
};

// How a pipeline got its memory of a video.
struct Use {
  Features features;
  bool cached = false;         // the tower's features came from another pipeline
  bool memory_shared = false;  // the whole memory (prefix included) is another pipeline's
};

class Runner {
 public:
  Runner(const Job& job, const Existing& existing, const std::string& predictions_path,
         const model::VisionLanguageModel& model, pipeline::Runtime& runtime, int64_t total)
      : job_(job),
        existing_(existing),
        out_(predictions_path),
        model_(model),
        runtime_(runtime),
        progress_(total, job.config.progress_interval_sec) {
    base_.video = job.config.video;
    base_.model = job.config.model;
    base_.generation = job.config.generation;
    base_.memory = job.config.memory;
    if (job.config.replay == "clip") base_.memory.max_tokens = 0, base_.memory.max_mb = 0;
    generation_ = generation_options(base_);
  }

  void video(const std::vector<WorkItem>& items, int worker) {
    // The pending pairs of this video, per pipeline.
    std::vector<std::vector<const WorkItem*>> pending(job_.pipelines.size());
    bool any = false;
    for (size_t p = 0; p < job_.pipelines.size(); ++p) {
      for (const auto& w : items) {
        if (!existing_.done.count({job_.pipelines[p].config.name, w.qa->question_id})) {
          pending[p].push_back(&w);
          any = true;
        }
      }
    }
    if (!any) return;
    const WorkItem& first = items.front();
    if (first.video_path.empty() || !first.video_error.empty()) {
      std::string status = first.video_path.empty() ? "missing_video" : "unreadable_video";
      std::string why = first.video_path.empty() ? "no file for video '" + first.qa->video_name + "' under " +
                                                       job_.config.dataset.video_dir
                                                 : first.video_error;
      fail_all(pending, status, why, worker);
      return;
    }
    auto t0 = Clock::now();
    Sampled frames;
    try {
      frames = sample_frames(first.video_path, base_, model_);
    } catch (const std::exception& e) {
      fail_all(pending, "video_error", e.what(), worker);
      return;
    }
    const double decode_ms = ms_since(t0);
    // The feature cache: tower features per vision signature; whole memories (prefix included)
    // per vision signature and prefix depth, which pipelines that differ only in their prefill
    // and decode stages above that depth share.
    const bool share = job_.config.feature_cache && job_.config.replay == "clip";
    std::map<std::string, Features> features_by_vision;
    std::map<std::string, std::pair<std::unique_ptr<session::Session>, Features>> memories;
    for (size_t p = 0; p < job_.pipelines.size() && !stopping(); ++p) {
      if (pending[p].empty()) continue;
      const Pipeline& pipe = job_.pipelines[p];
      const std::string memory_key =
          pipe.vision_signature + "|prefix " + std::to_string(pipe.chain->prefix_layer(model_));
      Use use;
      auto shared = share ? memories.find(memory_key) : memories.end();
      if (shared != memories.end()) {  // the same memory: nothing to compute
        use.features = shared->second.second;
        use.features.encode_ms = 0;
        use.cached = use.memory_shared = true;
        for (const WorkItem* w : pending[p]) {
          if (stopping()) return;
          answer(*w, pipe, *shared->second.first, use, decode_ms, worker, pipe.chain.get());
        }
        continue;
      }
      auto s = std::make_unique<session::Session>(model_, pipe.chain.get(), base_.memory);
      auto hit = share ? features_by_vision.find(pipe.vision_signature) : features_by_vision.end();
      try {
        auto t1 = Clock::now();
        if (hit != features_by_vision.end()) {
          use.features = hit->second;
          for (const auto& f : use.features.memory->frames) s->add_frame(as_frame_tokens(*f));
          use.cached = true;  // no tower: the memory and its prefix only
        } else {
          pipeline::SourceOptions every;
          every.video = base_.video;
          every.every_frame = true;
          every.frames_in_flight = job_.config.threads.frames_in_flight;
          std::shared_ptr<pipeline::SourceRun> run = runtime_.add_source(replay(frames), *s, every);
          run->wait();
          if (run->error()) std::rethrow_exception(run->error());
          if (stopping()) return;
          use.features.memory = s->snapshot();
          use.features.vision_records = s->vision_records();
          if (share) features_by_vision[pipe.vision_signature] = use.features;
        }
        model::synchronize(model_.llm().device());  // on a GPU, the encoding's queued work
        use.features.encode_ms = ms_since(t1);
      } catch (const std::exception& e) {
        for (const WorkItem* w : pending[p]) record_failure(*w, pipe, "video_error", e.what(), worker);
        continue;
      }
      for (const WorkItem* w : pending[p]) {
        if (stopping()) return;
        answer(*w, pipe, *s, use, decode_ms, worker, nullptr);
      }
      if (share) memories[memory_key] = {std::move(s), use.features};
    }
  }

  bool stopping() const { return runtime_.stopped(); }
  void finish() { progress_.finish(); }
  int64_t n_done() const { return n_done_; }
  int64_t n_failed() const { return n_failed_; }

 private:
  json base_record(const WorkItem& w, const Pipeline& pipe, const std::string& status, int worker) const {
    const eval::QaItem& q = *w.qa;
    return {{"question_id", q.question_id},
            {"video", q.video_name},
            {"video_file", w.video_path},
            {"question", q.question},
            {"answer", q.has_answer ? json(q.answer) : json(nullptr)},
            {"type", q.type},
            {"pipeline", pipe.config.name},
            {"status", status},
            {"replay", job_.config.replay},
            {"config_hash", job_.config_hash},
            {"model_hash", job_.model_hash},
            {"shard", {job_.shard.index, job_.shard.count}},
            {"worker", worker},
            {"time", now_iso()}};
  }

  void write(const json& record, bool failed) {
    out_.append(record);
    (failed ? n_failed_ : n_done_)++;
    progress_.tick(failed);
  }

  void record_failure(const WorkItem& w, const Pipeline& pipe, const std::string& status, const std::string& why,
                      int worker) {
    json r = base_record(w, pipe, status, worker);
    r["prediction"] = nullptr;
    r["error"] = why;
    MD_LOG_DEBUG("batch", w.qa->question_id << " (" << pipe.config.name << "): " << status << ": " << why);
    write(r, true);
  }

  void fail_all(const std::vector<std::vector<const WorkItem*>>& pending, const std::string& status,
                const std::string& why, int worker) {
    for (size_t p = 0; p < pending.size(); ++p) {
      for (const WorkItem* w : pending[p]) record_failure(*w, job_.pipelines[p], status, why, worker);
    }
  }

  void answer(const WorkItem& w, const Pipeline& pipe, const session::Session& s, const Use& use, double decode_ms,
              int worker, const prune::Chain* chain) {
    const Features& features = use.features;
    pipeline::Ask ask;
    ask.question = w.qa->question;
    ask.options = generation_;
    ask.chain = chain;
    auto t0 = Clock::now();
    session::AnswerStats a;
    try {
      a = runtime_.ask(s, std::move(ask)).get();
    } catch (const pipeline::Stopped&) {
      return;  // Ctrl-C before it started: a resumed run answers it
    } catch (const std::exception& e) {
      record_failure(w, pipe, "answer_error", e.what(), worker);
      return;
    }
    if (a.interrupted) return;  // cut short by Ctrl-C: not a prediction
    const double answer_ms = ms_since(t0);
    Accounting acc = account(*s.snapshot(), features.vision_records, model_.config(), {a});
    json r = base_record(w, pipe, "ok", worker);
    r["prediction"] = a.answer;
    r["ids"] = a.ids;
    r["n_generated"] = a.n_generated;
    r["stopped_by_eos"] = a.stopped_by_eos;
    r["vision_tokens"] = {{"in", acc.n_vision_tokens_in},
                          {"to_llm", acc.n_vision_tokens_to_llm},
                          {"layer_avg", acc.n_vision_tokens_layer_avg},
                          {"kv_after_decode", acc.n_vision_kv_after_decode},
                          {"in_s", acc.n_vision_tokens_in_s},
                          {"stages", acc.stages}};
    r["flops"] = {{"total", acc.flops_total}, {"unpruned", acc.flops_unpruned}, {"vision", acc.flops_vision}};
    r["ms"] = {{"answer", answer_ms},
               {"ttft", a.ttft_ms},
               {"prefill", a.prefill_ms},
               {"decode_per_token", a.decode_ms_per_token},
               {"video_decode", decode_ms},
               {"video_encode", features.encode_ms}};  // this pipeline's memory of the video (shared by its questions)
    r["features_cached"] = use.cached;
    r["memory_shared"] = use.memory_shared;
    r["memory"] = memory_use_json(a);
    write(r, false);
  }

  const Job& job_;
  const Existing& existing_;
  eval::JsonlAppender out_;
  const model::VisionLanguageModel& model_;
  pipeline::Runtime& runtime_;
  config::Config base_;
  model::GenerationOptions generation_;
  Progress progress_;
  std::atomic<int64_t> n_done_{0}, n_failed_{0};
};

std::mutex g_runtime_mu;
pipeline::Runtime* g_runtime = nullptr;  // the runtime answering now (under g_runtime_mu)

// Makes `runtime` the one a stop signal stops, for its lifetime.
struct StopRegistration {
  explicit StopRegistration(pipeline::Runtime& runtime) {
    std::lock_guard<std::mutex> lock(g_runtime_mu);
    g_runtime = &runtime;
    if (stop_requested()) runtime.stop();  // the signal came while the model loaded
  }
  ~StopRegistration() {
    std::lock_guard<std::mutex> lock(g_runtime_mu);
    g_runtime = nullptr;
  }
};

}  // namespace

void stop_running() {
  std::lock_guard<std::mutex> lock(g_runtime_mu);
  if (g_runtime) g_runtime->stop();
}

RunResult run_work(const Job& job, const std::vector<std::vector<WorkItem>>& work, const Existing& existing,
                   const std::string& predictions_path) {
  int64_t total = 0;
  for (const auto& group : work) {
    for (const auto& w : group) {
      for (const auto& p : job.pipelines) total += existing.done.count({p.config.name, w.qa->question_id}) ? 0 : 1;
    }
  }
  RunResult result;
  if (total == 0) return result;

  config::Config base;
  base.model = job.config.model;
  auto model = load_model(job.model_args, job.model_source, base);
  MD_LOG_INFO("batch", "model " << job.model_source << " (" << model->config().architecture << "), "
                                << job.pipelines.size() << " pipeline(s), " << work.size() << " video(s), " << total
                                << " answer(s) to go, " << job.config.workers << " worker(s)");

  // Workers share the cores: each answer gets its share of LibTorch threads, and as many answers
  // run at once as there are workers.
  config::ThreadsConfig threads = job.config.threads;
  const int workers = job.config.workers;
  pipeline::ThreadPlan plan = pipeline::plan_threads(threads);
  threads.answers = std::max(threads.answers, workers);
  if (threads.torch_intra_op == 0) threads.torch_intra_op = std::max(1, plan.total / workers);
  pipeline::Runtime runtime(threads);
  StopRegistration registration(runtime);

  Runner runner(job, existing, predictions_path, *model, runtime, total);
  std::atomic<size_t> next{0};
  std::mutex err_mu;
  std::exception_ptr fatal;
  auto work_loop = [&](int worker) {
    try {
      for (size_t i = next++; i < work.size() && !runner.stopping(); i = next++) runner.video(work[i], worker);
    } catch (...) {  // only what cannot be recorded against an item (the disk full, say)
      std::lock_guard<std::mutex> lock(err_mu);
      if (!fatal) fatal = std::current_exception();
      runtime.stop();
    }
  };
  std::vector<std::thread> pool;
  for (int w = 1; w < workers; ++w) pool.emplace_back(work_loop, w);
  work_loop(0);
  for (auto& t : pool) t.join();
  runner.finish();
  if (fatal) std::rethrow_exception(fatal);
  result.n_done = runner.n_done();
  result.n_failed = runner.n_failed();
  result.interrupted = runtime.stopped();
  return result;
}

}  // namespace mustdrop::app::batch
