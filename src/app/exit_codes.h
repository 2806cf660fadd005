// Exit codes of the mustdrop executable; only src/app decides them.
#pragma once

#include "core/error.h"

namespace mustdrop::app {

constexpr int kExitOk = 0;
constexpr int kExitInternal = 1;
constexpr int kExitUsage = 2;  // bad command line or configuration
constexpr int kExitInput = 3;  // unreadable, missing or damaged input
constexpr int kExitModel = 4;  // model directory, checkpoint or tokenizer

// The exit code for an error kind (stream errors that reach the top are input errors).
int exit_code_for(ErrorKind kind);

}  // namespace mustdrop::app
