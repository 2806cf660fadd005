// `mustdrop inspect`: the overlay of one frame. The frame (the square the tower sees) is scaled up
// by an integer factor and its colours squeezed into 24..231 per channel, so that the marks below,
// drawn in colours whose channels are all outside that range, can be counted exactly:
//   - every patch cell gets a badge (badge_px square, top-left) in its fate's colour;
//   - every token gets an anchor mark (badge_px square, top-right) at its own grid position in the
//     anchor shade of its fate (one per token; absorbed cells have none: they are no token here);
//   - merged tokens (several cells of one frame) are outlined in white on the cell borders;
//   - the cell is tinted by its fate (absorbed: by how many frames back it went; kept: no tint),
//     and carries the frame it was folded into (absorbed) or the LLM layer (prefill) in white digits.
#pragma once

#include <array>
#include <cstdint>

#include "app/inspect_fate.h"
#include "video/frame.h"

namespace mustdrop::app {

using Rgb = std::array<uint8_t, 3>;

// Exact colours: the badge of a fate (channels 0 or 255) and its anchor shade (16 or 239).
Rgb fate_colour(Fate fate);
Rgb anchor_colour(Fate fate);
// The tint of a fate as a CSS colour (index.html's legend), and of absorbed cells `age` frames back.
Rgb tint_colour(Fate fate, int64_t age = 1);

struct OverlayGeometry {
  int scale = 2;     // output pixels per input pixel
  int cell_px = 28;  // a patch cell in the output
  int badge_px = 5;  // side of the badge and the anchor mark
};
// For an image of `image_size` pixels with a `grid` x `grid` patch grid. ConfigError when a cell
// would be under 10 pixels (raise `scale`).
OverlayGeometry overlay_geometry(int image_size, int grid, int scale);

// The overlay of `frame` (image_size x image_size RGB) with `fates` of its cells.
video::RgbImage draw_overlay(const video::RgbImage& frame, const FrameFates& fates, int grid,
                             const OverlayGeometry& geometry);

}  // namespace mustdrop::app
