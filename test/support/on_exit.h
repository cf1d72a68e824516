// Runs a function when its scope ends, however it ends: a failed ASSERT returns early and
// an exception unwinds, and a test's threads must still be joined before the objects they
// use go (a joinable thread's destructor aborts the test without its diagnostics).
#pragma once

#include <utility>

namespace kos::testing {

template <class F>
class OnExit {
 public:
  explicit OnExit(F f) : f_(std::move(f)) {}
  ~OnExit() { f_(); }
  OnExit(const OnExit&) = delete;
  OnExit& operator=(const OnExit&) = delete;

 private:
  F f_;
};

}  // namespace kos::testing
