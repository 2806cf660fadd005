// End to end: `mustdrop run` on generated clips and generated tiny models.
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "e2e/e2e_util.h"
#include "support/test_support.h"

namespace mustdrop::test {
namespace {

using nlohmann::json;

TEST(Run, AnswerTokensAreStreamedBeforeGenerationEnds) {
  // stdout is flushed per token and stderr is unbuffered, so in one merged pipe the order is the
  // order of events: answer text must come before the "generation finished" log line.
  ProcResult r = mustdrop({"--log-level", "debug", "run", clip(), "--model", tiny_model(), "-q", "What moves?",
                           "--frames", "2", "--max-new-tokens", "12"},
                          300, true);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  size_t a = r.out.find("A:");
  size_t done = r.out.find("generation finished");
  ASSERT_NE(a, std::string::npos) << r.out;
  ASSERT_NE(done, std::string::npos) << r.out;
  ASSERT_LT(a, done);
  std::string streamed = r.out.substr(a + 2, done - a - 2);
  EXPECT_NE(streamed.find_first_not_of(" \n"), std::string::npos) << "nothing streamed before the end: " << r.out;
}

TEST(Run, JsonReportHasEveryFieldAndTheValuesAgree) {
  std::string report = temp_dir() + "/report.json";
  ProcResult r = mustdrop({"run", clip(), "--model", tiny_model(), "-q", "What colour is the car?", "-q",
                           "How many buildings?", "--frames", "2", "--max-new-tokens", "8", "--json", report});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = read_json(report);
  for (const char* key : {"answers", "pipeline", "n_frames_decoded", "n_frames_sampled", "n_vision_tokens_in",
                          "n_vision_tokens_to_llm", "n_vision_tokens_layer_avg", "n_vision_kv_after_decode", "stages",
                          "flops_total", "flops_unpruned", "ttft_ms", "prefill_ms", "decode_ms_per_token",
                          "kv_bytes_peak", "peak_rss_bytes", "timings_ms"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["pipeline"], "none");
  EXPECT_EQ(j["n_frames_sampled"], 2);
  EXPECT_EQ(j["n_frames_decoded"], 50);  // 2 s at 25 fps, decoded forward (no seek needed)
  EXPECT_EQ(j["n_vision_tokens_in"], 2 * 576);  // frames x patches per frame (CLS dropped)
  EXPECT_EQ(j["n_vision_tokens_to_llm"], j["n_vision_tokens_in"]);
  EXPECT_DOUBLE_EQ(j["n_vision_tokens_layer_avg"].get<double>(), 2 * 576.0);
  EXPECT_EQ(j["n_vision_kv_after_decode"], 2 * 576);
  EXPECT_DOUBLE_EQ(j["flops_total"].get<double>(), j["flops_unpruned"].get<double>());
  EXPECT_GT(j["flops_total"].get<double>(), 0);
  EXPECT_TRUE(j["stages"].is_array());
  ASSERT_EQ(j["answers"].size(), 2u);
  EXPECT_EQ(j["answers"][1]["question"], "How many buildings?");
  EXPECT_EQ(j["answers"][0]["n_generated"].get<int>() <= 8, true);
  EXPECT_NE(r.out.find(j["answers"][0]["answer"].get<std::string>()), std::string::npos);  // stdout holds it
  EXPECT_GE(j["ttft_ms"].get<double>(), j["prefill_ms"].get<double>());
  EXPECT_GT(j["kv_bytes_peak"].get<double>(), 0);
  EXPECT_GT(j["peak_rss_bytes"].get<double>(), 0);
  for (const char* node : {"source", "preprocess", "encoder", "projector", "memory", "answer"}) {
    EXPECT_TRUE(j["timings_ms"].contains(node)) << node;
  }
}

TEST(Run, SeveralQuestionsEncodeTheVideoOnce) {
  std::string report = temp_dir() + "/three.json";
  ProcResult r = mustdrop({"run", clip(), "--model", tiny_model(), "-q", "one?", "-q", "two?", "-q", "three?",
                           "--frames", "3", "--max-new-tokens", "4", "--json", report});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = read_json(report);
  EXPECT_EQ(j["answers"].size(), 3u);
  EXPECT_EQ(j["n_frames_encoded"], 3);  // not 9
}

TEST(Run, VideoLlavaKeepsClsPerFrame) {
  std::string report = temp_dir() + "/video_llava.json";
  ProcResult r = mustdrop({"run", clip(), "--model", tiny_model("tiny-video-llava"), "-q", "What happens?",
                           "--frames", "8", "--max-new-tokens", "4", "--json", report});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_json(report)["n_vision_tokens_in"], 8 * 257);
}

// `mustdrop run` on `input` with the tiny `preset` model (default frames); the report.
json run_on(const std::string& input, const std::string& preset, const std::string& tag,
            const std::vector<std::string>& extra = {}) {
  std::string report = temp_dir() + "/" + tag + ".json";
  std::vector<std::string> args = {"run", input, "--model", tiny_model(preset), "-q", "What is it?",
                                   "--max-new-tokens", "6", "--json", report};
  args.insert(args.end(), extra.begin(), extra.end());
  ProcResult r = mustdrop(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.exit_code == 0 ? read_json(report) : json::object();
}

TEST(Run, OneImageIsOneFrameForAnImageModel) {
  std::string dir = make_image_dir("one_picture", "testsrc2=size=320x240", 1);
  json j = run_on(dir, "tiny-llava", "one_image");  // the default asks for 8 frames
  EXPECT_EQ(j["n_frames_sampled"], 1);
  EXPECT_EQ(j["n_vision_tokens_in"], 576);
  // The same answer as the one frame asked for explicitly (8 copies would be another prompt).
  json once = run_on(dir, "tiny-llava", "one_image_once", {"--frames", "1"});
  EXPECT_EQ(j["answers"][0]["ids"], once["answers"][0]["ids"]);
  // A PNG file is a single picture too.
  std::string png = make_clip("picture.png", "-f lavfi -i testsrc2=size=320x240 -frames:v 1");
  EXPECT_EQ(run_on(png, "tiny-llava", "png")["n_vision_tokens_in"], 576);
}

TEST(Run, VideoLlavaAsksAboutAStillImageThroughItsImageTower) {
  std::string dir = make_image_dir("one_picture", "testsrc2=size=320x240", 1);
  json j = run_on(dir, "tiny-video-llava", "video_llava_image");
  EXPECT_EQ(j["n_frames_sampled"], 1);
  EXPECT_EQ(j["n_vision_tokens_in"], 256);  // 16 x 16 patches, CLS dropped ("default" strategy)
  EXPECT_EQ(j["media"], "image");
}

TEST(Run, VideoLlavaRepeatsTheFramesOfAShortClipLikeItsProcessor) {
  std::string path = make_clip("three_frames.mp4", "-f lavfi -i testsrc2=size=320x240:rate=10 -frames:v 3 "
                                                   "-c:v libx264 -preset ultrafast -pix_fmt yuv420p");
  json j = run_on(path, "tiny-video-llava", "video_llava_short");
  EXPECT_EQ(j["n_frames_sampled"], 8);
  EXPECT_EQ(j["n_frames_decoded"], 3);
  EXPECT_EQ(j["n_vision_tokens_in"], 8 * 257);
  EXPECT_EQ(j["media"], "video");
  // An image model takes each of the three frames once.
  json llava = run_on(path, "tiny-llava", "llava_short");
  EXPECT_EQ(llava["n_frames_sampled"], 3);
  EXPECT_EQ(llava["n_vision_tokens_in"], 3 * 576);
}

TEST(Run, OptionsAfterTheSubcommandWork) {
  std::string report = temp_dir() + "/set_after.json";
  ProcResult r = mustdrop({"run", clip(), "--model", tiny_model(), "-q", "x?", "--max-new-tokens", "2", "--json",
                           report, "--set", "video.sampler.frames=2", "--log-level", "warn"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_json(report)["n_frames_sampled"], 2);
  std::string cfg = temp_dir() + "/three_frames.yaml";
  std::ofstream(cfg) << "video:\n  sampler:\n    frames: 3\n";
  r = mustdrop({"run", clip(), "--model", tiny_model(), "-q", "x?", "--max-new-tokens", "2", "--json", report,
                "--config", cfg});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_json(report)["n_frames_sampled"], 3);
}

TEST(Run, AMemoryBudgetBoundsWhatTheAnswersSee) {
  json j = run_on(clip(), "tiny-llava", "budget", {"--frames", "8", "--set", "memory.max_tokens=1500"});
  const json& m = j["memory"];
  EXPECT_LE(m["n_tokens"].get<int64_t>(), 1500);
  EXPECT_EQ(m["token_capacity"], 1500);
  EXPECT_GT(m["n_evicted_tokens"].get<int64_t>(), 8 * 576 - 1500 - 1);
  EXPECT_GT(m["n_evictions"].get<int64_t>(), 0);
  EXPECT_LE(m["bytes"].get<int64_t>(), m["bytes_per_token"].get<int64_t>() * 1500 + 1000000);
  const json& used = j["answers"][0]["memory"];
  EXPECT_EQ(used["n_tokens"], m["n_tokens"]);
  EXPECT_TRUE(used["used_prefix"].get<bool>());
  // The span starts after the oldest frames left the memory.
  EXPECT_GT(used["span_sec"][0].get<double>(), 0.0);
  EXPECT_LE(used["span_sec"][0].get<double>(), used["span_sec"][1].get<double>());
}

TEST(Run, SigintStopsCleanlyAndKeepsAValidReport) {
  std::string report = temp_dir() + "/interrupted.json";
  Child run({mustdrop_binary(), "run", clip(), "--model", tiny_model(), "-q", "Tell me everything.", "--frames", "1",
             "--max-new-tokens", "100000", "--json", report});
  // "Q: ..." is printed once the video is encoded; the answer then streams (no newline yet).
  std::string line = run.read_line(120);
  ASSERT_NE(line.find("Q:"), std::string::npos) << "no question echoed: " << line;
  usleep(500 * 1000);
  run.signal(SIGINT);
  EXPECT_EQ(run.wait(60), 130);
  json j = read_json(report);
  EXPECT_TRUE(j["interrupted"].get<bool>());
  ASSERT_EQ(j["answers"].size(), 1u);
  EXPECT_TRUE(j["answers"][0]["interrupted"].get<bool>());
  EXPECT_LT(j["answers"][0]["n_generated"].get<int>(), 100000);
}

TEST(RunErrors, BadVideoIsExit3NamingTheFile) {
  std::string bad = temp_dir() + "/not_a_video.mp4";
  std::ofstream(bad) << "plain text";
  ProcResult r = mustdrop({"run", bad, "--model", tiny_model(), "-q", "x?"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find(bad), std::string::npos) << r.err;
}

TEST(RunErrors, BadModelDirectoryIsExit4NamingIt) {
  std::string dir = temp_dir() + "/empty_model";
  std::filesystem::create_directories(dir);
  ProcResult r = mustdrop({"run", clip(), "--model", dir, "-q", "x?"});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_NE(r.err.find(dir), std::string::npos) << r.err;
}

TEST(RunErrors, MalformedPipelineYamlIsExit2WithFileLineCol) {
  std::string p = temp_dir() + "/broken_pipeline.yaml";
  std::ofstream(p) << "name: none\nstages: [\n";
  ProcResult r = mustdrop({"run", clip(), "--model", tiny_model(), "-q", "x?", "--pipeline", p});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find(p + ":"), std::string::npos) << r.err;
  std::string unknown = temp_dir() + "/unknown_key_pipeline.yaml";
  std::ofstream(unknown) << "name: none\nkeep_ratio: 0.5\n";
  r = mustdrop({"run", clip(), "--model", tiny_model(), "-q", "x?", "--pipeline", unknown});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find(unknown + ":2:1"), std::string::npos) << r.err;
}

TEST(RunErrors, MalformedConfigIsExit2WithFileLineCol) {
  std::string c = temp_dir() + "/broken_config.yaml";
  std::ofstream(c) << "generation:\n  max_new_tokens: lots\n";
  ProcResult r = mustdrop({"--config", c, "run", clip(), "--model", tiny_model(), "-q", "x?"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find(c + ":2:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("generation.max_new_tokens"), std::string::npos) << r.err;
}

TEST(RunErrors, NoModelExplainsHowToMakeOne) {
  std::vector<std::string> args = {"env", "-u", "MUSTDROP_MODEL", mustdrop_binary(), "run", clip(), "-q", "x?"};
  ProcResult r = run_process(args, 60);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("make_tiny_model"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace mustdrop::test
