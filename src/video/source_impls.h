// Constructors of the concrete sources behind open_source(). Private to src/video.
#pragma once

#include <memory>
#include <string>

#include "config/config.h"
#include "video/source.h"

namespace mustdrop::video {

// A local file or a network file (HTTP/HTTPS): seekable where the transport allows.
std::unique_ptr<Source> make_file_source(const std::string& url, bool network, const config::VideoConfig& config);
// A live stream (RTSP, ...): timeouts, watchdog and reconnect with exponential backoff.
std::unique_ptr<Source> make_live_source(const std::string& url, const config::VideoConfig& config);
// A directory of images, sorted by name, frame i at i / config.frame_dir_fps seconds.
std::unique_ptr<Source> make_frame_dir_source(const std::string& dir, const config::VideoConfig& config);

}  // namespace mustdrop::video
