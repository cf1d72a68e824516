// A rate-limited work queue of string keys, as client-go's workqueue: the queue that feeds a
// level-triggered controller. A key queued twice is handed out once; a key is never handed
// to two workers at once (a key added while it is being processed is handed out again only
// after done()); failures back off per key, bounded by an overall token bucket.
//
// Time: every delay is measured on the injected Clock. Delayed keys move to the queue when
// process_delayed() runs: with Options::delay_thread (the default) an internal thread calls
// it whenever the earliest delay is due; without it the owner calls it, either from its
// event loop (arming a timer for the deadline it returns) or from a test after advancing a
// FakeClock, so that tests need no sleeps.
//
// Threading: every method may be called from any thread, concurrently.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/clock.h"
#include "common/metrics.h"

namespace kos::client {

using SteadyTime = std::chrono::steady_clock::time_point;

// How long to wait before retrying a key, as client-go's workqueue.RateLimiter.
// Implementations are thread-safe.
class RateLimiter {
 public:
  virtual ~RateLimiter() = default;
  // The delay before `key` should be retried; records one more failure for it.
  virtual std::chrono::nanoseconds when(const std::string& key) = 0;
  // Stops tracking `key`: its next failure starts from the first delay again.
  virtual void forget(const std::string& key) = 0;
  // How many failures have been recorded for `key` since it was last forgotten.
  virtual int num_requeues(const std::string& key) = 0;
};

// base * 2^failures per key, capped at max_delay.
class ExponentialFailureRateLimiter final : public RateLimiter {
 public:
  ExponentialFailureRateLimiter(std::chrono::nanoseconds base_delay,
                                std::chrono::nanoseconds max_delay);
  std::chrono::nanoseconds when(const std::string& key) override;
  void forget(const std::string& key) override;
  int num_requeues(const std::string& key) override;

 private:
  const std::chrono::nanoseconds base_, max_;
  std::mutex mu_;
  std::unordered_map<std::string, int> failures_;
};

// An overall token bucket of `burst` tokens refilled at `qps` per second (per the clock).
// Each when() reserves one token; when none is left the reservation is honoured later, so
// consecutive calls on an empty bucket return 1/qps, 2/qps, ... Does not track keys.
class BucketRateLimiter final : public RateLimiter {
 public:
  // `clock` must outlive the limiter.
  BucketRateLimiter(double qps, int burst, const Clock& clock);
  std::chrono::nanoseconds when(const std::string& key) override;
  void forget(const std::string&) override {}
  int num_requeues(const std::string&) override { return 0; }

 private:
  const double qps_;
  const double burst_;
  const Clock& clock_;
  std::mutex mu_;
  double tokens_;  // negative: reservations not yet covered
  SteadyTime last_;
};

// The longest delay of its limiters; forget() forgets in all of them.
class MaxOfRateLimiter final : public RateLimiter {
 public:
  explicit MaxOfRateLimiter(std::vector<std::unique_ptr<RateLimiter>> limiters);
  std::chrono::nanoseconds when(const std::string& key) override;
  void forget(const std::string& key) override;
  int num_requeues(const std::string& key) override;

 private:
  std::vector<std::unique_ptr<RateLimiter>> limiters_;
};

struct RateLimits {
  std::chrono::nanoseconds base_delay = std::chrono::milliseconds(5);
  std::chrono::nanoseconds max_delay = std::chrono::seconds(1000);
  double qps = 10;
  int burst = 100;
};

// client-go's DefaultControllerRateLimiter: max(per-key exponential backoff, token bucket).
std::unique_ptr<RateLimiter> default_controller_rate_limiter(const Clock& clock,
                                                             const RateLimits& limits = {});

struct WorkQueueOptions {
  // Measures delays and metric durations. Must outlive the queue.
  const Clock* clock = &RealClock::instance();
  // Used by add_rate_limited(); null: default_controller_rate_limiter(*clock, limits).
  std::unique_ptr<RateLimiter> rate_limiter;
  RateLimits limits;
  // true: an internal thread moves delayed keys to the queue when they fall due on the
  // clock (a FakeClock's advance() included). false: the owner calls process_delayed().
  bool delay_thread = true;
};

class WorkQueue {
 public:
  using Options = WorkQueueOptions;

