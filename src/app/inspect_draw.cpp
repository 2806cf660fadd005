#include "app/inspect_draw.h"

#include <string>

#include "core/error.h"

namespace mustdrop::app {
namespace {

constexpr int kPhotoLow = 24, kPhotoHigh = 231;  // photo and tints stay inside; exact marks outside
constexpr Rgb kWhite{255, 255, 255};             // outlines and digits (no fate's colour)
constexpr Rgb kShadow{24, 24, 24};               // under the digits

// 3x5 digits, rows top to bottom, 3 bits each (4 = left column).
constexpr uint8_t kDigits[10][5] = {{7, 5, 5, 5, 7}, {2, 6, 2, 2, 7}, {7, 1, 7, 4, 7}, {7, 1, 7, 1, 7},
                                    {5, 5, 7, 1, 1}, {7, 4, 7, 1, 7}, {7, 4, 7, 5, 7}, {7, 1, 2, 2, 2},
                                    {7, 5, 7, 5, 7}, {7, 5, 7, 1, 7}};

class Canvas {
 public:
  explicit Canvas(video::RgbImage& img) : img_(img) {}
  uint8_t* at(int x, int y) { return img_.data.data() + (static_cast<size_t>(y) * img_.width + x) * 3; }
  void set(int x, int y, const Rgb& c) {
    uint8_t* p = at(x, y);
    p[0] = c[0], p[1] = c[1], p[2] = c[2];
  }
  void fill(int x0, int y0, int w, int h, const Rgb& c) {
    for (int y = y0; y < y0 + h; ++y)
      for (int x = x0; x < x0 + w; ++x) set(x, y, c);
  }
  void tint(int x0, int y0, int w, int h, const Rgb& c, int alpha_256) {
    for (int y = y0; y < y0 + h; ++y) {
      for (int x = x0; x < x0 + w; ++x) {
        uint8_t* p = at(x, y);
        for (int k = 0; k < 3; ++k) p[k] = static_cast<uint8_t>((p[k] * (256 - alpha_256) + c[k] * alpha_256) / 256);
      }
    }
  }
  // `text` (digits) with its right edge at x1 and its bottom at y1, `px` pixels per font pixel.
  void digits(const std::string& text, int x1, int y1, int px) {
    const int w = static_cast<int>(text.size()) * 4 * px - px, x0 = x1 - w, y0 = y1 - 5 * px;
    for (int pass = 0; pass < 2; ++pass) {
      const int off = pass == 0 ? 1 : 0;  // the shadow first, one pixel down and right
      for (size_t i = 0; i < text.size(); ++i) {
        const uint8_t* rows = kDigits[text[i] - '0'];
        for (int r = 0; r < 5; ++r) {
          for (int col = 0; col < 3; ++col) {
            if (!(rows[r] & (4 >> col))) continue;
            int x = x0 + static_cast<int>(i) * 4 * px + col * px + off, y = y0 + r * px + off;
            fill(x, y, px, px, pass == 0 ? kShadow : kWhite);
          }
        }
      }
    }
  }

