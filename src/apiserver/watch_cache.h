// The watch cache of one resource: one store watch feeds an in-memory copy of every
// object and a window of recent events. Lists at resourceVersion=0 (or not older than a
// revision the cache has reached) and all watches are served from it.
//
// Fan-out: each event is serialized at most once per (event type, output format), and
// offered only to the watchers that can match it. Watchers whose field selector pins an
// indexed field (ResourceInfo::indexed_fields, e.g. spec.node or status.addressVNI) sit
// in a bucket for that value, so an event costs O(watchers that can match it), not
// O(all watchers). A watcher whose sink refuses an event (it cannot keep up) is closed
// with a 410 error instead of being buffered without bound.
//
// Threading: one thread reads the store watch and applies events; list(), watch() and
// stop_watch() may be called from any thread. One mutex orders everything, so a new
// watcher's initial events and the live events that follow them never overlap or gap.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "apiserver/resource.h"
#include "common/clock.h"
#include "store/store.h"

namespace kos::apiserver {

// One object as cached: its JSON (with metadata.resourceVersion set) serialized, plus
// what selectors and the garbage collector need. Only the text is kept (memory is the
// API server's scaling limit: a parsed tree costs several times the text); obj() parses
// it again for the paths that need a tree (updates, patches, tables).
struct CachedObject {
  std::string key;
  std::string ns;
  std::string name;
  std::string uid;
  store::Revision rv = 0;
  std::string json;
  Fields fields;
  std::map<std::string, std::string> labels;
  std::vector<api::OwnerReference> owners;
  bool deleting = false;  // deletionTimestamp is set
  std::vector<std::string> finalizers;
  std::chrono::system_clock::time_point created;

  std::optional<std::string_view> field(std::string_view f) const;
  boost::json::object obj() const;
};
using CachedPtr = std::shared_ptr<const CachedObject>;

// Builds a CachedObject from a stored value (JSON without resourceVersion).
Result<CachedPtr> make_cached(const Strategy& strategy, const std::string& key,
                              const std::string& value, store::Revision rv);

enum class WatchFormat { kJson, kTable, kTableWithObject };

// Where a watcher's serialized event lines go (the HTTP stream).
class WatchSink {
 public:
  virtual ~WatchSink() = default;
  // Queues one line (ending in '\n'). Returns false if the receiver is too far behind or
  // the server's watch memory is spent; `initial` lines (a new watch's ADDED events and
  // replayed history) are refused only for the memory (the watch then fails with 410).
  virtual bool send(std::shared_ptr<const std::string> line, bool initial) = 0;
  // The watch is over: error is the Status to send as an ERROR event, if any.
  virtual void close(std::optional<Error> error) = 0;
};

struct WatchRequest {
  std::string ns;  // empty = all namespaces
  api::LabelSelector labels;
  api::FieldSelector fields;
  // nullopt: send the current state as ADDED events first (resourceVersion unset or "0");
  // N: every event after revision N.
  std::optional<store::Revision> since;
  bool bookmarks = false;
  WatchFormat format = WatchFormat::kJson;
};

// The server's watch memory is spent: a watch's initial events (its state, or the history
// it resumes from) do not fit. 410, so the client lists (with a limit) and watches.
Error initial_events_over_budget();

class WatchCache {
 public:
  struct Options {
    size_t history = 10000;  // recent events kept for watches that resume from a revision
    // How often each watcher that asked for bookmarks gets one (kube-apiserver: about a
    // minute); sent in one-second slices of the watchers.
    std::chrono::milliseconds bookmark_interval = std::chrono::seconds(60);
  };
  struct Stats {
    size_t objects = 0;
    size_t watchers = 0;
    uint64_t events = 0;           // store events applied
    uint64_t lines_serialized = 0; // event lines built (at most one per type and format)
    uint64_t lines_sent = 0;       // lines handed to watchers
    uint64_t watchers_evaluated = 0;  // selector evaluations during fan-out
  };

  WatchCache(store::Store& store, const Strategy& strategy, const Clock& clock, Options opts);
  WatchCache(store::Store& store, const Strategy& strategy, const Clock& clock)
      : WatchCache(store, strategy, clock, Options{}) {}
  ~WatchCache();

  // Lists the store and starts following it. Returns once the cache is filled.
  Result<void> start();
  void stop();

  const Strategy& strategy() const { return strategy_; }
  store::Revision revision() const;
  // Waits up to `timeout` until the cache has applied every event up to `rv`.
  bool wait_for(store::Revision rv, std::chrono::milliseconds timeout) const;
  // The same, first asking the store watch to report its progress at once (a commit to
  // other keys moves the revision the cache has reached without an event for it). Without
  // such a request (the store cannot answer one), only whether the cache is there now.
  bool catch_up(store::Revision rv, std::chrono::milliseconds timeout);

