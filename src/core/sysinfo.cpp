#include "core/sysinfo.h"

#include <malloc.h>

#include <fstream>
#include <sstream>
#include <string>

namespace mustdrop {

namespace {

// A "Name:   1234 kB" line of /proc/self/status in bytes, or -1.
int64_t status_kb(const char* name) {
  std::ifstream in("/proc/self/status");
  const std::string key = name;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key, 0) == 0) return std::stoll(line.substr(key.size())) * 1024;
  }
  return -1;
}

}  // namespace

int64_t peak_rss_bytes() { return status_kb("VmHWM:"); }
int64_t rss_bytes() { return status_kb("VmRSS:"); }

bool cpu_has_native_bf16() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    for (std::string w; words >> w;) {
      if (w == "avx512_bf16" || w == "amx_bf16") return true;
    }
    return false;  // every core lists the same flags
  }
  return false;
}

void tune_allocator() {
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);  // the largest value glibc accepts
  mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
}

void release_free_memory() { malloc_trim(0); }

bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.flush();
  return static_cast<bool>(f);
}

}  // namespace mustdrop
