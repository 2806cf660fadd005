// SIGINT/SIGTERM handling: the first signal asks the running command to stop cleanly
// (partial output stays valid); a second one exits at once.
#pragma once

#include <atomic>
#include <functional>

namespace mustdrop::app {

// Installs the handlers; `on_stop` runs on a watcher thread (not in the signal handler).
void install_stop_handlers(std::function<void()> on_stop);
// Forgets the `on_stop` given (whatever it refers to may go); a call in progress finishes first.
// A signal still counts for stop_requested().
void clear_stop_handler();
// True once a stop signal arrived.
bool stop_requested();

}  // namespace mustdrop::app
