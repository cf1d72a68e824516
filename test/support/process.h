// Child processes and temporary directories for tests. Everything a test creates here is
// removed by a destructor, so it is cleaned up even when an assertion fails.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kos::testing {

// A fresh directory under $TMPDIR (or /tmp), removed recursively on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "kos");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// A child process with its stdout on a pipe (stderr inherited, so its logs show in the
// test output). The destructor kills it (SIGKILL) and reaps it if it is still running.
class ChildProcess {
 public:
  // argv[0] is the program, looked up in PATH if it has no '/'.
  explicit ChildProcess(std::vector<std::string> argv, bool capture_stdout = true);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool started() const { return pid_ > 0; }
  // Reads one line of stdout (without the newline); nullopt on EOF or after `timeout`.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout);
  // Sends `sig`; no-op if the child has already been reaped.
  void signal(int sig);
  // Waits for exit up to `timeout`; returns the wait status, or nullopt if still running.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  // SIGTERM, wait up to `grace`, then SIGKILL; reaps. Returns the wait status.
  int stop(std::chrono::milliseconds grace = std::chrono::seconds(5));
  bool running();

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string buffer_;
  std::optional<int> status_;
};

// The outcome of run(): how the program ended and everything it wrote.
struct RunResult {
  // The exit status (127 if the program could not be executed, as a shell reports it);
  // 128+N if signal N ended it; -1 if no process could be made, or it was killed because
  // it outlived the timeout (then `timed_out` is set).
  int exit_code = -1;
  bool timed_out = false;
  std::string out;  // all of its stdout
  std::string err;  // all of its stderr
};

struct RunOptions {
  // Variables set in (or overriding) the child's environment, which is otherwise this
  // process's environment.
  std::vector<std::pair<std::string, std::string>> env;
  // Written to the child's stdin, which is then closed (so it reads EOF, never the
  // terminal).
  std::string stdin_data;
  // SIGKILL after this long.
  std::chrono::milliseconds timeout = std::chrono::seconds(120);
};

// Runs a program to completion without a shell (argv[0] looked up in PATH if it has no
// '/'), with stdout and stderr captured separately. Thread-safe. The child gets SIGKILL if
// the calling thread dies first (parent-death signal), so a crashed test leaves none behind.
RunResult run(const std::vector<std::string>& argv, const RunOptions& opts = {});

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
int free_loopback_port();

// The sum of a metric family's samples over all its label sets, in Prometheus' text format
// (0 when it has none yet).
double metric_sum(const std::string& text, const std::string& name);

// The directory holding the running test executable (build tree), to find sibling tools.
std::filesystem::path self_dir();

// Polls `cond` every `every` until it holds or `timeout` passes; whether it held. For
// waiting on state that other processes converge to (no event to wait for).
bool poll_until(const std::function<bool()>& cond, std::chrono::milliseconds timeout,
                std::chrono::milliseconds every = std::chrono::milliseconds(100));

}  // namespace kos::testing
