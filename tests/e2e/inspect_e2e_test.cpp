// `mustdrop inspect` end to end on the tiny model and a generated clip: the overlays are decoded
// by the ffmpeg CLI (not by mustdrop's PNG writer) and their marks counted pixel by pixel; the
// counts must equal what the session's memory, the memory node and a separate `mustdrop run`
// report say (never the counts inspect drew from). Bad input fails clearly.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "e2e_util.h"

namespace mustdrop::test {
namespace {

using nlohmann::json;

const char* const kFates[] = {"kept",          "important",      "absorbed",      "vision_dropped",
                              "prefill_dropped", "decode_evicted", "memory_evicted"};

// `pipelines/mustdrop.yaml` with `from` replaced by `to` (each must occur), written to a temp file.
std::string mustdrop_variant(const std::string& name, const std::vector<std::pair<std::string, std::string>>& edits) {
  std::string yaml = read_file(source_dir() + "/pipelines/mustdrop.yaml");
  for (const auto& [from, to] : edits) {
    size_t at = yaml.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos) yaml.replace(at, from.size(), to);
  }
  std::string path = temp_dir() + "/" + name + ".yaml";
  std::ofstream(path) << yaml;
  return path;
}

// Pixels of one overlay by exact colour, decoded by the ffmpeg CLI.
std::map<std::array<int, 3>, int64_t> colour_histogram(const std::string& png, int side) {
  ProcResult r = run_process({"ffmpeg", "-v", "error", "-i", png, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.size(), static_cast<size_t>(side) * side * 3) << png;
  std::map<std::array<int, 3>, int64_t> h;
  for (size_t i = 0; i + 2 < r.out.size(); i += 3) {
    ++h[{static_cast<uint8_t>(r.out[i]), static_cast<uint8_t>(r.out[i + 1]), static_cast<uint8_t>(r.out[i + 2])}];
  }
  return h;
}

// Marks of one overlay: cells per fate (badges) and tokens per fate (anchors).
struct Marks {
  std::map<std::string, int64_t> cells, tokens;
};

Marks count_marks(const json& inspect, const std::string& dir, const json& frame) {
  const int grid = inspect["grid"], cell = inspect["geometry"]["cell_px"], badge = inspect["geometry"]["badge_px"];
  auto h = colour_histogram(dir + "/" + frame["overlay_png"].get<std::string>(), grid * cell);
  const int64_t area = int64_t(badge) * badge;
  Marks m;
  for (const char* f : kFates) {
    auto colour = [&](const char* palette) {
      std::array<int, 3> c{inspect[palette][f][0], inspect[palette][f][1], inspect[palette][f][2]};
      for (int v : c) EXPECT_TRUE(v < 24 || v > 231) << f << ": a mark colour inside the photo's range";
      return h.count(c) ? h[c] : 0;
    };
    int64_t nc = colour("palette"), nt = colour("anchor_palette");
    EXPECT_EQ(nc % area, 0) << f << " badge pixels in frame " << frame["seq"];
    EXPECT_EQ(nt % area, 0) << f << " anchor pixels in frame " << frame["seq"];
    m.cells[f] = nc / area;
    m.tokens[f] = nt / area;
  }
  return m;
}

struct Totals {
  std::map<std::string, int64_t> cells, tokens;
  double size_sum = 0;
  int64_t absorbed_ledger = 0;
};

// Checks every frame of an inspect run against the session's ledger and the memory node's counts;
// returns the totals over frames.
Totals check_frames(const json& inspect, const std::string& dir) {
  Totals t;
  const int64_t g2 = int64_t(inspect["grid"]) * int64_t(inspect["grid"]);
  for (const auto& frame : inspect["frames"]) {
    SCOPED_TRACE("frame " + std::to_string(frame["seq"].get<int64_t>()));
    Marks m = count_marks(inspect, dir, frame);
    const json& ledger = frame["ledger"];
    int64_t all_cells = 0;
    for (const char* f : kFates) all_cells += m.cells[f];
    EXPECT_EQ(all_cells, g2) << "every patch has exactly one badge";
    EXPECT_EQ(ledger["n_patch_tokens"].get<int64_t>(), g2);
    // Tokens that entered the LLM from this frame: the session's memory.
    EXPECT_EQ(m.tokens["kept"] + m.tokens["important"] + m.tokens["prefill_dropped"] + m.tokens["decode_evicted"],
              ledger["n_tokens"].get<int64_t>());
    EXPECT_EQ(m.tokens["important"], ledger["n_in_s"].get<int64_t>());
    // Folded into earlier frames: the memory node's count.
    EXPECT_EQ(m.cells["absorbed"], ledger["n_folded"].get<int64_t>());
    EXPECT_EQ(m.tokens["absorbed"], 0) << "absorbed cells are no token of their frame";
    // Tokens the frame gave the memory that the budget took back.
    EXPECT_EQ(m.tokens["memory_evicted"], ledger["n_kept"].get<int64_t>() - ledger["n_tokens"].get<int64_t>());
    for (const char* f : kFates) {
      t.cells[f] += m.cells[f];
      t.tokens[f] += m.tokens[f];
    }
    t.size_sum += ledger["size_sum"].get<double>();
    t.absorbed_ledger += ledger["n_folded"].get<int64_t>();
  }
  return t;
}

int64_t dropped_by(const json& stages, const std::string& stage) {
  int64_t n = 0;
  for (const auto& s : stages) {
    if (s["stage"] == stage) n += s["n_in"].get<int64_t>() - s["n_out"].get<int64_t>();
  }
  return n;
}

}  // namespace

TEST(Inspect, OverlayPixelsMatchTheLedgerAndARunReport) {
  // MustDrop with temporal LSM, the dual filter's thresholds raised (so it drops on the tiny model)
  // and S-only KV after prefill: absorbed, S, prefill drops and decode evictions all occur.
  std::string pipeline = mustdrop_variant(
      "inspect_thresholds", {{"global_threshold: 0.001", "global_threshold: 0.01"}, {"local_threshold: 0.001", "local_threshold: 0.01"}});
  std::string dir = temp_dir() + "/inspect_out";
  std::filesystem::remove_all(dir);
  const std::string q = "What is the red car doing?";
  ProcResult r = mustdrop({"inspect", clip(), "--model", tiny_model(), "--pipeline", pipeline, "-q", q, "--out", dir,
                           "--max-new-tokens", "4"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(dir + "/index.html"), std::string::npos) << r.out;
  json inspect = read_json(dir + "/inspect.json");
  ASSERT_EQ(inspect["frames"].size(), 8u);

  std::string report = temp_dir() + "/inspect_run_report.json";
  ProcResult run = mustdrop({"run", clip(), "--model", tiny_model(), "--pipeline", pipeline, "-q", q,
                             "--max-new-tokens", "4", "--json", report});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  json rep = read_json(report);

  Totals t = check_frames(inspect, dir);
  for (const char* f : {"absorbed", "important", "prefill_dropped", "decode_evicted"}) {
    EXPECT_GT(t.cells[f], 0) << f << ": the pipeline should exercise it";
  }
  EXPECT_EQ(t.cells["vision_dropped"] + t.cells["memory_evicted"], 0);
  // Against the separate run: tokens to the LLM, S, prefill drops, and what the vision stages removed.
  EXPECT_EQ(t.tokens["kept"] + t.tokens["important"] + t.tokens["prefill_dropped"] + t.tokens["decode_evicted"],
            rep["n_vision_tokens_to_llm"].get<int64_t>());
  EXPECT_EQ(t.tokens["important"], rep["n_vision_tokens_in_s"].get<int64_t>());
  EXPECT_EQ(t.tokens["prefill_dropped"], dropped_by(rep["stages"], "Prefill"));
  int64_t n_frames = inspect["frames"].size(), g2 = int64_t(inspect["grid"]) * int64_t(inspect["grid"]);
  int64_t left_tower = 0;
  for (const char* f : kFates) left_tower += t.tokens[f];
  left_tower -= t.tokens["vision_dropped"];
  EXPECT_EQ(n_frames * g2 - left_tower, dropped_by(rep["stages"], "VisionLayer"))
      << "cells merged away or folded = tokens the vision stages removed";
  // policy important_set: after prefill only S keeps its KV entries in the layers >= L.
  EXPECT_EQ(t.tokens["kept"], 0);
  // Patches the memory's tokens stand for (sizes, absorbed ones included): every cell not dropped.
  EXPECT_DOUBLE_EQ(t.size_sum, double(n_frames * g2 - t.cells["vision_dropped"] - t.cells["memory_evicted"]));

  std::string html = read_file(dir + "/index.html");
  EXPECT_NE(html.find(q), std::string::npos);
  for (const auto& frame : inspect["frames"]) {
    for (const char* key : {"overlay_png", "frame_png"}) {
      std::string png = frame[key];
      EXPECT_NE(html.find("src=\"" + png + "\""), std::string::npos) << png << " (relative) in index.html";
      EXPECT_TRUE(std::filesystem::exists(dir + "/" + png)) << png;
    }
  }
  EXPECT_EQ(html.find("<script"), std::string::npos) << "self-contained, no scripts";
}

TEST(Inspect, TheMemoryBudgetIsDrawnToo) {
  // A small memory budget evicts the oldest tokens outside S before the question.
  std::string pipeline = source_dir() + "/pipelines/mustdrop.yaml";
  std::string dir = temp_dir() + "/inspect_budget_out";
  std::filesystem::remove_all(dir);
  ProcResult r = mustdrop({"inspect", clip(), "--model", tiny_model(), "--pipeline", pipeline, "-q", "Where?", "--out",
                           dir, "--max-new-tokens", "2", "--set", "memory.max_tokens=300", "--scale", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json inspect = read_json(dir + "/inspect.json");
  EXPECT_EQ(inspect["geometry"]["cell_px"].get<int>(), 14);
  Totals t = check_frames(inspect, dir);
  EXPECT_GT(t.tokens["memory_evicted"], 0);
  EXPECT_EQ(t.tokens["kept"] + t.tokens["important"] + t.tokens["prefill_dropped"] + t.tokens["decode_evicted"],
            inspect["n_vision_tokens_to_llm"].get<int64_t>());
}

TEST(Inspect, WithoutAQuestionOnlyTheVisionStagesAreDrawn) {
  std::string dir = temp_dir() + "/inspect_noq";
  std::filesystem::remove_all(dir);
  ProcResult r = mustdrop({"inspect", clip(), "--model", tiny_model(), "--pipeline",
                           source_dir() + "/pipelines/mustdrop.yaml", "--out", dir, "--frames", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json inspect = read_json(dir + "/inspect.json");
  ASSERT_EQ(inspect["frames"].size(), 3u);
  Totals t = check_frames(inspect, dir);
  EXPECT_EQ(t.cells["prefill_dropped"] + t.cells["decode_evicted"], 0);
  EXPECT_GT(t.cells["important"], 0);
  EXPECT_GT(t.tokens["kept"], 0) << "without a question every token outside S reaching the LLM is kept";
  EXPECT_NE(read_file(dir + "/index.html").find("No question"), std::string::npos);
}

TEST(InspectErrors, UnreadableVideoIsExit3NamingTheFile) {
  std::string bad = temp_dir() + "/inspect_not_a_video.mp4";
  std::ofstream(bad) << "plain text";
  ProcResult r = mustdrop({"inspect", bad, "--model", tiny_model(), "--pipeline",
                           source_dir() + "/pipelines/mustdrop.yaml", "--out", temp_dir() + "/inspect_bad_video"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find(bad), std::string::npos) << r.err;
}

TEST(InspectErrors, MissingPipelineIsExit2NamingTheFile) {
  std::string missing = temp_dir() + "/no_such_pipeline.yaml";
  ProcResult r = mustdrop({"inspect", clip(), "--model", tiny_model(), "--pipeline", missing, "--out",
                           temp_dir() + "/inspect_no_pipeline"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find(missing), std::string::npos) << r.err;
}

TEST(InspectErrors, UnwritableOutputDirectoryIsExit3NamingIt) {
  std::string file = temp_dir() + "/inspect_a_file";
  std::ofstream(file) << "x";
  std::string dir = file + "/out";  // under a regular file: cannot be created, even by root
  ProcResult r = mustdrop({"inspect", clip(), "--model", tiny_model(), "--pipeline",
                           source_dir() + "/pipelines/mustdrop.yaml", "--out", dir});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find(dir), std::string::npos) << r.err;
}

}  // namespace mustdrop::test
