// The Store seam: an MVCC key-value store with one global revision, as etcd v3 defines it.
// Two implementations sit side by side: sqlite/ (embedded, the default) and etcd/ (gRPC).
// Both pass the same conformance suite (conformance/).
//
// Threading: every method may be called from any thread, concurrently. Calls block the
// calling thread until the store has answered; an acknowledged write is durable.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"

namespace kos::store {

using Revision = int64_t;

struct KeyValue {
  std::string key;
  std::string value;
  Revision create_revision = 0;  // revision of the write that created this incarnation
  Revision mod_revision = 0;     // revision of the last write to the key
  int64_t version = 0;           // number of writes since creation (1 after create)
  bool operator==(const KeyValue&) const = default;
};

struct Event {
  enum class Type { kPut, kDelete };
  Type type = Type::kPut;
  // For a put: the new state. For a delete: key and mod_revision (= the revision of the
  // delete) only, value empty.
  KeyValue kv;
  // The state before this event; absent for the put that created the key.
  std::optional<KeyValue> prev;
  Revision revision() const { return kv.mod_revision; }
  bool is_create() const { return type == Type::kPut && kv.version == 1; }
  bool operator==(const Event&) const = default;
};

struct ListOptions {
  Revision revision = 0;   // 0 = latest (linearizable read); N = state at revision N
  int64_t limit = 0;       // 0 = no limit
  std::string start_key;   // resume from this key (inclusive); empty = from the prefix start
};

struct ListResult {
  std::vector<KeyValue> items;  // in key order
  Revision revision = 0;        // the revision the list was read at
  bool more = false;            // more keys follow the last item (use next_key to continue)
  std::string next_key;         // when more: the start_key of the next page
};

// A watch delivers, in revision order, exactly once, every event under its prefix with a
// revision greater than the one it started after. Destroying it cancels it.
class Watch {
 public:
  virtual ~Watch() = default;
  // Waits up to `timeout` for events and returns those available (possibly none, on
  // timeout). Errors: kCompacted when the events needed were compacted away before they
  // could be delivered (the caller must re-list), kCancelled once the store is closing.
  // A remote backend that cannot be reached is not an error, however long it lasts: next()
  // returns no events meanwhile, and the watch resumes after the last event it delivered.
  virtual Result<std::vector<Event>> next(std::chrono::milliseconds timeout) = 0;
  // The revision up to which next() has returned every event under the prefix. It moves
  // with the store's revision also while the prefix is quiet (SQLite: each commit; etcd:
  // its progress notifications), so a cache fed by the watch knows how current it is.
  // Read it on the thread that calls next(), after next() returned.
  virtual Revision progress() const = 0;
  // Asks next() to return soon, with progress() as current as the watch knows (events or
  // not), so a cache can tell at once whether it has reached a revision. True when this
  // watch does so (SQLite); false when it cannot (etcd: the progress requests of etcd 3.4
  // before 3.4.31 may report a revision ahead of events not yet sent). Any thread.
  virtual bool request_progress() { return false; }
};

class Store {
 public:
  virtual ~Store() = default;

  // Reads one key at the latest revision (rev = 0) or at revision `rev`.
  // Errors: kNotFound, kCompacted.
  virtual Result<KeyValue> get(const std::string& key, Revision rev = 0) = 0;

  // Lists the keys starting with `prefix`, in key order. Errors: kCompacted.
  virtual Result<ListResult> list(const std::string& prefix, const ListOptions& opts = {}) = 0;

  // Creates `key` only if it does not exist. Returns the stored key-value.
  // Errors: kAlreadyExists.
  virtual Result<KeyValue> create(const std::string& key, const std::string& value) = 0;

  // Replaces the value of an existing key. When expected_mod_revision != 0 the write
  // happens only if the key's mod revision equals it. Errors: kNotFound, kConflict.
  virtual Result<KeyValue> update(const std::string& key, const std::string& value,
                                  Revision expected_mod_revision) = 0;

  // Deletes an existing key, under the same precondition as update(). Returns the state
  // just before the delete; its mod_revision is that state's, and `deleted_at` (if given)
  // receives the revision of the delete. Errors: kNotFound, kConflict.
  virtual Result<KeyValue> remove(const std::string& key, Revision expected_mod_revision,
                                  Revision* deleted_at = nullptr) = 0;

  // Watches keys under `prefix` for events with revision > `after`. after = 0 means
  // "from the current revision on". Errors: kCompacted when `after` is older than the
  // compaction point.
  struct WatchOptions {
    // false: events may come without `prev` (etcd then neither reads nor sends the
    // previous values; a watcher that keeps its own copy, as the watch cache, needs none).
    bool prev = true;
  };
  virtual Result<std::unique_ptr<Watch>> watch(const std::string& prefix, Revision after,
                                               const WatchOptions& opts) = 0;
  Result<std::unique_ptr<Watch>> watch(const std::string& prefix, Revision after) {
    return watch(prefix, after, WatchOptions{});
  }

  // Discards history older than `rev`: reads at revisions < rev and watches starting
  // before rev - 1 fail with kCompacted afterwards. Compacting to an already compacted
  // revision is a no-op; rev beyond the current revision is kInvalid.
  virtual Result<void> compact(Revision rev) = 0;

  // The latest committed revision.
  virtual Result<Revision> current_revision() = 0;
};

// The smallest key greater than every key that starts with `prefix` (etcd's range_end).
// Empty when no such key exists (prefix empty or all 0xff bytes): the range is unbounded.
std::string prefix_end(const std::string& prefix);

}  // namespace kos::store
