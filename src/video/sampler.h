// Samplers choose which decoded frames go on; sampled frames keep their timestamps.
#pragma once

#include <memory>
#include <optional>
#include <vector>

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

// What uniform sampling does with a clip that holds fewer frames than asked for.
enum class ShortClip {
  kDistinct,  // each frame once (image models such as LLaVA-1.5)
  kRepeat,    // exactly the count asked for: frame indices floor(linspace(0, N-1, count)), as
              // Video-LLaVA's own video processor does; a one-frame source still gives one frame
};

// uniform: `frames` frames spread evenly from the first to the last frame actually present,
// the same frames a full sequential decode would choose (uniform_picks), reached by seeking so
// a long file is never decoded in full. A source holding one picture gives that one frame,
// marked still_image. fps: one frame per 1/fps seconds of media time; interval: one per
// interval_sec (live). A nonzero `frames` also caps fps and interval.
std::unique_ptr<Sampler> make_sampler(const config::SamplerConfig& config, ShortClip short_clip = ShortClip::kDistinct);

// Every frame the source gives, in order, repeats included (frames kept in memory, benchmarks).
std::unique_ptr<Sampler> make_every_frame_sampler();

// The uniform targets: n times spread evenly over [first, last], both ends included.
std::vector<double> uniform_targets(double first, double last, int n);

// One distinct frame per target (indices into `times`, the sorted times of every frame;
// needs times.size() >= targets.size()): among all increasing choices, the one with the least
// total distance |time - target|, ties to the earlier frame. Never picks a frame twice.
std::vector<size_t> match_targets(const std::vector<double>& times, const std::vector<double>& targets);

// The frames uniform sampling takes from a clip whose frames are at `times` (sorted): `n`
// targets over [first, last] matched by match_targets; with fewer than n frames, every frame
// once (kDistinct) or floor(linspace(0, N-1, n)) (kRepeat; consecutive equal indices).
std::vector<size_t> uniform_picks(const std::vector<double>& times, int n, ShortClip short_clip);

}  // namespace mustdrop::video