 private:
  video::RgbImage& img_;
};

}  // namespace

Rgb fate_colour(Fate fate) {
  switch (fate) {
    case Fate::kKept:
      return {0, 255, 0};
    case Fate::kImportant:
      return {255, 255, 0};
    case Fate::kAbsorbed:
      return {0, 255, 255};
    case Fate::kVisionDropped:
      return {0, 0, 0};
    case Fate::kPrefillDropped:
      return {255, 0, 0};
    case Fate::kDecodeEvicted:
      return {0, 0, 255};
    case Fate::kMemoryEvicted:
      return {255, 0, 255};
  }
  return {0, 0, 0};
}

Rgb anchor_colour(Fate fate) {
  Rgb c = fate_colour(fate);
  for (auto& v : c) v = v ? 239 : 16;
  return c;
}

Rgb tint_colour(Fate fate, int64_t age) {
  switch (fate) {
    case Fate::kKept:
      return {128, 128, 128};  // not drawn
    case Fate::kImportant:
      return {231, 205, 24};
    case Fate::kAbsorbed: {
      static const Rgb kAges[4] = {{24, 205, 215}, {24, 150, 231}, {70, 100, 231}, {120, 60, 231}};
      return kAges[age < 1 ? 0 : age > 4 ? 3 : age - 1];
    }
    case Fate::kVisionDropped:
      return {24, 24, 24};
    case Fate::kPrefillDropped:
      return {231, 40, 40};
    case Fate::kDecodeEvicted:
      return {40, 80, 231};
    case Fate::kMemoryEvicted:
      return {200, 40, 200};
  }
  return {128, 128, 128};
}

OverlayGeometry overlay_geometry(int image_size, int grid, int scale) {
  OverlayGeometry g;
  g.scale = scale;
  g.cell_px = grid > 0 ? image_size / grid * scale : 0;
  if (grid <= 0 || image_size % grid != 0 || g.cell_px < 10) {
    throw ConfigError("inspect: a patch cell of " + std::to_string(g.cell_px) + " pixels is too small to draw on (" +
                      std::to_string(image_size) + " px, grid " + std::to_string(grid) + "): raise --scale");
  }
  g.badge_px = std::max(2, g.cell_px / 5);
  return g;
}

video::RgbImage draw_overlay(const video::RgbImage& frame, const FrameFates& fates, int grid,
                             const OverlayGeometry& geo) {
  const int s = geo.scale, side = frame.width * s, c = geo.cell_px, b = geo.badge_px;
  video::RgbImage out;
  out.width = out.height = side;
  out.data.resize(static_cast<size_t>(side) * side * 3);
  for (int y = 0; y < side; ++y) {
    const uint8_t* src_row = frame.data.data() + static_cast<size_t>(y / s) * frame.width * 3;
    uint8_t* dst = out.data.data() + static_cast<size_t>(y) * side * 3;
    for (int x = 0; x < side * 3; ++x) {
      dst[x] = static_cast<uint8_t>(kPhotoLow + src_row[(x / 3 / s) * 3 + x % 3] * (kPhotoHigh - kPhotoLow) / 255);
    }
  }
  Canvas canvas(out);
  const std::vector<int64_t> group = fates.group_sizes();
  const int px = std::max(1, c / 14);  // font pixel
  for (int p = 0; p < grid * grid; ++p) {
    const CellFate& cf = fates.cells[static_cast<size_t>(p)];
    const int x0 = (p % grid) * c, y0 = (p / grid) * c;
    if (cf.fate != Fate::kKept) {
      int64_t age = cf.fate == Fate::kAbsorbed ? fates.seq - cf.into_frame : 1;
      int alpha = cf.fate == Fate::kVisionDropped ? 180 : cf.fate == Fate::kDecodeEvicted ? 100 : 130;
      canvas.tint(x0 + 1, y0 + 1, c - 2, c - 2, tint_colour(cf.fate, age), alpha);
    }
    canvas.fill(x0 + 2, y0 + 2, b, b, fate_colour(cf.fate));
    if (cf.anchor && cf.fate != Fate::kAbsorbed) canvas.fill(x0 + c - 2 - b, y0 + 2, b, b, anchor_colour(cf.fate));
    int64_t label = cf.fate == Fate::kAbsorbed ? cf.into_frame : cf.fate == Fate::kPrefillDropped ? cf.layer : -1;
    if (label >= 0 && label < 100) canvas.digits(std::to_string(label), x0 + c - 3, y0 + c - 3, px);
  }
  // Outlines of merged tokens: the border between two cells of different tokens (or the image's
  // edge) when either side is a token of several cells, on the ring pixels of the cells.
  auto token = [&](int gx, int gy) -> int64_t {
    if (gx < 0 || gy < 0 || gx >= grid || gy >= grid) return -1;
    const CellFate& cf = fates.cells[static_cast<size_t>(gy * grid + gx)];
    return cf.fate == Fate::kAbsorbed ? -2 - (gy * grid + gx) : cf.token_id;
  };
  auto merged = [&](int gx, int gy) {
    return gx >= 0 && gy >= 0 && gx < grid && gy < grid && group[static_cast<size_t>(gy * grid + gx)] > 1;
  };
  // A single cell next to a merged token draws its side of the border too (a line two pixels wide).
  struct Side {
    int dx, dy, x, y, w, h;  // neighbour offset; the ring pixels of this side, relative to the cell
  };
  const Side sides[4] = {{-1, 0, 0, 0, 1, c}, {1, 0, c - 1, 0, 1, c}, {0, -1, 0, 0, c, 1}, {0, 1, 0, c - 1, c, 1}};
  for (int gy = 0; gy < grid; ++gy) {
    for (int gx = 0; gx < grid; ++gx) {
      const bool mine = merged(gx, gy);
      for (const Side& sd : sides) {
        const int nx = gx + sd.dx, ny = gy + sd.dy;
        if (mine ? token(nx, ny) != token(gx, gy) : merged(nx, ny)) {
          canvas.fill(gx * c + sd.x, gy * c + sd.y, sd.w, sd.h, kWhite);
        }
      }
    }
  }
  return out;
}

}  // namespace mustdrop::app
