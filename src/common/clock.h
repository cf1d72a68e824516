// The Clock seam: wall-clock time for timestamps, monotonic time for durations. Tests
// inject FakeClock and advance it explicitly.
#pragma once

#include <atomic>
#include <chrono>

namespace kos {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual std::chrono::system_clock::time_point now() const = 0;
  virtual std::chrono::steady_clock::time_point steady_now() const = 0;
};

class RealClock final : public Clock {
 public:
  std::chrono::system_clock::time_point now() const override {
    return std::chrono::system_clock::now();
  }
  std::chrono::steady_clock::time_point steady_now() const override {
    return std::chrono::steady_clock::now();
  }
  static RealClock& instance() {
    static RealClock c;
    return c;
  }
};

// Starts at a fixed time and moves only when advance() is called. Thread-safe.
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
  void advance(std::chrono::nanoseconds d) { offset_ += d.count(); }

 private:
  std::atomic<int64_t> offset_;
  std::chrono::system_clock::time_point start_;
};

}  // namespace kos
