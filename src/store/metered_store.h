// A Store decorator that records the latency and the errors of every operation:
// kos_store_operation_duration_seconds{operation} and kos_store_errors_total{operation,code}.
#pragma once

#include <memory>

#include "common/metrics.h"
#include "store/store.h"

namespace kos::store {

class MeteredStore final : public Store {
 public:
  explicit MeteredStore(std::unique_ptr<Store> inner,
                        metrics::Registry& registry = metrics::Registry::global());

  Result<KeyValue> get(const std::string& key, Revision rev) override;
  Result<ListResult> list(const std::string& prefix, const ListOptions& opts) override;
  Result<KeyValue> create(const std::string& key, const std::string& value) override;
  Result<KeyValue> update(const std::string& key, const std::string& value,
                          Revision expected_mod_revision) override;
  Result<KeyValue> remove(const std::string& key, Revision expected_mod_revision,
                          Revision* deleted_at) override;
  using Store::watch;
  Result<std::unique_ptr<Watch>> watch(const std::string& prefix, Revision after, const WatchOptions& opts) override;
  Result<void> compact(Revision rev) override;
  Result<Revision> current_revision() override;

 private:
  template <class F>
  auto timed(const char* op, F&& f) -> decltype(f());

  std::unique_ptr<Store> inner_;
  metrics::Family<metrics::Histogram>& latency_;
  metrics::Family<metrics::Counter>& errors_;
};

}  // namespace kos::store
