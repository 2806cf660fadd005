// The process-wide runtime (the only module that knows oneTBB): the thread plan and one flow
// graph that lives as long as the object. Two kinds of branches share it:
//   perception, one lane per source:  reader thread (libav, sampling) -> feeder thread (bounded
//     frames in flight) -> preprocess (parallel) -> sequencer -> vision encoder (serial) ->
//     projector (serial) -> sequencer -> session memory (serial)
//   answering: a queue of questions -> answer (threads.answers at once; streams text through a
//     callback) on the memory snapshot current when the question was asked
// Sources are added and removed while the graph runs (lanes are pooled and reused); questions
// come from any thread. Ingestion never waits for an answer: answers read immutable snapshots.
// No exception escapes a node: a failure becomes the error of its source or its answer.
#pragma once

#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "config/config.h"
#include "session/session.h"
#include "video/source.h"

namespace mustdrop::pipeline {

// LibTorch intra-op threads and oneTBB workers for `config` on this machine.
struct ThreadPlan {
  int total = 1;
  int torch = 1;
};
ThreadPlan plan_threads(const config::ThreadsConfig& config);

// Wall time spent in one kind of graph node (all sources and answers together).
struct NodeTiming {
  std::string name;
  double ms = 0;
  int64_t calls = 0;
};

struct PerceptionStats {
  int64_t n_frames_sampled = 0;
  int64_t n_frames_encoded = 0;
  int64_t n_frames_dropped = 0;  // the graph was slower than a live source: dropped after decode
  video::SourceStats source;
};

// What the memory node learned about one frame as it entered the memory.
struct FrameNews {
  int64_t seq = 0;
  double t_sec = 0;
  int64_t n_patch_tokens = 0;  // the frame's patch tokens before any dropping
  int64_t n_folded = 0;        // of them, folded into earlier frames' tokens (temporal merging)
  int64_t n_kept = 0;          // tokens the frame added to the memory
  int64_t n_windows_compared = 0;  // temporal merging: windows compared with an earlier frame (0: none was)
  int64_t n_windows_changed = 0;   // ... and unlike it: the share of these is the frame's novelty
  bool after_outage = false;   // the source was lost and came back just before it
  int64_t n_dropped_before = 0;  // frames dropped just before it (the encoder fell behind)
};

// How a source is read.
struct SourceOptions {
  config::VideoConfig video;  // sampler, preprocessing, live settings
  bool every_frame = false;   // take every frame the source gives (no sampling)
  int frames_in_flight = 4;   // frames between the feeder and the memory
  double t_start_sec = -1;    // session time of the source's first frame (< 0: just after the session's last frame)
  std::function<void(const FrameNews&)> on_frame;  // after each frame entered the memory (memory node; must not block)
};

// One source being read into one session. Thread-safe.
class SourceRun {
 public:
  virtual ~SourceRun() = default;
  // Waits until every sampled frame is in the session's memory (the source ended, failed or was
  // stopped); the counters then. Never throws: see error().
  virtual PerceptionStats wait() = 0;
  // Waits up to `timeout`; true once finished.
  virtual bool wait_for(std::chrono::milliseconds timeout) = 0;
  // Counters so far.
  virtual PerceptionStats stats() const = 0;
  // Asks reading to stop soon; frames not yet encoded are dropped (wait() then returns soon).
  virtual void stop() = 0;
  // What ended the source with an error (a reader or a node), or nullptr.
  virtual std::exception_ptr error() const = 0;
  virtual const std::string& url() const = 0;
};

// What an answer's future holds when the runtime stopped before the answer started.
struct Stopped : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A question for the answering branch.
struct Ask {
  std::string question;
  model::GenerationOptions options;
  session::TextCallback on_text;        // streamed pieces (called on a worker thread)
  const std::atomic<bool>* stop = nullptr;  // ends this answer early (Runtime::stop() ends every answer)
  const prune::Chain* chain = nullptr;      // answer with this chain's prefill/decode stages (Session::answer)
};

class Runtime {
 public:
  // Sets the thread plan (oneTBB workers, LibTorch intra-op threads) for the object's lifetime.
  explicit Runtime(const config::ThreadsConfig& threads);
  // Stops every source, ends the answers running, fails the queued ones with Stopped, waits.
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  const ThreadPlan& plan() const { return plan_; }
  // Starts reading `source` into `session` on a free perception lane (the session must outlive
  // the run; one source per session at a time). Reading starts at once.
  std::shared_ptr<SourceRun> add_source(std::unique_ptr<video::Source> source, session::Session& session,
                                        const SourceOptions& options);
  // Queues a question about `session` on the answering branch, over its memory as it is now.
  // The future holds the answer, the exception the answer failed with, or Stopped when the
  // runtime stopped before it started. `session` must outlive the answer.
  std::future<session::AnswerStats> ask(const session::Session& session, Ask ask);
  // Stops every source and every answer soon (thread-safe, e.g. from a signal watcher).
  void stop();
  bool stopped() const { return stop_.load(); }
  // Wall time per node kind, in graph order.
  std::vector<NodeTiming> timings() const;
  // Perception lanes built so far (a lane serves one source at a time, then the next).
  size_t n_lanes() const;

  struct Impl;  // the graph and its nodes (runtime.cpp)

 private:
  ThreadPlan plan_;
  std::atomic<bool> stop_{false};
  std::unique_ptr<Impl> impl_;
};

}  // namespace mustdrop::pipeline
