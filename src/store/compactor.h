// Periodic compaction of a store's history, as kube-apiserver does it
// (--etcd-compaction-interval): every interval the history older than the revision that was
// current one interval earlier is discarded, so watches and reads at revisions up to one
// interval old keep working and the store (etcd's quota above all) never fills with history.
//
// Several API servers on one store compact once per interval between them: each tick reads
// one coordination key (kCompactionKey); the server that finds the key as it left it at its
// previous tick takes the turn by a conditional update (the mod revision as precondition) and
// compacts to the revision it recorded then. A server that finds the key changed by another
// only records the new state and the current revision.
//
// Threading: start() runs ticks on a thread of its own until stop() or destruction. tick() is
// public so tests can drive it without waiting; do not call it while the thread runs.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/error.h"
#include "store/store.h"

namespace kos::store {

// Outside every resource prefix (/registry/...): no watch cache sees its writes.
inline constexpr char kCompactionKey[] = "/kos/compaction";

class Compactor {
 public:
  Compactor(Store& store, std::chrono::milliseconds interval);
  ~Compactor();
  Compactor(const Compactor&) = delete;
  Compactor& operator=(const Compactor&) = delete;

  // Starts the periodic ticks (none when the interval is 0).
  void start();
  void stop();

  // One tick. Returns the revision this call compacted to, or nullopt when it compacted
  // nothing (first tick, another server's turn, nothing new).
  Result<std::optional<Revision>> tick();

  // The last revision this compactor compacted to (0: none yet).
  Revision compacted() const;

 private:
  void run();

  Store& store_;
  const std::chrono::milliseconds interval_;
  // The coordination key's mod revision when this compactor last read or wrote it (0: never),
  // and the store's revision at that tick: the next compaction point.
  Revision seen_key_rev_ = 0;
  Revision pending_ = 0;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  Revision compacted_ = 0;
  std::thread thread_;
};

}  // namespace kos::store
