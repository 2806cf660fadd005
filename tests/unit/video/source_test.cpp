// Sources over files of every container/codec the tests can make, real clips, and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <chrono>

#include "clips.h"
#include "core/error.h"
#include "video/source.h"

namespace mustdrop::test {

std::string opencv_clip(const std::string& name) {
  const std::string base = "/usr/share/doc/opencv-doc/";
  if (std::filesystem::exists(base + name)) return base + name;
  if (std::filesystem::exists(base + name + ".gz")) {
    std::string out = temp_dir() + "/" + std::filesystem::path(name).filename().string();
    if (!std::filesystem::exists(out)) {
      ProcResult r = run_process({"sh", "-c", "gunzip -c '" + base + name + ".gz' > '" + out + "'"});
      if (r.exit_code != 0) return "";
    }
    return out;
  }
  return "";
}

namespace {

using video::Frame;

config::VideoConfig default_video() { return config::VideoConfig{}; }

std::vector<Frame> read_all(video::Source& s) {
  std::vector<Frame> frames;
  while (auto f = s.next()) frames.push_back(std::move(*f));
  return frames;
}

struct CodecCase {
  std::string name;     // file name
  std::string encoder;  // ffmpeg encoder that must exist
  std::string args;     // ffmpeg arguments before the output path
  std::string codec;    // expected decoder name prefix
};

class CodecContainer : public ::testing::TestWithParam<CodecCase> {};

TEST_P(CodecContainer, DecodesEveryFrameWithTimestamps) {
  const CodecCase& c = GetParam();
  if (!have_encoder(c.encoder)) GTEST_SKIP() << "ffmpeg has no " << c.encoder << " encoder";
  std::string path = make_clip(c.name, "-f lavfi -i testsrc2=size=160x120:rate=10 -t 2 " + c.args);
  auto source = video::open_source(path, default_video());
  EXPECT_EQ(source->info().width, 160);
  EXPECT_EQ(source->info().height, 120);
  EXPECT_NE(source->info().codec.find(c.codec), std::string::npos) << source->info().codec;
  std::vector<Frame> frames = read_all(*source);
  ASSERT_EQ(frames.size(), 20u);
  for (size_t i = 0; i < frames.size(); ++i) {
    EXPECT_NEAR(frames[i].t_sec, i * 0.1, 0.05) << "frame " << i;
    EXPECT_EQ(frames[i].index, static_cast<int64_t>(i));
    EXPECT_EQ(frames[i].width(), 160);
  }
  EXPECT_FALSE(source->stats().truncated);
  EXPECT_EQ(source->stats().n_corrupt_packets, 0);
}

INSTANTIATE_TEST_SUITE_P(
    AllFormats, CodecContainer,
    ::testing::Values(
        CodecCase{"c_h264.mp4", "libx264", "-c:v libx264 -preset ultrafast -pix_fmt yuv420p", "h264"},
        CodecCase{"c_hevc.mkv", "libx265", "-c:v libx265 -preset ultrafast -x265-params log-level=error -pix_fmt yuv420p", "hevc"},
        CodecCase{"c_vp9.webm", "libvpx-vp9", "-c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 200k", "vp9"},
        CodecCase{"c_mpeg4.avi", "mpeg4", "-c:v mpeg4 -q:v 5", "mpeg4"},
        CodecCase{"c_mjpeg.avi", "mjpeg", "-c:v mjpeg -q:v 5 -pix_fmt yuvj420p", "mjpeg"},
        CodecCase{"c_av1.mkv", "libsvtav1", "-c:v libsvtav1 -preset 12 -pix_fmt yuv420p", "dav1d"}),
    [](const ::testing::TestParamInfo<CodecCase>& info) {
      std::string n = info.param.name;
      for (char& ch : n) {
        if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
      }
      return n;
    });

TEST(Source, VariableFrameRateKeepsRealTimestamps) {
  // Ten frames at 10 fps, then thirty at 30 fps: 1 s + 1 s.
  std::string path = make_clip(
      "vfr.mkv",
      "-f lavfi -i testsrc2=size=160x120:rate=30 -frames:v 40 -vf setpts=(if(lt(N\\,10)\\,N/10\\,1+(N-10)/30))/TB "
      "-fps_mode vfr -c:v libx264 -preset ultrafast -pix_fmt yuv420p");
  auto source = video::open_source(path, default_video());
  std::vector<Frame> frames = read_all(*source);
  ASSERT_EQ(frames.size(), 40u);
  for (size_t i = 0; i < frames.size(); ++i) {
    double expected = i < 10 ? i / 10.0 : 1.0 + (i - 10) / 30.0;
    EXPECT_NEAR(frames[i].t_sec, expected, 0.5 / 30) << "frame " << i;
  }
}

TEST(Source, NonZeroStartTime) {
  std::string path = make_clip("start5.mkv",
                               "-f lavfi -i testsrc2=size=160x120:rate=10 -t 1 -output_ts_offset 5 -c:v libx264 "
                               "-preset ultrafast -pix_fmt yuv420p");
  auto source = video::open_source(path, default_video());
  EXPECT_NEAR(source->info().start_sec, 5.0, 0.05);
  std::vector<Frame> frames = read_all(*source);
  ASSERT_EQ(frames.size(), 10u);
  EXPECT_NEAR(frames[0].pts_sec, 5.0, 0.05);
  EXPECT_NEAR(frames[0].t_sec, 0.0, 0.05);
  EXPECT_NEAR(frames[9].t_sec, 0.9, 0.05);
}

TEST(Source, RotatedPhoneVideoReportsRotation) {
  std::string plain = h264_mp4();
  std::string path = make_clip("rotated.mp4", "-i " + plain + " -c copy -metadata:s:v:0 rotate=90");
  auto source = video::open_source(path, default_video());
  // libav 5.1 stores "rotate=90" as a display matrix that ffprobe shows as rotation=90
  // (counter-clockwise); making it upright takes a 270 degree clockwise turn, as the ffmpeg
  // CLI does. preprocess_test checks the direction against the CLI's own output.
  EXPECT_EQ(source->info().rotation_deg, 270);
  EXPECT_EQ(source->info().display_width, 240);
  EXPECT_EQ(source->info().display_height, 320);
  auto f = source->next();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->rotation_deg, 270);
}

TEST(Source, TruncatedFileDecodesWhatIsThere) {
  std::string full = h264_mp4();
  std::string path = temp_dir() + "/truncated.mp4";
  std::filesystem::copy_file(full, path, std::filesystem::copy_options::overwrite_existing);
  std::filesystem::resize_file(path, std::filesystem::file_size(full) * 6 / 10);
  auto source = video::open_source(path, default_video());
  std::vector<Frame> frames = read_all(*source);
  EXPECT_GT(frames.size(), 5u);
  EXPECT_LT(frames.size(), 50u);
  EXPECT_TRUE(source->stats().truncated);
  EXPECT_NE(source->stats().damage.find("truncated"), std::string::npos) << source->stats().damage;
  EXPECT_EQ(source->stats().n_frames_decoded, static_cast<int64_t>(frames.size()));
}

TEST(Source, CorruptPacketsAreSkippedAndCounted) {
  std::string clean = h264_ts();
  std::string path = temp_dir() + "/corrupt.ts";
  std::filesystem::copy_file(clean, path, std::filesystem::copy_options::overwrite_existing);
  {
    // Overwrite the payload of several TS packets (skipping their 4-byte headers) with garbage.
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    size_t size = std::filesystem::file_size(path);
    uint32_t state = 12345;
    for (size_t pkt = 40; pkt * 188 < size * 3 / 4; pkt += 37) {
      f.seekp(static_cast<std::streamoff>(pkt * 188 + 8));
      for (int i = 0; i < 150; ++i) {
        state = state * 1103515245u + 12345u;
        f.put(static_cast<char>(state >> 24));
      }
    }
  }
  auto source = video::open_source(path, default_video());
  std::vector<Frame> frames = read_all(*source);
  video::SourceStats stats = source->stats();
  EXPECT_GT(stats.n_corrupt_packets + stats.n_corrupt_frames, 0) << "damage: " << stats.damage;
  ASSERT_FALSE(frames.empty());
  EXPECT_GT(frames.back().t_sec, 3.5);  // decoding went on to the end
}

TEST(Source, MissingFileIsAnInputErrorNamingIt) {
  std::string path = temp_dir() + "/does_not_exist.mp4";
  try {
    video::open_source(path, default_video());
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("no such file"), std::string::npos);
  }
}

