#include "pipeline/runtime.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <oneapi/tbb/enumerable_thread_specific.h>
#include <oneapi/tbb/flow_graph.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>
#include <oneapi/tbb/task_scheduler_observer.h>

#include <algorithm>
#include <condition_variable>
#include <list>
#include <map>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "core/log.h"
#include "video/async_reader.h"
#include "video/preprocess.h"
#include "video/sampler.h"

namespace mustdrop::pipeline {
namespace {

namespace flow = tbb::flow;
using Clock = std::chrono::steady_clock;

// Sets LibTorch's intra-op threads once on every oneTBB worker that joins the arena.
class TorchThreadObserver : public tbb::task_scheduler_observer {
 public:
  TorchThreadObserver(tbb::task_arena& arena, int threads) : tbb::task_scheduler_observer(arena), threads_(threads) {
    observe(true);
  }
  ~TorchThreadObserver() override { observe(false); }
  void on_scheduler_entry(bool) override {
    thread_local int set_to = -1;
    if (set_to != threads_) {
      at::set_num_threads(threads_);  // rebuilds the pool: once per thread, never per task
      set_to = threads_;
    }
  }

 private:
  int threads_;
};

class Run;

struct FrameMsg {
  int64_t lane_seq = 0;  // order within the lane (the sequencer's key)
  Run* run = nullptr;    // the source the frame belongs to
  int64_t seq = 0;       // the frame's number in its session
  double t_sec = 0;
  model::Media media = model::Media::kVideo;
  bool eos = false;      // end of the source: no frame; its last message
  bool failed = false;
  int64_t dropped_before = 0;  // frames dropped since the previous one (the graph was slower)
  bool outage_before = false;  // the source was lost and came back before this frame
  double t_before = 0;         // the previous frame's time
  std::shared_ptr<video::Frame> frame;
  std::shared_ptr<video::ImageTensor> pixels;
  std::shared_ptr<prune::EncodedFrame> encoded;
  at::Tensor tokens;
};

// The nodes of one perception lane; pooled by the runtime and reused by later sources.
struct Lane {
  explicit Lane(flow::graph& g);
  flow::function_node<FrameMsg, FrameMsg> preprocess;
  flow::sequencer_node<FrameMsg> sequencer;
  flow::function_node<FrameMsg, FrameMsg> encoder;
  flow::function_node<FrameMsg, FrameMsg> projector;
  flow::sequencer_node<FrameMsg> in_order;  // oneTBB may pass a quick message past a slow one between nodes
  flow::function_node<FrameMsg, flow::continue_msg> memory;
  std::atomic<int64_t> next_seq{0};  // used by one feeder at a time
  bool busy = false;     // under Runtime::Impl::mu
};

struct AnswerJob {
  const session::Session* session = nullptr;
  std::shared_ptr<const session::MemorySnapshot> snapshot;
  Ask ask;
  std::shared_ptr<std::promise<session::AnswerStats>> done;
};

}  // namespace

struct Runtime::Impl {
  // The arena has `total` worker slots and none kept for callers: the threads that feed the graph
  // and wait for answers never run its tasks, so every slot works. The graph is built inside it.
  Impl(Runtime& rt, const config::ThreadsConfig& threads)
      : owner(rt), control(tbb::global_control::max_allowed_parallelism, static_cast<size_t>(rt.plan_.total) + 1),
        arena(rt.plan_.total, 0), observer(arena, rt.plan_.torch) {
    arena.execute([&] { graph = std::make_unique<flow::graph>(context); });
    answer = std::make_unique<flow::function_node<AnswerJob, flow::continue_msg>>(
        *graph, static_cast<size_t>(std::max(1, threads.answers)), [this](const AnswerJob& job) {
          run_answer(job);
          return flow::continue_msg();
        });
    at::set_num_threads(rt.plan_.torch);
  }

