// Picks a Store implementation from a URL. The only place (with src/cmd) that names the
// concrete backends.
//   sqlite:PATH                     embedded store in the SQLite file PATH (the default)
//   etcd:http://H:P[,http://H:P...] etcd v3 cluster, endpoints tried in order on failure
//   etcd:https://H:P[,...]          the same over TLS (OpenOptions::etcd_tls: the CA, and a
//                                   client certificate for etcd's --client-cert-auth)
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "common/error.h"
#include "store/store.h"

namespace kos::store {

struct OpenOptions {
  // Embedded store: how often history older than one interval is compacted. 0 = never.
  std::chrono::milliseconds compaction_interval = std::chrono::minutes(5);
  // etcd: how long to wait for an endpoint before trying the next one / failing.
  std::chrono::milliseconds dial_timeout = std::chrono::seconds(5);
  std::chrono::milliseconds request_timeout = std::chrono::seconds(10);
  // etcd over TLS (https endpoints): PEM contents. Empty ca_pem: the system's roots.
  struct EtcdTls {
    std::string ca_pem;
    std::string cert_pem;  // with key_pem: a client certificate
    std::string key_pem;
  };
  std::optional<EtcdTls> etcd_tls;
};

Result<std::unique_ptr<Store>> open_store(const std::string& url, const OpenOptions& opts = {});

}  // namespace kos::store
