// Samplers: uniform over the frames actually present (by seeking), fps and interval.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <stdexcept>

#include "clips.h"
#include "core/error.h"
#include "support/test_support.h"
#include "video/sampler.h"
#include "video/source.h"

namespace mustdrop::test {
namespace {

config::SamplerConfig sampler_config(const std::string& kind, int frames) {
  config::SamplerConfig c;
  if (!config::enum_from_name(kind, c.kind)) throw std::invalid_argument("no sampler kind " + kind);
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

TEST(UniformSampler, ShortClipGivesEachFrameOnceForImageModels) {
  std::string path = make_clip("three.mp4",
                               "-f lavfi -i testsrc2=size=160x120:rate=10 -frames:v 3 -c:v libx264 -preset ultrafast "
                               "-pix_fmt yuv420p");
  auto source = video::open_source(path, config::VideoConfig{});
  auto sampler = video::make_sampler(sampler_config("uniform", 8));
  std::vector<video::Frame> frames = sample_all(*source, *sampler);
  ASSERT_EQ(frames.size(), 3u);
  for (size_t i = 0; i < frames.size(); ++i) {
    EXPECT_NEAR(frames[i].t_sec, i * 0.1, 1e-6);
    EXPECT_EQ(frames[i].index, static_cast<int64_t>(i));
    EXPECT_FALSE(frames[i].still_image);
  }
}

TEST(UniformSampler, ShortClipRepeatsFramesLikeVideoLlavasProcessor) {
  std::string path = make_clip("three.mp4",
                               "-f lavfi -i testsrc2=size=160x120:rate=10 -frames:v 3 -c:v libx264 -preset ultrafast "
                               "-pix_fmt yuv420p");
  auto source = video::open_source(path, config::VideoConfig{});
  auto sampler = video::make_sampler(sampler_config("uniform", 8), video::ShortClip::kRepeat);
  std::vector<video::Frame> frames = sample_all(*source, *sampler);
  ASSERT_EQ(frames.size(), 8u);
  // numpy.linspace(0, 2, 8, dtype=int) = [0 0 0 0 1 1 1 2]
  const int64_t expected[] = {0, 0, 0, 0, 1, 1, 1, 2};
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(frames[i].index, expected[i]) << i;
    EXPECT_NEAR(frames[i].t_sec, expected[i] * 0.1, 1e-6) << i;
  }
  EXPECT_EQ(source->stats().n_frames_decoded, 3) << "a repeated frame is decoded once";
}

TEST(UniformSampler, OneImageIsOneStillFrameWhateverTheCount) {
  for (video::ShortClip policy : {video::ShortClip::kDistinct, video::ShortClip::kRepeat}) {
    std::string dir = make_image_dir("one_image", "testsrc2=size=64x48:rate=5", 1);
    auto source = video::open_source(dir, config::VideoConfig{});
    auto sampler = video::make_sampler(sampler_config("uniform", 8), policy);
    std::vector<video::Frame> frames = sample_all(*source, *sampler);
    ASSERT_EQ(frames.size(), 1u);
    EXPECT_TRUE(frames[0].still_image);
    std::string png = make_clip("one.png", "-f lavfi -i testsrc2=size=64x48 -frames:v 1");
    auto file = video::open_source(png, config::VideoConfig{});
    auto file_sampler = video::make_sampler(sampler_config("uniform", 8), policy);
    std::vector<video::Frame> file_frames = sample_all(*file, *file_sampler);
    ASSERT_EQ(file_frames.size(), 1u);
    EXPECT_TRUE(file_frames[0].still_image);
  }
}

TEST(UniformPicks, RepeatMatchesNumpyLinspace) {
  for (int n_frames = 2; n_frames <= 7; ++n_frames) {
    for (int n : {8, 16}) {
      std::vector<double> times(static_cast<size_t>(n_frames));
      for (int i = 0; i < n_frames; ++i) times[static_cast<size_t>(i)] = i * 0.04;
      std::vector<size_t> picks = video::uniform_picks(times, n, video::ShortClip::kRepeat);
      ProcResult r = run_process({"/usr/bin/python3", "-c",
                                  "import numpy; print(' '.join(str(i) for i in numpy.linspace(0, " +
                                      std::to_string(n_frames - 1) + ", " + std::to_string(n) + ", dtype=int)))"});
      if (r.exit_code != 0) GTEST_SKIP() << "no numpy: " << r.err;
      std::string got;
      for (size_t p : picks) got += (got.empty() ? "" : " ") + std::to_string(p);
      EXPECT_EQ(got + "\n", r.out) << n_frames << " frames, " << n;
      EXPECT_EQ(video::uniform_picks(times, n, video::ShortClip::kDistinct).size(), static_cast<size_t>(n_frames));
    }
  }
}

TEST(MatchTargets, HandWorkedCases) {
  // Evenly spaced: each target on its own frame; a target half-way goes to the earlier frame.
  EXPECT_EQ(video::match_targets({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {0, 4.5, 9}), (std::vector<size_t>{0, 4, 9}));
  // A gap: "first frame at or after the target" would give frame 3 (t = 3.0) three times.
  EXPECT_EQ(video::match_targets({0, 0.1, 0.2, 3.0, 3.1}, {0, 0.775, 1.55, 2.325, 3.1}),
            (std::vector<size_t>{0, 1, 2, 3, 4}));
  // Nearest frames are distinct: they are the answer.
  EXPECT_EQ(video::match_targets({0, 1, 2, 3, 10, 11}, {0, 11.0 / 3, 22.0 / 3, 11}), (std::vector<size_t>{0, 3, 4, 5}));
  // Targets 2.75 and 5.5 both have frame 3 nearest: the least total distance is
  // 0 + 0.75 + 2.5 + 1.75 + 0 = 5 with frames {0, 2, 3, 4, 5} (the next best, {0, 1, 3, 4, 5}, costs 6).
  EXPECT_EQ(video::match_targets({0, 1, 2, 3, 10, 11}, {0, 2.75, 5.5, 8.25, 11}),
            (std::vector<size_t>{0, 2, 3, 4, 5}));
  // As many targets as frames: every frame, whatever the spacing.
  EXPECT_EQ(video::match_targets({0, 5, 5.1, 5.2}, {0, 1, 2, 3}), (std::vector<size_t>{0, 1, 2, 3}));
}

// Every clip kind the tests make, plus the real clips of opencv-doc.
std::vector<std::pair<std::string, std::string>> sampling_clips() {
  std::vector<std::pair<std::string, std::string>> clips = {
      {"h264.mp4", h264_mp4()},
      {"h264.ts (clock starts at 1.4 s)", h264_ts()},
      {"long offset ts", offset_ts()},
      {"vfr with a gap", vfr_gap_mkv()},
      {"open gop", make_clip("open_gop.mp4",
                             "-f lavfi -i testsrc2=size=160x120:rate=25 -t 6 -c:v libx264 -preset fast -bf 3 "
                             "-x264-params open-gop=1:keyint=30:min-keyint=30:scenecut=0 -pix_fmt yuv420p")},
      {"mpeg4 avi", make_clip("s_mpeg4.avi", "-f lavfi -i testsrc2=size=160x120:rate=10 -t 3 -c:v mpeg4 -bf 2 -q:v 5")},
      {"vp9 webm", make_clip("s_vp9.webm", "-f lavfi -i testsrc2=size=160x120:rate=10 -t 3 -c:v libvpx-vp9 "
                                           "-deadline realtime -cpu-used 8 -b:v 200k")},
      {"mjpeg avi", make_clip("s_mjpeg.avi", "-f lavfi -i testsrc2=size=160x120:rate=10 -t 3 -c:v mjpeg -q:v 5 "
                                             "-pix_fmt yuvj420p")},
  };
  if (have_encoder("libx265")) {
    clips.push_back({"hevc open gop", make_clip("s_hevc.mkv",
                                                "-f lavfi -i testsrc2=size=160x120:rate=10 -t 4 -c:v libx265 -preset "
                                                "ultrafast -x265-params log-level=error:open-gop=1:keyint=12 -pix_fmt "
                                                "yuv420p")});
  }
  if (have_encoder("libsvtav1")) {
    clips.push_back({"av1 mkv", make_clip("s_av1.mkv", "-f lavfi -i testsrc2=size=160x120:rate=10 -t 3 -c:v libsvtav1 "
                                                       "-preset 12 -pix_fmt yuv420p")});
  }
  for (const char* name : {"examples/data/tree.avi", "examples/data/vtest.avi", "examples/data/Megamind.avi",
                           "examples/data/Megamind_bugy.avi", "opencv4/html/box.mp4", "opencv4/html/cup.mp4"}) {
    std::string path = opencv_clip(name);
    if (!path.empty()) clips.push_back({name, path});
  }
  return clips;
}

// The rule, computed from a full sequential decode: every frame's time, then uniform_picks.
std::vector<double> sequential_choice(const std::string& path, int n) {
  std::vector<double> all;
  auto full = video::open_source(path, config::VideoConfig{});
  while (auto f = full->next()) all.push_back(f->t_sec);
  std::vector<double> out;
  for (size_t i : video::uniform_picks(all, n, video::ShortClip::kDistinct)) out.push_back(all[i]);
  return out;
}

TEST(UniformSampler, SameFramesAsASequentialDecodeOnEveryClip) {
  for (const auto& [name, path] : sampling_clips()) {
    SCOPED_TRACE(name);
    for (int n : {8, 5, 32}) {
      std::vector<double> expected = sequential_choice(path, n);
      for (double threshold : {0.0, 2.0}) {  // 0: seek for every frame; 2: the default
        auto source = video::open_source(path, config::VideoConfig{});
        config::SamplerConfig c = sampler_config("uniform", n);
        c.seek_threshold_sec = threshold;
        auto sampler = video::make_sampler(c);
        std::vector<double> got;
        for (const auto& f : sample_all(*source, *sampler)) got.push_back(f.t_sec);
        EXPECT_EQ(got, expected) << n << " frames, seek threshold " << threshold;
      }
    }
  }
}

TEST(FrameTimes, TheDemuxScanAgreesWithDecodingOrDeclines) {
  // Declines: AVI gives I/P packets no pts; box.mp4 stamps decode order on a B-frame stream.
  const std::map<std::string, bool> declines = {{"mpeg4 avi", true},
                                                {"examples/data/Megamind.avi", true},
                                                {"examples/data/Megamind_bugy.avi", true},
                                                {"opencv4/html/box.mp4", true}};
  for (const auto& [name, path] : sampling_clips()) {
    auto source = video::open_source(path, config::VideoConfig{});
    std::optional<std::vector<double>> scanned = source->frame_times();
    std::vector<double> decoded;
    while (auto f = source->next()) decoded.push_back(f->t_sec);  // the scan left reading at the start
    EXPECT_EQ(!scanned, declines.count(name) > 0) << name;
    if (scanned) EXPECT_EQ(*scanned, decoded) << name;
  }
}

TEST(UniformSampler, DistinctFramesFromTheStartOnAnOffsetMpegTs) {
  auto source = video::open_source(offset_ts(), config::VideoConfig{});
  auto sampler = video::make_sampler(sampler_config("uniform", 8));
  std::vector<video::Frame> frames = sample_all(*source, *sampler);
  ASSERT_EQ(frames.size(), 8u);
  EXPECT_DOUBLE_EQ(frames.front().t_sec, 0.0);
  EXPECT_NEAR(frames.back().t_sec, 29.96, 1e-6);
  for (size_t i = 0; i < 8; ++i) EXPECT_NEAR(frames[i].t_sec, i * 29.96 / 7, 0.5 / 25) << i;
  EXPECT_LT(source->stats().n_frames_decoded, 750) << "it seeks: far fewer than the 750 frames are decoded";
}

TEST(UniformSampler, TwoTargetsInAGapTakeDistinctFrames) {
  // Targets every 3.9/7 s: two of them fall in the 2.1 s gap.
  auto source = video::open_source(vfr_gap_mkv(), config::VideoConfig{});
  auto sampler = video::make_sampler(sampler_config("uniform", 8));
  std::vector<video::Frame> frames = sample_all(*source, *sampler);
  ASSERT_EQ(frames.size(), 8u);
  for (size_t i = 1; i < frames.size(); ++i) EXPECT_GT(frames[i].t_sec, frames[i - 1].t_sec) << i;
  EXPECT_DOUBLE_EQ(frames.front().t_sec, 0.0);
  EXPECT_NEAR(frames.back().t_sec, 3.9, 1e-6);
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
