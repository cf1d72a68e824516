// The Clock seam: wall-clock time for timestamps, monotonic time for durations, and waits
// for a deadline on that monotonic time. Tests inject FakeClock and advance it explicitly.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>

namespace kos {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual std::chrono::system_clock::time_point now() const = 0;
  virtual std::chrono::steady_clock::time_point steady_now() const = 0;
  // Blocks on `cv` (`lk` held, as condition_variable::wait) until it is notified or
  // `deadline` has come on this clock; may return early (spuriously), so callers wait in
  // a loop that looks at the time again.
  virtual void wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lk,
                          std::chrono::steady_clock::time_point deadline) const = 0;
};

class RealClock final : public Clock {
 public:
  std::chrono::system_clock::time_point now() const override {
    return std::chrono::system_clock::now();
  }
  std::chrono::steady_clock::time_point steady_now() const override {
    return std::chrono::steady_clock::now();
  }
  void wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lk,
                  std::chrono::steady_clock::time_point deadline) const override {
    cv.wait_until(lk, deadline);
  }
  static RealClock& instance() {
    static RealClock c;
    return c;
  }
};

// Starts at a fixed time and moves only when advance() is called. Thread-safe. A wait for a
// deadline still ahead returns after 1 ms of real time at most (or when notified): waiters
// loop, so they see an advance() within about a millisecond.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(std::chrono::system_clock::time_point start =
                         std::chrono::system_clock::time_point(std::chrono::seconds(1700000000)))
      : offset_(0), start_(start) {}
  std::chrono::system_clock::time_point now() const override {
    return start_ + std::chrono::nanoseconds(offset_.load());
  }
  std::chrono::steady_clock::time_point steady_now() const override {
    return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(offset_.load()));
  }
  void wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lk,
                  std::chrono::steady_clock::time_point deadline) const override {
    if (steady_now() < deadline) cv.wait_for(lk, std::chrono::milliseconds(1));
  }
  void advance(std::chrono::nanoseconds d) { offset_ += d.count(); }

 private:
  std::atomic<int64_t> offset_;
  std::chrono::system_clock::time_point start_;
};

}  // namespace kos
