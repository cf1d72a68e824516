// A fault-injecting SQLite VFS for crash tests, in the spirit of LevelDB's
// FaultInjectionTestEnv: it simulates a power cut, which loses every write the page cache
// held but the disk did not. A kill -9 cannot show a missing fsync (the kernel keeps the
// dirty pages); this can.
//
// The model. FaultVfs registers a VFS (not the default) that wraps the default one (unix)
// and passes every call through, while it remembers, for each file opened by name, its
// last-synced state:
//  - a file that existed before it was first opened here is durable as it was then;
//  - a successful xSync (on any handle of the path) makes the file's current content and
//    size durable, and its directory entry too (the unix VFS fsyncs the directory of a
//    new journal or WAL on its first sync; a main database's entry is taken as durable
//    from its first sync as well);
//  - xWrite and xTruncate before the next sync are pending: the durable bytes they
//    overwrite or cut off are saved first (an undo log of 4 KiB blocks), never twice;
//  - xDelete is durable at once (a deleted file never comes back).
// power_cut() puts every tracked file back to its last-synced state: a file never synced
// is removed; any other is truncated to its synced size and its saved blocks written
// back. The -shm of a main database is removed too when no connection is open (it is not
// durable state; SQLite rebuilds it from the WAL). Temporary files (no name, or delete on
// close) are passed through and not tracked.
//
// A power cut may come while connections are open (a machine losing power under a running
// store): every handle opened before the cut is dead from then on. Its xWrite, xTruncate,
// xSync and size hints fail with an I/O error and change nothing, and every xDelete is
// dropped while a dead handle is still open, so closing the dead store (its checkpoint on
// close, its deletion of the WAL) cannot undo the cut. Files opened after the cut work
// normally; open them only once every dead handle is closed (destroy the old store first).
//
// Threading: the VFS may be used from any number of connections and threads; power_cut()
// and sync_count() may be called from any thread. The object must outlive every
// connection that uses it; the destructor unregisters the VFS.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/error.h"

namespace kos::store {

class FaultVfs {
 public:
  // Registers a VFS called `name`, wrapping the default VFS (which stays the default).
  // kAlreadyExists if a VFS of that name is registered.
  static Result<std::unique_ptr<FaultVfs>> install(const std::string& name = "kos-fault");
  ~FaultVfs();
  FaultVfs(const FaultVfs&) = delete;
  FaultVfs& operator=(const FaultVfs&) = delete;

  // The name to pass to sqlite3_open_v2 (or SqliteOptions::vfs).
  const std::string& name() const;

  // Simulates a power cut: every tracked file goes back to its last-synced state (see
  // above) and every open handle dies. kInternal if a file cannot be restored.
  Result<void> power_cut();

  // Successful xSync calls through this VFS since it was installed.
  int64_t sync_count() const;

  struct State;

 private:
  explicit FaultVfs(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace kos::store
