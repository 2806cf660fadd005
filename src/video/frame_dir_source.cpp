#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "core/log.h"
#include "video/media_reader.h"
#include "video/source_impls.h"

namespace mustdrop::video {
namespace {

namespace fs = std::filesystem;

bool is_image_name(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  static const char* const kExts[] = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif"};
  return std::any_of(std::begin(kExts), std::end(kExts), [&](const char* e) { return ext == e; });
}

// Images of a directory, sorted by file name; frame i is at i / fps seconds whether or not
// every image decodes (an unreadable image is counted and skipped).
class FrameDirSource : public Source {
 public:
  FrameDirSource(const std::string& dir, const config::VideoConfig& config) : fps_(config.frame_dir_fps) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      if (entry.is_regular_file() && is_image_name(entry.path()) && entry.path().filename().string()[0] != '.') {
        files_.push_back(entry.path().string());
      }
    }
    if (ec) throw InputError(dir + ": cannot list directory (" + ec.message() + ")");
    if (files_.empty()) throw InputError(dir + ": no images in directory (looked for png, jpg, bmp, tiff, webp, ppm, gif)");
    std::sort(files_.begin(), files_.end());
    info_.url = dir;
    info_.container = "image_dir";
    info_.avg_fps = fps_;
    info_.duration_sec = static_cast<double>(files_.size()) / fps_;
    info_.declared_frames = static_cast<int64_t>(files_.size());
    info_.seekable = true;
    // Geometry and codec from the first readable image.
    for (const auto& f : files_) {
      try {
        MediaReader first(reader_options(f));
        info_.codec = first.info().codec;
        info_.width = info_.display_width = first.info().width;
        info_.height = info_.display_height = first.info().height;
        break;
      } catch (const InputError&) {
      }
    }
  }

  const StreamInfo& info() const override { return info_; }

  std::optional<Frame> next() override {
    while (next_ < files_.size() && !stop_requested()) {
      size_t i = next_++;
      try {
        MediaReader reader(reader_options(files_[i]));
        double pts = 0;
        AvFramePtr image = reader.read_frame(&pts);
        stats_.n_packets += reader.stats().n_packets;
        if (!image) throw InputError(files_[i] + ": no picture decoded");
        ++stats_.n_frames_decoded;
        Frame frame;
        frame.image = std::move(image);
        frame.index = static_cast<int64_t>(i);
        frame.t_sec = frame.pts_sec = static_cast<double>(i) / fps_;
        return frame;
      } catch (const InputError& e) {
        ++stats_.n_corrupt_packets;
        if (stats_.damage.empty()) stats_.damage = std::string("unreadable image skipped: ") + e.what();
        MD_LOG_WARN("video", e.what() << " (skipped)");
      }
    }
    return std::nullopt;
  }

  bool seek(double t_sec) override {
    double idx = std::ceil(t_sec * fps_ - 1e-9);
    next_ = static_cast<size_t>(std::clamp(idx, 0.0, static_cast<double>(files_.size())));
    return true;
  }

  std::optional<std::vector<double>> frame_times() override {
    std::vector<double> t(files_.size());
    for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<double>(i) / fps_;
    return t;
  }

  bool rewind() override {
    next_ = 0;
    return true;
  }

  SourceStats stats() const override { return stats_; }

 private:
  ReaderOptions reader_options(const std::string& path) {
    ReaderOptions o;
    o.url = path;
    o.decoder_threads = 1;
    o.stop = &stop_;
    return o;
  }

  double fps_;
  std::vector<std::string> files_;
  size_t next_ = 0;
  StreamInfo info_;
  SourceStats stats_;
};

}  // namespace

std::unique_ptr<Source> make_frame_dir_source(const std::string& dir, const config::VideoConfig& config) {
  return std::make_unique<FrameDirSource>(dir, config);
}

}  // namespace mustdrop::video
