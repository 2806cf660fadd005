// Error hierarchy shared by every module. Modules throw; only src/app maps kinds to exit codes.
#pragma once

#include <stdexcept>
#include <string>

namespace mustdrop {

// What went wrong, coarse enough to choose an exit code and a retry policy.
enum class ErrorKind {
  kInput,     // unreadable or damaged video, missing file, bad URL
  kConfig,    // malformed YAML, unknown key, out-of-range value, bad CLI usage
  kModel,     // model directory, checkpoint or tokenizer problems
  kStream,    // a live source failed in a way a reconnect may fix (retryable)
  kInternal,  // a bug or an unexpected library failure
};

// Base of every error this project throws; what() is the full user-facing message.
class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

class InputError : public Error {
 public:
  explicit InputError(const std::string& message) : Error(ErrorKind::kInput, message) {}
};

class ConfigError : public Error {
 public:
  explicit ConfigError(const std::string& message) : Error(ErrorKind::kConfig, message) {}
};

class ModelError : public Error {
 public:
  explicit ModelError(const std::string& message) : Error(ErrorKind::kModel, message) {}
};

// Retryable: a live source lost its server, timed out or stalled.
class StreamError : public Error {
 public:
  explicit StreamError(const std::string& message) : Error(ErrorKind::kStream, message) {}
};

class InternalError : public Error {
 public:
  explicit InternalError(const std::string& message) : Error(ErrorKind::kInternal, message) {}
};

// Short lower-case name of a kind ("input", "config", ...), for logs and reports.
const char* error_kind_name(ErrorKind kind);

}  // namespace mustdrop
