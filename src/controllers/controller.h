// A level-triggered controller: informer handlers enqueue keys; `workers` threads take
// keys from a rate-limited work queue and call reconcile(key), which reads the current
// state and converges. The queue never hands one key to two workers at once; a failed
// reconcile is retried with per-key exponential backoff; a successful one resets it.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "client/workqueue.h"
#include "common/error.h"
#include "common/metrics.h"

namespace kos::controllers {

// What reconcile wants done with its key next.
struct Requeue {
  bool after_backoff = false;  // try again with backoff (e.g. waiting for capacity)
};

class Controller {
 public:
  using Reconcile = std::function<Result<Requeue>(const std::string& key)>;
  Controller(std::string name, int workers, Reconcile reconcile,
             metrics::Registry& registry = metrics::Registry::global());
  ~Controller();

  client::WorkQueue& queue() { return queue_; }
  void enqueue(const std::string& key) { queue_.add(key); }
  // Starts the workers (call after the informers have synced).
  void start();
  // Stops taking keys, waits for the reconciles in flight.
  void stop();

 private:
  void work();
  std::string name_;
  int workers_;
  Reconcile reconcile_;
  client::WorkQueue queue_;
  metrics::Family<metrics::Counter>& results_;
  std::vector<std::thread> threads_;
};

}  // namespace kos::controllers