  // Runs `body` for node kind `name`, timing it; false when it threw (`error` gets the first).
  template <class F>
  bool guarded(const char* name, std::exception_ptr* error, std::mutex& error_mu, F&& body) {
    auto t0 = Clock::now();
    bool ok = true;
    try {
      c10::InferenceMode guard;
      body();
    } catch (...) {
      ok = false;
      std::lock_guard<std::mutex> lock(error_mu);
      if (error && !*error) *error = std::current_exception();
    }
    add_timing(name, std::chrono::duration<double, std::milli>(Clock::now() - t0).count(), 1);
    return ok;
  }

  void add_timing(const char* name, double ms, int64_t calls) {
    std::lock_guard<std::mutex> lock(mu);
    NodeTiming& t = timing[name];
    t.name = name;
    t.ms += ms;
    t.calls += calls;
  }
  void run_answer(const AnswerJob& job);
  Lane& take_lane();
  void release_lane(Lane& lane);

  Runtime& owner;
  tbb::global_control control;
  tbb::task_arena arena;
  TorchThreadObserver observer;
  tbb::task_group_context context;
  std::unique_ptr<flow::graph> graph;
  std::unique_ptr<flow::function_node<AnswerJob, flow::continue_msg>> answer;
  std::mutex mu;  // lanes, runs, timing
  std::list<std::unique_ptr<Lane>> lanes;
  std::vector<std::weak_ptr<SourceRun>> runs;
  std::map<std::string, NodeTiming> timing;
  std::mutex answer_error_mu;
};

namespace {

// One source read into one session on one lane.
class Run : public SourceRun {
 public:
  Run(Runtime::Impl& rt, Lane& lane, std::unique_ptr<video::Source> source, session::Session& session,
      const SourceOptions& options)
      : rt_(rt), lane_(lane), session_(session), options_(options), url_(source->info().url),
        next_frame_(session.next_frame_seq()),
        t_offset_(std::max(session.next_frame_time(), options.t_start_sec)) {
    const model::VisionLanguageModel& model = session.model();
    pre_ = options.video.preprocess;
    pre_.size = model.image_size();  // the tower decides the input side
    std::unique_ptr<video::Sampler> sampler;
    if (options.every_frame) {
      sampler = video::make_every_frame_sampler();
    } else {
      const video::ShortClip short_clip =
          model.video_frames() > 0 ? video::ShortClip::kRepeat : video::ShortClip::kDistinct;
      config::SamplerConfig sc = options.video.sampler;
      if (source->info().live && sc.kind == config::SamplerKind::kUniform) sc.kind = config::SamplerKind::kInterval;
      sampler = video::make_sampler(sc, short_clip);
    }
    reader_ = std::make_unique<video::AsyncReader>(std::move(source), std::move(sampler),
                                                   static_cast<size_t>(options.video.live.queue_frames));
    feeder_ = std::thread([this] { feed(); });
  }

  ~Run() override {
    stop();
    wait();  // the end-of-stream message names this run: it must have left the lane
  }

