// The embedded Store: an append-only revision log in one SQLite file (WAL mode, fsync on
// every commit), in the spirit of k3s's kine but built for concurrency:
//  - group commit: one writer thread takes every write queued while the previous
//    transaction was being made durable and commits them together, one fsync for all;
//  - watch fan-out in the process: committed events are pushed to watchers directly; a
//    watcher that falls behind (or starts in the past) catches up from the log itself,
//    so nothing is buffered without bound and nothing is lost;
//  - periodic compaction of revisions older than one interval.
// One process at a time may open a file (an exclusive lock on PATH.lock).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "store/store.h"

namespace kos::store {

struct SqliteOptions {
  std::string path;
  // Compact history older than one interval, every interval. 0 = never.
  std::chrono::milliseconds compaction_interval = std::chrono::minutes(5);
  // Most writes committed in one transaction.
  size_t max_batch = 2048;
  // Events a watcher may have queued before it is switched to catching up from the log.
  size_t watch_queue_limit = 8192;
  // The SQLite VFS every connection of the store opens with; empty = the default VFS.
  // Tests pass a fault-injecting one (see fault_vfs.h).
  std::string vfs;
  // Tests only: PRAGMA synchronous=OFF, so acknowledged writes are NOT durable. It exists
  // to prove that the durability tests can see a missing fsync.
  bool unsafe_no_sync = false;
};

class SqliteStore final : public Store {
 public:
  static Result<std::unique_ptr<Store>> open(const SqliteOptions& opts);
  ~SqliteStore() override;

  Result<KeyValue> get(const std::string& key, Revision rev) override;
  Result<ListResult> list(const std::string& prefix, const ListOptions& opts) override;
  Result<KeyValue> create(const std::string& key, const std::string& value) override;
  Result<KeyValue> update(const std::string& key, const std::string& value,
                          Revision expected_mod_revision) override;
  Result<KeyValue> remove(const std::string& key, Revision expected_mod_revision,
                          Revision* deleted_at) override;
  using Store::watch;
  Result<std::unique_ptr<Watch>> watch(const std::string& prefix, Revision after, const WatchOptions& opts) override;
  Result<void> compact(Revision rev) override;
  Result<Revision> current_revision() override;

  struct Impl;

 private:
  explicit SqliteStore(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace kos::store
