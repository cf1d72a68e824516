#include "store/metered_store.h"

namespace kos::store {

MeteredStore::MeteredStore(std::unique_ptr<Store> inner, metrics::Registry& registry)
    : inner_(std::move(inner)),
      latency_(registry.histogram("kos_store_operation_duration_seconds",
                                  "Latency of store operations.", {"operation"})),
      errors_(registry.counter("kos_store_errors_total", "Failed store operations by error.",
                               {"operation", "code"})) {}

template <class F>
auto MeteredStore::timed(const char* op, F&& f) -> decltype(f()) {
  auto t0 = std::chrono::steady_clock::now();
  auto r = f();
  latency_.with({op}).observe(std::chrono::steady_clock::now() - t0);
  if (!r) errors_.with({op, std::string(errc_name(r.error().code))}).inc();
  return r;
}

Result<KeyValue> MeteredStore::get(const std::string& key, Revision rev) {
  return timed("get", [&] { return inner_->get(key, rev); });
}
Result<ListResult> MeteredStore::list(const std::string& prefix, const ListOptions& opts) {
  return timed("list", [&] { return inner_->list(prefix, opts); });
}
Result<KeyValue> MeteredStore::create(const std::string& key, const std::string& value) {
  return timed("create", [&] { return inner_->create(key, value); });
}
Result<KeyValue> MeteredStore::update(const std::string& key, const std::string& value,
                                      Revision expected) {
  return timed("update", [&] { return inner_->update(key, value, expected); });
}
Result<KeyValue> MeteredStore::remove(const std::string& key, Revision expected,
                                      Revision* deleted_at) {
  return timed("delete", [&] { return inner_->remove(key, expected, deleted_at); });
}
Result<std::unique_ptr<Watch>> MeteredStore::watch(const std::string& prefix, Revision after,
                                                    const WatchOptions& opts) {
  return timed("watch", [&] { return inner_->watch(prefix, after, opts); });
}
Result<void> MeteredStore::compact(Revision rev) {
  return timed("compact", [&] { return inner_->compact(rev); });
}
Result<Revision> MeteredStore::current_revision() {
  return timed("current_revision", [&] { return inner_->current_revision(); });
}

}  // namespace kos::store
