#include "pipeline/pipeline.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <oneapi/tbb/enumerable_thread_specific.h>
#include <oneapi/tbb/flow_graph.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_scheduler_observer.h>

#include <chrono>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "core/log.h"
#include "video/async_reader.h"
#include "video/preprocess.h"

namespace mustdrop::pipeline {
namespace {

namespace flow = tbb::flow;
using Clock = std::chrono::steady_clock;

struct FrameMsg {
  int64_t seq = 0;
  std::string source_id;  // the input (file, URL) the frame came from
  double t_sec = 0;
  model::Media media = model::Media::kVideo;  // kImage: the source's only picture
  bool eos = false;       // end of stream: no frame; the last message of a source
  std::shared_ptr<video::Frame> frame;
  std::shared_ptr<video::ImageTensor> pixels;
  std::shared_ptr<prune::EncodedFrame> encoded;  // tower output with its ledger
  at::Tensor tokens;                             // the projected features
  bool failed = false;
};

struct QuestionMsg {
  std::string question;
  const session::TextCallback* on_text = nullptr;
  session::AnswerStats* out = nullptr;
};

// Sets LibTorch's intra-op threads once on every oneTBB worker that joins the arena.
class TorchThreadObserver : public tbb::task_scheduler_observer {
 public:
  explicit TorchThreadObserver(int threads) : threads_(threads) { observe(true); }
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

}  // namespace

ThreadPlan plan_threads(const config::ThreadsConfig& c) {
  ThreadPlan p;
  int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  p.total = c.total > 0 ? c.total : hw;
  p.torch = c.torch_intra_op > 0 ? std::min(c.torch_intra_op, p.total) : p.total;
  return p;
}

struct Pipeline::Impl {
  Impl(const config::Config& cfg, const model::VisionLanguageModel& m, session::Session& s)
      : config(cfg), model(m), session(s), plan(plan_threads(cfg.threads)),
        control(tbb::global_control::max_allowed_parallelism, static_cast<size_t>(plan.total)),
        observer(plan.torch) {
    at::set_num_threads(plan.torch);
  }

  // Runs `body`, timing it under `name`; an exception becomes the pipeline's error record.
  template <class F>
  bool guarded(const char* name, F&& body) {
    auto t0 = Clock::now();
    bool ok = true;
    try {
      c10::InferenceMode guard;
      body();
    } catch (...) {
      ok = false;
      std::lock_guard<std::mutex> lock(mu);
      if (!error) error = std::current_exception();
    }
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    std::lock_guard<std::mutex> lock(mu);
    NodeTiming& t = timing[name];
    t.name = name;
    t.ms += ms;
    ++t.calls;
    return ok;
  }

  const config::Config& config;
  const model::VisionLanguageModel& model;
  session::Session& session;
  ThreadPlan plan;
  tbb::global_control control;
  TorchThreadObserver observer;
  mutable std::mutex mu;
  std::exception_ptr error;
  std::map<std::string, NodeTiming> timing;
  std::vector<std::string> order = {"source", "preprocess", "encoder", "projector", "memory", "answer"};
  std::shared_ptr<video::AsyncReader> reader;
};

Pipeline::Pipeline(const config::Config& config, const model::VisionLanguageModel& model, session::Session& session)
    : impl_(std::make_unique<Impl>(config, model, session)) {
  MD_LOG_DEBUG("pipeline", "threads: " << impl_->plan.total << " total, " << impl_->plan.torch << " LibTorch intra-op");
}

Pipeline::~Pipeline() = default;

void Pipeline::stop() {
  stop_.store(true);
  std::shared_ptr<video::AsyncReader> r;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    r = impl_->reader;
  }
  if (r) r->stop();
}

std::exception_ptr Pipeline::error() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->error;
}

std::vector<NodeTiming> Pipeline::timings() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::vector<NodeTiming> out;
  for (const auto& name : impl_->order) {
    auto it = impl_->timing.find(name);
    if (it != impl_->timing.end()) out.push_back(it->second);
  }
  return out;
}

