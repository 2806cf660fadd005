// End to end: token dropping through `mustdrop run` and `mustdrop bench` on generated clips and
// the generated tiny model.
#include <gtest/gtest.h>

#include <map>

#include "e2e/e2e_util.h"
#include "support/test_support.h"

namespace mustdrop::test {
namespace {

using nlohmann::json;

std::string pipeline(const std::string& name) { return source_dir() + "/pipelines/" + name + ".yaml"; }

json run_report(const std::string& video, const std::string& pipeline_path, const std::string& tag, int frames,
                int max_new_tokens = 4) {
  std::string report = temp_dir() + "/prune_" + tag + ".json";
  ProcResult r = mustdrop({"run", video, "--model", tiny_model(), "-q", "What moves?", "--frames",
                           std::to_string(frames), "--max-new-tokens", std::to_string(max_new_tokens), "--pipeline",
                           pipeline_path, "--json", report});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return read_json(report);
}

TEST(Prune, MustDropReportShowsEveryStageWithItsCounts) {
  json j = run_report(clip(), pipeline("mustdrop"), "stages", 4);
  ASSERT_EQ(j["pipeline"], "mustdrop");
  const json& st = j["stages"];
  ASSERT_EQ(st.size(), 4u) << st.dump(1);
  std::map<std::string, json> by;
  for (const auto& s : st) by[s["name"].get<std::string>()] = s;
  // The tiny tower: 24 x 24 patches + CLS per frame; LSM after layer 0 of every frame.
  EXPECT_EQ(by["mustdrop.lsm"]["stage"], "VisionLayer");
  EXPECT_EQ(by["mustdrop.lsm"]["calls"], 4);
  EXPECT_EQ(by["mustdrop.lsm"]["n_in"], 4 * 577);
  EXPECT_LT(by["mustdrop.lsm"]["n_out"], by["mustdrop.lsm"]["n_in"]);
  // S drops nothing; the tokens it saw (minus CLS) are what the LLM gets.
  EXPECT_EQ(by["mustdrop.important_set"]["n_in"], by["mustdrop.important_set"]["n_out"]);
  EXPECT_EQ(by["mustdrop.important_set"]["n_out"].get<int64_t>() - 4, j["n_vision_tokens_to_llm"].get<int64_t>());
  EXPECT_EQ(by["mustdrop.dual_attention"]["stage"], "Prefill");
  EXPECT_EQ(by["mustdrop.dual_attention"]["n_in"], j["n_vision_tokens_to_llm"]);
  EXPECT_EQ(by["mustdrop.kv_evict"]["stage"], "Decode");
  // The tiny LLM has 4 layers; the filter acts after layer 2, eviction from layer 2 on keeps S:
  // layers 0, 1 hold every token that entered the LLM, layers 2, 3 only S.
  int64_t to_llm = j["n_vision_tokens_to_llm"].get<int64_t>(), in_s = j["n_vision_tokens_in_s"].get<int64_t>();
  // S = ceil(0.08 * N_v) per frame over the tokens left after LSM (CLS aside): 4 frames.
  double s_floor = 0.08 * (by["mustdrop.important_set"]["n_in"].get<double>() - 4);
  EXPECT_GE(static_cast<double>(in_s), s_floor - 1e-9);
  EXPECT_LE(static_cast<double>(in_s), s_floor + 4);
  EXPECT_EQ(j["n_vision_kv_after_decode"].get<int64_t>(), (2 * to_llm + 2 * in_s) / 4);
  EXPECT_EQ(j["n_vision_tokens_in"], 4 * 576);
  EXPECT_LT(j["n_vision_tokens_to_llm"].get<int64_t>(), j["n_vision_tokens_in"].get<int64_t>());
  EXPECT_LE(j["n_vision_tokens_layer_avg"].get<double>(), j["n_vision_tokens_to_llm"].get<double>());
  EXPECT_LT(j["n_vision_kv_after_decode"].get<int64_t>(), j["n_vision_tokens_to_llm"].get<int64_t>());
  EXPECT_LT(j["flops_total"].get<double>(), j["flops_unpruned"].get<double>());
  // Each stage's time was measured, and lies inside the node that ran it.
  double vision_ms = 0, answer_ms = 0;
  for (const auto& s : st) {
    EXPECT_GT(s["ms"].get<double>(), 0.0) << s.dump();
    (s["stage"] == "VisionLayer" ? vision_ms : answer_ms) += s["ms"].get<double>();
  }
  EXPECT_LE(vision_ms, j["timings_ms"]["encoder"].get<double>());
  EXPECT_LE(answer_ms, j["timings_ms"]["answer"].get<double>());
}

TEST(Prune, TemporalLsmMergesAStaticSceneFarMoreThanMotion) {
  std::map<std::string, std::string> clips;
  for (const char* motion : {"static", "high"}) {
    std::string path = temp_dir() + "/motion_" + motion + ".mp4";
    ProcResult r = run_process({source_dir() + "/tools/make_sample_video", path, "--seconds", "4", "--size", "320x180",
                                "--motion", motion});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    clips[motion] = path;
  }
  // mustdrop.yaml reaches back over 4 frames; mustdrop_192.yaml is the same, spatial only.
  auto to_llm = [&](const std::string& motion, const std::string& p) {
    return run_report(clips[motion], pipeline(p), motion + p, 8)["n_vision_tokens_to_llm"].get<int64_t>();
  };
  int64_t static_t = to_llm("static", "mustdrop"), static_s = to_llm("static", "mustdrop_192");
  int64_t high_t = to_llm("high", "mustdrop"), high_s = to_llm("high", "mustdrop_192");
  // Merged across time = spatial-only count minus temporal count.
  EXPECT_GT(static_s - static_t, 2 * (high_s - high_t))
      << "static " << static_s << " -> " << static_t << ", high motion " << high_s << " -> " << high_t;
  EXPECT_LT(2 * static_t, high_t);
}

TEST(Prune, BenchPrintsOneRowPerPipelineAgainstNone) {
  std::string report = temp_dir() + "/bench.json";
  ProcResult r = mustdrop({"bench", "--model", tiny_model(), "--video", clip(), "-q", "What moves?", "--frames", "2",
                           "--pipelines", pipeline("fastv_64") + "," + pipeline("tome_64") + "," + pipeline("mustdrop_64"),
                           "--repeats", "1", "--warmup", "0", "--json", report});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* row : {"| none |", "| fastv_64 |", "| tome_64 |", "| mustdrop_64 |"}) {
    EXPECT_NE(r.out.find(row), std::string::npos) << r.out;
  }
  json j = read_json(report);
  ASSERT_EQ(j["pipelines"].size(), 4u);
  EXPECT_EQ(j["pipelines"][0]["pipeline"], "none");  // added as the reference
  // The reference row is what `mustdrop run` (the flow graph, another process) computes for none.
  json none_run = run_report(clip(), pipeline("none"), "bench_none", 2, 16);
  EXPECT_EQ(j["pipelines"][0]["answer_ids"], none_run["answers"][0]["ids"]);
  EXPECT_EQ(j["pipelines"][0]["n_vision_tokens_to_llm"], none_run["n_vision_tokens_to_llm"]);
  EXPECT_DOUBLE_EQ(j["pipelines"][0]["flops_total"].get<double>(), none_run["flops_total"].get<double>());
  for (size_t i = 1; i < 4; ++i) {
    EXPECT_LT(j["pipelines"][i]["flops_ratio_vs_none"].get<double>(), 1.0) << j["pipelines"][i]["pipeline"];
    EXPECT_EQ(j["pipelines"][i]["n_vision_tokens_in"], 2 * 576);
  }
}

// bench_table (the model-only table, for machines without video) over the frames `probe
// --save-frames` wrote gives what `mustdrop bench` gives over the video itself: the same tokens
// at every stage, FLOPs and answers, row by row. A frames file of the wrong size is refused,
// naming the file.
TEST(Prune, BenchTableOnSavedFramesEqualsBenchOnTheVideo) {
  const std::string frames = temp_dir() + "/frames-3.safetensors";
  ProcResult p = mustdrop({"probe", clip(), "--frames", "3", "--save-frames", frames});
  ASSERT_EQ(p.exit_code, 0) << p.err;
  const std::string pipelines = pipeline("mustdrop") + "," + pipeline("fastv_64") + "," + pipeline("tome_64");
  const std::string bench_json = temp_dir() + "/bench-video.json", table_json = temp_dir() + "/bench-table.json";
  ProcResult b = mustdrop({"bench", "--model", tiny_model(), "--video", clip(), "--frames", "3", "-q", "What moves?",
                           "--pipelines", pipelines, "--repeats", "1", "--warmup", "0", "--max-new-tokens", "6",
                           "--json", bench_json});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  ProcResult t = run_process({tool_binary("bench_table"), "--model", tiny_model(), "--frames", frames, "-q",
                              "What moves?", "--pipelines", pipelines, "--warmup", "0", "--max-new-tokens", "6",
                              "--json", table_json},
                             300);
  ASSERT_EQ(t.exit_code, 0) << t.err;
  const json video = read_json(bench_json)["pipelines"], table = read_json(table_json)["pipelines"];
  ASSERT_EQ(video.size(), 4u);
  ASSERT_EQ(table.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    const std::string what = video[i]["pipeline"].get<std::string>();
    EXPECT_EQ(table[i]["pipeline"], video[i]["pipeline"]);
    for (const char* key : {"n_vision_tokens_in", "n_vision_tokens_to_llm", "n_vision_kv_after_decode", "answer_ids"}) {
      EXPECT_EQ(table[i][key], video[i][key]) << what << " " << key;
    }
    EXPECT_DOUBLE_EQ(table[i]["flops_total"].get<double>(), video[i]["flops_total"].get<double>()) << what;
  }
  EXPECT_NE(t.out.find("| mustdrop |"), std::string::npos) << t.out;

  // The tiny tower takes 336 x 336: frames saved at another size are refused, naming the file.
  const std::string small = temp_dir() + "/frames-small.safetensors";
  ASSERT_EQ(mustdrop({"probe", clip(), "--frames", "2", "--size", "224", "--save-frames", small}).exit_code, 0);
  ProcResult bad = run_process({tool_binary("bench_table"), "--model", tiny_model(), "--frames", small, "--pipelines",
                                pipeline("none")});
  EXPECT_EQ(bad.exit_code, 3);
  EXPECT_NE(bad.err.find(small), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("[frames, 3, 336, 336]"), std::string::npos) << bad.err;
}

TEST(PruneErrors, UnknownPrunerIsExit2NamingFileAndKnownNames) {
  std::string p = temp_dir() + "/unknown_pruner.yaml";
  std::ofstream(p) << "name: x\nchain: [mustdrop.lsm, fastvv]\n";
  ProcResult r = mustdrop({"run", clip(), "--model", tiny_model(), "-q", "x?", "--pipeline", p});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find(p + ": chain: unknown pruner 'fastvv'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("mustdrop.dual_attention"), std::string::npos) << r.err;
  std::ofstream(p) << "name: x\nchain: [fastv, mustdrop.lsm]\n";
  r = mustdrop({"run", clip(), "--model", tiny_model(), "-q", "x?", "--pipeline", p});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("must come before"), std::string::npos) << r.err;
  // A layer the tower does not have is the pipeline's fault, not an internal error.
  std::ofstream(p) << "name: x\nchain: [mustdrop.important_set]\nmustdrop: {important_set: {layer: 99}}\n";
  r = mustdrop({"run", clip(), "--model", tiny_model(), "-q", "x?", "--pipeline", p});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find(p + ": mustdrop.important_set reads the CLS attention of ViT layer 99"), std::string::npos)
      << r.err;
}

}  // namespace
}  // namespace mustdrop::test
