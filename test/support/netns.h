// A network namespace for the life of the object, for benchmarks and tests that need
// one (root): created with `ip netns add` (lo brought up), deleted with everything in it
// by the destructor. Throws if it cannot be created.
#pragma once

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

}  // namespace kos::testing
