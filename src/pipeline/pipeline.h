// The oneTBB flow graph (the only module that knows oneTBB). Two branches in one graph:
//   perception: source (own thread) -> limiter -> preprocess (parallel) -> sequencer ->
//               vision encoder (serial) -> projector (serial) -> session memory -> limiter
//   answering:  question -> answer (serial; streams text through a callback)
// No exception escapes a node: a failure becomes an error record, reported by error().
#pragma once

#include <atomic>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "model/vlm.h"
#include "session/session.h"
#include "video/source.h"

namespace mustdrop::pipeline {

// Wall time spent in one graph node.
struct NodeTiming {
  std::string name;
  double ms = 0;
  int64_t calls = 0;
};

struct PerceptionStats {
  int64_t n_frames_sampled = 0;
  int64_t n_frames_encoded = 0;
  int64_t n_frames_dropped = 0;  // live: dropped because the graph was slower than the source
  video::SourceStats source;
};

class Pipeline {
 public:
  // Splits the thread budget (config.threads) between oneTBB workers and LibTorch intra-op
  // threads for the lifetime of the object.
  Pipeline(const config::Config& config, const model::VisionLanguageModel& model, session::Session& session);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // Runs the perception branch over `source` until it ends or stop() is called.
  PerceptionStats perceive(std::unique_ptr<video::Source> source);
  // Answers `question` on the answering branch; `on_text` receives the streamed pieces.
  // Returns when the answer is complete (or stopped).
  session::AnswerStats ask(const std::string& question, const session::TextCallback& on_text);
  // Asks both branches to stop soon (thread-safe, e.g. from a signal watcher).
  void stop();
  bool stopped() const { return stop_.load(); }

  // The first error recorded by any node (nullptr if none).
  std::exception_ptr error() const;
  // Wall time per node, in graph order.
  std::vector<NodeTiming> timings() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> stop_{false};
};

// LibTorch intra-op threads and oneTBB workers for `config` on this machine.
struct ThreadPlan {
  int total = 1;
  int torch = 1;
};
ThreadPlan plan_threads(const config::ThreadsConfig& config);

}  // namespace mustdrop::pipeline
