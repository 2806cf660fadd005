// Pieces `run` and `bench` share: finding and loading the model, the per-stage records and
// token/FLOP accounting of a session, and writing a report atomically.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "model/vlm.h"
#include "session/accounting.h"
#include "session/session.h"
#include "video/source.h"

namespace mustdrop::app {

// Where the model comes from: "preset:NAME", or the directory from --model, then
// $MUSTDROP_MODEL, then model.dir. ConfigError (naming `command`) for both --model and --preset,
// or with a hint when no directory is set. Loads nothing.
std::string model_source(const ModelArgs& args, const config::Config& config, const std::string& command);
// Loads the directory, or builds the preset (shapes with random weights, optionally fewer layers).
std::unique_ptr<model::VisionLanguageModel> load_model(const ModelArgs& args, const std::string& source,
                                                       const config::Config& config);
// Frames sampled once from a video and kept decoded, to feed several sessions the same frames.
struct Sampled {
  std::vector<video::Frame> frames;
  video::StreamInfo info;
};
// Samples `video` as `config` says, the short-clip rule of `model`. InputError when no frame decodes.
Sampled sample_frames(const std::string& video, const config::Config& config, const model::VisionLanguageModel& model);
// A source giving `frames` (clones) `repeats` times in a row, times continuing.
std::unique_ptr<video::Source> replay(const Sampled& frames, int repeats = 1);
// Generation options from the config.
model::GenerationOptions generation_options(const config::Config& config);

// Writes `text` to `path` through a temporary file, so a reader never sees half of it.
// InputError naming the path when it cannot.
void write_atomically(const std::string& path, const std::string& text);
// The same for a JSON report (indented).
void write_report(const std::string& path, const nlohmann::json& j);

using session::Accounting;
using session::account;
using session::mean;
using session::transfers_json;

// The memory an answer used: span, tokens, gaps, evictions before it, whether the prefix served.
nlohmann::json memory_use_json(const session::AnswerStats& answer);
// The session's memory now: tokens, bytes, budget, evictions, compactions.
nlohmann::json memory_json(const session::MemorySnapshot& memory, const session::Session& session);


}  // namespace mustdrop::app
