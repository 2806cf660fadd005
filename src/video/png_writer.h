// Writes RGB images as PNG with libav's PNG encoder.
#pragma once

#include <string>

#include "video/frame.h"

namespace mustdrop::video {

// Encodes `image` as PNG into `path`; throws InputError naming the path if it cannot be written.
void write_png(const RgbImage& image, const std::string& path);

}  // namespace mustdrop::video
