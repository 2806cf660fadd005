// Clips the video tests share, generated once per test process with the ffmpeg CLI.
#pragma once

#include <string>

#include "support/test_support.h"

namespace mustdrop::test {

// 2 s of testsrc2 at 25 fps, 320x240, H.264 in MP4 (moov first): 50 frames.
inline std::string h264_mp4() {
  return make_clip("h264.mp4",
                   "-f lavfi -i testsrc2=size=320x240:rate=25 -t 2 -c:v libx264 -preset ultrafast -pix_fmt yuv420p "
                   "-g 25 -movflags +faststart");
}

// Same picture, H.264 in MPEG-TS (resynchronising container, used for corruption).
inline std::string h264_ts() {
  return make_clip("h264.ts",
                   "-f lavfi -i testsrc2=size=320x240:rate=25 -t 4 -c:v libx264 -preset ultrafast -pix_fmt yuv420p "
                   "-g 25 -bsf:v h264_mp4toannexb");
}

// A real clip shipped by Debian's opencv-doc package; "" when the package is absent.
std::string opencv_clip(const std::string& name);

}  // namespace mustdrop::test
