// Thin logging facade: everything goes to stderr (stdout is for answers and results).
// spdlog stays inside log.cpp.
#pragma once

#include <sstream>
#include <string>

namespace mustdrop::log {

enum class Level { kTrace, kDebug, kInfo, kWarn, kError, kOff };

// Parses "trace|debug|info|warn|error|off"; throws ConfigError naming the bad value.
Level parse_level(const std::string& name);
// Sets the global threshold; messages below it are dropped cheaply.
void set_level(Level level);
Level level();
// True when a message at `level` would be written.
inline bool enabled(Level l) { return l >= level(); }
// Writes one line "[component] message" at `level`; thread-safe.
void write(Level level, const char* component, const std::string& message);

}  // namespace mustdrop::log

#define MD_LOG_AT(lvl, component, expr)                                  \
  do {                                                                   \
    if (::mustdrop::log::enabled(lvl)) {                                 \
      std::ostringstream md_log_os_;                                     \
      md_log_os_ << expr;                                                \
      ::mustdrop::log::write(lvl, component, md_log_os_.str());          \
    }                                                                    \
  } while (0)

#define MD_LOG_TRACE(component, expr) MD_LOG_AT(::mustdrop::log::Level::kTrace, component, expr)
#define MD_LOG_DEBUG(component, expr) MD_LOG_AT(::mustdrop::log::Level::kDebug, component, expr)
#define MD_LOG_INFO(component, expr) MD_LOG_AT(::mustdrop::log::Level::kInfo, component, expr)
#define MD_LOG_WARN(component, expr) MD_LOG_AT(::mustdrop::log::Level::kWarn, component, expr)
#define MD_LOG_ERROR(component, expr) MD_LOG_AT(::mustdrop::log::Level::kError, component, expr)
