#include "support/test_support.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include <gtest/gtest.h>

namespace mustdrop::test {
namespace {

using Clock = std::chrono::steady_clock;

pid_t spawn(const std::vector<std::string>& argv, int* out_fd, int* err_fd, bool merge_stderr = false) {
  int out_pipe[2], err_pipe[2] = {-1, -1};
  if (pipe(out_pipe) != 0) return -1;
  if (err_fd && pipe(err_pipe) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    dup2(out_pipe[1], 1);
    if (merge_stderr) dup2(out_pipe[1], 2);
    if (err_fd) dup2(err_pipe[1], 2);
    close(out_pipe[0]);
    close(out_pipe[1]);
    if (err_fd) {
      close(err_pipe[0]);
      close(err_pipe[1]);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(out_pipe[1]);
  *out_fd = out_pipe[0];
  if (err_fd) {
    close(err_pipe[1]);
    *err_fd = err_pipe[0];
  }
  return pid;
}

int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

ProcResult run_process(const std::vector<std::string>& argv, double timeout_sec, bool merge_stderr) {
  ProcResult r;
  int out_fd = -1, err_fd = -1;
  pid_t pid = spawn(argv, &out_fd, merge_stderr ? nullptr : &err_fd, merge_stderr);
  if (pid < 0) return r;
  auto deadline = Clock::now() + std::chrono::duration<double>(timeout_sec);
  pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  int open_fds = err_fd >= 0 ? 2 : 1;
  char buf[65536];
  while (open_fds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      r.timed_out = true;
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      break;
    }
    if (poll(fds, 2, static_cast<int>(std::min<long long>(left, 200))) < 0) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd >= 0 && (fds[i].revents & (POLLIN | POLLHUP | POLLERR))) {
        ssize_t n = read(fds[i].fd, buf, sizeof(buf));
        if (n <= 0) {
          close(fds[i].fd);
          fds[i].fd = -1;
          --open_fds;
        } else {
          (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(n));
        }
      }
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) close(f.fd);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = decode_status(status);
  return r;
}

Child::Child(const std::vector<std::string>& argv) { pid_ = spawn(argv, &out_fd_, nullptr); }

Child::~Child() {
  if (pid_ > 0 && !reaped_) {
    kill(-pid_, SIGKILL);
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (out_fd_ >= 0) close(out_fd_);
}

std::string Child::read_line(double timeout_sec) {
  auto deadline = Clock::now() + std::chrono::duration<double>(timeout_sec);
  for (;;) {
    auto nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0 || out_fd_ < 0) return "";
    pollfd p{out_fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) return "";
    char buf[4096];
    ssize_t n = read(out_fd_, buf, sizeof(buf));
    if (n <= 0) return "";
    buffer_.append(buf, static_cast<size_t>(n));
  }
}

void Child::signal(int sig) {
  if (pid_ > 0 && !reaped_) kill(pid_, sig);
}

int Child::wait(double timeout_sec) {
  if (reaped_) return status_code_;
  auto deadline = Clock::now() + std::chrono::duration<double>(timeout_sec);
  while (Clock::now() < deadline) {
    int status = 0;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      status_code_ = decode_status(status);
      return status_code_;
    }
    usleep(10000);
  }
  return -1;
}

const std::string& temp_dir() {
  static std::string dir = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "mustdrop-test-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) std::abort();
    std::string d = tmpl;
    static struct Cleanup {
      std::string path;
      ~Cleanup() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
      }
    } cleanup{d};
    return d;
  }();
  return dir;
}

namespace {

// temp_dir()/name made once per process by `make` (which reports its own failures; a path whose
// making failed is not remembered, so a later call retries).
std::string made_once(const std::string& name, const std::function<bool(const std::string&)>& make) {
  static std::mutex mu;
  static std::map<std::string, std::string> made;
  std::lock_guard<std::mutex> lock(mu);
  auto it = made.find(name);
  if (it != made.end()) return it->second;
  std::string path = temp_dir() + "/" + name;
  if (make(path)) made[name] = path;
  return path;
}

}  // namespace

std::string make_clip(const std::string& name, const std::string& ffmpeg_args) {
  return made_once(name, [&](const std::string& path) {
    std::vector<std::string> argv = {"ffmpeg", "-v", "error", "-nostdin", "-y"};
    std::istringstream words(ffmpeg_args);
    for (std::string w; words >> w;) argv.push_back(w);
    argv.push_back(path);
    ProcResult r = run_process(argv, 300);
    if (r.exit_code != 0) ADD_FAILURE() << "ffmpeg could not make " << name << ": " << r.err;
    return r.exit_code == 0;
  });
}

std::string make_sample_clip(const std::string& name, int seconds) {
  return made_once(name, [&](const std::string& path) {
    ProcResult r = run_process(
        {source_dir() + "/tools/make_sample_video", path, "--seconds", std::to_string(seconds), "--size", "320x180"});
    if (r.exit_code != 0) ADD_FAILURE() << "make_sample_video could not make " << name << ": " << r.err;
    return r.exit_code == 0;
  });
}

std::string make_image_dir(const std::string& name, const std::string& lavfi, int frames) {
  std::string dir = temp_dir() + "/" + name;
  std::filesystem::create_directories(dir);
  // Generated straight in RGB so the PNGs hold exactly the colours asked for.
  ProcResult r = run_process({"ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", lavfi + ",format=rgb24",
                              "-frames:v", std::to_string(frames), dir + "/" + name + "_%04d.png"});
  if (r.exit_code != 0) ADD_FAILURE() << "ffmpeg could not make " << name << ": " << r.err;
  return dir;
}

bool have_encoder(const std::string& name) {
  static std::string list = run_process({"ffmpeg", "-hide_banner", "-encoders"}, 60).out;
  return list.find(" " + name + " ") != std::string::npos;
}

std::string source_dir() { return MUSTDROP_SOURCE_DIR; }
std::string mustdrop_binary() { return MUSTDROP_BINARY; }
std::string tool_binary(const std::string& name) {
  return (std::filesystem::path(MUSTDROP_BINARY).parent_path() / name).string();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

#ifdef MUSTDROP_RTSP_SERVER
RtspServer start_rtsp_server(int port, const std::string& file, int seconds) {
  std::vector<std::string> argv = {MUSTDROP_RTSP_SERVER, "--port", std::to_string(port), "--seconds", std::to_string(seconds)};
  if (!file.empty()) {
    argv.push_back("--file");
    argv.push_back(file);
  }
  RtspServer s;
  s.child = std::make_unique<Child>(argv);
  std::string line = s.child->read_line(30);
  if (line.rfind("PORT ", 0) == 0) s.port = std::stoi(line.substr(5));
  return s;
}
#endif

}  // namespace mustdrop::test
