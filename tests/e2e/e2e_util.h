// Shared by the e2e tests: the generated sample clip and tiny models, running the binary,
// reading its JSON reports.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/test_support.h"

namespace mustdrop::test {

inline std::string clip() { return make_sample_clip("scene.mp4", 2); }

inline std::string tiny_model(const std::string& preset = "tiny-llava") {
  std::string dir = temp_dir() + "/" + preset;
  if (!std::filesystem::exists(dir + "/config.json")) {
    ProcResult r = run_process({tool_binary("make_tiny_model"), dir, "--preset", preset});
    EXPECT_EQ(r.exit_code, 0) << r.err;
  }
  return dir;
}

inline ProcResult mustdrop(std::vector<std::string> args, double timeout_sec = 300, bool merge = false) {
  args.insert(args.begin(), mustdrop_binary());
  return run_process(args, timeout_sec, merge);
}

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

}  // namespace mustdrop::test
