// The runtime: questions answered while frames flow (the frame counters move during an answer),
// two sessions answering at once, sources added while others run.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "core/sysinfo.h"
#include "model/presets.h"
#include "config/pipeline_config.h"
#include "pipeline/runtime.h"
#include "prune/chain.h"
#include "prune/mustdrop/lsm.h"
#include "support/test_support.h"
#include "video/source.h"

namespace mustdrop::pipeline {
namespace {

using Clock = std::chrono::steady_clock;

const model::VisionLanguageModel& tiny() {
  static std::unique_ptr<model::VisionLanguageModel> m = [] {
    tune_allocator();
    return model::VisionLanguageModel::random(model::preset_config("tiny-llava", 2, 2), 9);
  }();
  return *m;
}

// Decoded frames of a generated clip, kept in memory.
struct Clip {
  std::vector<video::Frame> frames;
  video::StreamInfo info;
};

const Clip& clip() {
  static Clip c = [] {
    Clip out;
    std::string path = test::make_sample_clip("runtime.mp4", 2);
    auto source = video::open_source(path, config::VideoConfig{});
    out.info = source->info();
    while (auto f = source->next()) out.frames.push_back(std::move(*f));
    return out;
  }();
  return c;
}

std::unique_ptr<video::Source> looped(int repeats) {
  std::vector<video::Frame> copies;
  for (const auto& f : clip().frames) copies.push_back(f.clone());
  return video::make_frame_list_source(std::move(copies), clip().info, repeats);
}

config::ThreadsConfig threads(int answers) {
  config::ThreadsConfig t;
  t.total = 2;
  t.torch_intra_op = 1;  // one worker's LibTorch never takes the other worker's core
  t.answers = answers;
  return t;
}

config::MemoryConfig budget(int tokens) {
  config::MemoryConfig m;
  m.max_tokens = tokens;
  return m;
}

SourceOptions every_frame() {
  SourceOptions o;
  o.every_frame = true;
  return o;
}

Ask question(const std::string& text, int tokens, std::function<void(const std::string&)> on_text = {}) {
  Ask a;
  a.question = text;
  a.options.max_new_tokens = tokens;
  a.on_text = std::move(on_text);
  return a;
}

TEST(Runtime, QuestionsAreAnsweredWhileFramesFlow) {
  Runtime rt(threads(1));
  session::Session s(tiny(), nullptr, budget(1500));  // the stream is longer: evictions happen meanwhile
  std::shared_ptr<SourceRun> run = rt.add_source(looped(6), s, every_frame());
  // Wait for a first frame in memory, then ask while the rest keeps arriving.
  while (s.snapshot()->frames.empty() && !run->wait_for(std::chrono::milliseconds(5))) {
  }
  int advanced = 0;
  for (int q = 0; q < 5; ++q) {
    int64_t before = run->stats().n_frames_encoded;
    session::AnswerStats a = rt.ask(s, question("What happens now?", 96)).get();
    int64_t after = run->stats().n_frames_encoded;
    EXPECT_EQ(a.n_generated, 96);
    EXPECT_GT(a.memory.n_tokens, 0);
    advanced += after > before ? 1 : 0;
  }
  EXPECT_GT(advanced, 0) << "no frame was encoded while an answer ran";
  PerceptionStats p = run->wait();
  EXPECT_FALSE(run->error());
  EXPECT_EQ(p.n_frames_encoded, 6 * static_cast<int64_t>(clip().frames.size()));
  EXPECT_GT(s.snapshot()->n_evicted_tokens, 0);
}

TEST(Runtime, TwoSessionsAnswerAtTheSameTime) {
  Runtime rt(threads(2));
  session::Session a(tiny(), nullptr, budget(2000)), b(tiny(), nullptr, budget(2000));
  auto run_a = rt.add_source(looped(1), a, every_frame());
  auto run_b = rt.add_source(looped(1), b, every_frame());  // two lanes at once
  run_a->wait();
  run_b->wait();
  ASSERT_EQ(run_a->stats().n_frames_encoded, static_cast<int64_t>(clip().frames.size()));
  ASSERT_EQ(run_b->stats().n_frames_encoded, static_cast<int64_t>(clip().frames.size()));
  // Each answer records when its tokens came out, and its first piece waits (up to 30 s) for
  // the other's first: answers running side by side both get there and their spans overlap
  // whatever the machine's load; answers run one after the other cannot, and the spans do not.
  std::mutex mu;
  std::condition_variable started;
  std::vector<Clock::time_point> span_a, span_b;
  auto recorder = [&](std::vector<Clock::time_point>& span, const std::vector<Clock::time_point>& other) {
    return [&](const std::string&) {
      std::unique_lock<std::mutex> lock(mu);
      span.push_back(Clock::now());
      if (span.size() > 1) return;
      started.notify_all();
      started.wait_for(lock, std::chrono::seconds(30), [&] { return !other.empty(); });
    };
  };
  auto fa = rt.ask(a, question("Describe the left side.", 48, recorder(span_a, span_b)));
  auto fb = rt.ask(b, question("Describe the right side.", 48, recorder(span_b, span_a)));
  session::AnswerStats ra = fa.get(), rb = fb.get();
  ASSERT_EQ(span_a.size(), 48u);
  ASSERT_EQ(span_b.size(), 48u);
  EXPECT_TRUE(span_a.front() < span_b.back() && span_b.front() < span_a.back()) << "the answers ran one after the other";
  // Running side by side changes nothing: the same answers as one at a time.
  model::GenerationOptions g;
  g.max_new_tokens = 48;
  EXPECT_EQ(ra.ids, a.answer("Describe the left side.", g, nullptr).ids);
  EXPECT_EQ(rb.ids, b.answer("Describe the right side.", g, nullptr).ids);
}

TEST(Runtime, AStoppedSourceEndsAndItsLaneServesTheNext) {
  Runtime rt(threads(1));
  session::Session s(tiny(), nullptr, budget(2000));
  auto endless = rt.add_source(looped(1000), s, every_frame());
  while (endless->stats().n_frames_encoded < 3) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  endless->stop();
  PerceptionStats p = endless->wait();
  EXPECT_LT(p.n_frames_encoded, 1000 * static_cast<int64_t>(clip().frames.size()));
  const int64_t first_count = p.n_frames_encoded;
  // The same session takes a second source on the lane the first one left: frame numbers and
  // times go on where the first source stopped.
  auto next = rt.add_source(looped(1), s, every_frame());
  EXPECT_EQ(next->wait().n_frames_encoded, static_cast<int64_t>(clip().frames.size()));
  EXPECT_EQ(rt.n_lanes(), 1u);
  std::shared_ptr<const session::MemorySnapshot> memory = s.snapshot();
  EXPECT_EQ(memory->version, static_cast<uint64_t>(first_count) + clip().frames.size());
  for (size_t i = 1; i < memory->frames.size(); ++i) {
    EXPECT_LT(memory->frames[i - 1]->seq, memory->frames[i]->seq);
    EXPECT_LT(memory->frames[i - 1]->t_sec, memory->frames[i]->t_sec);
  }
  EXPECT_EQ(memory->frames.back()->seq, first_count + static_cast<int64_t>(clip().frames.size()) - 1);
}

// Each frame's news reaches the callback once, in order, at the start time asked for; the
// novelty counts come from temporal merging (none for the first frame, nothing compared twice).
TEST(Runtime, FrameNewsOncePerFrameInOrderFromTheStartTime) {
  config::PipelineConfig pc = config::load_pipeline(test::source_dir() + "/pipelines/mustdrop.yaml");
  auto chain = prune::Chain::build(pc, "mustdrop.yaml");
  Runtime rt(threads(1));
  session::Session s(tiny(), chain.get());
  std::vector<FrameNews> news;
  std::mutex mu;
  SourceOptions o = every_frame();
  o.t_start_sec = 100;
  o.on_frame = [&](const FrameNews& n) {
    std::lock_guard<std::mutex> lock(mu);
    news.push_back(n);
  };
  auto run = rt.add_source(looped(1), s, o);
  PerceptionStats st = run->wait();
  ASSERT_EQ(static_cast<int64_t>(news.size()), st.n_frames_encoded);
  ASSERT_EQ(news.size(), clip().frames.size());
  const int grid = tiny().tower().grid(tiny().image_size());
  for (size_t i = 0; i < news.size(); ++i) {
    EXPECT_EQ(news[i].seq, static_cast<int64_t>(i));
    EXPECT_NEAR(news[i].t_sec, 100 + clip().frames[i].t_sec - clip().frames[0].t_sec, 1e-6);
    EXPECT_EQ(news[i].n_patch_tokens, int64_t(grid) * grid);
    EXPECT_LE(news[i].n_windows_changed, news[i].n_windows_compared);
    EXPECT_LE(news[i].n_kept, news[i].n_patch_tokens + 1);  // 0 when the whole frame folded into earlier ones
    if (i == 0) {
      EXPECT_EQ(news[i].n_windows_compared, 0) << "the first frame has nothing to be compared with";
    } else {
      const int per_side = grid / config::decode<prune::LsmOptions>(pc.section("mustdrop.lsm")).window;
      EXPECT_GT(news[i].n_windows_compared, 0);
      EXPECT_LE(news[i].n_windows_compared, int64_t(per_side) * per_side);
    }
  }
  // The session's times continue from there.
  EXPECT_NEAR(s.snapshot()->t_last_sec, news.back().t_sec, 1e-9);
}

}  // namespace
}  // namespace mustdrop::pipeline
