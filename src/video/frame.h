// Decoded frames, stream facts and preprocessed images. No libav types leak from here:
// AVFrame is only forward-declared.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

struct AVFrame;

namespace mustdrop::video {

// Frees a libav frame (defined in frame.cpp).
struct AvFrameDeleter {
  void operator()(AVFrame* frame) const;
};
using AvFramePtr = std::unique_ptr<AVFrame, AvFrameDeleter>;

// One decoded picture with its timing. The picture stays in the decoder's pixel format;
// the preprocessor converts it.
struct Frame {
  AvFramePtr image;      // decoded picture (reference-counted libav frame)
  double pts_sec = 0;    // presentation time on the container's clock
  double t_sec = 0;      // seconds since the source started (pts_sec - start; continuous across reconnects)
  int64_t index = 0;     // 0-based index among decoded frames of the source
  int rotation_deg = 0;  // clockwise rotation that makes the picture upright (0, 90, 180, 270)
  bool still_image = false;  // the source holds this one picture only (an image, not a video)
  bool after_outage = false; // live: the first frame after the source was lost and reconnected

  // A new reference to the same picture (no pixel copy); throws InternalError if libav fails.
  Frame clone() const;
  int width() const;
  int height() const;
};

// What a source knows about itself once open.
struct StreamInfo {
  std::string url;               // file path, directory or URL as given
  std::string container;         // demuxer name ("mov,mp4,m4a,3gp,3g2,mj2", "rtsp", "image_dir", ...)
  std::string codec;             // decoder name
  int width = 0;                 // coded size
  int height = 0;
  int display_width = 0;         // size after rotation and pixel aspect ratio
  int display_height = 0;
  int rotation_deg = 0;          // from the display matrix, clockwise
  double avg_fps = 0;            // container's average frame rate (0 if unknown)
  double start_sec = 0;          // container clock at t_sec = 0
  double duration_sec = -1;      // declared duration (-1 unknown); never trusted for sampling
  int64_t declared_frames = -1;  // declared frame count (-1 unknown); never trusted for sampling
  bool live = false;             // a stream that cannot seek and may drop and reconnect
  bool seekable = false;
};

// Counters a source keeps while reading. Damage is reported, never fatal by itself.
struct SourceStats {
  int64_t n_packets = 0;         // video packets demuxed
  int64_t n_frames_decoded = 0;  // pictures that came out of the decoder
  int64_t n_corrupt_packets = 0; // packets the decoder rejected (skipped)
  int64_t n_corrupt_frames = 0;  // pictures flagged corrupt by the decoder (kept, concealed)
  int64_t n_timestamp_repairs = 0;  // frames whose timestamp ran backwards and was replaced
  bool truncated = false;        // the data ended before the container said it would
  std::string damage;            // human-readable summary of the first damage seen ("" if none)
  int64_t n_reconnects = 0;      // live: successful reopen after a disconnect
  int64_t n_disconnects = 0;     // live: connections lost (EOF, error, timeout, watchdog)
};

// Adds the counters of `part` (a reader that was closed) to `total`; the first damage note stays.
void add_stats(SourceStats& total, const SourceStats& part);

// A preprocessed image: float, channel-major [channels, height, width].
struct ImageTensor {
  int channels = 0;
  int height = 0;
  int width = 0;
  std::vector<float> data;  // size channels*height*width

  float at(int c, int y, int x) const { return data[(static_cast<size_t>(c) * height + y) * width + x]; }
};

// An 8-bit packed RGB image [height, width, 3] (what the model sees, before normalisation).
struct RgbImage {
  int height = 0;
  int width = 0;
  std::vector<uint8_t> data;  // size height*width*3, row-major
};

}  // namespace mustdrop::video
