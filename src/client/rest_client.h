// The REST client: every verb of the Kubernetes API for any resource, on JSON objects,
// and typed for the KOS kinds. Failures are Errors decoded from the server's Status
// (kNotFound, kAlreadyExists, kConflict, kInvalid with causes, kCompacted for 410, ...).
//
// Requests are rate limited (token bucket: qps and burst) and reuse persistent
// connections. A request that could not be sent is retried with backoff until its
// timeout (safe for any verb); reads are also retried when the connection broke after
// sending. Nothing else is retried: a conflict is the caller's to resolve.
//
// Threading: every method is thread-safe and blocks the calling thread; never call them
// from a Transport callback.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <boost/json/value.hpp>

#include "api/json.h"
#include "api/types.h"
#include "client/transport.h"
#include "client/workqueue.h"
#include "common/clock.h"

namespace kos::client {

enum class PatchType { kMerge, kJson };  // application/merge-patch+json, json-patch+json

// Where a resource lives: /apis/GROUP/VERSION/namespaces/NS/PLURAL/NAME/SUB.
struct ResourceRef {
  std::string group;  // "" for core
  std::string version;
  std::string plural;
  bool namespaced = true;

  static ResourceRef of(api::Kind kind);
  static ResourceRef events() { return {"", "v1", "events", true}; }
  static ResourceRef leases() { return {"coordination.k8s.io", "v1", "leases", true}; }
  // The collection path (ns empty: all namespaces) or an object's path.
  std::string path(const std::string& ns, const std::string& name = {},
                   const std::string& sub = {}) const;
};

struct ListOptions {
  std::string label_selector;
  std::string field_selector;
  std::optional<std::string> resource_version;
  std::string resource_version_match;
  int64_t limit = 0;
  std::string continue_token;
  // For watches.
  std::optional<int64_t> timeout_seconds;
  bool allow_bookmarks = false;
  // WatchList: the state first, as ADDED events, up to a BOOKMARK annotated
  // k8s.io/initial-events-end (needs allow_bookmarks and resource_version_match NotOlderThan).
  bool send_initial_events = false;
  std::string query(bool watch) const;  // "?..." or ""
};

struct DeleteOptions {
  std::optional<std::string> uid;               // precondition
  std::optional<std::string> resource_version;  // precondition
  std::string propagation_policy;               // Background, Foreground, Orphan or ""
};

// A page of a list: the items as JSON, the list's resourceVersion and continue token.
struct ListPage {
  std::vector<boost::json::value> items;
  std::string resource_version;
  std::string continue_token;
};

struct ClientOptions {
  double qps = 100;  // <= 0: no client-side rate limit
  int burst = 200;
  std::chrono::milliseconds timeout{30000};
  int read_retries = 3;  // retries of a read whose connection broke after sending
};

class RestClient {
 public:
  RestClient(std::shared_ptr<Transport> transport, const ClientOptions& opts = {});
  // Connects to the server a kubeconfig names.
  static Result<std::shared_ptr<RestClient>> from_kubeconfig(const std::string& path,
                                                             const ClientOptions& opts = {});

  std::shared_ptr<Transport> transport() const { return transport_; }

  // ---- JSON, any resource ----
  Result<boost::json::value> get(const ResourceRef& r, const std::string& ns,
                                 const std::string& name);
  Result<ListPage> list(const ResourceRef& r, const std::string& ns, const ListOptions& opts = {});
  Result<boost::json::value> create(const ResourceRef& r, const std::string& ns,
                                    const boost::json::value& obj);
  // PUT of the object (its metadata.resourceVersion is the precondition, if set).
  Result<boost::json::value> update(const ResourceRef& r, const std::string& ns,
                                    const boost::json::value& obj, bool status = false);
  Result<boost::json::value> patch(const ResourceRef& r, const std::string& ns,
                                   const std::string& name, PatchType type,
                                   const boost::json::value& patch, bool status = false);
  // Returns the object as the server answered (deleted, or marked for deletion).
  Result<boost::json::value> remove(const ResourceRef& r, const std::string& ns,
                                    const std::string& name, const DeleteOptions& opts = {});

  // ---- typed, for the KOS kinds (T = Subnet, NetworkAttachment, IPLock) ----
  template <class T>
  Result<T> get(const std::string& ns, const std::string& name) {
    return decode<T>(get(ResourceRef::of(T::kKind), ns, name));
  }
  template <class T>
  Result<std::vector<T>> list(const std::string& ns, const ListOptions& opts = {},
                              std::string* resource_version = nullptr) {
    std::vector<T> out;
    ListOptions o = opts;
    while (true) {
      auto page = list(ResourceRef::of(T::kKind), ns, o);
      if (!page) return fail(page.error());
      for (auto& v : page->items) {
        auto t = api::from_json<T>(v);
        if (!t) return fail(t.error());
        out.push_back(std::move(*t));
      }
      if (resource_version) *resource_version = page->resource_version;
      if (page->continue_token.empty()) return out;
      o.continue_token = page->continue_token;
      o.resource_version.reset();  // the token carries the list's revision
      o.resource_version_match.clear();
    }
  }
  template <class T>
  Result<T> create(const T& obj) {
    return decode<T>(create(ResourceRef::of(T::kKind), obj.metadata.namespace_, api::to_json(obj)));
  }
  template <class T>
  Result<T> update(const T& obj) {
    return decode<T>(update(ResourceRef::of(T::kKind), obj.metadata.namespace_, api::to_json(obj)));
  }
  template <class T>
  Result<T> update_status(const T& obj) {
    return decode<T>(update(ResourceRef::of(T::kKind), obj.metadata.namespace_, api::to_json(obj), true));
  }
  template <class T>
  Result<void> remove(const std::string& ns, const std::string& name, const DeleteOptions& opts = {}) {
    auto r = remove(ResourceRef::of(T::kKind), ns, name, opts);
    if (!r) return fail(r.error());
    return {};
  }

  // One HTTP exchange with rate limiting, retries and Status decoding; the body of a 2xx.
  Result<boost::json::value> call(HttpRequest req, bool idempotent);

 private:
  template <class T>
  static Result<T> decode(Result<boost::json::value> v) {
    if (!v) return fail(v.error());
    return api::from_json<T>(*v);
  }

  std::shared_ptr<Transport> transport_;
  ClientOptions opts_;
  std::unique_ptr<BucketRateLimiter> limiter_;  // null: unlimited
};

// The query-string form of s (RFC 3986 unreserved characters kept).
std::string url_escape(std::string_view s);

}  // namespace kos::client
