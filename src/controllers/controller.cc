#include "controllers/controller.h"

#include <spdlog/spdlog.h>

#include "common/thread_name.h"

namespace kos::controllers {

namespace {

metrics::Gauge& active_gauge(metrics::Registry& registry, const std::string& name) {
  return registry.gauge("kos_controller_active_workers", "Workers running a reconcile now (busy workers).",
                        {"controller"}).with({name});
}

metrics::Counter& inline_counter(metrics::Registry& registry, const std::string& name) {
  return registry.counter("kos_controller_inline_reconciles_total",
                          "Reconciles run on the thread that delivered the event, no worker woken.",
                          {"controller"}).with({name});
}

client::WorkQueue::Options queue_options(const Clock* clock) {
  client::WorkQueue::Options o;
  if (clock) o.clock = clock;
  return o;
}

}  // namespace

Controller::Controller(std::string name, int workers, Reconcile reconcile,
                       metrics::Registry& registry, const Clock* clock)
    : Controller(std::move(name), workers, 1, ReconcileBatch{}, registry, clock) {
  reconcile_ = std::move(reconcile);  // work() calls it when there is no batch reconcile
}

Controller::Controller(std::string name, int workers, size_t max_batch, ReconcileBatch reconcile,
                       metrics::Registry& registry, const Clock* clock)
    : name_(std::move(name)), workers_(std::max(1, workers)), max_batch_(std::max<size_t>(1, max_batch)),
      reconcile_batch_(std::move(reconcile)), active_(active_gauge(registry, name_)),
      queue_(name_, registry, queue_options(clock)),
      results_(registry.counter("kos_controller_reconciles_total",
                                "Reconciles by controller and result.", {"controller", "result"})),
      inline_(inline_counter(registry, name_)) {}

Controller::~Controller() { stop(); }

void Controller::start() {
  for (int i = 0; i < workers_; ++i) threads_.push_back(named_thread("kos-worker", [this] { work(); }));
  started_ = true;
}

void Controller::reconcile_now(const std::string& key, const InlineReconcile& fn) {
  if (!started_ || !queue_.try_claim(key)) return queue_.add(key);
  active_.inc();
  auto r = fn();
  active_.dec();
  if (!r) {
    queue_.done(key);
    return queue_.add(key);
  }
  inline_.inc();
  finish(key, *r);
}

void Controller::stop() {
  started_ = false;
  queue_.shut_down_with_drain();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void Controller::work() {
  while (auto key = queue_.get()) {
    if (!reconcile_batch_) {
      active_.inc();
      auto r = reconcile_(*key);
      active_.dec();
      finish(*key, r);
      continue;
    }
    std::vector<std::string> keys{std::move(*key)};
    while (keys.size() < max_batch_) {
      auto more = queue_.try_get();
      if (!more) break;
      keys.push_back(std::move(*more));
    }
    active_.inc();
    auto results = reconcile_batch_(keys);
    active_.dec();
    for (size_t i = 0; i < keys.size(); ++i)
      finish(keys[i], i < results.size() ? results[i] : fail(Errc::kInternal, "no result for the key"));
  }
}

void Controller::finish(const std::string& key, const Result<Requeue>& r) {
  if (!r) {
    results_.with({name_, "error"}).inc();
    spdlog::info("{}: will retry key={} error={}", name_, key, r.error().message);
    queue_.add_rate_limited(key);
  } else if (r->after_backoff) {
    results_.with({name_, "requeue"}).inc();
    queue_.add_rate_limited(key);
  } else if (r->after.count() > 0) {
    results_.with({name_, "requeue"}).inc();
    queue_.forget(key);
    queue_.add_after(key, r->after);
  } else {
    results_.with({name_, "success"}).inc();
    queue_.forget(key);
  }
  queue_.done(key);
}

}  // namespace kos::controllers
