// Informers: a local cache of one kind of KOS object kept up to date by list + watch
// (the reflector), with handlers for additions, updates and deletions and custom
// indexes, as client-go's shared informers.
//
// The reflector syncs with a WatchList (one watch with sendInitialEvents: the state from the
// server's watch cache as ADDED events, up to a bookmark annotated
// k8s.io/initial-events-end, then the changes), or, with watch_list off or when the server
// refuses it, lists (from the watch cache, resourceVersion=0) and then watches from the
// list's resourceVersion with bookmarks. A watch that ends or breaks
// resumes from the last resourceVersion seen, so no event is lost or repeated; a 410
// (the server no longer has that history) makes it list again (a consistent read) and
// deliver the difference: objects that vanished meanwhile are delivered as deletions with
// final_state_unknown (client-go's tombstones).
//
// Threading: the reflector runs on its RestClient's transport thread, and so do the
// handlers, in event order: handlers must be short (typically: enqueue a key in a work
// queue). The Indexer may be read from any thread. start() and stop() may be called
// from any thread except the transport's; after stop() returns no handler runs and no
// connection of this informer is left open.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "api/types.h"
#include "client/rest_client.h"

namespace kos::client {

using ObjectPtr = std::shared_ptr<const api::AnyObject>;

// "namespace/name", the key of an object in an informer and in work queues.
std::string object_key(const api::AnyObject& obj);
std::string object_key(const std::string& ns, const std::string& name);

// A thread-safe map from key to object with custom indexes.
class Indexer {
 public:
  using IndexFunc = std::function<std::vector<std::string>(const api::AnyObject&)>;
  // Adds an index; call before the informer starts.
  void add_index(const std::string& name, IndexFunc fn);

  ObjectPtr get(const std::string& key) const;
  std::vector<ObjectPtr> list() const;
  std::vector<std::string> keys() const;
  std::vector<ObjectPtr> by_index(const std::string& index, const std::string& value) const;
  // The values of an index that at least one object has.
  std::vector<std::string> index_values(const std::string& index) const;
  size_t size() const;

  // For the reflector. Return the previous object (null if none).
  ObjectPtr upsert(const std::string& key, ObjectPtr obj);
  ObjectPtr erase(const std::string& key);

 private:
  void index_locked(const std::string& key, const api::AnyObject& obj, bool add);
  mutable std::shared_mutex mu_;
  std::map<std::string, ObjectPtr> items_;
  struct Index {
    IndexFunc fn;
    std::unordered_map<std::string, std::map<std::string, ObjectPtr>> values;  // value -> key -> obj
  };
  std::map<std::string, Index> indexes_;
};

struct EventHandlers {
  std::function<void(const ObjectPtr& obj)> on_add;
  std::function<void(const ObjectPtr& old_obj, const ObjectPtr& new_obj)> on_update;
  // final_state_unknown: the deletion was noticed by a re-list; obj is the last state seen.
  std::function<void(const ObjectPtr& obj, bool final_state_unknown)> on_delete;
};

struct InformerOptions {
  api::Kind kind = api::Kind::kNetworkAttachment;
  std::string ns;  // empty: all namespaces
  std::string label_selector;
  std::string field_selector;
  std::chrono::seconds watch_timeout{300};  // the server ends each watch after about this
  std::chrono::milliseconds max_backoff{5000};
  // Sync with a WatchList rather than a LIST and a WATCH. Re-lists after a 410 stay LISTs
  // (consistent reads).
  bool watch_list = true;
};

// A resourceVersion as the revision it is (KOS's are decimal store revisions, ordered
// across every API server of one store); 0 when it is not one.
uint64_t revision_of(std::string_view resource_version);

class Informer {
 public:
  Informer(std::shared_ptr<RestClient> client, InformerOptions opts);
  ~Informer();  // stops

  Indexer& indexer() { return indexer_; }
  const Indexer& indexer() const { return indexer_; }
  // Adds handlers; call before start().
  void add_handlers(EventHandlers h);

  void start();
  void stop();
  bool has_synced() const { return synced_.load(); }
  // Waits until the first list has been delivered (false on timeout or stop).
  bool wait_for_sync(std::chrono::milliseconds timeout);

  struct Stats {
    uint64_t lists = 0;        // initial syncs (a LIST or a WatchList) and re-lists
    uint64_t watches = 0;      // watch requests made
    uint64_t events = 0;       // ADDED/MODIFIED/DELETED events applied
    uint64_t bookmarks = 0;
    // Events whose resourceVersion did not advance past the stream's (a duplicate, or an
    // event from the past after a resume on another server): never expected; also counted
    // in kos_informer_out_of_order_events_total{resource}.
    uint64_t out_of_order = 0;
  };
  Stats stats() const;
  std::string resource_version() const;

 private:
  struct State;
  std::shared_ptr<RestClient> client_;
  std::shared_ptr<State> state_;
  Indexer indexer_;
  std::atomic<bool> synced_{false};
};

}  // namespace kos::client
