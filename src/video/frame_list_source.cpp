#include <algorithm>

#include "core/error.h"
#include "video/source_impls.h"

namespace mustdrop::video {
namespace {

// Decoded frames held in memory, given again `repeats` times with times continuing (benchmarks,
// tests): frame i of round r is at r * (span + period) + t_i.
class FrameListSource : public Source {
 public:
  FrameListSource(std::vector<Frame> frames, StreamInfo info, int repeats)
      : frames_(std::move(frames)), info_(std::move(info)), repeats_(std::max(1, repeats)) {
    if (frames_.empty()) throw InputError(info_.url + ": no frames");
    double span = frames_.back().t_sec - frames_.front().t_sec;
    double period = frames_.size() > 1 ? span / static_cast<double>(frames_.size() - 1) : 1.0;
    round_sec_ = span + (period > 0 ? period : 1.0);
    info_.seekable = true;
    info_.live = false;
  }

  const StreamInfo& info() const override { return info_; }

  std::optional<Frame> next() override {
    if (stop_requested() || next_ >= frames_.size() * static_cast<size_t>(repeats_)) return std::nullopt;
    const size_t round = next_ / frames_.size(), i = next_ % frames_.size();
    Frame f = frames_[i].clone();
    f.t_sec += static_cast<double>(round) * round_sec_;
    f.index = static_cast<int64_t>(next_++);
    ++stats_.n_frames_decoded;
    return f;
  }

  bool seek(double t_sec) override {
    std::vector<double> t = *frame_times();
    next_ = static_cast<size_t>(std::lower_bound(t.begin(), t.end(), t_sec - 1e-9) - t.begin());
    return true;
  }

  std::optional<std::vector<double>> frame_times() override {
    std::vector<double> t;
    for (int r = 0; r < repeats_; ++r) {
      for (const auto& f : frames_) t.push_back(f.t_sec + r * round_sec_);
    }
    return t;
  }

  bool rewind() override {
    next_ = 0;
    return true;
  }

  SourceStats stats() const override { return stats_; }

 private:
  std::vector<Frame> frames_;
  StreamInfo info_;
  int repeats_;
  double round_sec_ = 1;
  size_t next_ = 0;
  SourceStats stats_;
};

}  // namespace

std::unique_ptr<Source> make_frame_list_source(std::vector<Frame> frames, StreamInfo info, int repeats) {
  return std::make_unique<FrameListSource>(std::move(frames), std::move(info), repeats);
}

}  // namespace mustdrop::video
