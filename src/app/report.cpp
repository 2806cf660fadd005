#include "app/report.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/log.h"
#include "core/sysinfo.h"
#include "model/device.h"
#include "model/flops.h"
#include "model/presets.h"
#include "video/sampler.h"

namespace mustdrop::app {

using nlohmann::json;

std::string model_source(const ModelArgs& args, const config::Config& config, const std::string& command) {
  if (!args.preset.empty() && !args.dir.empty()) throw ConfigError(command + ": give --model or --preset, not both");
  if (!args.preset.empty()) return "preset:" + args.preset;
  if (!args.dir.empty()) return args.dir;
  if (const char* env = std::getenv("MUSTDROP_MODEL"); env && *env) return env;
  if (!config.model.dir.empty()) return config.model.dir;
  throw ConfigError(
      "no model: pass --model DIR, set MUSTDROP_MODEL, or set model.dir in the config. A Hugging Face "
      "llava-1.5 or Video-LLaVA directory works; for a tiny random one (meaningless answers) run "
      "build/make_tiny_model build/tiny-model");
}

std::unique_ptr<model::VisionLanguageModel> load_model(const ModelArgs& args, const std::string& source,
                                                       const config::Config& config) {
  model::LoadOptions load = model::load_options(config.model);
  if (args.preset.empty()) return model::VisionLanguageModel::load(source, load);
  return model::VisionLanguageModel::random(model::preset_config(args.preset, args.llm_layers, args.vision_layers), 1,
                                            load);
}

Sampled sample_frames(const std::string& video, const config::Config& config, const model::VisionLanguageModel& model) {
  std::unique_ptr<video::Source> source = video::open_source(video, config.video);
  std::unique_ptr<video::Sampler> sampler = video::make_sampler(
      config.video.sampler, model.video_frames() > 0 ? video::ShortClip::kRepeat : video::ShortClip::kDistinct);
  Sampled s;
  s.info = source->info();
  while (std::optional<video::Frame> f = sampler->next(*source)) s.frames.push_back(std::move(*f));
  if (s.frames.empty()) throw InputError(video + ": no frame could be decoded");
  return s;
}

std::unique_ptr<video::Source> replay(const Sampled& frames, int repeats) {
  std::vector<video::Frame> copies;
  for (const auto& f : frames.frames) copies.push_back(f.clone());
  return video::make_frame_list_source(std::move(copies), frames.info, repeats);
}

model::GenerationOptions generation_options(const config::Config& config) {
  model::GenerationOptions g;
  g.max_new_tokens = config.generation.max_new_tokens;
  g.temperature = config.generation.temperature;
  g.top_p = config.generation.top_p;
  g.seed = static_cast<uint64_t>(config.generation.seed);
  return g;
}

void write_atomically(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out) throw InputError(path + ": cannot write the report");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw InputError(path + ": cannot write the report (" + ec.message() + ")");
}

void write_report(const std::string& path, const json& j) { write_atomically(path, j.dump(2) + "\n"); }

namespace {

json gaps_json(const std::vector<session::Gap>& gaps) {
  json out = json::array();
  for (const auto& g : gaps) {
    out.push_back({{"from_sec", g.t_from_sec}, {"to_sec", g.t_to_sec}, {"n_frames", g.n_frames}, {"reason", g.reason}});
  }
  return out;
}

}  // namespace

json memory_use_json(const session::AnswerStats& a) {
  const session::MemoryUse& m = a.memory;
  return {{"version", m.version},
          {"span_sec", {m.t_first_sec, m.t_last_sec}},
          {"n_frames", m.n_frames},
          {"n_tokens", m.n_tokens},
          {"gaps", gaps_json(m.gaps)},
          {"n_evicted_tokens_before", m.n_evicted_tokens},
          {"used_prefix", a.used_prefix},
          {"flops_prefill_saved", a.flops_prefill_saved}};
}

json memory_json(const session::MemorySnapshot& memory, const session::Session& session) {
  const session::FrameMemory& fm = session.memory();
  json evictions = json::array();
  for (const auto& e : fm.recent_evictions()) {
    evictions.push_back({{"at_frame", e.at_frame},
                         {"n_tokens", e.n_tokens},
                         {"n_in_s", e.n_in_s},
                         {"span_sec", {e.t_first_sec, e.t_last_sec}}});
  }
  return {{"n_frames", memory.frames.size()},
          {"n_tokens", memory.n_tokens},
          {"bytes", memory.bytes},
          {"token_capacity", fm.token_capacity()},
          {"bytes_per_token", fm.bytes_per_token()},
          {"prefix_cache", session.prefix_cache()},
          {"prefix_layer", session.chain().prefix_layer(session.model())},
          {"span_sec", {memory.t_first_sec, memory.t_last_sec}},
          {"gaps", gaps_json(memory.gaps)},
          {"n_evicted_tokens", memory.n_evicted_tokens},
          {"n_evictions", memory.n_evictions},
          {"recent_evictions", evictions},
          {"n_position_compactions", fm.n_compactions()}};
}

}  // namespace mustdrop::app
