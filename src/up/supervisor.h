// The child processes of `kos up` and one event loop that relays what they write: each
// line goes to our stdout prefixed with the child's name ("agent node-1 | ..."), so the
// whole system's log reads as one stream. Exits are noticed (exited()), and stop_all()
// ends every child: SIGTERM, a grace period, then SIGKILL.
//
// A child dies with its parent (PR_SET_PDEATHSIG): `kill -9` of kos up leaves no process
// behind. The death signal follows the thread that forked, so call spawn() from a thread
// that lives as long as the process (the main thread).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"

namespace kos::up {

class Supervisor {
 public:
  explicit Supervisor(std::FILE* out = stdout);
  ~Supervisor();  // stop_all(5 s)
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Starts argv (argv[0] a path) as child `name`, its stdout and stderr on one pipe.
  Result<pid_t> spawn(const std::string& name, const std::vector<std::string>& argv);
  // A child that has exited since it was started, if any: "NAME exited with status 1".
  std::optional<std::string> exited();
  // Stops every child still running, the last started first (SIGTERM to all, then waits up
  // to `grace` in all, then SIGKILL), and reaps them. The relay drains what they wrote.
  void stop_all(std::chrono::milliseconds grace);
  std::vector<pid_t> pids() const;
  // A line of our own, prefixed "up | ".
  void say(const std::string& line);

 private:
  struct Child {
    std::string name;
    pid_t pid = -1;
    int fd = -1;          // the read end of its output pipe; -1 once at EOF
    std::string partial;  // a line not yet ended
    std::optional<int> status;  // wait status once reaped
    bool reported = false;
  };
  void loop();
  void emit(const std::string& name, const std::string& line);  // out_mu_ held
  void reap_locked();

  std::FILE* out_;
  mutable std::mutex mu_;  // children_, stopping_
  std::mutex out_mu_;
  std::vector<Child> children_;
  bool stopping_ = false;
  int wake_[2] = {-1, -1};
  std::thread thread_;
};

}  // namespace kos::up
