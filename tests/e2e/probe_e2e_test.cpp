// End to end: the real mustdrop binary on generated clips, bad input and signals.
#include <gtest/gtest.h>

#include <signal.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "support/test_support.h"

namespace mustdrop::test {
namespace {

using nlohmann::json;

std::string sample_clip() { return make_sample_clip("sample.mp4", 3); }

ProcResult mustdrop(std::vector<std::string> args, double timeout_sec = 120) {
  args.insert(args.begin(), mustdrop_binary());
  return run_process(args, timeout_sec);
}

TEST(Probe, PrintsStreamFactsAndSampledTimestamps) {
  ProcResult r = mustdrop({"probe", sample_clip()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("h264 320x180"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sampled frames"), std::string::npos);
  EXPECT_NE(r.out.find("2.960000"), std::string::npos) << "last of 75 frames at 25 fps\n" << r.out;
}

TEST(Probe, JsonReportAgreesWithTheClip) {
  ProcResult r = mustdrop({"probe", sample_clip(), "--json", "--frames", "6"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["n_frames_sampled"], 6);
  ASSERT_EQ(j["frames"].size(), 6u);
  EXPECT_EQ(j["stream"]["width"], 320);
  EXPECT_DOUBLE_EQ(j["frames"][0]["t_sec"].get<double>(), 0.0);
  EXPECT_NEAR(j["frames"][5]["t_sec"].get<double>(), 2.96, 1e-6);
  EXPECT_FALSE(j["stats"]["truncated"].get<bool>());
}

TEST(Probe, FpsSamplerFromTheCommandLine) {
  ProcResult r = mustdrop({"probe", sample_clip(), "--json", "--sampler", "fps", "--fps", "2", "--frames", "0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  ASSERT_EQ(j["frames"].size(), 6u);  // 0, 0.5, ... 2.5
  // 25 fps: the first frame at or after each half second (0.5 s falls between 0.48 and 0.52).
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(j["frames"][i]["t_sec"].get<double>(), std::ceil(i * 12.5) / 25, 1e-6);
}

TEST(Probe, DumpWritesPreprocessedPngsThatReadBack) {
  std::string dir = temp_dir() + "/dump";
  ProcResult r = mustdrop({"probe", sample_clip(), "--dump", dir, "--size", "224", "--frames", "4"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (int i = 0; i < 4; ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "/frame_%04d.png", i);
    EXPECT_TRUE(std::filesystem::exists(dir + name)) << name;
  }
  // The dump directory is itself a valid input: four 224x224 images.
  ProcResult back = mustdrop({"probe", dir, "--json"});
  ASSERT_EQ(back.exit_code, 0) << back.err;
  json j = json::parse(back.out);
  EXPECT_EQ(j["stream"]["width"], 224);
  EXPECT_EQ(j["stream"]["height"], 224);
  EXPECT_EQ(j["stream"]["declared_frames"], 4);
}

TEST(Probe, ConfigFileAndSetOverrides) {
  std::string cfg = temp_dir() + "/probe.yaml";
  std::ofstream(cfg) << "video:\n  sampler:\n    frames: 3\n";
  ProcResult r = mustdrop({"--config", cfg, "probe", sample_clip(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["n_frames_sampled"], 3);
  r = mustdrop({"--config", cfg, "--set", "video.sampler.frames=5", "probe", sample_clip(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["n_frames_sampled"], 5);
}

// Bad input: a message naming the file, exit code 3, no crash.
TEST(BadInput, MissingFile) {
  std::string path = temp_dir() + "/nope.mp4";
  ProcResult r = mustdrop({"probe", path});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find(path), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("no such file"), std::string::npos) << r.err;
}

TEST(BadInput, NotAVideo) {
  std::string path = temp_dir() + "/notes.txt";
  std::ofstream(path) << "shopping list: eggs, milk\n";
  ProcResult r = mustdrop({"probe", path});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find(path), std::string::npos) << r.err;
}

TEST(BadInput, NoVideoStream) {
  std::string path = make_clip("tone.wav", "-f lavfi -i sine=duration=1");
  ProcResult r = mustdrop({"probe", path});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("no video stream"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(path), std::string::npos) << r.err;
}

TEST(BadInput, TruncatedFileReportsFramesReadAndKeepsOutput) {
  std::string full = make_clip("full.mp4",
                               "-f lavfi -i testsrc2=size=160x120:rate=25 -t 2 -c:v libx264 -preset ultrafast "
                               "-pix_fmt yuv420p -movflags +faststart");
  std::string path = temp_dir() + "/cut.mp4";
  std::filesystem::copy_file(full, path, std::filesystem::copy_options::overwrite_existing);
  std::filesystem::resize_file(path, std::filesystem::file_size(full) / 2);
  ProcResult r = mustdrop({"probe", path, "--sampler", "fps", "--fps", "25", "--frames", "0", "--json"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find(path), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("truncated"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("frames decoded"), std::string::npos) << r.err;
  json j = json::parse(r.out);  // what was read is still reported, as valid JSON
  EXPECT_GT(j["frames"].size(), 3u);
  EXPECT_LT(j["frames"].size(), 50u);
  EXPECT_EQ(j["stats"]["n_frames_decoded"].get<int>(), static_cast<int>(j["frames"].size()));
}

TEST(BadInput, UnreachableRtspUrl) {
  std::string url = "rtsp://127.0.0.1:9/nothing";  // discard port: nothing listens
  ProcResult r = mustdrop({"--set", "video.live.initial_connect_sec=1", "probe", url}, 60);
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find(url), std::string::npos) << r.err;
}

TEST(BadUsage, MalformedConfigGivesFileLineCol) {
  std::string cfg = temp_dir() + "/broken.yaml";
  std::ofstream(cfg) << "video:\n  sampler:\n    frames: [1, 2\n";
  ProcResult r = mustdrop({"--config", cfg, "probe", sample_clip()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find(cfg + ":"), std::string::npos) << r.err;
}

TEST(BadUsage, UnknownConfigKeyAndBadSet) {
  std::string cfg = temp_dir() + "/unknown.yaml";
  std::ofstream(cfg) << "video:\n  samplr: {}\n";
  ProcResult r = mustdrop({"--config", cfg, "probe", sample_clip()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find(cfg + ":2:3"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("video.samplr"), std::string::npos) << r.err;
  r = mustdrop({"--set", "video.sampler.frames=many", "probe", sample_clip()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("video.sampler.frames"), std::string::npos) << r.err;
}

TEST(BadUsage, UnknownOptionOrMissingInput) {
  EXPECT_EQ(mustdrop({"probe"}).exit_code, 2);
  EXPECT_EQ(mustdrop({"probe", sample_clip(), "--sampler", "random"}).exit_code, 2);
  EXPECT_EQ(mustdrop({"frobnicate"}).exit_code, 2);
  ProcResult help = mustdrop({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("probe"), std::string::npos);
}

#ifdef MUSTDROP_RTSP_SERVER
TEST(Signals, SigintStopsALiveProbeCleanlyWithValidOutput) {
  Child server({MUSTDROP_RTSP_SERVER, "--port", "0", "--seconds", "120"});
  std::string line = server.read_line(30);
  ASSERT_EQ(line.rfind("PORT ", 0), 0u) << line;
  std::string url = "rtsp://127.0.0.1:" + line.substr(5) + "/stream";
  Child probe({mustdrop_binary(), "probe", url, "--sampler", "interval", "--interval", "0.2", "--frames", "0"});
  int rows = 0;
  for (int i = 0; i < 60 && rows < 3; ++i) {
    std::string l = probe.read_line(10);
    if (l.rfind("  ", 0) == 0 && l.find("t_sec") == std::string::npos) ++rows;
  }
  ASSERT_EQ(rows, 3) << "no sampled frames printed";
  probe.signal(SIGINT);
  EXPECT_EQ(probe.wait(30), 0);
  std::string rest;
  for (std::string l = probe.read_line(2); !l.empty(); l = probe.read_line(2)) rest += l + "\n";
  EXPECT_NE(rest.find("read:"), std::string::npos) << rest;  // the summary was still written
}
#endif

}  // namespace
}  // namespace mustdrop::test
