// The etcd backend for the conformance suite: a real etcd server (EtcdProcess) per Backend,
// reached through EtcdStore.
#pragma once

#include <memory>
#include <string>

#include "store/conformance/backend.h"
#include "test/support/etcd_process.h"

namespace kos::store::testing {

class EtcdBackend final : public Backend {
 public:
  // Starts the server; throws std::runtime_error (with etcd's log) if it does not come up.
  EtcdBackend() = default;

  std::string name() const override { return "etcd"; }
  // "etcd:http://127.0.0.1:PORT", for open_store() and writer processes.
  std::string url() const override;
  Result<std::unique_ptr<Store>> open(const OpenOptions& opts = {}) override;
  // SIGKILL of the etcd server.
  void crash_store() override;
  // Restarts etcd on the same data directory and ports and waits until it serves.
  void recover_store() override;

  kos::testing::EtcdProcess& etcd() { return etcd_; }

 private:
  kos::testing::EtcdProcess etcd_;
};

}  // namespace kos::store::testing
