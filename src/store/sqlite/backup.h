// Backup and restore of the embedded store. A backup is a consistent copy of the store's
// file, taken while a server has it open: SQLite's online backup API reads it through a
// read-only connection of its own (WAL lets it read beside the server's writer) in one
// read transaction, so the copy is one moment of the store, whatever is written
// meanwhile. A restore copies a backup into place for a store that no process has open
// (it takes the store's lock), so a server started on it serves exactly the backed-up
// objects, at their resourceVersions.
#pragma once

#include <cstdint>
#include <string>

#include "common/error.h"

namespace kos::store {

struct BackupInfo {
  int64_t revision = 0;  // the store's revision in the copy
  uint64_t bytes = 0;    // the copy's size
};

// Copies the store at `db_path` to the new file `out_path` (written to a temporary file,
// fsynced, then renamed into place). Errors: no store there, `out_path` exists.
Result<BackupInfo> backup_sqlite(const std::string& db_path, const std::string& out_path);

// Replaces the store at `db_path` with the backup `backup_path`, after checking that it is
// an intact KOS store. Errors: a process has the store open (a running server), a store
// exists there and `replace` is false, the file is not a KOS store or is damaged.
Result<BackupInfo> restore_sqlite(const std::string& backup_path, const std::string& db_path, bool replace);

}  // namespace kos::store
