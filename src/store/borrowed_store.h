// A Store that forwards every call to another store it does not own: to give several
// owners (two API servers in one test process, each behind its own FaultStore) one store.
#pragma once

#include "store/store.h"

namespace kos::store {

class BorrowedStore final : public Store {
 public:
  explicit BorrowedStore(Store& inner) : inner_(inner) {}

  Result<KeyValue> get(const std::string& key, Revision rev) override { return inner_.get(key, rev); }
  Result<ListResult> list(const std::string& prefix, const ListOptions& opts) override {
    return inner_.list(prefix, opts);
  }
  Result<KeyValue> create(const std::string& key, const std::string& value) override {
    return inner_.create(key, value);
  }
  Result<KeyValue> update(const std::string& key, const std::string& value, Revision expected) override {
    return inner_.update(key, value, expected);
  }
  Result<KeyValue> remove(const std::string& key, Revision expected, Revision* deleted_at) override {
    return inner_.remove(key, expected, deleted_at);
  }
  using Store::watch;
  Result<std::unique_ptr<Watch>> watch(const std::string& prefix, Revision after, const WatchOptions& opts) override {
    return inner_.watch(prefix, after, opts);
  }
  Result<void> compact(Revision rev) override { return inner_.compact(rev); }
  Result<Revision> current_revision() override { return inner_.current_revision(); }

 private:
  Store& inner_;
};

}  // namespace kos::store
