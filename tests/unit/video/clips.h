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

// 30 s of H.264 in MPEG-TS whose clock starts at 11.4 s (1.4 s of muxer delay + a 10 s offset),
// GOPs of 2 s: 750 frames.
inline std::string offset_ts() {
  return make_clip("long_offset.ts",
                   "-f lavfi -i testsrc2=size=160x120:rate=25 -t 30 -c:v libx264 -preset ultrafast -pix_fmt yuv420p "
                   "-g 50 -output_ts_offset 10");
}

// Variable frame rate with a gap: frames at 0.0 .. 0.9 s and 3.0 .. 3.9 s (10 fps), H.264 in MKV.
inline std::string vfr_gap_mkv() {
  return make_clip("vfr_gap.mkv",
                   "-f lavfi -i testsrc2=size=160x120:rate=10 -frames:v 20 -vf "
                   "setpts=(if(lt(N\\,10)\\,N/10\\,3+(N-10)/10))/TB -fps_mode vfr -c:v libx264 -preset ultrafast "
                   "-pix_fmt yuv420p");
}

// A real clip shipped by Debian's opencv-doc package; "" when the package is absent.
std::string opencv_clip(const std::string& name);

}  // namespace mustdrop::test
