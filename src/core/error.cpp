#include "core/error.h"

namespace mustdrop {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInput:
      return "input";
    case ErrorKind::kConfig:
      return "config";
    case ErrorKind::kModel:
      return "model";
    case ErrorKind::kStream:
      return "stream";
    case ErrorKind::kInternal:
      return "internal";
  }
  return "internal";
}

}  // namespace mustdrop
