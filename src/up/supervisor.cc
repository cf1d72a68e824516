#include "up/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace kos::up {

namespace {
constexpr size_t kNameWidth = 13;
}

Supervisor::Supervisor(std::FILE* out) : out_(out) {
  if (pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) wake_[0] = wake_[1] = -1;
  thread_ = std::thread([this] { loop(); });
}

Supervisor::~Supervisor() {
  stop_all(std::chrono::seconds(5));
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  if (wake_[1] >= 0) (void)!write(wake_[1], "x", 1);
  if (thread_.joinable()) thread_.join();
  for (int fd : wake_)
    if (fd >= 0) close(fd);
}

Result<pid_t> Supervisor::spawn(const std::string& name, const std::vector<std::string>& argv) {
  if (argv.empty()) return fail(Errc::kInvalid, "spawn " + name + ": no program");
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return fail(Errc::kInternal, "spawn " + name + ": pipe: " + std::strerror(errno));
  std::vector<std::string> args = argv;
  std::vector<char*> cargv;
  for (auto& a : args) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);  // the parent died before prctl
    // The parent blocks SIGINT/SIGTERM for sigwait; the child must see them.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    setpgid(0, 0);  // Ctrl-C reaches kos up alone, which stops the children in order
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0) dup2(null, STDIN_FILENO);
    dup2(p[1], STDOUT_FILENO);
    dup2(p[1], STDERR_FILENO);
    execv(cargv[0], cargv.data());
    dprintf(p[1], "cannot execute %s: %s\n", cargv[0], std::strerror(errno));
    _exit(127);
  }
  close(p[1]);
  if (pid < 0) {
    close(p[0]);
    return fail(Errc::kInternal, "spawn " + name + ": fork: " + std::strerror(errno));
  }
  {
    std::lock_guard lk(mu_);
    children_.push_back(Child{name, pid, p[0], {}, std::nullopt, false});
  }
  if (wake_[1] >= 0) (void)!write(wake_[1], "x", 1);
  return pid;
}

std::vector<pid_t> Supervisor::pids() const {
  std::lock_guard lk(mu_);
  std::vector<pid_t> out;
  for (const auto& c : children_)
    if (!c.status) out.push_back(c.pid);
  return out;
}

void Supervisor::reap_locked() {
  for (auto& c : children_) {
    if (c.status) continue;
    int st = 0;
    pid_t r = waitpid(c.pid, &st, WNOHANG);
    if (r == c.pid) c.status = st;
  }
}

std::optional<std::string> Supervisor::exited() {
  std::lock_guard lk(mu_);
  if (stopping_) return std::nullopt;
  reap_locked();
  for (auto& c : children_) {
    if (!c.status || c.reported) continue;
    c.reported = true;
    int st = *c.status;
    return c.name + (WIFEXITED(st) ? " exited with status " + std::to_string(WEXITSTATUS(st))
                                   : " was killed by signal " + std::to_string(WTERMSIG(st)));
  }
  return std::nullopt;
}

void Supervisor::stop_all(std::chrono::milliseconds grace) {
  std::vector<pid_t> running;
  {
    std::lock_guard lk(mu_);
    reap_locked();
    for (auto it = children_.rbegin(); it != children_.rend(); ++it)
      if (!it->status) running.push_back(it->pid);
    for (auto& c : children_) c.reported = true;  // exits from here on are ours
  }
  for (pid_t p : running) kill(p, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (true) {
    bool any = false;
    {
      std::lock_guard lk(mu_);
      reap_locked();
      for (const auto& c : children_) any = any || !c.status;
    }
    if (!any) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      std::lock_guard lk(mu_);
      for (auto& c : children_)
        if (!c.status) {
          kill(c.pid, SIGKILL);
          int st = 0;
          while (waitpid(c.pid, &st, 0) < 0 && errno == EINTR) {
          }
          c.status = st;
        }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // waiting for children to exit
  }
  // Let the relay drain what they wrote last (their pipes reach EOF now).
  for (int i = 0; i < 100; ++i) {
    {
      std::lock_guard lk(mu_);
      bool open = false;
      for (const auto& c : children_) open = open || c.fd >= 0;
      if (!open) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // the relay thread drains
  }
}

void Supervisor::emit(const std::string& name, const std::string& line) {
  std::string pad = name.size() < kNameWidth ? std::string(kNameWidth - name.size(), ' ') : "";
  std::fprintf(out_, "%s%s | %s\n", name.c_str(), pad.c_str(), line.c_str());
  std::fflush(out_);
}

void Supervisor::say(const std::string& line) {
  std::lock_guard lk(out_mu_);
  emit("up", line);
}

void Supervisor::loop() {
  while (true) {
    std::vector<pollfd> fds;
    std::vector<size_t> which;
    {
      std::lock_guard lk(mu_);
      bool open = false;
      for (size_t i = 0; i < children_.size(); ++i)
        if (children_[i].fd >= 0) {
          fds.push_back({children_[i].fd, POLLIN, 0});
          which.push_back(i);
          open = true;
        }
      if (stopping_ && !open) return;
    }
    fds.push_back({wake_[0], POLLIN, 0});
    int n = poll(fds.data(), fds.size(), 200);
    if (n < 0 && errno != EINTR) return;
    if (fds.back().revents & POLLIN) {
      char buf[64];
      while (read(wake_[0], buf, sizeof buf) > 0) {
      }
    }
    for (size_t k = 0; k + 1 < fds.size(); ++k) {
      if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[8192];
      ssize_t got = read(fds[k].fd, buf, sizeof buf);
      std::lock_guard lk(mu_);
      Child& c = children_[which[k]];
      if (got <= 0) {
        if (!c.partial.empty()) {
          std::lock_guard o(out_mu_);
          emit(c.name, c.partial);
          c.partial.clear();
        }
        close(c.fd);
        c.fd = -1;
        continue;
      }
      c.partial.append(buf, static_cast<size_t>(got));
      std::lock_guard o(out_mu_);
      for (size_t nl = c.partial.find('\n'); nl != std::string::npos; nl = c.partial.find('\n')) {
        emit(c.name, c.partial.substr(0, nl));
        c.partial.erase(0, nl + 1);
      }
    }
  }
}

}  // namespace kos::up
