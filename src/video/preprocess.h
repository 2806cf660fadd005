// Frame -> vision-tower input: upright RGB, then CLIP crop or LLaVA-1.5 pad-to-square, then
// per-channel normalisation. Geometry and colour conversion run in a libavfilter graph
// (swscale inside); only the final normalisation is a loop here.
#pragma once

#include <memory>

#include "config/config.h"
#include "video/frame.h"

namespace mustdrop::video {

// Output geometry for one input size: scale to (scaled_w, scaled_h), then crop or pad to
// size x size at (offset_x, offset_y). Exposed so tests can check the arithmetic.
struct ResizePlan {
  int scaled_w = 0;
  int scaled_h = 0;
  int offset_x = 0;  // crop: top-left of the kept window; pad: where the picture sits
  int offset_y = 0;
};
// crop: shortest side -> size (the long side truncates, as CLIP's processor does), centre crop.
// pad: longest side -> size, centred on a size x size canvas.
ResizePlan plan_resize(int width, int height, int size, bool pad);

// Not thread-safe: use one per worker thread. Reuses its filter graph while the input
// geometry and pixel format stay the same.
class Preprocessor {
 public:
  explicit Preprocessor(const config::PreprocessConfig& config);
  ~Preprocessor();
  Preprocessor(const Preprocessor&) = delete;
  Preprocessor& operator=(const Preprocessor&) = delete;

  // size x size packed RGB, upright (display matrix applied); throws InternalError naming
  // the failing libav call.
  RgbImage to_rgb(const Frame& frame);
  // Normalised float tensor [3, size, size]: (rgb / 255 - mean) / stddev.
  ImageTensor operator()(const Frame& frame);
  // Normalises an RGB image produced by to_rgb().
  ImageTensor normalise(const RgbImage& rgb) const;

 private:
  struct Graph;
  config::PreprocessConfig config_;
  std::unique_ptr<Graph> graph_;
  float lut_[3][256];
};

}  // namespace mustdrop::video
