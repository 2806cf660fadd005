// Wall-clock intervals for the per-stage and per-node timings.
#pragma once

#include <chrono>

namespace mustdrop {

using Clock = std::chrono::steady_clock;

// Milliseconds since `t0`.
inline double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

}  // namespace mustdrop
