// The garbage collector: deletes objects whose owners (by UID) are all gone, deletes the
// dependents of an owner being deleted in the foreground (and then lets the owner go),
// and removes owner references from the dependents of an owner deleted with the Orphan
// policy. Level-triggered: every cache event queues the objects it may concern, and a few
// workers examine them against live state (one worker per object at a time). A cache
// that relists (its store watch broke) reports what changed meanwhile as events, deletes
// included. An examination that fails (a read or write the store refused) is retried
// with backoff (100 ms doubling to 10 s, on the Clock seam), never dropped.
//
// Events that cannot concern the collector wake no worker: an object whose owner the
// caches show alive (a new IPLock of a live attachment), one being deleted without the
// Orphan or Foreground finalizer and without owners, and the deletion of a dependent
// whose owners are not waiting for it in the foreground. The collector knows that from
// its own record of the caches' events (which UIDs are alive, which objects wait in the
// foreground), kept under its lock, because a cache's event handler must not take another
// cache's lock.
#pragma once

#include <condition_variable>
#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "apiserver/registry.h"
#include "common/clock.h"

namespace kos::apiserver {

class GarbageCollector {
 public:
  // `clock` times the retries' backoff; it must outlive the collector.
  explicit GarbageCollector(std::vector<Registry*> registries, const Clock& clock = RealClock::instance());
  ~GarbageCollector();
  void start();
  void stop();

  // Items queued for a worker (an object, or an owner's dependents) and objects deleted
  // so far (for tests and metrics).
  uint64_t queued() const { return queued_total_.load(); }
  uint64_t deleted() const { return deleted_.load(); }

 private:
  struct Item {
    size_t registry;
    std::string ns, name;
    auto operator<=>(const Item&) const = default;
  };
  void enqueue(Item item);
  void enqueue_locked(Item item);
  // A cache's event (on its thread, under its lock): updates the record below and queues
  // what the event may concern.
  void on_event(size_t registry, const CachedPtr& prev, const CachedPtr& obj);
  // Whether an examination of `obj` could do anything (under mu_).
  bool may_act_on_locked(const CachedObject& obj) const;
  // Queued again after a backoff that grows with the item's consecutive failures.
  void retry(const Item& item);
  void run();
  // Errors: the store failed; the item is retried.
  Result<void> examine(const Item& item);
  Registry* owner_registry(const api::OwnerReference& ref) const;
  // Whether the owner exists with that UID (a live read when the cache does not show it).
  // The cache alone answers "absent" once it has reached `dependent_rv`.
  Result<bool> owner_exists(const api::OwnerReference& ref, const std::string& ns,
                            store::Revision dependent_rv) const;
  Result<void> remove_finalizer(Registry& r, const CachedObject& obj, const std::string& finalizer);
  // Waits until every cache has applied the store up to `rv` (caches lag each other: a
  // dependent written before an owner's deletion may not be in its cache yet when the
  // owner's is). kUnavailable if one has not within a while: the item is retried.
  Result<void> caches_reach(store::Revision rv) const;

  std::vector<Registry*> registries_;
  const Clock& clock_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  std::set<Item> queued_;
  std::set<Item> processing_;  // taken by a worker
  std::set<Item> dirty_;       // enqueued while processing: queued again after
  std::multimap<std::chrono::steady_clock::time_point, Item> delayed_;  // retries, by due time
  std::map<Item, int> failures_;  // consecutive failed examinations
  // What the caches' events since start() showed: the objects alive, by UID (objects
  // older than start() are not here: an owner missing from it is looked up by a worker),
  // and the objects being deleted in the foreground, which wait for their dependents.
  // Entries are put in and taken out as the caches apply the events, under mu_.
  std::unordered_map<std::string, Item> alive_;
  std::set<Item> foreground_;
  bool stopping_ = false;
  static constexpr int kWorkers = 4;  // deletes wait on the store (etcd: milliseconds each)
  std::vector<std::thread> threads_;
  std::atomic<uint64_t> queued_total_{0};
  std::atomic<uint64_t> deleted_{0};
};

}  // namespace kos::apiserver
