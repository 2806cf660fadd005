#include "app/signals.h"

#include <csignal>
#include <mutex>
#include <thread>
#include <unistd.h>

namespace mustdrop::app {
namespace {

std::atomic<int> g_signals{0};
std::mutex g_mu;  // g_on_stop: set, cleared and called under it
std::function<void()> g_on_stop;

void handle(int) {
  if (g_signals.fetch_add(1) >= 1) _exit(130);  // second signal: no more waiting
}

}  // namespace

void install_stop_handlers(std::function<void()> on_stop) {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_on_stop = std::move(on_stop);
  }
  struct sigaction sa {};
  sa.sa_handler = handle;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::thread([] {
    while (g_signals.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::lock_guard<std::mutex> lock(g_mu);
    if (g_on_stop) g_on_stop();
  }).detach();
}

void clear_stop_handler() {
  std::lock_guard<std::mutex> lock(g_mu);  // waits for a call in progress
  g_on_stop = nullptr;
}

bool stop_requested() { return g_signals.load() > 0; }

}  // namespace mustdrop::app