PerceptionStats Pipeline::perceive(std::unique_ptr<video::Source> source) {
  Impl& im = *impl_;
  const config::VideoConfig& vc = im.config.video;
  const video::ShortClip short_clip = im.model.video_frames() > 0 ? video::ShortClip::kRepeat : video::ShortClip::kDistinct;
  auto reader = std::make_shared<video::AsyncReader>(std::move(source), video::make_sampler(vc.sampler, short_clip),
                                                     static_cast<size_t>(vc.live.queue_frames));
  {
    std::lock_guard<std::mutex> lock(im.mu);
    im.reader = reader;
  }
  if (stop_.load()) reader->stop();
  const model::VisionLanguageModel& model = im.model;
  config::PreprocessConfig pre = vc.preprocess;
  pre.size = model.image_size();  // the tower decides the input side
  tbb::enumerable_thread_specific<std::unique_ptr<video::Preprocessor>> preprocessors;
  PerceptionStats stats;
  int64_t next_seq = 0;

  flow::graph g;
  // Blocking libav reads happen on the reader's own thread; this node only takes finished frames.
  const std::string source_id = reader->source().info().url;
  bool eos_sent = false;
  flow::input_node<FrameMsg> src(g, [&](tbb::flow_control& fc) -> FrameMsg {
    FrameMsg m;
    m.source_id = source_id;
    if (eos_sent) {
      fc.stop();
      return m;
    }
    bool have = false;
    im.guarded("source", [&] {
      while (!stop_.load()) {
        std::optional<video::Frame> f = reader->pop(std::chrono::milliseconds(100));
        if (f) {
          m.t_sec = f->t_sec;
          m.media = f->still_image ? model::Media::kImage : model::Media::kVideo;
          m.frame = std::make_shared<video::Frame>(std::move(*f));
          have = true;
          return;
        }
        if (reader->done()) return;
      }
    });
    // After the last frame (or a stop, or a reader error) one end-of-stream message follows.
    m.seq = next_seq++;
    m.eos = !have;
    eos_sent = m.eos;
    return m;
  });
  flow::limiter_node<FrameMsg> limiter(g, static_cast<size_t>(im.config.threads.frames_in_flight));
  flow::function_node<FrameMsg, FrameMsg> preprocess(g, flow::unlimited, [&](FrameMsg m) {
    if (!m.failed && !m.eos) {
      m.failed = !im.guarded("preprocess", [&] {
        auto& p = preprocessors.local();
        if (!p) p = std::make_unique<video::Preprocessor>(pre);
        m.pixels = std::make_shared<video::ImageTensor>((*p)(*m.frame));
        m.frame.reset();  // the decoded picture is no longer needed
      });
    }
    return m;
  });
  flow::sequencer_node<FrameMsg> sequencer(g, [](const FrameMsg& m) { return static_cast<size_t>(m.seq); });
  flow::function_node<FrameMsg, FrameMsg> encoder(g, flow::serial, [&](FrameMsg m) {
    if (m.eos) return m;
    if (!m.failed && !stop_.load()) {
      m.failed = !im.guarded("encoder", [&] {
        const video::ImageTensor& px = *m.pixels;
        at::Tensor pixels =
            at::from_blob(const_cast<float*>(px.data.data()), {1, px.channels, px.height, px.width}, at::kFloat);
        m.encoded = std::make_shared<prune::EncodedFrame>(im.session.encode_frame(pixels, m.seq, m.t_sec, m.media));
        m.pixels.reset();
      });
    } else {
      m.failed = true;
    }
    return m;
  });
  flow::function_node<FrameMsg, FrameMsg> projector(g, flow::serial, [&](FrameMsg m) {
    if (!m.failed && !m.eos) {
      m.failed = !im.guarded("projector", [&] { m.tokens = model.project(m.encoded->features); });
    }
    return m;
  });
  flow::function_node<FrameMsg, flow::continue_msg> memory(g, flow::serial, [&](FrameMsg m) {
    if (m.eos) {
      MD_LOG_DEBUG("pipeline", m.source_id << ": end of stream after " << stats.n_frames_encoded << " frames");
    } else if (!m.failed) {
      im.guarded("memory", [&] {
        im.session.add_frame(session::frame_tokens(std::move(*m.encoded), m.tokens, m.seq, m.t_sec, m.media));
        ++stats.n_frames_encoded;
      });
    }
    return flow::continue_msg();
  });
  flow::make_edge(src, limiter);
  flow::make_edge(limiter, preprocess);
  flow::make_edge(preprocess, sequencer);
  flow::make_edge(sequencer, encoder);
  flow::make_edge(encoder, projector);
  flow::make_edge(projector, memory);
  flow::make_edge(memory, limiter.decrementer());
  src.activate();
  g.wait_for_all();

  try {
    // A reader error not yet seen (e.g. the stream gave up reconnecting) is raised here.
    while (reader->pop(std::chrono::milliseconds(0))) {
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(im.mu);
    if (!im.error) im.error = std::current_exception();
  }
  stats.n_frames_sampled = reader->n_sampled();
  stats.n_frames_dropped = reader->n_dropped();
  stats.source = reader->source().stats();
  {
    std::lock_guard<std::mutex> lock(im.mu);
    im.reader.reset();
  }
  return stats;
}

session::AnswerStats Pipeline::ask(const std::string& question, const session::TextCallback& on_text) {
  Impl& im = *impl_;
  session::AnswerStats result;
  flow::graph g;
  flow::function_node<QuestionMsg, flow::continue_msg> answer(g, flow::serial, [&](const QuestionMsg& q) {
    im.guarded("answer", [&] {
      model::GenerationOptions o;
      o.max_new_tokens = im.config.generation.max_new_tokens;
      o.temperature = im.config.generation.temperature;
      o.top_p = im.config.generation.top_p;
      o.seed = static_cast<uint64_t>(im.config.generation.seed);
      *q.out = im.session.answer(q.question, o, *q.on_text, &stop_);
    });
    return flow::continue_msg();
  });
  answer.try_put(QuestionMsg{question, &on_text, &result});
  g.wait_for_all();
  result.question = question;
  return result;
}

}  // namespace mustdrop::pipeline