TEST(Source, TextFileIsNotAVideo) {
  std::string path = temp_dir() + "/notes.mp4";
  std::ofstream(path) << "these are not the frames you are looking for\n";
  try {
    video::open_source(path, default_video());
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(Source, AudioOnlyFileHasNoVideoStream) {
  std::string path = make_clip("audio.m4a", "-f lavfi -i sine=duration=1 -c:a aac");
  try {
    video::open_source(path, default_video());
    FAIL() << "no error";
  } catch (const InputError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("no video stream"), std::string::npos) << msg;
    EXPECT_NE(msg.find("audio aac"), std::string::npos) << msg;
  }
}

TEST(Source, ImageDirectorySortedByNameAtGivenFps) {
  std::string dir = make_image_dir("frames", "testsrc2=size=64x48:rate=5", 6);
  std::ofstream(dir + "/readme.txt") << "not an image";
  config::VideoConfig cfg;
  cfg.frame_dir_fps = 2.0;
  auto source = video::open_source(dir, cfg);
  EXPECT_EQ(source->info().container, "image_dir");
  EXPECT_EQ(source->info().width, 64);
  std::vector<Frame> frames = read_all(*source);
  ASSERT_EQ(frames.size(), 6u);
  for (size_t i = 0; i < frames.size(); ++i) EXPECT_DOUBLE_EQ(frames[i].t_sec, i * 0.5);
  EXPECT_EQ(source->frame_times(), (std::vector<double>{0.0, 0.5, 1.0, 1.5, 2.0, 2.5}));
}

TEST(Source, HttpUrlThroughLibav) {
  std::string clip = h264_mp4();
  Child server({"/usr/bin/python3", "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory",
                std::filesystem::path(clip).parent_path().string()});
  std::string line = server.read_line(30);  // "Serving HTTP on 127.0.0.1 port N (...)"
  auto at = line.find(" port ");
  ASSERT_NE(at, std::string::npos) << "no HTTP server: " << line;
  int port = std::stoi(line.substr(at + 6));
  std::string url = "http://127.0.0.1:" + std::to_string(port) + "/" + std::filesystem::path(clip).filename().string();
  auto source = video::open_source(url, default_video());
  EXPECT_FALSE(source->info().live);
  EXPECT_EQ(source->info().codec, "h264");
  std::vector<Frame> frames = read_all(*source);
  ASSERT_EQ(frames.size(), 50u);
  EXPECT_NEAR(frames.back().t_sec, 1.96, 1e-6);
  // A missing path on the server is an input error naming the URL.
  std::string missing = "http://127.0.0.1:" + std::to_string(port) + "/nothing.mp4";
  try {
    video::open_source(missing, default_video());
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
}

TEST(Source, EmptyDirectoryIsAnInputError) {
  std::string dir = temp_dir() + "/empty";
  std::filesystem::create_directories(dir);
  EXPECT_THROW(video::open_source(dir, default_video()), InputError);
}

// Real footage from Debian's opencv-doc package.
TEST(RealClips, TreeAviHolds68FramesWhateverItsHeaderClaims) {
  std::string path = opencv_clip("examples/data/tree.avi");
  if (path.empty()) GTEST_SKIP() << "opencv-doc is not installed";
  auto source = video::open_source(path, default_video());
  EXPECT_EQ(source->info().declared_frames, 444);
  std::vector<Frame> frames = read_all(*source);
  EXPECT_EQ(frames.size(), 68u);
  auto times = source->frame_times();
  ASSERT_TRUE(times);
  EXPECT_EQ(times->size(), 68u);
  EXPECT_NEAR(times->back(), frames.back().t_sec, 1e-6);
}

TEST(RealClips, VtestAviPedestrians) {
  std::string path = opencv_clip("examples/data/vtest.avi");
  if (path.empty()) GTEST_SKIP() << "opencv-doc is not installed";
  auto source = video::open_source(path, default_video());
  EXPECT_EQ(source->info().width, 768);
  EXPECT_EQ(source->info().height, 576);
  std::vector<Frame> frames = read_all(*source);
  EXPECT_EQ(frames.size(), 795u);
  EXPECT_NEAR(frames.back().t_sec, 79.4, 0.1);
}

TEST(RealClips, Mpeg4TrailerWithAc3Audio) {
  std::string path = opencv_clip("examples/data/Megamind.avi");
  if (path.empty()) GTEST_SKIP() << "opencv-doc is not installed";
  auto source = video::open_source(path, default_video());
  EXPECT_EQ(source->info().codec, "mpeg4");
  EXPECT_EQ(source->info().width, 720);
  std::vector<Frame> frames = read_all(*source);
  EXPECT_EQ(frames.size(), 270u);
  EXPECT_NEAR(frames.back().t_sec - frames.front().t_sec, 269 * 125.0 / 2997, 0.01);  // 23.976 fps
}

// What ffprobe (another program over the same libav decoders) says the frames are: the frame's
// own pts, else libav's best-effort time, minus the stream start (neither: one period after the
// previous frame); a time that does not increase becomes the previous one plus a frame period,
// and is counted. The reader's repair rule, applied
// here by hand to ffprobe's numbers.
struct ProbedFrames {
  std::vector<double> t_sec;
  int64_t n_repairs = 0;
};

double parse_rate(const std::string& r) {
  auto slash = r.find('/');
  double num = std::stod(r.substr(0, slash)), den = slash == std::string::npos ? 1 : std::stod(r.substr(slash + 1));
  return den > 0 ? num / den : 0;
}

ProbedFrames ffprobe_frames(const std::string& path) {
  ProbedFrames out;
  ProcResult stream = run_process({"ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                                   "stream=start_time,avg_frame_rate,r_frame_rate", "-of", "default=noprint_wrappers=1",
                                   path});
  EXPECT_EQ(stream.exit_code, 0) << stream.err;
  std::map<std::string, std::string> kv;
  std::istringstream lines(stream.out);
  for (std::string line; std::getline(lines, line);) {
    auto eq = line.find('=');
    if (eq != std::string::npos) kv[line.substr(0, eq)] = line.substr(eq + 1);
  }
  double start = kv["start_time"] == "N/A" ? 0 : std::stod(kv["start_time"]);
  double fps = parse_rate(kv["avg_frame_rate"]);
  if (fps <= 0) fps = parse_rate(kv["r_frame_rate"]);
  double period = fps > 0 ? 1 / fps : 1e-3;
  ProcResult frames = run_process({"ffprobe", "-v", "quiet", "-select_streams", "v:0", "-show_entries",
                                   "frame=pts_time,best_effort_timestamp_time", "-of", "csv=p=0", path});
  EXPECT_EQ(frames.exit_code, 0) << frames.err;
  std::istringstream rows(frames.out);
  for (std::string row; std::getline(rows, row);) {
    if (row.empty()) continue;  // side-data sections print as empty rows
    std::istringstream fields(row);
    std::string pts, best;
    std::getline(fields, pts, ',');
    std::getline(fields, best, ',');
    if (pts == "N/A" && best == "N/A") {  // no time at all: one period after the previous frame
      out.t_sec.push_back(out.t_sec.empty() ? 0 : out.t_sec.back() + period);
      continue;
    }
    double t = (pts != "N/A" ? std::stod(pts) : std::stod(best)) - start;
    if (!out.t_sec.empty() && t <= out.t_sec.back()) {
      t = out.t_sec.back() + period;
      ++out.n_repairs;
    }
    out.t_sec.push_back(t);
  }
  return out;
}

// Every frame, with the times and repairs ffprobe's numbers give, to the last one.
void expect_frames_as_ffprobe_sees_them(const std::string& path) {
  SCOPED_TRACE(path);
  ProbedFrames expected = ffprobe_frames(path);
  ASSERT_GT(expected.t_sec.size(), 10u);
  auto source = video::open_source(path, default_video());
  std::vector<Frame> frames = read_all(*source);
  ASSERT_EQ(frames.size(), expected.t_sec.size()) << "reaches the end: as many frames as ffprobe decodes";
  EXPECT_EQ(source->stats().n_timestamp_repairs, expected.n_repairs);
  for (size_t i = 0; i < frames.size(); ++i) ASSERT_NEAR(frames[i].t_sec, expected.t_sec[i], 1e-5) << "frame " << i;
}

TEST(RealClips, BuggyTrailerNeverCrashesAndReachesTheEnd) {
  // opencv ships a damaged copy of the trailer for its own robustness tests.
  std::string path = opencv_clip("examples/data/Megamind_bugy.avi");
  if (path.empty()) GTEST_SKIP() << "opencv-doc is not installed";
  expect_frames_as_ffprobe_sees_them(path);
}

TEST(RealClips, GzippedH264WithAudio) {
  for (const char* name : {"opencv4/html/box.mp4", "opencv4/html/cup.mp4"}) {
    std::string path = opencv_clip(name);
    if (path.empty()) GTEST_SKIP() << "opencv-doc is not installed";
    auto source = video::open_source(path, default_video());
    EXPECT_EQ(source->info().codec, "h264") << name;
    EXPECT_FALSE(source->stats().truncated) << name;
    expect_frames_as_ffprobe_sees_them(path);
  }
  // box.mp4 stamps decode order on a B-frame stream: the reader repairs 303 of its times.
  EXPECT_GT(ffprobe_frames(opencv_clip("opencv4/html/box.mp4")).n_repairs, 100);
}

// A file played as a camera: looped with times and indices that keep rising, and no frame
// delivered before its time since the first one.
TEST(PacedSource, LoopsWithRisingTimesAndKeepsRealTime) {
  const std::string clip = h264_mp4();
  std::vector<double> once;
  {
    auto plain = video::open_source(clip, config::VideoConfig{});
    while (auto f = plain->next()) once.push_back(f->t_sec);
  }
  ASSERT_GE(once.size(), 10u);
  auto looped = video::make_paced_source(video::open_source(clip, config::VideoConfig{}), false, true);
  std::vector<video::Frame> got;
  for (size_t i = 0; i < 2 * once.size() + 3; ++i) {
    auto f = looped->next();
    ASSERT_TRUE(f) << i;
    got.push_back(std::move(*f));
  }
  const double period = once[1] - once[0];
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].index, static_cast<int64_t>(i));
    const size_t pass = i / once.size(), k = i % once.size();
    // Pass p starts one frame period after the last frame of pass p - 1.
    const double expected = (once[k] - once[0]) + pass * (once.back() - once[0] + period);
    EXPECT_NEAR(got[i].t_sec, expected, 1e-6) << i;
  }
  // Not looped: ends with the file.
  auto once_only = video::make_paced_source(video::open_source(clip, config::VideoConfig{}), false, false);
  size_t n = 0;
  while (once_only->next()) ++n;
  EXPECT_EQ(n, once.size());
  // Real time: the frame at t arrives no sooner than t after the first (a lower bound only).
  auto realtime = video::make_paced_source(video::open_source(clip, config::VideoConfig{}), true, false);
  auto t0 = std::chrono::steady_clock::now();
  double last_t = 0, first_t = -1;
  for (int i = 0; i < 8; ++i) {
    auto f = realtime->next();
    ASSERT_TRUE(f);
    if (first_t < 0) {
      first_t = f->t_sec;
      t0 = std::chrono::steady_clock::now();
    }
    last_t = f->t_sec;
  }
  EXPECT_GE(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), last_t - first_t - 0.005);
}

