// The etcd v3 backend of the Store: every call is one gRPC request to an etcd cluster (KV
// Range/Txn/Compact), every Watch one Watch stream. Keys are used as given. Each call
// returns within about OpenOptions::request_timeout.
//
// Mapping: create = Txn If(mod_revision(key) == 0) Then(Put); update/remove = Txn
// If(mod_revision(key) == expected, or > 0 when expected is 0) Then(Put/DeleteRange with
// prev_kv) Else(Range key), whose result tells kNotFound from kConflict; get/list = Range
// (list: [max(prefix, start_key), prefix_end(prefix)) with etcd's `more` flag); compact =
// Compact(physical). Errors: OUT_OF_RANGE "...compacted" -> kCompacted, "...future
// revision" -> kInvalid (compact() to a compacted revision succeeds); INVALID_ARGUMENT ->
// kBadRequest; UNAVAILABLE and RESOURCE_EXHAUSTED -> kUnavailable; DEADLINE_EXCEEDED ->
// kTimeout; anything else kInternal. Messages name the operation, key and gRPC status.
//
// Endpoints and fail-over: one gRPC channel (one HTTP/2 connection) per endpoint. Calls go
// to the current endpoint; when it fails (UNAVAILABLE, DEADLINE_EXCEEDED, no connection
// within dial_timeout) the next one becomes current for every caller. An endpoint whose last
// connection attempt failed is skipped at once, except the last one of a round over all
// endpoints, which is waited for (gRPC reconnects with a backoff of at most 1 s), so a
// single etcd that restarts is used again as soon as it serves. Reads and Compact are
// retried this way until request_timeout has passed since the call began. Writes (Txn) are
// retried only when they cannot have reached a server (no connection, or gRPC reports it
// could not connect); any other transport failure of a write is returned (kUnavailable or
// kTimeout) because the write may or may not have been applied.
//
// Watches: each Watch runs one thread reading its own stream (start_revision = after + 1,
// prev_kv unless WatchOptions::prev is false, progress_notify; after = 0 reads the current
// revision first). watch() checks that the history after `after` is still there, so a
// compacted start fails at once with kCompacted. When the stream breaks it is re-created on the current endpoint from the
// revision after the last one delivered (or after the last progress notification), so no
// event is lost or repeated. An outage, however long, is invisible to next() (it returns no
// events; progress() stands still): the watch keeps trying (backoff up to 1 s, each attempt
// waiting up to dial_timeout for a connection), logs a warning when its stream breaks and
// every 30 s while it stays down, and resumes as soon as an endpoint serves again. Besides
// its store closing (below), a watch ends only when the history it needs was compacted
// meanwhile (kCompacted: etcd answers the re-created stream with its compact_revision) or
// when etcd cancels it (kInternal, with etcd's reason), never because etcd is unreachable.
// A Watch shares the connections with its store, so it may outlive it: destroying the store
// ends its watches (next() returns kCancelled once their queued events are consumed).
// Limitation (etcd's): an event at exactly the compaction revision has no `prev`, as etcd
// looks it up one revision earlier.
//
// Threading: every method may be called from any thread concurrently (the gRPC stubs are
// thread-safe; the only shared mutable state is the current endpoint, an atomic).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "store/open.h"
#include "store/store.h"

namespace kos::store {

class EtcdStore final : public Store {
 public:
  // Connects to an etcd v3 cluster. `endpoints` are client URLs "http://HOST:PORT" (a bare
  // "HOST:PORT" is accepted too), or "https://HOST:PORT" with opts.etcd_tls (verified
  // against its CA, presenting its client certificate), tried in order. Fails with
  // kUnavailable if no endpoint answers within opts.dial_timeout (a TLS handshake that
  // fails looks like that too), kInvalid for a malformed endpoint.
  static Result<std::unique_ptr<Store>> open(const std::vector<std::string>& endpoints,
                                             const OpenOptions& opts = {});

  // Splits the comma-separated endpoint list of an "etcd:" store URL (the part after the
  // scheme). Empty elements are an error (kInvalid).
  static Result<std::vector<std::string>> parse_endpoints(std::string_view list);

  ~EtcdStore() override;
  EtcdStore(const EtcdStore&) = delete;
  EtcdStore& operator=(const EtcdStore&) = delete;

  Result<KeyValue> get(const std::string& key, Revision rev = 0) override;
  Result<ListResult> list(const std::string& prefix, const ListOptions& opts = {}) override;
  Result<KeyValue> create(const std::string& key, const std::string& value) override;
  Result<KeyValue> update(const std::string& key, const std::string& value,
                          Revision expected_mod_revision) override;
  Result<KeyValue> remove(const std::string& key, Revision expected_mod_revision,
                          Revision* deleted_at = nullptr) override;
  using Store::watch;
  Result<std::unique_ptr<Watch>> watch(const std::string& prefix, Revision after, const WatchOptions& opts) override;
  Result<void> compact(Revision rev) override;
  Result<Revision> current_revision() override;

  // The connections and the state shared with watches (defined in etcd_store.cc).
  class Client;

 private:
  explicit EtcdStore(std::shared_ptr<Client> client);
  std::shared_ptr<Client> client_;
};

}  // namespace kos::store
