// Samplers: uniform over the frames actually present (by seeking), fps and interval.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "clips.h"
#include "core/error.h"
#include "video/sampler.h"
#include "video/source.h"

namespace mustdrop::test {
namespace {

config::SamplerConfig sampler_config(const std::string& kind, int frames) {
  config::SamplerConfig c;
  c.kind = kind;
  c.frames = frames;
  return c;
}

std::vector<video::Frame> sample_all(video::Source& source, video::Sampler& sampler) {
  std::vector<video::Frame> out;
  while (auto f = sampler.next(source)) out.push_back(std::move(*f));
  return out;
}

TEST(UniformTargets, SpreadIncludesBothEnds) {
  std::vector<double> t = video::uniform_targets(0.0, 7.0, 8);
  ASSERT_EQ(t.size(), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_DOUBLE_EQ(t[i], i);
  EXPECT_EQ(video::uniform_targets(1.0, 5.0, 1), std::vector<double>{1.0});
  EXPECT_TRUE(video::uniform_targets(0, 1, 0).empty());
}

TEST(UniformSampler, EightFramesSpanTheClip) {
  auto source = video::open_source(h264_mp4(), config::VideoConfig{});
  auto sampler = video::make_sampler(sampler_config("uniform", 8));
  std::vector<video::Frame> frames = sample_all(*source, *sampler);
  ASSERT_EQ(frames.size(), 8u);
  // 50 frames at 25 fps: last frame at 1.96 s; targets i * 1.96 / 7, each within one frame period.
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(frames[i].t_sec, i * 1.96 / 7, 1.0 / 25) << i;
  EXPECT_NEAR(frames.back().t_sec, 1.96, 1e-6);
}

TEST(UniformSampler, SeeksInsteadOfDecodingALongFileInFull) {
  // 60 s at 25 fps with a keyframe every second; 4 samples should decode a few GOPs only.
  std::string path = make_clip("long.mp4",
                               "-f lavfi -i testsrc2=size=160x120:rate=25 -t 60 -c:v libx264 -preset ultrafast "
                               "-pix_fmt yuv420p -g 25");
  config::VideoConfig cfg;
  auto source = video::open_source(path, cfg);
  auto sampler = video::make_sampler(sampler_config("uniform", 4));
  std::vector<video::Frame> frames = sample_all(*source, *sampler);
  ASSERT_EQ(frames.size(), 4u);
  EXPECT_NEAR(frames[3].t_sec, 59.96, 1e-6);
  EXPECT_NEAR(frames[1].t_sec, 59.96 / 3, 1.0 / 25);
  EXPECT_LT(source->stats().n_frames_decoded, 200) << "decoded " << source->stats().n_frames_decoded << " of 1500";
}

TEST(UniformSampler, ShortClipRepeatsFrames) {
  std::string path = make_clip("three.mp4",
                               "-f lavfi -i testsrc2=size=160x120:rate=10 -frames:v 3 -c:v libx264 -preset ultrafast "
                               "-pix_fmt yuv420p");
  auto source = video::open_source(path, config::VideoConfig{});
  auto sampler = video::make_sampler(sampler_config("uniform", 8));
  std::vector<video::Frame> frames = sample_all(*source, *sampler);
  ASSERT_EQ(frames.size(), 8u);
  EXPECT_NEAR(frames.front().t_sec, 0.0, 1e-6);
  EXPECT_NEAR(frames.back().t_sec, 0.2, 1e-6);
  for (size_t i = 1; i < frames.size(); ++i) EXPECT_GE(frames[i].t_sec, frames[i - 1].t_sec);
}

TEST(UniformSampler, NeverTrustsTheContainerFrameCount) {
  // tree.avi's header claims 444 frames; 68 pictures are really there, spread over 29.5 s.
  std::string path = opencv_clip("examples/data/tree.avi");
  if (path.empty()) GTEST_SKIP() << "opencv-doc is not installed";
  std::vector<double> all;
  {
    auto full = video::open_source(path, config::VideoConfig{});
    while (auto f = full->next()) all.push_back(f->t_sec);
  }
  ASSERT_EQ(all.size(), 68u);
  auto source = video::open_source(path, config::VideoConfig{});
  ASSERT_EQ(source->info().declared_frames, 444);
  auto sampler = video::make_sampler(sampler_config("uniform", 8));
  std::vector<video::Frame> frames = sample_all(*source, *sampler);
  ASSERT_EQ(frames.size(), 8u);
  EXPECT_DOUBLE_EQ(frames.front().t_sec, all.front());
  EXPECT_DOUBLE_EQ(frames.back().t_sec, all.back());
  for (size_t i = 1; i < frames.size(); ++i) EXPECT_GT(frames[i].t_sec, frames[i - 1].t_sec);
  // Each sample is the first real frame at or after its target.
  std::vector<double> targets = video::uniform_targets(all.front(), all.back(), 8);
  for (size_t i = 0; i < frames.size(); ++i) {
    auto it = std::lower_bound(all.begin(), all.end(), targets[i] - 0.5 / source->info().avg_fps);
    ASSERT_NE(it, all.end());
    EXPECT_DOUBLE_EQ(frames[i].t_sec, *it) << i;
  }
}

TEST(UniformSampler, ImageDirectoryByIndex) {
  std::string dir = make_image_dir("uniform_frames", "testsrc2=size=32x32:rate=5", 15);
  config::VideoConfig cfg;
  cfg.frame_dir_fps = 1.0;
  auto source = video::open_source(dir, cfg);
  auto sampler = video::make_sampler(sampler_config("uniform", 8));
  std::vector<video::Frame> frames = sample_all(*source, *sampler);
  ASSERT_EQ(frames.size(), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_DOUBLE_EQ(frames[i].t_sec, std::ceil(i * 2.0 - 1e-9)) << i;
}

TEST(FpsSampler, TakesOneFramePerPeriod) {
  auto source = video::open_source(h264_mp4(), config::VideoConfig{});
  config::SamplerConfig c = sampler_config("fps", 0);
  c.fps = 5;
  auto sampler = video::make_sampler(c);
  std::vector<video::Frame> frames = sample_all(*source, *sampler);
  ASSERT_EQ(frames.size(), 10u);  // 2 s at 5 fps
  for (size_t i = 0; i < frames.size(); ++i) EXPECT_NEAR(frames[i].t_sec, i * 0.2, 1e-6);
  EXPECT_EQ(sampler->n_sampled(), 10);
}

TEST(FpsSampler, FrameLimitStopsEarly) {
  auto source = video::open_source(h264_mp4(), config::VideoConfig{});
  config::SamplerConfig c = sampler_config("fps", 3);
  c.fps = 25;
  auto sampler = video::make_sampler(c);
  EXPECT_EQ(sample_all(*source, *sampler).size(), 3u);
}

TEST(IntervalSampler, OneFrameEveryIntervalOnVariableRate) {
  std::string path = make_clip(
      "vfr_interval.mkv",
      "-f lavfi -i testsrc2=size=160x120:rate=30 -frames:v 40 -vf setpts=(if(lt(N\\,10)\\,N/10\\,1+(N-10)/30))/TB "
      "-fps_mode vfr -c:v libx264 -preset ultrafast -pix_fmt yuv420p");
  auto source = video::open_source(path, config::VideoConfig{});
  config::SamplerConfig c = sampler_config("interval", 0);
  c.interval_sec = 0.5;
  auto sampler = video::make_sampler(c);
  std::vector<video::Frame> frames = sample_all(*source, *sampler);
  ASSERT_EQ(frames.size(), 4u);  // 0, 0.5, 1.0, 1.5 (last frame at 1.967)
  for (size_t i = 0; i < frames.size(); ++i) EXPECT_NEAR(frames[i].t_sec, i * 0.5, 1.0 / 30) << i;
}

}  // namespace
}  // namespace mustdrop::test
