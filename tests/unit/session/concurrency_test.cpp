// Sessions under concurrency, with plain threads so ThreadSanitizer sees every handoff (label
// `concurrency`; CI runs these in the MUSTDROP_SANITIZE_THREAD build): questions answered while
// frames arrive and evictions happen (the memory moves on during each answer), and two sessions
// answering at the same time with the answers they give alone.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "core/sysinfo.h"
#include "model/presets.h"
#include "session/session.h"

namespace mustdrop::session {
namespace {

using Clock = std::chrono::steady_clock;

const model::VisionLanguageModel& tiny() {
  static std::unique_ptr<model::VisionLanguageModel> m = [] {
    tune_allocator();
    at::set_num_threads(1);  // no OpenMP teams: TSan cannot see into libgomp
    return model::VisionLanguageModel::random(model::preset_config("tiny-llava", 2, 2), 21);
  }();
  return *m;
}

at::Tensor picture(int i) {
  int s = tiny().image_size();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(50 + i % 7);
  return at::normal(0.0, 1.0, {1, 3, s, s}, gen);
}

// What perception does for one frame: the tower, the projector, the memory.
void perceive(Session& s, int i) {
  c10::InferenceMode guard;
  prune::EncodedFrame f = s.encode_frame(picture(i), i, 0.1 * i);
  at::Tensor tokens = s.model().project(f.features);
  s.add_frame(frame_tokens(std::move(f), tokens, i, 0.1 * i));
}

TEST(SessionConcurrency, QuestionsAreAnsweredWhileFramesArrive) {
  at::set_num_threads(1);
  config::MemoryConfig memory;
  memory.max_tokens = 1200;  // evictions happen while answers read older snapshots
  Session s(tiny(), nullptr, memory);
  perceive(s, 0);
  std::atomic<bool> done{false};
  std::thread perception([&] {
    at::set_num_threads(1);
    for (int i = 1; i < 60; ++i) perceive(s, i);
    done.store(true);
  });
  model::GenerationOptions g;
  g.max_new_tokens = 48;
  int answers = 0, moved_on = 0;
  while (!done.load() || answers < 2) {
    c10::InferenceMode guard;
    std::shared_ptr<const MemorySnapshot> asked = s.snapshot();
    AnswerStats a = s.answer(*asked, "What is it?", g, nullptr);
    EXPECT_EQ(a.n_generated, 48);
    moved_on += s.snapshot()->version > asked->version ? 1 : 0;  // frames arrived during the answer
    ++answers;
  }
  perception.join();
  EXPECT_GT(moved_on, 0) << "no frame reached the memory while an answer ran";
  EXPECT_EQ(s.snapshot()->version, 60u);
  EXPECT_GT(s.snapshot()->n_evicted_tokens, 0);
}

TEST(SessionConcurrency, TwoSessionsAnswerAtTheSameTime) {
  at::set_num_threads(1);
  Session a(tiny()), b(tiny());
  for (int i = 0; i < 3; ++i) {
    perceive(a, i);
    perceive(b, i + 3);
  }
  model::GenerationOptions g;
  g.max_new_tokens = 64;
  AnswerStats alone_a = a.answer("Left?", g, nullptr), alone_b = b.answer("Right?", g, nullptr);
  AnswerStats ra, rb;
  Clock::time_point a0, a1, b0, b1;
  std::thread ta([&] {
    at::set_num_threads(1);
    c10::InferenceMode guard;
    a0 = Clock::now();
    ra = a.answer("Left?", g, nullptr);
    a1 = Clock::now();
  });
  std::thread tb([&] {
    at::set_num_threads(1);
    c10::InferenceMode guard;
    b0 = Clock::now();
    rb = b.answer("Right?", g, nullptr);
    b1 = Clock::now();
  });
  ta.join();
  tb.join();
  EXPECT_TRUE(a0 < b1 && b0 < a1) << "the answers did not overlap";
  EXPECT_EQ(ra.ids, alone_a.ids);
  EXPECT_EQ(rb.ids, alone_b.ids);
  EXPECT_TRUE(at::equal(ra.first_logits, alone_a.first_logits));
}

TEST(SessionConcurrency, ManyAnswersOnOneSnapshotAtOnce) {
  at::set_num_threads(1);
  Session s(tiny());
  for (int i = 0; i < 2; ++i) perceive(s, i);
  std::shared_ptr<const MemorySnapshot> memory = s.snapshot();
  model::GenerationOptions g;
  g.max_new_tokens = 16;
  AnswerStats alone = s.answer(*memory, "What?", g, nullptr);
  std::vector<AnswerStats> out(3);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < out.size(); ++i) {
    threads.emplace_back([&, i] {
      at::set_num_threads(1);
      c10::InferenceMode guard;
      out[i] = s.answer(*memory, "What?", g, nullptr);
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& a : out) EXPECT_EQ(a.ids, alone.ids);
}

}  // namespace
}  // namespace mustdrop::session
