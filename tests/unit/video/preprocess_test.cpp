// Preprocessing: geometry arithmetic, exact normalised values of known patterns, rotation.
#include <gtest/gtest.h>

#include <filesystem>

#include "clips.h"
#include "video/png_writer.h"
#include "video/preprocess.h"
#include "video/source.h"

namespace mustdrop::test {
namespace {

// What the preprocessor must produce for an 8-bit value, computed independently.
float expected(int value, int channel, const config::PreprocessConfig& c) {
  return static_cast<float>((value / 255.0 - c.mean[channel]) / c.stddev[channel]);
}

std::string image_dir(const std::string& name, const std::string& lavfi) { return make_image_dir(name, lavfi); }

video::Frame first_frame(const std::string& input) {
  auto source = video::open_source(input, config::VideoConfig{});
  auto f = source->next();
  EXPECT_TRUE(f.has_value());
  return std::move(*f);
}

TEST(PlanResize, CropMatchesClipProcessorArithmetic) {
  video::ResizePlan p = video::plan_resize(1920, 1080, 336, false);
  EXPECT_EQ(p.scaled_w, 597);  // int(336 * 1920 / 1080) = 597
  EXPECT_EQ(p.scaled_h, 336);
  EXPECT_EQ(p.offset_x, (597 - 336) / 2);
  EXPECT_EQ(p.offset_y, 0);
  p = video::plan_resize(720, 1280, 224, false);
  EXPECT_EQ(p.scaled_w, 224);
  EXPECT_EQ(p.scaled_h, 398);
  EXPECT_EQ(p.offset_y, (398 - 224) / 2);
}

TEST(PlanResize, PadCentresTheLongSide) {
  video::ResizePlan p = video::plan_resize(1920, 1080, 336, true);
  EXPECT_EQ(p.scaled_w, 336);
  EXPECT_EQ(p.scaled_h, 189);
  EXPECT_EQ(p.offset_x, 0);
  EXPECT_EQ(p.offset_y, (336 - 189) / 2);
}

TEST(Preprocess, SolidColourGivesExactNormalisedValues) {
  std::string dir = image_dir("solid", "color=c=0x336699:s=96x64");
  config::PreprocessConfig c;
  c.size = 32;
  video::Preprocessor pre(c);
  video::ImageTensor t = pre(first_frame(dir));
  ASSERT_EQ(t.channels, 3);
  ASSERT_EQ(t.height, 32);
  ASSERT_EQ(t.width, 32);
  const int rgb[3] = {0x33, 0x66, 0x99};
  for (int ch = 0; ch < 3; ++ch) {
    for (int y = 0; y < 32; ++y) {
      for (int x = 0; x < 32; ++x) ASSERT_EQ(t.at(ch, y, x), expected(rgb[ch], ch, c)) << ch << " " << y << " " << x;
    }
  }
}

TEST(Preprocess, CustomMeanAndStd) {
  std::string dir = image_dir("solid_grey", "color=c=0x808080:s=40x40");
  config::PreprocessConfig c;
  c.size = 16;
  c.mean = {0.5, 0.5, 0.5};
  c.stddev = {0.5, 0.25, 1.0};
  video::ImageTensor t = video::Preprocessor(c)(first_frame(dir));
  EXPECT_FLOAT_EQ(t.at(0, 3, 3), static_cast<float>((128 / 255.0 - 0.5) / 0.5));
  EXPECT_FLOAT_EQ(t.at(1, 3, 3), static_cast<float>((128 / 255.0 - 0.5) / 0.25));
  EXPECT_FLOAT_EQ(t.at(2, 3, 3), static_cast<float>(128 / 255.0 - 0.5));
}

TEST(Preprocess, CentreCropKeepsTheMiddle) {
  // 64x32: left half red, right half blue. Crop to 16: the 32x16 scaled picture, centre 16
  // columns, so columns 0..7 are red and 8..15 blue (the kernel blurs only next to the edge).
  std::string dir = image_dir("halves", "color=c=red:s=32x32[a];color=c=blue:s=32x32[b];[a][b]hstack");
  config::PreprocessConfig c;
  c.size = 16;
  video::Preprocessor pre(c);
  video::RgbImage rgb = pre.to_rgb(first_frame(dir));
  auto px = [&](int y, int x, int ch) { return rgb.data[(static_cast<size_t>(y) * 16 + x) * 3 + ch]; };
  for (int y = 0; y < 16; ++y) {
    for (int x : {0, 4, 5}) {
      EXPECT_EQ(px(y, x, 0), 255);
      EXPECT_EQ(px(y, x, 2), 0);
    }
    for (int x : {10, 11, 15}) {
      EXPECT_EQ(px(y, x, 0), 0);
      EXPECT_EQ(px(y, x, 2), 255);
    }
  }
}

TEST(Preprocess, PadToSquareUsesTheMeanColour) {
  // 64x32 solid green, padded: rows 0..3 and 12..15 are LLaVA's mean colour int(mean * 255).
  std::string dir = image_dir("wide_green", "color=c=0x00FF00:s=64x32");
  config::PreprocessConfig c;
  c.size = 16;
  c.resize = "pad";
  video::Preprocessor pre(c);
  video::RgbImage rgb = pre.to_rgb(first_frame(dir));
  auto px = [&](int y, int x, int ch) { return rgb.data[(static_cast<size_t>(y) * 16 + x) * 3 + ch]; };
  const int pad[3] = {122, 116, 104};
  for (int x = 0; x < 16; ++x) {
    for (int y : {0, 3, 12, 15}) {
      for (int ch = 0; ch < 3; ++ch) EXPECT_EQ(px(y, x, ch), pad[ch]) << y << " " << x;
    }
    for (int y : {4, 8, 11}) {
      EXPECT_EQ(px(y, x, 0), 0);
      EXPECT_EQ(px(y, x, 1), 255);
      EXPECT_EQ(px(y, x, 2), 0);
    }
  }
  video::ImageTensor t = pre.normalise(rgb);
  EXPECT_EQ(t.at(0, 0, 0), expected(122, 0, c));
}

TEST(Preprocess, LossyVideoSolidColourWithinOneLevel) {
  std::string path = make_clip("solid_h264.mp4",
                               "-f lavfi -i color=c=0x336699:s=128x96:rate=10 -t 0.5 -c:v libx264 -preset ultrafast "
                               "-crf 0 -pix_fmt yuv444p");
  config::PreprocessConfig c;
  c.size = 24;
  video::RgbImage rgb = video::Preprocessor(c).to_rgb(first_frame(path));
  const int want[3] = {0x33, 0x66, 0x99};
  for (size_t i = 0; i < rgb.data.size(); ++i) ASSERT_NEAR(rgb.data[i], want[i % 3], 2) << i;
}

TEST(Preprocess, RotationMatchesTheFfmpegCliAutorotation) {
  // Left half red, right half blue, with a display matrix. The ffmpeg CLI rotates on decode;
  // its upright picture (as a PNG, read without rotation) is the independent reference.
  std::string plain = make_clip("halves.mp4",
                                "-f lavfi -i color=c=red:s=64x64:rate=10[a];color=c=blue:s=64x64:rate=10[b];[a][b]hstack "
                                "-t 0.3 -c:v libx264 -preset ultrafast -crf 0 -pix_fmt yuv444p");
  std::string path = make_clip("halves_rot.mp4", "-i " + plain + " -c copy -metadata:s:v:0 rotate=90");
  std::string ref_dir = temp_dir() + "/halves_upright";
  std::filesystem::create_directories(ref_dir);
  ProcResult r = run_process({"ffmpeg", "-v", "error", "-nostdin", "-y", "-i", path, "-frames:v", "1", "-pix_fmt",
                              "rgb24", ref_dir + "/0001.png"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  config::PreprocessConfig c;
  c.size = 16;
  c.resize = "pad";
  video::Frame rotated = first_frame(path);
  EXPECT_NE(rotated.rotation_deg, 0);
  video::RgbImage ours = video::Preprocessor(c).to_rgb(rotated);
  video::RgbImage ref = video::Preprocessor(c).to_rgb(first_frame(ref_dir));
  ASSERT_EQ(ours.data.size(), ref.data.size());
  for (size_t i = 0; i < ours.data.size(); ++i) ASSERT_NEAR(ours.data[i], ref.data[i], 3) << "byte " << i;
  // And the picture really turned: halves now split top/bottom, not left/right.
  auto px = [&](int y, int x, int ch) { return ours.data[(static_cast<size_t>(y) * 16 + x) * 3 + ch]; };
  EXPECT_NEAR(std::abs(px(1, 8, 0) - px(14, 8, 0)), 255, 3);
  EXPECT_EQ(px(8, 0, 0), 122);  // pad column on the left
}

TEST(PngWriter, RoundTripsThroughLibav) {
  video::RgbImage img;
  img.width = 5;
  img.height = 3;
  for (int i = 0; i < 5 * 3 * 3; ++i) img.data.push_back(static_cast<uint8_t>(i * 7));
  std::string dir = temp_dir() + "/png_rt";
  std::filesystem::create_directories(dir);
  video::write_png(img, dir + "/0.png");
  video::Frame f = first_frame(dir);
  config::PreprocessConfig c;
  c.size = 5;
  c.resize = "pad";  // 5x3 -> 5x3 scaled (no resampling), padded to 5x5
  video::RgbImage back = video::Preprocessor(c).to_rgb(f);
  for (int y = 0; y < 3; ++y) {
    for (int x = 0; x < 15; ++x) EXPECT_EQ(back.data[(1 + y) * 15 + x], img.data[y * 15 + x]) << y << " " << x;
  }
}

}  // namespace
}  // namespace mustdrop::test
