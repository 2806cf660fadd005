// Wall-clock intervals for the per-stage and per-node timings.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <string>

namespace mustdrop {

using Clock = std::chrono::steady_clock;

// Milliseconds since `t0`.
inline double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Wall-clock seconds since the Unix epoch.
inline double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// "2026-12-01T09:59:26.123Z": `unix_sec` in UTC with milliseconds (ISO 8601).
inline std::string iso8601_utc(double unix_sec) {
  const double whole = std::floor(unix_sec);
  const int ms = std::min(999, static_cast<int>((unix_sec - whole) * 1000.0));
  const std::time_t secs = static_cast<std::time_t>(whole);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];  // room for any year the int fields can hold
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return buf;
}

}  // namespace mustdrop
