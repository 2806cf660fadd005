#include "core/sysinfo.h"

#include <malloc.h>

#include <fstream>
#include <string>

namespace mustdrop {

int64_t peak_rss_bytes() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;  // "VmHWM:   1234 kB"
  }
  return -1;
}

void tune_allocator() {
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);  // the largest value glibc accepts
  mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
}

bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.flush();
  return static_cast<bool>(f);
}

}  // namespace mustdrop
