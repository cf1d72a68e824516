#include "client/workqueue.h"

#include <algorithm>
#include <climits>
#include <cmath>

#include "common/thread_name.h"

namespace kos::client {

using std::chrono::nanoseconds;

namespace {
// Longer delays and timeouts are clamped to this, so that adding them to a time point cannot
// overflow (steady time points are int64 nanoseconds, about 292 years).
constexpr nanoseconds kForever = std::chrono::hours(24 * 365 * 100);
}  // namespace

// ---- rate limiters -------------------------------------------------------------------------

ExponentialFailureRateLimiter::ExponentialFailureRateLimiter(nanoseconds base_delay,
                                                             nanoseconds max_delay)
    : base_(base_delay), max_(max_delay) {}

nanoseconds ExponentialFailureRateLimiter::when(const std::string& key) {
  int exp = 0;
  {
    std::lock_guard lk(mu_);
    int& failures = failures_[key];
    exp = failures;
    if (failures < INT_MAX) ++failures;
  }
  // In floating point so that large exponents saturate instead of overflowing.
  double backoff = static_cast<double>(base_.count()) * std::pow(2.0, exp);
  if (backoff >= static_cast<double>(max_.count())) return max_;
  return nanoseconds(static_cast<int64_t>(backoff));
}

void ExponentialFailureRateLimiter::forget(const std::string& key) {
  std::lock_guard lk(mu_);
  failures_.erase(key);
}

int ExponentialFailureRateLimiter::num_requeues(const std::string& key) {
  std::lock_guard lk(mu_);
  auto it = failures_.find(key);
  return it == failures_.end() ? 0 : it->second;
}

BucketRateLimiter::BucketRateLimiter(double qps, int burst, const Clock& clock)
    : qps_(qps), burst_(std::max(burst, 1)), clock_(clock), tokens_(burst_),
      last_(clock.steady_now()) {}

nanoseconds BucketRateLimiter::when(const std::string&) {
  if (qps_ <= 0) return nanoseconds(0);  // no rate: the bucket does not limit
  std::lock_guard lk(mu_);
  SteadyTime now = clock_.steady_now();
  if (now > last_) {
    double refill = static_cast<double>((now - last_).count()) * qps_ / 1e9;
    tokens_ = std::min(burst_, tokens_ + refill);
    last_ = now;
  }
  tokens_ -= 1;
  if (tokens_ >= 0) return nanoseconds(0);
  return nanoseconds(std::llround(-tokens_ / qps_ * 1e9));
}

MaxOfRateLimiter::MaxOfRateLimiter(std::vector<std::unique_ptr<RateLimiter>> limiters)
    : limiters_(std::move(limiters)) {}

nanoseconds MaxOfRateLimiter::when(const std::string& key) {
  nanoseconds longest(0);
  // Every limiter sees the failure, even when another one already decides the delay.
  for (auto& l : limiters_) longest = std::max(longest, l->when(key));
  return longest;
}

void MaxOfRateLimiter::forget(const std::string& key) {
  for (auto& l : limiters_) l->forget(key);
}

int MaxOfRateLimiter::num_requeues(const std::string& key) {
  int most = 0;
  for (auto& l : limiters_) most = std::max(most, l->num_requeues(key));
  return most;
}

std::unique_ptr<RateLimiter> default_controller_rate_limiter(const Clock& clock,
                                                             const RateLimits& limits) {
  std::vector<std::unique_ptr<RateLimiter>> v;
  v.push_back(std::make_unique<ExponentialFailureRateLimiter>(limits.base_delay, limits.max_delay));
  v.push_back(std::make_unique<BucketRateLimiter>(limits.qps, limits.burst, clock));
  return std::make_unique<MaxOfRateLimiter>(std::move(v));
}

// ---- the queue -----------------------------------------------------------------------------

WorkQueue::WorkQueue(std::string name, metrics::Registry& registry, Options opts)
    : name_(std::move(name)),
      clock_(*opts.clock),
      limiter_(opts.rate_limiter ? std::move(opts.rate_limiter)
                                 : default_controller_rate_limiter(*opts.clock, opts.limits)),
      depth_(registry.gauge("kos_workqueue_depth", "Keys queued and ready to be processed.",
                            {"name"}).with({name_})),
      adds_(registry.counter("kos_workqueue_adds_total",
                             "Keys added to the queue (not counting keys already queued).",
                             {"name"}).with({name_})),
      queue_duration_(registry.histogram("kos_workqueue_queue_duration_seconds",
                                         "Time a key waits in the queue before it is handed out.",
                                         {"name"}).with({name_})),
      work_duration_(registry.histogram("kos_workqueue_work_duration_seconds",
                                        "Time from handing a key out to its done().",
                                        {"name"}).with({name_})),
      retries_(registry.counter("kos_workqueue_retries_total", "Rate-limited re-adds of keys.",
                                {"name"}).with({name_})) {
  if (opts.delay_thread) delay_thread_ = named_thread("kos-wq-delay", [this] { delay_loop(); });
}

WorkQueue::~WorkQueue() {
  shut_down();
  if (delay_thread_.joinable()) delay_thread_.join();
}

void WorkQueue::set_depth_locked() { depth_.set(static_cast<double>(queue_.size())); }

void WorkQueue::add_locked(const std::string& key) {
  if (shutting_down_) return;
  if (dirty_.contains(key)) return;  // queued already, or re-queued at done()
  adds_.inc();
  dirty_.emplace(key, clock_.steady_now());
  if (processing_.contains(key)) return;
  queue_.push_back(key);
  set_depth_locked();
  ready_cv_.notify_one();
}

void WorkQueue::add(const std::string& key) {
  std::lock_guard lk(mu_);
  add_locked(key);
}

void WorkQueue::add_after(const std::string& key, nanoseconds delay) {
  std::lock_guard lk(mu_);
  if (shutting_down_) return;
  if (delay <= nanoseconds(0)) {
    add_locked(key);
    return;
  }
  SteadyTime deadline = clock_.steady_now() + std::min(delay, kForever);
  auto it = delayed_index_.find(key);
  if (it != delayed_index_.end()) {
    if (it->second.first <= deadline) return;  // keep the earlier deadline
    delayed_.erase({it->second.first, it->second.second, key});
    delayed_index_.erase(it);
  }
  uint64_t seq = delayed_seq_++;
  delayed_.emplace(deadline, seq, key);
  delayed_index_.emplace(key, std::pair{deadline, seq});
  if (std::get<2>(*delayed_.begin()) == key) delayed_cv_.notify_one();  // a new earliest
}

void WorkQueue::add_rate_limited(const std::string& key) {
  {
    std::lock_guard lk(mu_);
    if (shutting_down_) return;
  }
  retries_.inc();
  add_after(key, limiter_->when(key));
}

void WorkQueue::forget(const std::string& key) { limiter_->forget(key); }

int WorkQueue::num_requeues(const std::string& key) { return limiter_->num_requeues(key); }

std::optional<std::string> WorkQueue::take_locked() {
  if (shutting_down_ || queue_.empty()) return std::nullopt;
  std::string key = std::move(queue_.front());
  queue_.pop_front();
  set_depth_locked();
  SteadyTime now = clock_.steady_now();
  if (auto it = dirty_.find(key); it != dirty_.end()) {
    queue_duration_.observe(now - it->second);
    dirty_.erase(it);
  }
  processing_.emplace(key, now);
  return key;
}

std::optional<std::string> WorkQueue::get() {
  std::unique_lock lk(mu_);
  ready_cv_.wait(lk, [&] { return shutting_down_ || !queue_.empty(); });
  return take_locked();
}

std::optional<std::string> WorkQueue::get_for(nanoseconds timeout) {
  std::unique_lock lk(mu_);
  ready_cv_.wait_for(lk, std::min(timeout, kForever),
                     [&] { return shutting_down_ || !queue_.empty(); });
  return take_locked();
}

std::optional<std::string> WorkQueue::try_get() {
  std::lock_guard lk(mu_);
  return take_locked();
}

bool WorkQueue::try_claim(const std::string& key) {
  std::lock_guard lk(mu_);
  if (shutting_down_ || dirty_.contains(key) || processing_.contains(key)) return false;
  processing_.emplace(key, clock_.steady_now());
  return true;
}

void WorkQueue::done(const std::string& key) {
  std::lock_guard lk(mu_);
  auto it = processing_.find(key);
  if (it == processing_.end()) return;
  work_duration_.observe(clock_.steady_now() - it->second);
  processing_.erase(it);
  if (dirty_.contains(key)) {
    if (shutting_down_) {
      dirty_.erase(key);
    } else {
      queue_.push_back(key);
      set_depth_locked();
      ready_cv_.notify_one();
    }
  }
  if (processing_.empty()) idle_cv_.notify_all();
}

std::optional<SteadyTime> WorkQueue::process_delayed() {
  std::lock_guard lk(mu_);
  return process_delayed_locked();
}

std::optional<SteadyTime> WorkQueue::process_delayed_locked() {
  SteadyTime now = clock_.steady_now();
  while (!delayed_.empty() && std::get<0>(*delayed_.begin()) <= now) {
    auto node = delayed_.extract(delayed_.begin());
    const std::string& key = std::get<2>(node.value());
    delayed_index_.erase(key);
    add_locked(key);
  }
  if (delayed_.empty()) return std::nullopt;
  return std::get<0>(*delayed_.begin());
}

void WorkQueue::delay_loop() {
  std::unique_lock lk(mu_);
  while (!shutting_down_) {
    std::optional<SteadyTime> next = process_delayed_locked();
    // Sleep until the earliest deadline (on the injected clock), or until add_after() sets
    // an earlier one or the queue shuts down.
    if (!next) delayed_cv_.wait(lk);
    else clock_.wait_until(delayed_cv_, lk, *next);
  }
}

void WorkQueue::shut_down() {
  std::lock_guard lk(mu_);
  shutting_down_ = true;
  queue_.clear();
  dirty_.clear();
  delayed_.clear();
  delayed_index_.clear();
  set_depth_locked();
  ready_cv_.notify_all();
  delayed_cv_.notify_all();
}

void WorkQueue::shut_down_with_drain() {
  shut_down();
  std::unique_lock lk(mu_);
  idle_cv_.wait(lk, [&] { return processing_.empty(); });
}

bool WorkQueue::shutting_down() const {
  std::lock_guard lk(mu_);
  return shutting_down_;
}

size_t WorkQueue::size() const {
  std::lock_guard lk(mu_);
  return queue_.size();
}

size_t WorkQueue::delayed_size() const {
  std::lock_guard lk(mu_);
  return delayed_.size();
}

size_t WorkQueue::processing() const {
  std::lock_guard lk(mu_);
  return processing_.size();
}

bool WorkQueue::is_processing(const std::string& key) const {
  std::lock_guard lk(mu_);
  return processing_.count(key) > 0;
}

bool WorkQueue::idle() const {
  std::lock_guard lk(mu_);
  return queue_.empty() && delayed_.empty() && processing_.empty();
}

}  // namespace kos::client