  PerceptionStats wait() override {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return finished_; });
    }
    join();
    return stats();
  }

  bool wait_for(std::chrono::milliseconds timeout) override {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return finished_; });
  }

  PerceptionStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    PerceptionStats s = final_;
    if (!joined_) {
      s.n_frames_sampled = reader_->n_sampled();
      s.n_frames_dropped = reader_->n_dropped();
    }
    s.n_frames_encoded = n_encoded_.load();
    return s;
  }

  void stop() override {
    stop_.store(true);
    std::lock_guard<std::mutex> lock(mu_);  // join() may be replacing reader_
    if (reader_) reader_->stop();
    cv_.notify_all();
  }

  std::exception_ptr error() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }
  const std::string& url() const override { return url_; }

  // --- used by the lane's nodes ---
  session::Session& session() { return session_; }
  const config::PreprocessConfig& preprocess_config() const { return pre_; }
  video::Preprocessor& preprocessor() {
    auto& p = preprocessors_.local();
    if (!p) p = std::make_unique<video::Preprocessor>(pre_);
    return *p;
  }
  bool stopping() const { return stop_.load(); }
  template <class F>
  bool guarded(const char* name, F&& body) {
    return rt_.guarded(name, &error_, mu_, std::forward<F>(body));
  }
  void encoded() { ++n_encoded_; }
  const std::function<void(const FrameNews&)>& on_frame() const { return options_.on_frame; }
  // A message left the lane (memory node): frees a place in flight; the end-of-stream message
  // finishes the run and frees the lane.
  void left_lane(bool eos) {
    // The lane goes back first: once finished_ is set a waiter may destroy this run, so nothing of
    // it is touched after the notification (made under the lock for the same reason).
    if (eos) rt_.release_lane(lane_);
    std::lock_guard<std::mutex> lock(mu_);
    --in_flight_;
    if (eos) finished_ = true;
    cv_.notify_all();
  }

 private:
  // The feeder: moves sampled frames into the lane, at most frames_in_flight at a time, then the
  // end-of-stream message. Its own thread: blocking here never holds a oneTBB worker.
  void feed() {
    double t_prev = 0;
    int64_t dropped_seen = 0;
    try {
      while (!stop_.load()) {
        auto t0 = Clock::now();
        std::optional<video::Frame> f = reader_->pop(std::chrono::milliseconds(100));
        rt_.add_timing("source", std::chrono::duration<double, std::milli>(Clock::now() - t0).count(), f ? 1 : 0);
        if (!f) {
          if (reader_->done()) break;
          continue;
        }
        if (!enter()) break;
        FrameMsg m;
        m.run = this;
        m.seq = next_frame_++;
        m.t_sec = f->t_sec + t_offset_;
        m.media = f->still_image ? model::Media::kImage : model::Media::kVideo;
        m.t_before = t_prev;
        m.outage_before = f->after_outage;
        const int64_t dropped = reader_->n_dropped();
        m.dropped_before = dropped - dropped_seen;
        dropped_seen = dropped;
        t_prev = m.t_sec;
        m.frame = std::make_shared<video::Frame>(std::move(*f));
        m.lane_seq = lane_.next_seq++;  // taken last: a number taken and never sent would stall the lane
        lane_.preprocess.try_put(std::move(m));
      }
      // A reader error not yet seen (e.g. the stream gave up reconnecting) is raised here.
      while (reader_->pop(std::chrono::milliseconds(0))) {
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++in_flight_;  // the end-of-stream message always goes, whatever the limit
    }
    FrameMsg eos;
    eos.lane_seq = lane_.next_seq++;
    eos.run = this;
    eos.eos = true;
    lane_.preprocess.try_put(std::move(eos));
  }

  // Waits for a place in flight; false when stopping.
  bool enter() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return stop_.load() || in_flight_ < options_.frames_in_flight; });
    if (stop_.load()) return false;
    ++in_flight_;
    return true;
  }

  void join() {
    if (feeder_.joinable()) feeder_.join();
    std::lock_guard<std::mutex> lock(mu_);
    if (joined_ || !reader_) return;
    final_.n_frames_sampled = reader_->n_sampled();
    final_.n_frames_dropped = reader_->n_dropped();
    reader_->join();
    final_.source = reader_->source().stats();  // the reader thread is gone: the counters are final
    joined_ = true;
    reader_ = nullptr;
  }

  Runtime::Impl& rt_;
  Lane& lane_;
  session::Session& session_;
  SourceOptions options_;
  std::string url_;
  config::PreprocessConfig pre_;
  std::unique_ptr<video::AsyncReader> reader_;
  tbb::enumerable_thread_specific<std::unique_ptr<video::Preprocessor>> preprocessors_;
  std::thread feeder_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int in_flight_ = 0;
  bool finished_ = false;
  bool joined_ = false;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> n_encoded_{0};
  int64_t next_frame_;  // frame numbers and times continue those of earlier sources of the session
  double t_offset_;
  std::exception_ptr error_;
  PerceptionStats final_;
};

