#include <cmath>

#include "core/log.h"
#include "video/media_reader.h"
#include "video/source_impls.h"

namespace mustdrop::video {
namespace {

class FileSource : public Source {
 public:
  FileSource(const std::string& url, bool network, const config::VideoConfig& config)
      : reader_(make_options(url, network, config)) {}

  const StreamInfo& info() const override { return reader_.info(); }

  std::optional<Frame> next() override {
    double pts = 0;
    AvFramePtr image = reader_.read_frame(&pts);
    if (!image) return std::nullopt;
    Frame frame;
    frame.image = std::move(image);
    frame.pts_sec = pts;
    frame.t_sec = pts - info().start_sec;
    frame.index = index_known_ ? next_index_++ : -1;
    frame.rotation_deg = info().rotation_deg;
    return frame;
  }

  bool seek(double t_sec) override {
    if (!reader_.seek(t_sec + info().start_sec)) return false;
    index_known_ = false;  // frame indices after a seek are not known without decoding from the start
    return true;
  }

  std::optional<std::pair<double, double>> time_range() override {
    if (!range_) {
      std::optional<double> last = reader_.scan_last_pts();
      if (!last) return std::nullopt;
      range_ = std::make_pair(0.0, std::max(0.0, *last - info().start_sec));
      next_index_ = 0;  // the scan rewound to the start
      index_known_ = true;
    }
    return range_;
  }

  SourceStats stats() const override { return reader_.stats(); }

 private:
  ReaderOptions make_options(const std::string& url, bool network, const config::VideoConfig& config) {
    ReaderOptions o;
    o.url = url;
    o.network = network;
    o.read_timeout_ms = config.live.read_timeout_ms;
    o.open_timeout_ms = config.live.open_timeout_ms;
    o.decoder_threads = config.decoder_threads;
    o.stop = &stop_;
    return o;
  }

  MediaReader reader_;
  int64_t next_index_ = 0;
  bool index_known_ = true;
  std::optional<std::pair<double, double>> range_;
};

}  // namespace

std::unique_ptr<Source> make_file_source(const std::string& url, bool network, const config::VideoConfig& config) {
  return std::make_unique<FileSource>(url, network, config);
}

}  // namespace mustdrop::video
