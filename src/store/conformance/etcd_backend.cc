#include "store/conformance/etcd_backend.h"

#include "store/etcd/etcd_store.h"

namespace kos::store::testing {

std::string EtcdBackend::url() const { return "etcd:" + etcd_.endpoint(); }

Result<std::unique_ptr<Store>> EtcdBackend::open(const OpenOptions& opts) {
  return EtcdStore::open({etcd_.endpoint()}, opts);
}

void EtcdBackend::crash_store() { etcd_.kill9(); }

void EtcdBackend::recover_store() { etcd_.restart(); }

}  // namespace kos::store::testing
