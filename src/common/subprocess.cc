#include "common/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace kos {

namespace {

constexpr size_t kCap = 64 * 1024;

std::string joined(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

}  // namespace

Result<CommandResult> run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  if (argv.empty()) return fail(Errc::kInvalid, "run_command: no program");
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0) return fail(Errc::kInternal, std::string("pipe: ") + std::strerror(errno));
  if (pipe2(err, O_CLOEXEC) != 0) {
    close(out[0]);
    close(out[1]);
    return fail(Errc::kInternal, std::string("pipe: ") + std::strerror(errno));
  }
  std::vector<std::string> args = argv;
  std::vector<char*> cargv;
  for (auto& a : args) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0) dup2(null, STDIN_FILENO);
    dup2(out[1], STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    execvp(cargv[0], cargv.data());
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  if (pid < 0) {
    close(out[0]);
    close(err[0]);
    return fail(Errc::kInternal, joined(argv) + ": fork: " + std::strerror(errno));
  }
  CommandResult res;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  int open_fds = 2;
  bool timed_out = false;
  while (open_fds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    int n = poll(fds, 2, static_cast<int>(left.count()));
    if (n < 0 && errno != EINTR) break;
    if (n <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[4096];
      ssize_t got = read(fds[i].fd, buf, sizeof buf);
      if (got <= 0) {
        fds[i].fd = -1;
        --open_fds;
        continue;
      }
      std::string& dst = i == 0 ? res.out : res.err;
      if (dst.size() < kCap) dst.append(buf, std::min(static_cast<size_t>(got), kCap - dst.size()));
    }
  }
  close(out[0]);
  close(err[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) return fail(Errc::kTimeout, joined(argv) + ": killed after " + std::to_string(timeout.count()) + " ms");
  res.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  if (res.exit_status == 127 && res.err.empty())
    return fail(Errc::kUnavailable, joined(argv) + ": cannot execute " + argv[0]);
  return res;
}

Result<std::string> run_checked(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  auto r = run_command(argv, timeout);
  if (!r) return fail(r.error());
  if (r->exit_status != 0) {
    std::string err = r->err;
    while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
    return fail(Errc::kInternal,
                joined(argv) + ": exit " + std::to_string(r->exit_status) + (err.empty() ? "" : ": " + err));
  }
  return std::move(r->out);
}

}  // namespace kos
