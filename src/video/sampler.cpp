#include "video/sampler.h"

#include <cmath>

#include "core/error.h"
#include "core/log.h"

namespace mustdrop::video {
namespace {

// Half a frame period (or 1 ms) of slack when matching a frame to a target time.
double tolerance(const StreamInfo& info) { return info.avg_fps > 0 ? 0.5 / info.avg_fps : 1e-3; }

class UniformSampler : public Sampler {
 public:
  UniformSampler(int frames, double seek_threshold_sec) : n_(frames), seek_threshold_sec_(seek_threshold_sec) {}

  std::optional<Frame> next(Source& source) override {
    if (n_ <= 0) return std::nullopt;
    if (!planned_) plan(source);
    if (next_target_ >= targets_.size()) return std::nullopt;
    double target = targets_[next_target_];
    double tol = tolerance(source.info());
    // Jump ahead when the target is far past what we hold; otherwise decode forward.
    double held = pending_ ? pending_->t_sec : last_t_;
    if (target - held > seek_threshold_sec_ && source.seek(target)) pending_.reset();
    while (!pending_ || pending_->t_sec < target - tol) {
      std::optional<Frame> f = source.next();
      if (!f) break;  // data ended early: use the last frame we have
      last_t_ = f->t_sec;
      pending_ = std::move(f);
    }
    if (!pending_) return std::nullopt;
    ++next_target_;
    ++n_sampled_;
    return pending_->clone();  // a later target may pick the same frame again (short clips)
  }

  int64_t n_sampled() const override { return n_sampled_; }

 private:
  void plan(Source& source) {
    planned_ = true;
    if (source.info().live) {
      throw ConfigError(source.info().url + ": the uniform sampler needs a file; use the fps or interval sampler for a live source");
    }
    auto range = source.time_range();
    if (!range) {
      if (source.info().duration_sec <= 0) {
        throw InputError(source.info().url + ": cannot find the clip's length for uniform sampling (not seekable, no duration); use --sampler fps");
      }
      MD_LOG_WARN("video", source.info().url << ": could not scan the clip's end; trusting the declared duration");
      range = std::make_pair(0.0, source.info().duration_sec - 1.0 / std::max(1.0, source.info().avg_fps));
    }
    targets_ = uniform_targets(range->first, range->second, n_);
  }

  int n_;
  double seek_threshold_sec_;
  bool planned_ = false;
  std::vector<double> targets_;
  size_t next_target_ = 0;
  std::optional<Frame> pending_;
  double last_t_ = 0;  // reading starts at the beginning of the clip
  int64_t n_sampled_ = 0;
};

// One frame per period of media time: the first frame at or after each multiple of the period.
class PeriodicSampler : public Sampler {
 public:
  PeriodicSampler(double period_sec, int limit) : period_(period_sec), limit_(limit) {}

  std::optional<Frame> next(Source& source) override {
    if (limit_ > 0 && n_sampled_ >= limit_) return std::nullopt;
    double tol = tolerance(source.info()) * 1e-3;
    for (;;) {
      std::optional<Frame> f = source.next();
      if (!f) return std::nullopt;
      if (!started_) {
        started_ = true;
        next_t_ = f->t_sec;
      }
      if (f->t_sec + tol < next_t_) continue;
      // Next slot: the first multiple of the period after this frame (gaps skip slots).
      next_t_ += period_ * (std::floor((f->t_sec + tol - next_t_) / period_) + 1.0);
      ++n_sampled_;
      return f;
    }
  }

  int64_t n_sampled() const override { return n_sampled_; }

 private:
  double period_;
  int limit_;
  bool started_ = false;
  double next_t_ = 0;
  int64_t n_sampled_ = 0;
};

}  // namespace

std::vector<double> uniform_targets(double first, double last, int n) {
  std::vector<double> t;
  if (n <= 0) return t;
  if (n == 1) return {first};
  for (int i = 0; i < n; ++i) t.push_back(first + (last - first) * static_cast<double>(i) / (n - 1));
  return t;
}

std::unique_ptr<Sampler> make_sampler(const config::SamplerConfig& config) {
  if (config.kind == "uniform") return std::make_unique<UniformSampler>(config.frames, config.seek_threshold_sec);
  if (config.kind == "fps") return std::make_unique<PeriodicSampler>(1.0 / config.fps, config.frames);
  if (config.kind == "interval") return std::make_unique<PeriodicSampler>(config.interval_sec, config.frames);
  throw ConfigError("video.sampler.kind: unknown sampler '" + config.kind + "' (expected uniform, fps or interval)");
}

}  // namespace mustdrop::video
