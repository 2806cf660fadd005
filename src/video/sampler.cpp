#include "video/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/log.h"

namespace mustdrop::video {
namespace {

// Two times closer than this are the same frame (both come from the same container clock).
constexpr double kSameFrameSec = 1e-7;
// Seeks that land after the wanted frame are retried this many times, each from twice as far
// before it, then reading restarts at the beginning.
constexpr int kSeekRetries = 5;

// Half a frame period (or 1 ms) of slack when matching a frame to a target time.
double tolerance(const StreamInfo& info) { return info.avg_fps > 0 ? 0.5 / info.avg_fps : 1e-3; }

// Every frame's time by decoding the whole source (for sources whose packets carry no
// timestamps); reading restarts at the beginning afterwards.
std::vector<double> decoded_times(Source& source) {
  std::vector<double> times;
  while (std::optional<Frame> f = source.next()) times.push_back(f->t_sec);
  if (!source.rewind()) throw InputError(source.info().url + ": cannot read the clip twice for uniform sampling; use --sampler fps");
  return times;
}

class UniformSampler : public Sampler {
 public:
  UniformSampler(int frames, double seek_threshold_sec, ShortClip short_clip)
      : n_(frames), seek_threshold_sec_(seek_threshold_sec), short_clip_(short_clip) {}

  std::optional<Frame> next(Source& source) override {
    if (n_ <= 0) return std::nullopt;
    if (!planned_) plan(source);
    if (k_ >= picks_.size()) return std::nullopt;
    const size_t idx = picks_[k_];
    std::optional<Frame> f;
    if (k_ > 0 && picks_[k_ - 1] == idx && repeat_) {
      f = repeat_->clone();  // kRepeat on a short clip: the same picture again
    } else {
      f = fetch(source, idx);
      if (!f) {
        MD_LOG_WARN("video", source.info().url << ": the data ended before the frame at " << times_[idx] << " s; "
                                                << k_ << " of " << picks_.size() << " frames sampled");
        k_ = picks_.size();
        return std::nullopt;
      }
      f->index = static_cast<int64_t>(idx);
      f->still_image = times_.size() == 1;
    }
    ++k_;
    repeat_.reset();
    if (k_ < picks_.size() && picks_[k_] == idx) repeat_ = f->clone();
    ++n_sampled_;
    return f;
  }

  int64_t n_sampled() const override { return n_sampled_; }

 private:
  void plan(Source& source) {
    planned_ = true;
    if (source.info().live) {
      throw ConfigError(source.info().url + ": the uniform sampler needs a file; use the fps or interval sampler for a live source");
    }
    std::optional<std::vector<double>> times = source.frame_times();
    if (times) {
      times_ = std::move(*times);
    } else {
      // Times only decoding can tell (repaired after a seek, they could differ): read straight through.
      times_ = decoded_times(source);
      seek_threshold_sec_ = std::numeric_limits<double>::infinity();
    }
    picks_ = uniform_picks(times_, n_, short_clip_);
  }

  // The frame at times_[idx]: read forward when it is near, else seek (further back each time a
  // seek lands after it). A frame that does not decode is replaced by the next one that does.
  // nullopt if the data ends first.
  std::optional<Frame> fetch(Source& source, size_t idx) {
    const double want = times_[idx];
    for (int attempt = 0;; ++attempt) {
      const double held = pending_ ? pending_->t_sec : read_t_;
      const bool past = held > want + kSameFrameSec;
      const bool far = want - std::max(held, times_.front()) > seek_threshold_sec_;
      bool sought = false, from_start = false;
      if (attempt > 0 || past || far) {
        const double back = attempt == 0 ? 0.0 : std::ldexp(1.0, attempt - 1);
        from_start = attempt > kSeekRetries || want - back <= times_.front() || !source.seek(want - back);
        if (from_start && !source.rewind()) {
          throw InputError(source.info().url + ": cannot go back to the frame at " + std::to_string(want) + " s");
        }
        pending_.reset();
        read_t_ = -std::numeric_limits<double>::infinity();
        sought = true;
      }
      bool first = true;
      std::optional<Frame> f;
      for (;;) {
        if (pending_) {
          f = std::move(pending_);
          pending_.reset();
        } else {
          f = source.next();
        }
        if (!f) break;
        read_t_ = f->t_sec;
        if (f->t_sec >= want - kSameFrameSec) break;
        first = false;
      }
      if (f && f->t_sec <= want + kSameFrameSec) return f;
      if (sought && first && !from_start) continue;  // the seek landed after the frame: go back further
      if (!f) return std::nullopt;
      MD_LOG_DEBUG("video", source.info().url << ": no picture at " << want << " s; taking the one at " << f->t_sec);
      return f;
    }
  }

  int n_;
  double seek_threshold_sec_;
  ShortClip short_clip_;
  bool planned_ = false;
  std::vector<double> times_;  // every frame of the clip
  std::vector<size_t> picks_;  // indices into times_, in order
  size_t k_ = 0;               // next pick
  std::optional<Frame> pending_;  // read but not used yet (the next frame after the last pick)
  std::optional<Frame> repeat_;   // the last frame, while the next pick repeats it
  double read_t_ = -std::numeric_limits<double>::infinity();  // time of the last frame read
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
      if (f->t_sec + tol < next_t_) {
        outage_pending_ = outage_pending_ || f->after_outage;  // the next frame taken reports it
        continue;
      }
      // Next slot: the first multiple of the period after this frame (gaps skip slots).
      next_t_ += period_ * (std::floor((f->t_sec + tol - next_t_) / period_) + 1.0);
      f->after_outage = f->after_outage || outage_pending_;
      outage_pending_ = false;
      ++n_sampled_;
      return f;
    }
  }

