#include "controllers/controller.h"

#include <spdlog/spdlog.h>

namespace kos::controllers {

namespace {

// Wraps `reconcile` so that `active` counts the reconciles in flight (busy workers).
Controller::Reconcile counted(Controller::Reconcile reconcile, metrics::Gauge& active) {
  return [reconcile = std::move(reconcile), &active](const std::string& key) {
    active.inc();
    auto r = reconcile(key);
    active.dec();
    return r;
  };
}

}  // namespace

Controller::Controller(std::string name, int workers, Reconcile reconcile,
                       metrics::Registry& registry)
    : name_(std::move(name)), workers_(std::max(1, workers)),
      reconcile_(counted(std::move(reconcile),
                         registry.gauge("kos_controller_active_workers",
                                        "Workers running a reconcile now (busy workers).",
                                        {"controller"}).with({name_}))),
      queue_(name_, registry),
      results_(registry.counter("kos_controller_reconciles_total",
                                "Reconciles by controller and result.", {"controller", "result"})) {}

Controller::~Controller() { stop(); }

void Controller::start() {
  for (int i = 0; i < workers_; ++i) threads_.emplace_back([this] { work(); });
}

void Controller::stop() {
  queue_.shut_down_with_drain();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void Controller::work() {
  while (auto key = queue_.get()) {
    auto r = reconcile_(*key);
    if (!r) {
      results_.with({name_, "error"}).inc();
      spdlog::info("{}: will retry key={} error={}", name_, *key, r.error().message);
      queue_.add_rate_limited(*key);
    } else if (r->after_backoff) {
      results_.with({name_, "requeue"}).inc();
      queue_.add_rate_limited(*key);
    } else {
      results_.with({name_, "success"}).inc();
      queue_.forget(*key);
    }
    queue_.done(*key);
  }
}

}  // namespace kos::controllers