  // Metrics are recorded in `registry` (which must outlive the queue) with label name=`name`;
  // give each queue its own name (queues sharing one also share their metrics).
  WorkQueue(std::string name, metrics::Registry& registry, Options opts = {});
  // Shuts down (without drain) and joins the internal thread.
  ~WorkQueue();
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // Queues `key` unless it is queued already. A key being processed is queued again when
  // done() is called for it. Ignored after shutdown.
  void add(const std::string& key);
  // Queues `key` once `delay` has elapsed on the clock (at once if delay <= 0). A key already
  // waiting keeps the earlier of its two deadlines. Ignored after shutdown.
  void add_after(const std::string& key, std::chrono::nanoseconds delay);
  // add_after(key, rate_limiter.when(key)): a retry after a failure.
  void add_rate_limited(const std::string& key);
  // The key succeeded: its backoff starts over. Does not remove it from the queue.
  void forget(const std::string& key);
  int num_requeues(const std::string& key);

  // Blocks until a key is available and hands it out; the caller owns it until done(key).
  // nullopt once the queue is shut down (keys still queued are then dropped).
  std::optional<std::string> get();
  // As get(), waiting at most `timeout` of real (steady_clock) time: a blocking timeout, not
  // a scheduled delay, so it does not follow the injected clock.
  std::optional<std::string> get_for(std::chrono::nanoseconds timeout);
  // As get(), without waiting.
  std::optional<std::string> try_get();
  // Hands `key` to the caller as get() would, if no one holds it and it is not queued (a
  // delayed key may be claimed: whoever runs it later reads the state as it is then); the
  // caller owns it until done(key). false after shutdown. For work done on the thread that
  // saw the event, without the hand-off to a worker (Controller::reconcile_now).
  bool try_claim(const std::string& key);
  // Processing of `key` (handed out by get) has finished. If it was added meanwhile it is
  // queued again. Unknown keys are ignored.
  void done(const std::string& key);

  // Moves the delayed keys whose deadline has passed on the clock to the queue, earliest
  // deadline first (ties in the order added). Returns the deadline of the next delayed key,
  // if any.
  std::optional<SteadyTime> process_delayed();

  // Stops accepting keys and wakes every get() (they return nullopt). Delayed and queued keys
  // are dropped (unlike client-go, which hands queued keys out until empty: a level-triggered
  // controller loses nothing by not starting them); keys being processed may still be done().
  void shut_down();
  // As shut_down(), then blocks until every key being processed is done().
  void shut_down_with_drain();
  bool shutting_down() const;

  size_t size() const;          // keys queued and ready to be handed out
  size_t delayed_size() const;  // keys waiting for their delay
  size_t processing() const;    // keys handed out and not yet done
  // `key` has been handed out and is not done yet. A key that is not may still be queued or
  // delayed: whoever gets it later reads the state as it is then.
  bool is_processing(const std::string& key) const;
  bool idle() const;            // nothing queued, delayed or being processed (one snapshot)

 private:
  void add_locked(const std::string& key);
  void set_depth_locked();
  std::optional<SteadyTime> process_delayed_locked();
  void delay_loop();
  std::optional<std::string> take_locked();

  const std::string name_;
  const Clock& clock_;
  std::unique_ptr<RateLimiter> limiter_;

  metrics::Gauge& depth_;
  metrics::Counter& adds_;
  metrics::Histogram& queue_duration_;
  metrics::Histogram& work_duration_;
  metrics::Counter& retries_;

  mutable std::mutex mu_;
  std::condition_variable ready_cv_;    // a key was queued, or shutdown
  std::condition_variable idle_cv_;     // a key was done (for drain)
  std::condition_variable delayed_cv_;  // the earliest deadline changed, or shutdown
  bool shutting_down_ = false;
  std::deque<std::string> queue_;
  std::unordered_map<std::string, SteadyTime> dirty_;  // queued or re-added: when added
  std::unordered_map<std::string, SteadyTime> processing_;  // handed out: since when
  // Delayed keys: (deadline, sequence, key) in order, and each key's entry.
  std::set<std::tuple<SteadyTime, uint64_t, std::string>> delayed_;
  std::unordered_map<std::string, std::pair<SteadyTime, uint64_t>> delayed_index_;
  uint64_t delayed_seq_ = 0;
  std::thread delay_thread_;
};

}  // namespace kos::client