// A looped file that goes away between passes: the reopen fails with an error naming the file,
// and the source stays whole (a monitor reads its counters after the reader thread has ended).
TEST(PacedSource, AFileGoneBeforeTheNextPassIsAnInputErrorAndTheSourceStaysReadable) {
  const std::string clip = temp_dir() + "/vanishing.mp4";
  std::filesystem::copy_file(h264_mp4(), clip, std::filesystem::copy_options::overwrite_existing);
  int64_t n_once = 0;
  {
    auto plain = video::open_source(clip, config::VideoConfig{});
    while (plain->next()) ++n_once;
  }
  ASSERT_GE(n_once, 10);
  auto looped = video::make_paced_source(video::open_source(clip, config::VideoConfig{}), false, true);
  for (int64_t i = 0; i < n_once; ++i) ASSERT_TRUE(looped->next()) << i;
  std::filesystem::remove(clip);
  try {
    looped->next();
    FAIL() << "the pass after the file was removed gave a frame or a quiet end";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(clip), std::string::npos) << e.what();
  }
  EXPECT_EQ(looped->stats().n_frames_decoded, n_once);
  EXPECT_GT(looped->info().width, 0);
}

// A stop that interrupts the reopen between passes ends the source quietly: a monitor stopping
// while a looped clip starts over is not a failure of that clip.
TEST(PacedSource, AStopDuringTheReopenIsAnEndNotAnError) {
  // Two frames a pass; the rewind is where the stop arrives, and the reopen fails as libav does
  // when its interrupt callback fires.
  class TwoFrames : public video::Source {
   public:
    const video::StreamInfo& info() const override { return info_; }
    std::optional<Frame> next() override {
      if (next_ == 2) return std::nullopt;
      Frame f;
      f.t_sec = 0.04 * static_cast<double>(next_++);
      return f;
    }
    bool seek(double) override { return false; }
    std::optional<std::vector<double>> frame_times() override { return std::nullopt; }
    bool rewind() override {
      if (on_rewind) on_rewind();
      if (stop_requested()) throw InputError("clip.mp4: timed out or interrupted while opening");
      next_ = 0;
      return true;
    }
    video::SourceStats stats() const override { return {}; }
    std::function<void()> on_rewind;

   private:
    video::StreamInfo info_;
    int next_ = 0;
  };
  auto inner = std::make_unique<TwoFrames>();
  TwoFrames* raw = inner.get();
  auto looped = video::make_paced_source(std::move(inner), false, true);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(looped->next()) << i;  // two passes and a bit: rewinds work
  raw->on_rewind = [&] { looped->request_stop(); };
  EXPECT_TRUE(looped->next());  // the last frame of the third pass
  std::optional<Frame> after;
  EXPECT_NO_THROW(after = looped->next());
  EXPECT_FALSE(after);
}

}  // namespace
}  // namespace mustdrop::test
