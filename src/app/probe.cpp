#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "app/exit_codes.h"
#include "app/signals.h"
#include "core/error.h"
#include "core/log.h"
#include "model/safetensors.h"
#include "video/png_writer.h"
#include "video/preprocess.h"
#include "video/sampler.h"
#include "video/source.h"

namespace mustdrop::app {
namespace {

using nlohmann::json;

json info_json(const video::StreamInfo& s) {
  return json{{"url", s.url},
              {"container", s.container},
              {"codec", s.codec},
              {"width", s.width},
              {"height", s.height},
              {"display_width", s.display_width},
              {"display_height", s.display_height},
              {"rotation_deg", s.rotation_deg},
              {"avg_fps", s.avg_fps},
              {"start_sec", s.start_sec},
              {"duration_sec", s.duration_sec},
              {"declared_frames", s.declared_frames},
              {"live", s.live},
              {"seekable", s.seekable}};
}

json stats_json(const video::SourceStats& s) {
  return json{{"n_packets", s.n_packets},
              {"n_frames_decoded", s.n_frames_decoded},
              {"n_corrupt_packets", s.n_corrupt_packets},
              {"n_corrupt_frames", s.n_corrupt_frames},
              {"n_timestamp_repairs", s.n_timestamp_repairs},
              {"truncated", s.truncated},
              {"damage", s.damage},
              {"n_disconnects", s.n_disconnects},
              {"n_reconnects", s.n_reconnects}};
}

void print_info(const video::StreamInfo& s, const config::SamplerConfig& sampler) {
  std::printf("input:      %s\n", s.url.c_str());
  std::printf("container:  %s\n", s.container.c_str());
  std::printf("video:      %s %dx%d", s.codec.c_str(), s.width, s.height);
  if (s.display_width != s.width || s.display_height != s.height || s.rotation_deg != 0) {
    std::printf(" (displayed %dx%d, rotation %d)", s.display_width, s.display_height, s.rotation_deg);
  }
  std::printf("\nfps:        %.3f (average)\n", s.avg_fps);
  std::printf("start:      %.3f s\n", s.start_sec);
  std::printf("declared:   duration %.3f s, %lld frames (not trusted for sampling)\n", s.duration_sec,
              static_cast<long long>(s.declared_frames));
  std::printf("live:       %s, seekable: %s\n", s.live ? "yes" : "no", s.seekable ? "yes" : "no");
  std::printf("sampler:    %s", config::enum_name(sampler.kind));
  if (sampler.kind == config::SamplerKind::kFps) std::printf(", %.3f fps", sampler.fps);
  if (sampler.kind == config::SamplerKind::kInterval) std::printf(", every %.3f s", sampler.interval_sec);
  std::printf(", %d frames%s\n", sampler.frames,
              sampler.kind == config::SamplerKind::kUniform ? "" : " at most (0 = no limit)");
  std::printf("sampled frames:\n  %-6s %-12s %-12s %s\n", "n", "t_sec", "pts_sec", "index");
  std::fflush(stdout);
}

// The preprocessed frames as one float32 tensor "pixels" [frames, 3, side, side], with where they
// came from and their times in the file's metadata.
void save_frames(const std::string& path, const std::string& input, const std::vector<float>& pixels,
                 const std::vector<double>& times, int64_t side) {
  if (times.empty()) throw InputError(input + ": no frame was sampled, nothing to save to " + path);
  model::TensorData d;
  d.name = "pixels";
  d.dtype = model::DType::kF32;
  d.shape = {static_cast<int64_t>(times.size()), 3, side, side};
  d.bytes.resize(pixels.size() * sizeof(float));
  std::memcpy(d.bytes.data(), pixels.data(), d.bytes.size());
  std::string t;
  for (double x : times) t += (t.empty() ? "" : ",") + std::to_string(x);
  model::write_safetensors(path, {d}, {{"source", input}, {"t_sec", t}});
}

}  // namespace

int run_probe(const ProbeArgs& args, config::Config config) {
  config::VideoConfig& video = config.video;
  bool live = video::classify_input(args.input) == video::InputKind::kLive;
  if (!args.sampler.empty()) {
    if (!config::enum_from_name(args.sampler, video.sampler.kind)) {
      throw ConfigError("probe: --sampler '" + args.sampler + "' is not one of: uniform, fps, interval");
    }
  } else if (live && video.sampler.kind == config::SamplerKind::kUniform) {
    video.sampler.kind = config::SamplerKind::kInterval;  // uniform needs a clip with an end
  }
  if (args.frames >= 0) video.sampler.frames = args.frames;
  if (args.fps > 0) video.sampler.fps = args.fps;
  if (args.interval_sec > 0) video.sampler.interval_sec = args.interval_sec;
  if (args.size > 0) video.preprocess.size = args.size;
  if (!args.dump_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(args.dump_dir, ec);
    if (ec) throw InputError(args.dump_dir + ": cannot create dump directory (" + ec.message() + ")");
  }

  std::shared_ptr<video::Source> source = video::open_source(args.input, video);
  install_stop_handlers([source] { source->request_stop(); });
  std::unique_ptr<video::Sampler> sampler = video::make_sampler(video.sampler);
  std::unique_ptr<video::Preprocessor> preprocess;
  if (!args.dump_dir.empty() || !args.save_frames.empty()) preprocess = std::make_unique<video::Preprocessor>(video.preprocess);
  std::vector<float> pixels;  // --save-frames: every sampled frame, as the model's input
  std::vector<double> times;
  int64_t side = 0;

  if (!args.json) print_info(source->info(), video.sampler);
  json frames = json::array();
  int64_t n = 0;
  while (auto frame = sampler->next(*source)) {
    std::string png;
    if (!args.save_frames.empty()) {
      video::ImageTensor t = (*preprocess)(*frame);
      pixels.insert(pixels.end(), t.data.begin(), t.data.end());
      times.push_back(frame->t_sec);
      side = t.height;
    }
    if (preprocess && !args.dump_dir.empty()) {
      char name[32];
      std::snprintf(name, sizeof(name), "frame_%04lld.png", static_cast<long long>(n));
      png = (std::filesystem::path(args.dump_dir) / name).string();
      video::write_png(preprocess->to_rgb(*frame), png);
    }
    if (args.json) {
      json f{{"t_sec", frame->t_sec}, {"pts_sec", frame->pts_sec}, {"index", frame->index}};
      if (!png.empty()) f["png"] = png;
      frames.push_back(f);
    } else {
      std::printf("  %-6lld %-12.6f %-12.6f %lld%s%s\n", static_cast<long long>(n), frame->t_sec, frame->pts_sec,
                  static_cast<long long>(frame->index), png.empty() ? "" : "  ", png.c_str());
      std::fflush(stdout);
    }
    ++n;
  }

  if (!args.save_frames.empty()) save_frames(args.save_frames, args.input, pixels, times, side);
  video::SourceStats stats = source->stats();
  if (args.json) {
    json out{{"stream", info_json(source->info())},
             {"sampler", {{"kind", config::enum_name(video.sampler.kind)}, {"frames", video.sampler.frames}, {"fps", video.sampler.fps},
                          {"interval_sec", video.sampler.interval_sec}}},
             {"frames", frames},
             {"n_frames_sampled", n},
             {"stats", stats_json(stats)},
             {"interrupted", stop_requested()}};
    std::cout << out.dump(2) << std::endl;
  } else {
    std::printf("read:       %lld packets, %lld frames decoded, %lld corrupt packets skipped, %lld corrupt frames\n",
                static_cast<long long>(stats.n_packets), static_cast<long long>(stats.n_frames_decoded),
                static_cast<long long>(stats.n_corrupt_packets), static_cast<long long>(stats.n_corrupt_frames));
    if (stats.n_disconnects > 0) {
      std::printf("live:       %lld disconnects, %lld reconnects\n", static_cast<long long>(stats.n_disconnects),
                  static_cast<long long>(stats.n_reconnects));
    }
    std::fflush(stdout);
  }
  if (stop_requested()) {
    MD_LOG_WARN("probe", "interrupted after " << n << " sampled frames");
    return kExitOk;
  }
  if (stats.truncated || stats.n_corrupt_packets > 0) {
    std::cerr << "mustdrop: input error: " << args.input << ": damaged input: " << stats.damage << "; "
              << stats.n_frames_decoded << " frames decoded, " << stats.n_corrupt_packets
              << " corrupt packets skipped\n";
    return kExitInput;
  }
  if (n == 0) throw InputError(args.input + ": no frame could be decoded");
  return kExitOk;
}

}  // namespace mustdrop::app
