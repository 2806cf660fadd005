// Helpers for the tests: run a program with a timeout, keep a background process, generate
// clips with the ffmpeg CLI into a per-run temporary directory.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

namespace mustdrop::test {

struct ProcResult {
  int exit_code = -1;  // exit status, or 128+signal
  bool timed_out = false;
  std::string out;     // stdout
  std::string err;     // stderr
};

// Runs argv[0] (searched on PATH) with stdin from /dev/null; kills it after timeout_sec. With
// merge_stderr, stderr goes into `out` too, in the order the program wrote it.
ProcResult run_process(const std::vector<std::string>& argv, double timeout_sec = 120, bool merge_stderr = false);

// A process running in the background; killed (SIGKILL) and reaped on destruction.
class Child {
 public:
  explicit Child(const std::vector<std::string>& argv);
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  // One line of the child's stdout (without '\n'), waiting up to timeout_sec; "" on timeout/EOF.
  std::string read_line(double timeout_sec);
  // Sends `sig` to the child.
  void signal(int sig);
  // Waits for exit up to timeout_sec; returns the exit code (128+signal), or -1 on timeout.
  int wait(double timeout_sec);
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string buffer_;
  bool reaped_ = false;
  int status_code_ = -1;
};

#ifdef MUSTDROP_RTSP_SERVER
// The local RTSP test server (tests/support/rtsp_test_server.c) on 127.0.0.1; `port` 0 picks a free
// one; `file` "" serves a live test pattern. port stays 0 when it did not start.
struct RtspServer {
  std::unique_ptr<Child> child;
  int port = 0;
  std::string url() const { return "rtsp://127.0.0.1:" + std::to_string(port) + "/stream"; }
};
RtspServer start_rtsp_server(int port = 0, const std::string& file = "", int seconds = 120);
#endif

// A temporary directory for this test process, created once, removed at exit.
const std::string& temp_dir();
// Generates (once per process) temp_dir()/name with `ffmpeg -y <args> <path>`; fails the
// test with ffmpeg's stderr if it cannot.
std::string make_clip(const std::string& name, const std::string& ffmpeg_args);
// Generates (once per process) temp_dir()/name with tools/make_sample_video: a 320x180, 25 fps
// synthetic scene of `seconds` seconds.
std::string make_sample_clip(const std::string& name, int seconds);
// Writes `frames` PNG images (RGB, name_0001.png, ...) from a lavfi graph into temp_dir()/name
// and returns the directory; fails the test with ffmpeg's stderr if it cannot.
std::string make_image_dir(const std::string& name, const std::string& lavfi, int frames = 1);
// True if the installed libav has the named encoder (e.g. "libx265").
bool have_encoder(const std::string& name);
// The repository root and the built mustdrop binary.
std::string source_dir();
std::string mustdrop_binary();
// A built tool next to the mustdrop binary (make_tiny_model, ...).
std::string tool_binary(const std::string& name);
// Reads a whole file ("" if missing).
std::string read_file(const std::string& path);

}  // namespace mustdrop::test
