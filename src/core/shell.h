// Building command lines for std::system (tools that drive the ffmpeg and sentencepiece CLIs).
#pragma once

#include <string>

namespace mustdrop {

// `s` as one single-quoted POSIX shell word (embedded quotes escaped); never fails.
std::string shell_quote(const std::string& s);

}  // namespace mustdrop
