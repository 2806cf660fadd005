// Pieces `run` and `bench` share: finding and loading the model, the per-stage records and
// token/FLOP accounting of a session, and writing a report atomically.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "model/vlm.h"
#include "session/session.h"
#include "video/source.h"

namespace mustdrop::app {

// Where the model comes from: "preset:NAME", or the directory from --model, then
// $MUSTDROP_MODEL, then model.dir. ConfigError (naming `command`) for both --model and --preset,
// or with a hint when no directory is set. Loads nothing.
std::string model_source(const ModelArgs& args, const config::Config& config, const std::string& command);
// The compute dtype model.dtype asks for; `auto` is bf16 where the CPU computes bf16 natively (the
// choice is logged), else float32.
at::ScalarType compute_dtype(const config::Config& config);
// A model's compute dtype as config spells it ("f32", "bf16").
const char* dtype_name(at::ScalarType dtype);
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

// Token and FLOP accounting of one answer over a memory's frames.
struct Accounting {
  int64_t n_vision_tokens_in = 0;      // out of the tower without dropping
  int64_t n_vision_tokens_to_llm = 0;  // entering the LLM
  double n_vision_tokens_layer_avg = 0;  // sum over LLM layers of vision tokens present / layers
  int64_t n_vision_kv_after_decode = 0;  // per layer, mean over layers
  int64_t n_vision_tokens_in_s = 0;      // remembered tokens in the important set S
  double flops_vision = 0;
  double flops_total = 0;     // vision + prefill + decode of every answer
  double flops_unpruned = 0;  // the same frames and prompts without any dropping
  nlohmann::json stages;      // per-stage records (vision stages summed over frames, then the first answer's)
};
// Token counts and per-stage records of the first answer over `memory` (whose frames the vision
// stages recorded in `vision_records` encoded); FLOPs of all of them.
Accounting account(const session::MemorySnapshot& memory, const std::vector<prune::StageRecord>& vision_records,
                   const model::ModelConfig& config, const std::vector<session::AnswerStats>& answers);
// The memory an answer used: span, tokens, gaps, evictions before it, whether the prefix served.
nlohmann::json memory_use_json(const session::AnswerStats& answer);
// The session's memory now: tokens, bytes, budget, evictions, compactions.
nlohmann::json memory_json(const session::MemorySnapshot& memory, const session::Session& session);

double mean(const std::vector<int64_t>& v);

}  // namespace mustdrop::app
