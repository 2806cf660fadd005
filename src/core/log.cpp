#include "core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>

#include "core/error.h"

namespace mustdrop::log {
namespace {

std::atomic<Level> g_level{Level::kInfo};

spdlog::logger& logger() {
  static std::shared_ptr<spdlog::logger> instance = [] {
    auto l = spdlog::stderr_color_mt("mustdrop");
    l->set_pattern("%H:%M:%S.%e %^%l%$ %v");
    l->set_level(spdlog::level::trace);  // filtering happens in the facade
    return l;
  }();
  return *instance;
}

spdlog::level::level_enum to_spdlog(Level level) {
  switch (level) {
    case Level::kTrace:
      return spdlog::level::trace;
    case Level::kDebug:
      return spdlog::level::debug;
    case Level::kInfo:
      return spdlog::level::info;
    case Level::kWarn:
      return spdlog::level::warn;
    case Level::kError:
      return spdlog::level::err;
    case Level::kOff:
      return spdlog::level::off;
  }
  return spdlog::level::info;
}

}  // namespace

Level parse_level(const std::string& name) {
  if (name == "trace") return Level::kTrace;
  if (name == "debug") return Level::kDebug;
  if (name == "info") return Level::kInfo;
  if (name == "warn" || name == "warning") return Level::kWarn;
  if (name == "error") return Level::kError;
  if (name == "off") return Level::kOff;
  throw ConfigError("unknown log level '" + name + "' (expected trace, debug, info, warn, error or off)");
}

void set_level(Level level) { g_level.store(level); }

Level level() { return g_level.load(std::memory_order_relaxed); }

void write(Level level, const char* component, const std::string& message) {
  if (level == Level::kOff) return;
  logger().log(to_spdlog(level), "[{}] {}", component, message);
}

}  // namespace mustdrop::log
