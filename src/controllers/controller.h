// A level-triggered controller: informer handlers enqueue keys; `workers` threads take
// keys from a rate-limited work queue and call reconcile(key), which reads the current
// state and converges. The queue never hands one key to two workers at once; a failed
// reconcile is retried with per-key exponential backoff; a successful one resets it.
// A batch controller hands a worker up to `max_batch` ready keys at once (the agent turns
// the fabric work of many keys into one Fabric::apply); each key's result is its own.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "client/workqueue.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/metrics.h"

namespace kos::controllers {

// What reconcile wants done with its key next.
struct Requeue {
  bool after_backoff = false;  // try again with backoff (e.g. waiting for capacity)
  // > 0: look again after this long (a planned second look, not a failure: no backoff).
  std::chrono::milliseconds after{0};
};

class Controller {
 public:
  using Reconcile = std::function<Result<Requeue>(const std::string& key)>;
  // Result i is keys[i]'s.
  using ReconcileBatch = std::function<std::vector<Result<Requeue>>(const std::vector<std::string>& keys)>;
  // `clock` (null: the real one) times the queue's delays and backoffs; it must outlive
  // the controller.
  Controller(std::string name, int workers, Reconcile reconcile,
             metrics::Registry& registry = metrics::Registry::global(), const Clock* clock = nullptr);
  Controller(std::string name, int workers, size_t max_batch, ReconcileBatch reconcile,
             metrics::Registry& registry = metrics::Registry::global(), const Clock* clock = nullptr);
  ~Controller();

  client::WorkQueue& queue() { return queue_; }
  void enqueue(const std::string& key) { queue_.add(key); }
  // The reconcile of `key` on the calling thread, now, as a worker would run it, when a
  // worker could take the key now (the controller has started, the key is neither queued nor
  // held: the queue's claim keeps one key to one thread); else the key is queued. `fn`
  // returns nullopt to decline (the key needs a worker: its reconcile may block), and the
  // key is queued then. For cheap reconciles that never block, on an event loop (an agent's
  // remote mappings on its client transport's thread): handing one to a worker costs a
  // wake-up and two context switches, more than the work. Failures back off as a worker's.
  using InlineReconcile = std::function<std::optional<Result<Requeue>>()>;
  void reconcile_now(const std::string& key, const InlineReconcile& fn);
  // Starts the workers (call after the informers have synced).
  void start();
  // Stops taking keys, waits for the reconciles in flight.
  void stop();

 private:
  void work();
  void finish(const std::string& key, const Result<Requeue>& r);
  std::string name_;
  int workers_;
  size_t max_batch_ = 1;
  Reconcile reconcile_;
  ReconcileBatch reconcile_batch_;
  metrics::Gauge& active_;  // busy workers (and inline reconciles in flight)
  client::WorkQueue queue_;
  metrics::Family<metrics::Counter>& results_;
  metrics::Counter& inline_;  // reconciles reconcile_now ran on its caller's thread
  std::vector<std::thread> threads_;
  std::atomic<bool> started_{false};
};

}  // namespace kos::controllers
