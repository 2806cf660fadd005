#include <cmath>

#include "core/log.h"
#include "video/media_reader.h"
#include "video/source_impls.h"

namespace mustdrop::video {
namespace {

class FileSource : public Source {
 public:
  FileSource(const std::string& url, bool network, const config::VideoConfig& config)
      : options_(make_options(url, network, config)), reader_(std::make_unique<MediaReader>(options_)) {}

  const StreamInfo& info() const override { return reader_->info(); }

  std::optional<Frame> next() override {
    double pts = 0;
    AvFramePtr image = reader_->read_frame(&pts);
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
    if (!reader_->seek(t_sec + info().start_sec)) return false;
    index_known_ = false;  // frame indices after a seek are not known without decoding from the start
    return true;
  }

  std::optional<std::vector<double>> frame_times() override {
    if (!times_scanned_) {
      times_scanned_ = true;
      // A reader of its own, so the scan starts where a fresh open starts and reading is untouched.
      MediaReader scan(options_);
      times_ = scan.scan_packet_times();
      if (times_) {
        for (double& t : *times_) t -= info().start_sec;
      } else {
        MD_LOG_DEBUG("video", options_.url << ": a packet has no timestamp; frame times need decoding");
      }
    }
    return times_;
  }

  bool rewind() override {
    // Reopening is the one rewind every demuxer gets right (seeking to the start of an MPEG-TS
    // file with an offset clock can land after the first keyframe).
    // The new reader opens before the old one closes: when the open fails (the file went away, a
    // stop interrupted it) this source stays whole, its counters and info readable by others.
    auto fresh = std::make_unique<MediaReader>(options_);
    add_stats(closed_, reader_->stats());
    reader_ = std::move(fresh);
    next_index_ = 0;
    index_known_ = true;
    return true;
  }

  SourceStats stats() const override {
    SourceStats s = closed_;
    add_stats(s, reader_->stats());
    return s;
  }

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

  ReaderOptions options_;
  std::unique_ptr<MediaReader> reader_;
  SourceStats closed_;  // counters of readers closed by rewind()
  int64_t next_index_ = 0;
  bool index_known_ = true;
  bool times_scanned_ = false;
  std::optional<std::vector<double>> times_;
};

}  // namespace

std::unique_ptr<Source> make_file_source(const std::string& url, bool network, const config::VideoConfig& config) {
  return std::make_unique<FileSource>(url, network, config);
}

}  // namespace mustdrop::video
