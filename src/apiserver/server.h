// The KOS API server: serves network.example.com/v1alpha1 (Subnet, NetworkAttachment,
// IPLock) and core/v1 Events over HTTP with Kubernetes semantics, on any Store.
//
// Components: one WatchCache + Registry per resource, the garbage collector, discovery and
// OpenAPI, metrics; the HTTP server (src/common/http_server.h) calls handle() on a worker
// thread for every request, which runs the request pipeline: resolve (request_info.h),
// authenticate (authentication.h), authorize (authorization.h), serve, with admission
// (admission.h) in the registry's writes.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "apiserver/audit.h"
#include "apiserver/authentication.h"
#include "apiserver/authorization.h"
#include "apiserver/limits.h"
#include "apiserver/registry.h"
#include "apiserver/request_info.h"
#include "apiserver/watch_cache.h"
#include "common/clock.h"
#include "common/http_server.h"
#include "common/metrics.h"
#include "store/store.h"

namespace kos::apiserver {

class GarbageCollector;

struct ServerOptions {
  std::string address = "127.0.0.1";
  uint16_t port = 6443;  // 0: any free port
  int io_threads = 2;
  int worker_threads = 64;
  WatchCache::Options cache;
  // Bytes a watch may have queued before it is closed with 410 (it cannot keep up).
  size_t watch_queue_bytes = 16 << 20;
  // Bytes all watches together may have queued, initial states included (0: no cap). A
  // watch that holds more than its share when the cap is near is closed with 410; watches
  // that keep up are not (http::StreamBudget).
  size_t watch_memory_budget = size_t{1} << 30;
  // TLS with client certificates verified against tls->client_ca_pem. Unset: plain HTTP,
  // where requests without credentials act as an admin (tests, --insecure-listen).
  std::optional<http::TlsOptions> tls;
  // Bearer tokens (kube-apiserver's --token-auth-file format); empty: none.
  std::string token_file;
  // The audit log (empty path: none).
  AuditLog::Options audit;
  // Requests per second and watches per user (admins and controllers exempt); zeros: no limits.
  UserLimits::Options limits;
};

class ApiServer {
 public:
  // Fills the watch caches from `store`, starts the garbage collector and listens.
  static Result<std::unique_ptr<ApiServer>> start(store::Store& store, const ServerOptions& opts,
                                                  const Clock& clock = RealClock::instance());
  ~ApiServer();

  uint16_t port() const;
  std::string url() const;  // https://ADDRESS:PORT (http:// without TLS)
  void stop();

  // One request; what the HTTP server calls. Public for in-process tests, which pass the
  // peer (a client certificate's CN and O) themselves.
  http::Reply handle(const http::Request& req, const http::Peer& peer = {});

  struct Resource;
  Resource* resource(std::string_view group, std::string_view plural);

 private:
  ApiServer(store::Store& store, const ServerOptions& opts, const Clock& clock);
  Result<void> init();
  // The pipeline's stages (see handle()).
  Result<UserInfo> authenticate(const http::Request& req, const http::Peer& peer,
                                const RequestInfo& ri) const;
  Attributes attributes(const RequestInfo& ri, const UserInfo& user) const;
  http::Reply serve(const http::Request& req, const RequestInfo& ri, const UserInfo& user,
                    std::string& verb, std::string& resource_name);
  http::Reply serve_review(const http::Request& req, const RequestInfo& ri, const UserInfo& user);

  store::Store& store_;
  ServerOptions opts_;
  const Clock& clock_;
  std::shared_ptr<http::StreamBudget> watch_budget_;  // shared by every watch stream
  std::vector<std::unique_ptr<Resource>> resources_;
  std::unique_ptr<Admission> subnet_admission_;
  std::unique_ptr<Authenticator> authenticator_;
  std::unique_ptr<Authorizer> authorizer_;
  std::unique_ptr<AuditLog> audit_;
  std::unique_ptr<UserLimits> limits_;
  std::unique_ptr<GarbageCollector> gc_;
  std::unique_ptr<http::Server> http_;
};

}  // namespace kos::apiserver
