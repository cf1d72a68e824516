// Prometheus metrics: counters, gauges and histograms with labels, rendered in the text
// exposition format. Names follow kos_<component>_<what>_<unit>; counters end in _total.
// All operations are thread-safe; recording is a lock-free atomic add once the labelled
// child has been looked up (keep the child when recording in a hot loop).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace kos::metrics {

using Labels = std::vector<std::string>;  // values, in the order of the family's label names

class Counter {
 public:
  void inc(double v = 1) { add(v); }
  double value() const { return bits_to_double(v_.load()); }

 private:
  void add(double v);
  static double bits_to_double(uint64_t b);
  std::atomic<uint64_t> v_{0};
  friend class Gauge;
};

class Gauge {
 public:
  void set(double v);
  void inc(double v = 1) { c_.add(v); }
  void dec(double v = 1) { c_.add(-v); }
  double value() const { return c_.value(); }

 private:
  Counter c_;
};

class Histogram {
 public:
  explicit Histogram(const std::vector<double>* bounds);
  void observe(double v);
  void observe(std::chrono::steady_clock::duration d) {
    observe(std::chrono::duration<double>(d).count());
  }
  struct Snapshot {
    std::vector<uint64_t> cumulative;  // per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  const std::vector<double>* bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  Counter sum_;
  std::atomic<uint64_t> count_{0};
};

// Latency buckets from 100 us to 60 s (seconds).
const std::vector<double>& latency_buckets();

template <class M>
class Family {
 public:
  Family(std::string name, std::string help, std::vector<std::string> label_names,
         const std::vector<double>* bounds = nullptr)
      : name_(std::move(name)), help_(std::move(help)), label_names_(std::move(label_names)),
        bounds_(bounds) {}
  M& with(const Labels& values) {
    std::lock_guard lk(mu_);
    auto it = children_.find(values);
    if (it == children_.end()) {
      if constexpr (std::is_same_v<M, Histogram>) it = children_.emplace(values, std::make_unique<M>(bounds_)).first;
      else it = children_.emplace(values, std::make_unique<M>()).first;
    }
    return *it->second;
  }
  M& get() { return with({}); }
  void render(std::string& out) const;

 private:
  std::string name_, help_;
  std::vector<std::string> label_names_;
  const std::vector<double>* bounds_;
  mutable std::mutex mu_;
  std::map<Labels, std::unique_ptr<M>> children_;
};

class Registry {
 public:
  Family<Counter>& counter(const std::string& name, const std::string& help,
                           std::vector<std::string> labels = {});
  Family<Gauge>& gauge(const std::string& name, const std::string& help,
                       std::vector<std::string> labels = {});
  Family<Histogram>& histogram(const std::string& name, const std::string& help,
                               std::vector<std::string> labels = {},
                               const std::vector<double>* bounds = &latency_buckets());
  // A gauge computed when scraped.
  void callback_gauge(const std::string& name, const std::string& help,
                      std::function<double()> fn);
  // The text exposition of every family, plus process metrics (RSS, CPU, open fds).
  std::string render() const;

  // The process-wide registry.
  static Registry& global();

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Family<Counter>>> counters_;
  std::map<std::string, std::unique_ptr<Family<Gauge>>> gauges_;
  std::map<std::string, std::unique_ptr<Family<Histogram>>> histograms_;
  std::map<std::string, std::pair<std::string, std::function<double()>>> callbacks_;
};

}  // namespace kos::metrics
