#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "app/commands.h"
#include "app/exit_codes.h"
#include "core/error.h"
#include "core/shell.h"
#include "core/log.h"
#include "video/preprocess.h"
#include "video/sampler.h"
#include "video/source.h"

namespace mustdrop::app {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void run_shell(const std::string& cmd, const std::string& what) {
  MD_LOG_DEBUG("bench", cmd);
  int rc = std::system(cmd.c_str());
  if (rc != 0) throw InternalError(what + " failed (exit status " + std::to_string(rc) + "): " + cmd);
}

struct PassResult {
  int64_t frames = 0;
  double sec = 0;
  double fps() const { return sec > 0 ? frames / sec : 0; }
};

// Decodes every frame; with a preprocessor, samples and preprocesses each one as well.
PassResult run_pass(const std::string& clip, const config::Config& config, video::Preprocessor* preprocess) {
  auto t0 = Clock::now();
  auto source = video::open_source(clip, config.video);
  config::SamplerConfig every = config.video.sampler;
  every.kind = config::SamplerKind::kFps;
  every.fps = source->info().avg_fps > 0 ? source->info().avg_fps : 1000.0;
  every.frames = 0;
  auto sampler = video::make_sampler(every);
  PassResult r;
  double checksum = 0;
  while (auto frame = sampler->next(*source)) {
    if (preprocess) {
      video::ImageTensor t = (*preprocess)(*frame);
      checksum += t.data[t.data.size() / 2];
    }
    ++r.frames;
  }
  r.sec = seconds_since(t0);
  MD_LOG_DEBUG("bench", "checksum " << checksum);
  return r;
}

}  // namespace

int run_bench_ingest(const BenchIngestArgs& args, config::Config config) {
  namespace fs = std::filesystem;
  std::string clip = args.input;
  std::string work = args.work_dir;
  if (clip.empty()) {
    if (work.empty()) {
      char tmpl[] = "/tmp/mustdrop-bench-XXXXXX";
      if (!mkdtemp(tmpl)) throw InternalError("cannot create a temporary directory in /tmp");
      work = tmpl;
    }
    fs::create_directories(work);
    clip = (fs::path(work) / "bench_1080p30.mp4").string();
    std::fprintf(stderr, "generating %.0f s of 1080p30 H.264 into %s\n", args.seconds, clip.c_str());
    run_shell("ffmpeg -v error -nostdin -y -f lavfi -i testsrc2=size=1920x1080:rate=30 -t " +
                  std::to_string(args.seconds) + " -c:v libx264 -preset veryfast -pix_fmt yuv420p -g 60 " + shell_quote(clip),
              "generating the benchmark clip");
  }
  config.video.preprocess.size = args.size;
  video::Preprocessor preprocess(config.video.preprocess);

  // Same geometry as ours for the CLI: shortest side to size (bicubic), centre crop, RGB24.
  auto source = video::open_source(clip, config.video);
  const video::StreamInfo info = source->info();
  source.reset();
  video::ResizePlan plan = video::plan_resize(info.display_width, info.display_height, args.size, false);
  std::string vf = "scale=" + std::to_string(plan.scaled_w) + ":" + std::to_string(plan.scaled_h) +
                   ":flags=bicubic,crop=" + std::to_string(args.size) + ":" + std::to_string(args.size) + ":" +
                   std::to_string(plan.offset_x) + ":" + std::to_string(plan.offset_y);

  run_pass(clip, config, &preprocess);  // warm-up: page cache, libav init
  PassResult decode = run_pass(clip, config, nullptr);
  PassResult ours = run_pass(clip, config, &preprocess);
  auto t0 = Clock::now();
  run_shell("ffmpeg -v error -nostdin -y -i " + shell_quote(clip) + " -vf " + shell_quote(vf) +
                " -pix_fmt rgb24 -f rawvideo /dev/null",
            "the ffmpeg CLI reference run");
  PassResult cli{ours.frames, seconds_since(t0)};

  std::printf("clip: %s (%dx%d, %.2f fps, %lld frames decoded)\n", clip.c_str(), info.width, info.height, info.avg_fps,
              static_cast<long long>(ours.frames));
  std::printf("| path | frames | seconds | frames/s |\n|---|---:|---:|---:|\n");
  std::printf("| mustdrop decode only | %lld | %.3f | %.1f |\n", static_cast<long long>(decode.frames), decode.sec,
              decode.fps());
  std::printf("| mustdrop decode + sample + preprocess to %dx%d float | %lld | %.3f | %.1f |\n", args.size, args.size,
              static_cast<long long>(ours.frames), ours.sec, ours.fps());
  std::printf("| ffmpeg CLI decode + scale + crop to rgb24 -> /dev/null | %lld | %.3f | %.1f |\n",
              static_cast<long long>(cli.frames), cli.sec, cli.fps());
  std::printf("ratio mustdrop / ffmpeg CLI: %.2f\n", cli.fps() > 0 ? ours.fps() / cli.fps() : 0.0);
  return kExitOk;
}

}  // namespace mustdrop::app