  // The matching objects in key order, and the cache's revision.
  struct Snapshot {
    store::Revision rv = 0;
    std::vector<CachedPtr> items;
  };
  Snapshot list(const std::string& ns, const api::LabelSelector& labels,
                const api::FieldSelector& fields) const;
  // Whether any object matches: the answer of list() without building it (an
  // authorization check), stopping at the first match.
  bool any(const std::string& ns, const api::LabelSelector& labels, const api::FieldSelector& fields) const;
  CachedPtr get(const std::string& ns, const std::string& name) const;
  // Objects whose ownerReferences name `owner_uid`.
  std::vector<CachedPtr> dependents(const std::string& owner_uid) const;
  // The namespaces holding objects whose store key starts with key_prefix() + `name_prefix`
  // (kinds with cluster_unique_names, where the key is the name), with a count each.
  std::map<std::string, size_t> namespaces_with_name_prefix(std::string_view name_prefix) const;

  // Registers a watcher. kCompacted (410) if `since` is older than the event window.
  Result<uint64_t> watch(WatchRequest req, std::shared_ptr<WatchSink> sink);
  void stop_watch(uint64_t id);

  // Called for every applied event (after the watchers), on the cache's thread: the
  // garbage collector's hook. prev is null for a create, obj is null for a delete.
  // After a relist (the store watch broke) it is called for every difference between the
  // old and the new contents, so a delete the watch missed is reported too.
  using Listener = std::function<void(const CachedPtr& prev, const CachedPtr& obj)>;
  void add_listener(Listener l);

  Stats stats() const;

  // The line of one event in a format (JSON or a Table with one row).
  std::string event_line(std::string_view type, const CachedObject& obj, WatchFormat format) const;
  // initial_events_end: annotated k8s.io/initial-events-end (the end of a WatchList's state).
  std::string bookmark_line(store::Revision rv, bool initial_events_end = false) const;

 private:
  struct Watcher;
  struct Event {
    store::Revision rv;
    CachedPtr obj;   // the new state; for a delete, the last state at the delete's revision
    CachedPtr prev;  // null for a create
    bool deleted;
    // Lazily built lines: [ADDED, MODIFIED, DELETED] x format.
    mutable std::shared_ptr<const std::string> lines[3][3];
  };

  Result<void> relist();
  void run();
  void apply(const std::vector<store::Event>& events);
  void advance(store::Revision rv);
  void dispatch(const Event& e);
  bool deliver(Watcher& w, const Event& e, int type);  // false: the sink refused it
  bool matches(const Watcher& w, const CachedObject& o) const;
  // Calls f(object) for each object the probe matches, in key order, until f returns false.
  template <class F>
  void select_locked(const Watcher& probe, F f) const;
  std::vector<CachedPtr> select_locked(const Watcher& probe) const;
  // A watcher that is only a namespace and selectors, for list() and any().
  static Watcher probe(const std::string& ns, const api::LabelSelector& labels, const api::FieldSelector& fields);
  void index_object(const CachedObject& o, bool add);
  void index_watcher(const std::shared_ptr<Watcher>& w);
  void unindex_watcher(const Watcher& w);
  void close_watcher(uint64_t id, std::optional<Error> error);
  void send_bookmarks(uint64_t slice, uint64_t slices);
  std::shared_ptr<const std::string> line_for(const Event& e, int type, WatchFormat f);

  store::Store& store_;
  const Strategy& strategy_;
  const Clock& clock_;
  Options opts_;

  mutable std::shared_mutex mu_;
  mutable std::condition_variable_any advanced_;
  std::map<std::string, CachedPtr, std::less<>> objects_;  // by store key
  // obj_index_[i][value]: keys of the objects whose indexed_fields[i] has that value, so a
  // list pinned to one value (an agent's spec.node or VNI) reads only those. The keys are
  // views of the indexed CachedObject's own key: an object is unindexed before the
  // object it replaces it in the index (apply() keeps the old one alive until then).
  std::vector<std::unordered_map<std::string, std::set<std::string_view>>> obj_index_;
  std::unordered_multimap<std::string, std::string> by_owner_;  // owner uid -> key
  std::deque<Event> history_;
  store::Revision history_floor_ = 0;  // events after this revision are in history_
  store::Revision rv_ = 0;

  std::unordered_map<uint64_t, std::shared_ptr<Watcher>> watchers_;
  // index_[i][value]: watchers pinning indexed_fields[i] to value.
  std::vector<std::unordered_map<std::string, std::vector<Watcher*>>> index_;
  std::vector<Watcher*> unindexed_;
  uint64_t next_id_ = 1;
  uint64_t epoch_ = 0;
  std::vector<Listener> listeners_;
  Stats stats_;

  std::unique_ptr<store::Watch> store_watch_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace kos::apiserver
