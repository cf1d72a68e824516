#include "common/metrics.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <fstream>

namespace kos::metrics {

void Counter::add(double v) {
  uint64_t old = v_.load(std::memory_order_relaxed);
  while (!v_.compare_exchange_weak(old, std::bit_cast<uint64_t>(bits_to_double(old) + v),
                                   std::memory_order_relaxed)) {
  }
}

double Counter::bits_to_double(uint64_t b) { return std::bit_cast<double>(b); }

void Gauge::set(double v) { c_.v_.store(std::bit_cast<uint64_t>(v), std::memory_order_relaxed); }

Histogram::Histogram(const std::vector<double>* bounds)
    : bounds_(bounds), buckets_(new std::atomic<uint64_t>[bounds->size() + 1]) {
  for (size_t i = 0; i <= bounds_->size(); ++i) buckets_[i] = 0;
}

void Histogram::observe(double v) {
  size_t i = static_cast<size_t>(std::lower_bound(bounds_->begin(), bounds_->end(), v) -
                                 bounds_->begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.inc(v);
  count_.fetch_add(1, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  uint64_t acc = 0;
  for (size_t i = 0; i <= bounds_->size(); ++i) {
    acc += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(acc);
  }
  s.sum = sum_.value();
  s.count = acc;
  return s;
}

const std::vector<double>& latency_buckets() {
  static const std::vector<double> b{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                     0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5,
                                     5,      10,      30,     60};
  return b;
}

namespace {

std::string escape(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string label_text(const std::vector<std::string>& names, const Labels& values,
                       const std::string& extra = {}) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < values.size(); ++i) {
    if (!out.empty()) out += ",";
    out += names[i] + "=\"" + escape(values[i]) + "\"";
  }
  if (!extra.empty()) {
    if (!out.empty()) out += ",";
    out += extra;
  }
  return out.empty() ? std::string() : "{" + out + "}";
}

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace

template <class M>
void Family<M>::render(std::string& out) const {
  std::lock_guard lk(mu_);
  std::string type = std::is_same_v<M, Counter> ? "counter"
                     : std::is_same_v<M, Gauge> ? "gauge"
                                                : "histogram";
  out += "# HELP " + name_ + " " + help_ + "\n# TYPE " + name_ + " " + type + "\n";
  for (const auto& [values, m] : children_) {
    if constexpr (std::is_same_v<M, Histogram>) {
      auto s = m->snapshot();
      for (size_t i = 0; i < bounds_->size(); ++i)
        out += name_ + "_bucket" + label_text(label_names_, values, "le=\"" + num((*bounds_)[i]) + "\"") +
               " " + std::to_string(s.cumulative[i]) + "\n";
      out += name_ + "_bucket" + label_text(label_names_, values, "le=\"+Inf\"") + " " +
             std::to_string(s.count) + "\n";
      out += name_ + "_sum" + label_text(label_names_, values) + " " + num(s.sum) + "\n";
      out += name_ + "_count" + label_text(label_names_, values) + " " + std::to_string(s.count) + "\n";
    } else {
      out += name_ + label_text(label_names_, values) + " " + num(m->value()) + "\n";
    }
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

Family<Counter>& Registry::counter(const std::string& name, const std::string& help,
                                   std::vector<std::string> labels) {
  std::lock_guard lk(mu_);
  auto& f = counters_[name];
  if (!f) f = std::make_unique<Family<Counter>>(name, help, std::move(labels));
  return *f;
}

Family<Gauge>& Registry::gauge(const std::string& name, const std::string& help,
                               std::vector<std::string> labels) {
  std::lock_guard lk(mu_);
  auto& f = gauges_[name];
  if (!f) f = std::make_unique<Family<Gauge>>(name, help, std::move(labels));
  return *f;
}

Family<Histogram>& Registry::histogram(const std::string& name, const std::string& help,
                                       std::vector<std::string> labels,
                                       const std::vector<double>* bounds) {
  std::lock_guard lk(mu_);
  auto& f = histograms_[name];
  if (!f) f = std::make_unique<Family<Histogram>>(name, help, std::move(labels), bounds);
  return *f;
}

void Registry::callback_gauge(const std::string& name, const std::string& help,
                              std::function<double()> fn) {
  std::lock_guard lk(mu_);
  callbacks_[name] = {help, std::move(fn)};
}

std::string Registry::render() const {
  std::string out;
  {
    std::lock_guard lk(mu_);
    for (const auto& [_, f] : counters_) f->render(out);
    for (const auto& [_, f] : gauges_) f->render(out);
    for (const auto& [_, f] : histograms_) f->render(out);
    for (const auto& [name, cb] : callbacks_)
      out += "# HELP " + name + " " + cb.first + "\n# TYPE " + name + " gauge\n" + name + " " +
             num(cb.second()) + "\n";
  }
  // Process metrics, as the Prometheus client libraries name them.
  long page = sysconf(_SC_PAGESIZE), ticks = sysconf(_SC_CLK_TCK);
  std::ifstream statm("/proc/self/statm");
  long size = 0, resident = 0;
  statm >> size >> resident;
  std::ifstream stat("/proc/self/stat");
  std::string tok;
  double cpu = 0;
  for (int i = 1; stat >> tok && i <= 15; ++i)
    if (i == 14 || i == 15) cpu += std::stod(tok) / static_cast<double>(ticks);
  int fds = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (readdir(d)) ++fds;
    closedir(d);
    fds -= 3;  // ".", ".." and the directory's own descriptor
  }
  out += "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
         "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes " +
         num(static_cast<double>(resident * page)) + "\n";
  out += "# HELP process_cpu_seconds_total Total user and system CPU time in seconds.\n"
         "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total " + num(cpu) + "\n";
  out += "# HELP process_open_fds Number of open file descriptors.\n"
         "# TYPE process_open_fds gauge\nprocess_open_fds " + std::to_string(fds) + "\n";
  return out;
}

Registry& Registry::global() {
  static Registry r;
  return r;
}

}  // namespace kos::metrics
