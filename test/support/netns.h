// A network namespace for the life of the object, for benchmarks and tests that need
// one (root): created with `ip netns add` (lo brought up), deleted with everything in it
// by the destructor. Throws if it cannot be created.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <stdexcept>
#include <string>

#include "test/support/process.h"

namespace kos::testing {

class ScopedNetns {
 public:
  explicit ScopedNetns(std::string name) : name_(std::move(name)) {
    auto r = run({"ip", "netns", "add", name_});
    if (r.exit_code != 0) throw std::runtime_error("ip netns add " + name_ + ": " + r.err);
    run({"ip", "-n", name_, "link", "set", "lo", "up"});
  }
  ~ScopedNetns() { run({"ip", "netns", "del", name_}); }
  ScopedNetns(const ScopedNetns&) = delete;
  ScopedNetns& operator=(const ScopedNetns&) = delete;
  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

// A namespace "<prefix>-<pid>-<n>" for the life of the object, unique to this test process;
// never throws: ok() says whether it exists, error() why not. The first one of a process
// also deletes the "<prefix>-*" namespaces of earlier test processes that are gone (killed
// before their destructors ran). The destructor deletes it and any "<name>-*" namespace
// made for it (a VPC router of a fabric in it, router.h).
class TestNetns {
 public:
  explicit TestNetns(const std::string& prefix)
      : name_(prefix + "-" + std::to_string(getpid()) + "-" + std::to_string(counter_++)) {
    static const bool swept = [&prefix] {
      const std::string lead = prefix + "-";
      std::error_code ec;
      for (const auto& e : std::filesystem::directory_iterator("/var/run/netns", ec)) {
        const std::string n = e.path().filename().string();
        if (!n.starts_with(lead)) continue;
        const auto end = n.find('-', lead.size());
        const std::string pid = n.substr(lead.size(), end == std::string::npos ? 0 : end - lead.size());
        if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) continue;
        if (kill(std::stoi(pid), 0) != 0 && errno == ESRCH) run({"ip", "netns", "del", n});
      }
      return true;
    }();
    (void)swept;
    auto r = run({"ip", "netns", "add", name_});
    ok_ = r.exit_code == 0;
    if (!ok_) {
      error_ = r.err;
      return;
    }
    run({"ip", "-n", name_, "link", "set", "lo", "up"});
  }
  ~TestNetns() {
    if (!ok_) return;
    run({"ip", "netns", "del", name_});
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/var/run/netns", ec))
      if (e.path().filename().string().starts_with(name_ + "-")) run({"ip", "netns", "del", e.path().filename().string()});
  }
  TestNetns(const TestNetns&) = delete;
  TestNetns& operator=(const TestNetns&) = delete;
  const std::string& name() const { return name_; }
  std::string path() const { return "/var/run/netns/" + name_; }
  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }

 private:
  static inline std::atomic<int> counter_{0};
  std::string name_;
  bool ok_ = false;
  std::string error_;
};

}  // namespace kos::testing
