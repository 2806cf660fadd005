#include "video/source.h"

#include <filesystem>

#include "video/source_impls.h"

namespace mustdrop::video {

InputKind classify_input(const std::string& input) {
  auto starts = [&](const char* scheme) { return input.rfind(scheme, 0) == 0; };
  if (starts("rtsp://") || starts("rtsps://") || starts("rtmp://") || starts("rtmps://") || starts("udp://") ||
      starts("rtp://") || starts("srt://") || starts("tcp://")) {
    return InputKind::kLive;
  }
  if (starts("http://") || starts("https://")) return InputKind::kNetworkFile;
  std::error_code ec;
  if (std::filesystem::is_directory(input, ec)) return InputKind::kFrameDir;
  return InputKind::kFile;
}

std::unique_ptr<Source> open_source(const std::string& input, const config::VideoConfig& config) {
  switch (classify_input(input)) {
    case InputKind::kFile:
      return make_file_source(input, false, config);
    case InputKind::kNetworkFile:
      return make_file_source(input, true, config);
    case InputKind::kLive:
      return make_live_source(input, config);
    case InputKind::kFrameDir:
      return make_frame_dir_source(input, config);
  }
  return nullptr;
}

}  // namespace mustdrop::video