Lane::Lane(flow::graph& g)
    : preprocess(g, flow::unlimited,
                 [](FrameMsg m) {
                   if (!m.eos) {
                     m.failed = !m.run->guarded("preprocess", [&] {
                       m.pixels = std::make_shared<video::ImageTensor>(m.run->preprocessor()(*m.frame));
                       m.frame.reset();  // the decoded picture is no longer needed
                     });
                   }
                   return m;
                 }),
      sequencer(g, [](const FrameMsg& m) { return static_cast<size_t>(m.lane_seq); }),
      encoder(g, flow::serial,
              [](FrameMsg m) {
                if (m.eos || m.failed) return m;
                if (m.run->stopping()) {
                  m.failed = true;
                  return m;
                }
                m.failed = !m.run->guarded("encoder", [&] {
                  const video::ImageTensor& px = *m.pixels;
                  at::Tensor pixels = at::from_blob(const_cast<float*>(px.data.data()),
                                                    {1, px.channels, px.height, px.width}, at::kFloat);
                  m.encoded = std::make_shared<prune::EncodedFrame>(
                      m.run->session().encode_frame(pixels, m.seq, m.t_sec, m.media));
                  m.pixels.reset();
                });
                return m;
              }),
      projector(g, flow::serial,
                [](FrameMsg m) {
                  if (!m.eos && !m.failed) {
                    m.failed = !m.run->guarded(
                        "projector", [&] { m.tokens = m.run->session().model().project(m.encoded->features); });
                  }
                  return m;
                }),
      in_order(g, [](const FrameMsg& m) { return static_cast<size_t>(m.lane_seq); }),
      memory(g, flow::serial, [](FrameMsg m) {
        Run* run = m.run;
        if (m.eos) {
          MD_LOG_DEBUG("pipeline", run->url() << ": end of stream");
        } else if (!m.failed) {
          FrameNews news;
          const bool ok = run->guarded("memory", [&] {
            session::Session& s = run->session();
            if (m.outage_before) s.note_gap({m.t_before, m.t_sec, 0, "outage"});
            if (m.dropped_before > 0) s.note_gap({m.t_before, m.t_sec, m.dropped_before, "dropped"});
            news.seq = m.seq;
            news.t_sec = m.t_sec;
            const int grid = s.model().tower().grid(s.model().image_size());
            news.n_patch_tokens = int64_t(grid) * grid;
            for (const auto& g : m.encoded->growths) news.n_folded += static_cast<int64_t>(g.size + 0.5);
            news.n_kept = m.tokens.defined() ? m.tokens.size(0) : 0;
            news.n_windows_compared = m.encoded->n_windows_compared;
            news.n_windows_changed = m.encoded->n_windows_changed;
            news.after_outage = m.outage_before;
            news.n_dropped_before = m.dropped_before;
            s.add_frame(session::frame_tokens(std::move(*m.encoded), m.tokens, m.seq, m.t_sec, m.media));
            run->encoded();
          });
          // The listener's own failure is not the source's: logged, and reading goes on.
          if (ok && run->on_frame()) {
            try {
              run->on_frame()(news);
            } catch (const std::exception& e) {
              MD_LOG_WARN("pipeline", run->url() << ": the frame listener failed: " << e.what());
            } catch (...) {
              MD_LOG_WARN("pipeline", run->url() << ": the frame listener failed");
            }
          }
        }
        run->left_lane(m.eos);
        return flow::continue_msg();
      }) {
  flow::make_edge(preprocess, sequencer);
  flow::make_edge(sequencer, encoder);
  flow::make_edge(encoder, projector);
  flow::make_edge(projector, in_order);
  flow::make_edge(in_order, memory);
}

}  // namespace

Lane& Runtime::Impl::take_lane() {
  std::lock_guard<std::mutex> lock(mu);
  for (auto& lane : lanes) {
    if (!lane->busy) {
      lane->busy = true;
      return *lane;
    }
  }
  lanes.push_back(std::make_unique<Lane>(*graph));
  lanes.back()->busy = true;
  return *lanes.back();
}