  int64_t n_sampled() const override { return n_sampled_; }

 private:
  double period_;
  int limit_;
  bool started_ = false;
  bool outage_pending_ = false;  // a skipped frame came after an outage
  double next_t_ = 0;
  int64_t n_sampled_ = 0;
};

class EverySampler : public Sampler {
 public:
  std::optional<Frame> next(Source& source) override {
    std::optional<Frame> f = source.next();
    if (f) ++n_sampled_;
    return f;
  }
  int64_t n_sampled() const override { return n_sampled_; }

 private:
  int64_t n_sampled_ = 0;
};

}  // namespace

std::unique_ptr<Sampler> make_every_frame_sampler() { return std::make_unique<EverySampler>(); }

std::vector<double> uniform_targets(double first, double last, int n) {
  std::vector<double> t;
  if (n <= 0) return t;
  if (n == 1) return {first};
  for (int i = 0; i < n; ++i) t.push_back(first + (last - first) * static_cast<double>(i) / (n - 1));
  return t;
}

std::vector<size_t> match_targets(const std::vector<double>& times, const std::vector<double>& targets) {
  const size_t n_frames = times.size(), n = targets.size();
  if (n == 0) return {};
  if (n_frames < n) throw InternalError("match_targets: fewer frames than targets");
  // An optimal choice puts target k within n frames of its nearest frame (more would leave a
  // closer frame free), so only those are candidates; index k..N-n+k leaves room for the rest.
  std::vector<std::vector<size_t>> cand(n);
  for (size_t k = 0; k < n; ++k) {
    size_t near = static_cast<size_t>(std::lower_bound(times.begin(), times.end(), targets[k]) - times.begin());
    if (near == n_frames || (near > 0 && targets[k] - times[near - 1] <= times[near] - targets[k])) --near;
    size_t lo = std::max(k, near >= n ? near - n : 0), hi = std::min(n_frames - n + k, near + n);
    for (size_t i = lo; i <= hi; ++i) cand[k].push_back(i);
  }
  // cost[k][j]: least total distance of targets 0..k with target k on cand[k][j]; from[k][j]: the
  // previous target's candidate. Earlier frames win ties (strict comparisons, ascending scans).
  std::vector<std::vector<double>> cost(n);
  std::vector<std::vector<size_t>> from(n);
  for (size_t k = 0; k < n; ++k) {
    cost[k].assign(cand[k].size(), std::numeric_limits<double>::infinity());
    from[k].assign(cand[k].size(), 0);
    double best_prev = k == 0 ? 0.0 : std::numeric_limits<double>::infinity();
    size_t best_at = 0, p = 0;
    for (size_t j = 0; j < cand[k].size(); ++j) {
      if (k > 0) {
        for (; p < cand[k - 1].size() && cand[k - 1][p] < cand[k][j]; ++p) {
          if (cost[k - 1][p] < best_prev) {
            best_prev = cost[k - 1][p];
            best_at = p;
          }
        }
      }
      if (best_prev == std::numeric_limits<double>::infinity()) continue;
      cost[k][j] = best_prev + std::fabs(times[cand[k][j]] - targets[k]);
      from[k][j] = best_at;
    }
  }
  size_t j = static_cast<size_t>(std::min_element(cost[n - 1].begin(), cost[n - 1].end()) - cost[n - 1].begin());
  std::vector<size_t> picks(n);
  for (size_t k = n; k-- > 0;) {
    picks[k] = cand[k][j];
    j = from[k][j];
  }
  return picks;
}

std::vector<size_t> uniform_picks(const std::vector<double>& times, int n, ShortClip short_clip) {
  const size_t n_frames = times.size();
  if (n <= 0 || n_frames == 0) return {};
  if (n_frames == 1) return {0};  // a still image: one frame, whatever the count asked for
  std::vector<size_t> picks;
  if (n_frames < static_cast<size_t>(n)) {
    switch (short_clip) {
      case ShortClip::kDistinct:
        for (size_t i = 0; i < n_frames; ++i) picks.push_back(i);
        break;
      case ShortClip::kRepeat: {
        // numpy.linspace(0, N-1, n, dtype=int): i * step truncated, the last one exactly N-1.
        const double step = static_cast<double>(n_frames - 1) / (n - 1);
        for (int i = 0; i + 1 < n; ++i) picks.push_back(static_cast<size_t>(i * step));
        picks.push_back(n_frames - 1);
        break;
      }
    }
    return picks;
  }
  return match_targets(times, uniform_targets(times.front(), times.back(), n));
}

std::unique_ptr<Sampler> make_sampler(const config::SamplerConfig& config, ShortClip short_clip) {
  switch (config.kind) {
    case config::SamplerKind::kUniform:
      return std::make_unique<UniformSampler>(config.frames, config.seek_threshold_sec, short_clip);
    case config::SamplerKind::kFps:
      return std::make_unique<PeriodicSampler>(1.0 / config.fps, config.frames);
    case config::SamplerKind::kInterval:
      return std::make_unique<PeriodicSampler>(config.interval_sec, config.frames);
  }
  throw InternalError("video.sampler.kind: no sampler for value " + std::to_string(static_cast<int>(config.kind)));
}

}  // namespace mustdrop::video
