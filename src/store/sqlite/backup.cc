#include "store/sqlite/backup.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <thread>

namespace kos::store {

namespace {

namespace fs = std::filesystem;

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using Db = std::unique_ptr<sqlite3, DbCloser>;

Result<Db> open(const std::string& path, int flags) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  Db db(raw);
  if (rc != SQLITE_OK)
    return fail(Errc::kInternal, "cannot open " + path + ": " + (raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  sqlite3_busy_timeout(db.get(), 10000);
  return db;
}

Result<void> exec(sqlite3* db, const char* sql, const std::string& what) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string m = err ? err : sqlite3_errmsg(db);
    sqlite3_free(err);
    return fail(Errc::kInternal, what + ": " + m);
  }
  return {};
}

// The first column of the first row of `sql`, as text ("" when no row).
Result<std::string> text_of(sqlite3* db, const char* sql, const std::string& what) {
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK)
    return fail(Errc::kInternal, what + ": " + sqlite3_errmsg(db));
  std::string out;
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW && sqlite3_column_text(st, 0))
    out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return fail(Errc::kInternal, what + ": " + sqlite3_errmsg(db));
  return out;
}

// Copies every page of `from` into `to` in one step (one read transaction on `from`: a
// consistent snapshot), retrying while the source is busy.
Result<void> copy(sqlite3* from, sqlite3* to, const std::string& what) {
  sqlite3_backup* b = sqlite3_backup_init(to, "main", from, "main");
  if (!b) return fail(Errc::kInternal, what + ": " + sqlite3_errmsg(to));
  int rc;
  for (int tries = 0;; ++tries) {
    rc = sqlite3_backup_step(b, -1);
    if ((rc != SQLITE_BUSY && rc != SQLITE_LOCKED) || tries >= 1000) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // the source's writer holds a lock
  }
  sqlite3_backup_finish(b);
  if (rc != SQLITE_DONE) return fail(Errc::kInternal, what + ": " + sqlite3_errstr(rc));
  return {};
}

Result<void> fsync_path(const fs::path& p, bool dir) {
  int fd = ::open(p.c_str(), (dir ? O_RDONLY | O_DIRECTORY : O_RDWR) | O_CLOEXEC);
  if (fd < 0) return fail(Errc::kInternal, "cannot open " + p.string() + ": " + std::strerror(errno));
  int r = fsync(fd);
  int err = errno;
  close(fd);
  if (r != 0) return fail(Errc::kInternal, "fsync " + p.string() + ": " + std::strerror(err));
  return {};
}

// Writes a self-contained copy of `from` (one file, rollback journal) to `tmp`, fsyncs it,
// and renames it to `dest`.
Result<BackupInfo> write_copy(sqlite3* from, const fs::path& tmp, const fs::path& dest) {
  std::error_code ec;
  fs::remove(tmp, ec);
  {
    auto to = open(tmp.string(), SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    if (!to) return fail(to.error());
    if (auto r = copy(from, to->get(), "copying into " + tmp.string()); !r) {
      to->reset();
      fs::remove(tmp, ec);
      return fail(r.error());
    }
    if (auto r = exec(to->get(), "PRAGMA journal_mode=DELETE", tmp.string()); !r) return fail(r.error());
  }
  BackupInfo info;
  {
    auto check = open(tmp.string(), SQLITE_OPEN_READONLY);
    if (!check) return fail(check.error());
    auto rev = text_of(check->get(), "SELECT COALESCE(MAX(rev), 0) FROM log", tmp.string());
    if (!rev) return fail(rev.error());
    info.revision = std::stoll(rev->empty() ? "0" : *rev);
  }
  if (auto r = fsync_path(tmp, false); !r) return fail(r.error());
  fs::rename(tmp, dest, ec);
  if (ec) return fail(Errc::kInternal, "rename " + tmp.string() + " to " + dest.string() + ": " + ec.message());
  if (auto r = fsync_path(dest.parent_path().empty() ? fs::path(".") : dest.parent_path(), true); !r)
    return fail(r.error());
  info.bytes = fs::file_size(dest, ec);
  return info;
}

}  // namespace

Result<BackupInfo> backup_sqlite(const std::string& db_path, const std::string& out_path) {
  std::error_code ec;
  if (!fs::exists(db_path, ec)) return fail(Errc::kNotFound, "no store at " + db_path);
  if (fs::exists(out_path, ec)) return fail(Errc::kAlreadyExists, out_path + " exists; give a new file");
  auto src = open(db_path, SQLITE_OPEN_READONLY);
  if (!src) return fail(src.error());
  auto tables = text_of(src->get(), "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name IN ('log','meta')",
                        db_path);
  if (!tables) return fail(tables.error());
  if (*tables != "2") return fail(Errc::kInvalid, db_path + " is not a KOS store");
  fs::path out = fs::absolute(out_path);
  return write_copy(src->get(), out.string() + ".tmp", out);
}

Result<BackupInfo> restore_sqlite(const std::string& backup_path, const std::string& db_path, bool replace) {
  std::error_code ec;
  if (!fs::exists(backup_path, ec)) return fail(Errc::kNotFound, "no backup at " + backup_path);
  auto src = open(backup_path, SQLITE_OPEN_READONLY);
  if (!src) return fail(src.error());
  auto intact = text_of(src->get(), "PRAGMA integrity_check", backup_path);
  if (!intact) return fail(Errc::kInvalid, backup_path + " is not an SQLite database: " + intact.error().message);
  if (*intact != "ok") return fail(Errc::kInvalid, backup_path + " is damaged: " + *intact);
  auto tables = text_of(src->get(), "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name IN ('log','meta')",
                        backup_path);
  if (!tables) return fail(tables.error());
  if (*tables != "2") return fail(Errc::kInvalid, backup_path + " is not a KOS store backup");

  fs::path dest = fs::absolute(db_path);
  fs::create_directories(dest.parent_path(), ec);
  // The store's own lock: no server may have it open while its file is replaced.
  const std::string lock_path = dest.string() + ".lock";
  int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd < 0) return fail(Errc::kInternal, "cannot open " + lock_path + ": " + std::strerror(errno));
  struct Unlock {
    int fd;
    ~Unlock() { close(fd); }
  } unlock{lock_fd};
  if (flock(lock_fd, LOCK_EX | LOCK_NB) != 0)
    return fail(Errc::kUnavailable, "store " + dest.string() + " is in use (lock " + lock_path +
                                        "): stop the server first; restore goes into a stopped data dir");
  if (fs::exists(dest, ec) && !replace)
    return fail(Errc::kAlreadyExists, "a store exists at " + dest.string() + "; --force replaces it");
  // The replaced store's WAL must never be replayed onto the restored file: it goes first.
  fs::remove(dest.string() + "-wal", ec);
  fs::remove(dest.string() + "-shm", ec);
  return write_copy(src->get(), dest.string() + ".restore", dest);
}

}  // namespace kos::store