void Runtime::Impl::release_lane(Lane& lane) {
  std::lock_guard<std::mutex> lock(mu);
  lane.busy = false;
}

void Runtime::Impl::run_answer(const AnswerJob& job) {
  std::exception_ptr error;
  session::AnswerStats result;
  if (owner.stop_.load()) {  // queued before a stop: not started at all
    job.done->set_exception(std::make_exception_ptr(Stopped("the runtime stopped before the answer started")));
    return;
  }
  const session::StopFlags stop{&owner.stop_, job.ask.stop};
  bool ok = guarded("answer", &error, answer_error_mu, [&] {
    result = job.session->answer(*job.snapshot, job.ask.question, job.ask.options, job.ask.on_text, stop,
                                 /*use_prefix=*/true, job.ask.chain);
  });
  if (ok) {
    job.done->set_value(std::move(result));
  } else {
    job.done->set_exception(error);
  }
}

ThreadPlan plan_threads(const config::ThreadsConfig& c) {
  ThreadPlan p;
  int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  p.total = c.total > 0 ? c.total : hw;
  p.torch = c.torch_intra_op > 0 ? std::min(c.torch_intra_op, p.total) : p.total;
  return p;
}

Runtime::Runtime(const config::ThreadsConfig& threads) : plan_(plan_threads(threads)) {
  impl_ = std::make_unique<Impl>(*this, threads);
  MD_LOG_DEBUG("pipeline", "threads: " << plan_.total << " total, " << plan_.torch << " LibTorch intra-op, "
                                       << std::max(1, threads.answers) << " answer(s) at once");
}

Runtime::~Runtime() {
  stop();
  std::vector<std::shared_ptr<SourceRun>> alive;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    for (auto& w : impl_->runs) {
      if (auto r = w.lock()) alive.push_back(r);
    }
  }
  for (auto& r : alive) r->wait();
  impl_->arena.execute([&] { impl_->graph->wait_for_all(); });
}

std::shared_ptr<SourceRun> Runtime::add_source(std::unique_ptr<video::Source> source, session::Session& session,
                                               const SourceOptions& options) {
  Lane& lane = impl_->take_lane();
  std::shared_ptr<Run> run;
  try {
    run = std::make_shared<Run>(*impl_, lane, std::move(source), session, options);
  } catch (...) {
    impl_->release_lane(lane);  // nothing was sent on it
    throw;
  }
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->runs.erase(std::remove_if(impl_->runs.begin(), impl_->runs.end(),
                                   [](const std::weak_ptr<SourceRun>& w) { return w.expired(); }),
                    impl_->runs.end());
  impl_->runs.push_back(run);
  if (stop_.load()) run->stop();
  return run;
}

std::future<session::AnswerStats> Runtime::ask(const session::Session& session, Ask ask) {
  AnswerJob job;
  job.session = &session;
  job.snapshot = session.snapshot();  // the memory as it is when the question arrives
  job.ask = std::move(ask);
  job.done = std::make_shared<std::promise<session::AnswerStats>>();
  std::future<session::AnswerStats> f = job.done->get_future();
  impl_->answer->try_put(std::move(job));
  return f;
}

void Runtime::stop() {
  stop_.store(true);
  std::vector<std::shared_ptr<SourceRun>> alive;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    for (auto& w : impl_->runs) {
      if (auto r = w.lock()) alive.push_back(r);
    }
  }
  for (auto& r : alive) r->stop();
}

size_t Runtime::n_lanes() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->lanes.size();
}

std::vector<NodeTiming> Runtime::timings() const {
  static const char* const kOrder[] = {"source", "preprocess", "encoder", "projector", "memory", "answer"};
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::vector<NodeTiming> out;
  for (const char* name : kOrder) {
    auto it = impl_->timing.find(name);
    if (it != impl_->timing.end()) out.push_back(it->second);
  }
  return out;
}

}  // namespace mustdrop::pipeline
