// Samplers choose which decoded frames go on; sampled frames keep their timestamps.
#pragma once

#include <memory>
#include <optional>

#include "config/config.h"
#include "video/frame.h"
#include "video/source.h"

namespace mustdrop::video {

class Sampler {
 public:
  virtual ~Sampler() = default;
  // The next sampled frame read from `source`, or nullopt when sampling is complete or the
  // source has ended. Throws what the source throws; ConfigError if the source cannot be
  // sampled this way (uniform over a live stream).
  virtual std::optional<Frame> next(Source& source) = 0;
  // Frames taken so far.
  virtual int64_t n_sampled() const = 0;
};

// uniform: `frames` frames spread evenly from the first to the last frame actually present
// (Video-LLaVA style), reached by seeking, so a long file is never decoded in full.
// fps: one frame per 1/fps seconds of media time; interval: one per interval_sec (live).
// A nonzero `frames` also caps fps and interval.
std::unique_ptr<Sampler> make_sampler(const config::SamplerConfig& config);

// The uniform targets: n times spread evenly over [first, last], both ends included.
std::vector<double> uniform_targets(double first, double last, int n);

}  // namespace mustdrop::video
