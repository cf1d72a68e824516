#include "store/sqlite/fault_vfs.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>

namespace kos::store {
namespace {

constexpr int64_t kBlock = 4096;

// What a power cut leaves of one file.
struct Tracked {
  bool durable = false;  // its directory entry survives (it existed, or has been synced)
  bool main_db = false;
  int64_t synced_size = 0;
  // Block index -> the durable bytes of that block (up to synced_size), saved before the
  // first write or truncate since the last sync that changed them.
  std::map<int64_t, std::string> undo;
};

}  // namespace

struct FaultVfs::State {
  sqlite3_vfs vfs{};
  sqlite3_vfs* real = nullptr;
  std::string name;
  std::mutex mu;  // guards everything below
  std::unordered_map<std::string, Tracked> files;
  uint64_t epoch = 0;     // power cuts so far; a handle from an older epoch is dead
  int64_t live_open = 0;  // handles open from the current epoch
  int64_t dead_open = 0;  // handles open from before the last cut
  int64_t syncs = 0;
};

namespace {

using State = FaultVfs::State;

// Our file object: SQLite allocates szOsFile bytes; the real VFS's file follows ours.
struct FaultFile {
  sqlite3_file base;  // must be first
  State* st = nullptr;
  uint64_t epoch = 0;
  bool tracked = false;
  std::string path;

  sqlite3_file* real() {
    return reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(this) + sizeof(FaultFile));
  }
  bool dead() const { return epoch != st->epoch; }  // call with st->mu held
};
static_assert(sizeof(FaultFile) % 8 == 0, "the real file after ours must stay aligned");

FaultFile* ff(sqlite3_file* f) { return reinterpret_cast<FaultFile*>(f); }
State* state(sqlite3_vfs* v) { return static_cast<State*>(v->pAppData); }

// Saves the durable bytes of [begin, end) that are not saved yet. Called with st->mu held,
// before the file changes.
int save_durable(FaultFile* f, Tracked& t, int64_t begin, int64_t end) {
  end = std::min(end, t.synced_size);
  if (begin < 0) begin = 0;
  for (int64_t b = begin / kBlock; b * kBlock < end; ++b) {
    if (t.undo.contains(b)) continue;
    int64_t lo = b * kBlock;
    int64_t hi = std::min(lo + kBlock, t.synced_size);
    std::string bytes(static_cast<size_t>(hi - lo), '\0');
    int rc = f->real()->pMethods->xRead(f->real(), bytes.data(), static_cast<int>(hi - lo), lo);
    // A short read zero-fills, which is what the bytes past the end were.
    if (rc != SQLITE_OK && rc != SQLITE_IOERR_SHORT_READ) return rc;
    t.undo.emplace(b, std::move(bytes));
  }
  return SQLITE_OK;
}

// ---- File methods ------------------------------------------------------------------------

int f_close(sqlite3_file* file) {
  FaultFile* f = ff(file);
  int rc = f->real()->pMethods ? f->real()->pMethods->xClose(f->real()) : SQLITE_OK;
  {
    std::lock_guard lk(f->st->mu);
    if (f->dead()) --f->st->dead_open;
    else --f->st->live_open;
  }
  f->~FaultFile();
  return rc;
}

int f_read(sqlite3_file* file, void* buf, int amt, sqlite3_int64 off) {
  FaultFile* f = ff(file);
  return f->real()->pMethods->xRead(f->real(), buf, amt, off);
}

int f_write(sqlite3_file* file, const void* buf, int amt, sqlite3_int64 off) {
  FaultFile* f = ff(file);
  std::lock_guard lk(f->st->mu);
  if (f->dead()) return SQLITE_IOERR_WRITE;
  if (f->tracked) {
    int rc = save_durable(f, f->st->files[f->path], off, off + amt);
    if (rc != SQLITE_OK) return rc;
  }
  return f->real()->pMethods->xWrite(f->real(), buf, amt, off);
}

int f_truncate(sqlite3_file* file, sqlite3_int64 size) {
  FaultFile* f = ff(file);
  std::lock_guard lk(f->st->mu);
  if (f->dead()) return SQLITE_IOERR_TRUNCATE;
  if (f->tracked) {
    Tracked& t = f->st->files[f->path];
    int rc = save_durable(f, t, size, t.synced_size);
    if (rc != SQLITE_OK) return rc;
  }
  return f->real()->pMethods->xTruncate(f->real(), size);
}

int f_sync(sqlite3_file* file, int flags) {
  FaultFile* f = ff(file);
  std::lock_guard lk(f->st->mu);
  if (f->dead()) return SQLITE_IOERR_FSYNC;
  int rc = f->real()->pMethods->xSync(f->real(), flags);
  if (rc != SQLITE_OK) return rc;
  ++f->st->syncs;
  if (f->tracked) {
    sqlite3_int64 size = 0;
    rc = f->real()->pMethods->xFileSize(f->real(), &size);
    if (rc != SQLITE_OK) return rc;
    Tracked& t = f->st->files[f->path];
    t.durable = true;
    t.synced_size = size;
    t.undo.clear();
  }
  return SQLITE_OK;
}

int f_file_size(sqlite3_file* file, sqlite3_int64* size) {
  FaultFile* f = ff(file);
  return f->real()->pMethods->xFileSize(f->real(), size);
}

int f_lock(sqlite3_file* file, int level) {
  FaultFile* f = ff(file);
  return f->real()->pMethods->xLock(f->real(), level);
}

int f_unlock(sqlite3_file* file, int level) {
  FaultFile* f = ff(file);
  return f->real()->pMethods->xUnlock(f->real(), level);
}

int f_check_reserved_lock(sqlite3_file* file, int* out) {
  FaultFile* f = ff(file);
  return f->real()->pMethods->xCheckReservedLock(f->real(), out);
}

int f_file_control(sqlite3_file* file, int op, void* arg) {
  FaultFile* f = ff(file);
  if (op == SQLITE_FCNTL_SIZE_HINT) {  // may grow the file: a write of sorts
    std::lock_guard lk(f->st->mu);
    if (f->dead()) return SQLITE_IOERR_TRUNCATE;
  }
  return f->real()->pMethods->xFileControl(f->real(), op, arg);
}

int f_sector_size(sqlite3_file* file) {
  FaultFile* f = ff(file);
  return f->real()->pMethods->xSectorSize(f->real());
}

int f_device_characteristics(sqlite3_file* file) {
  FaultFile* f = ff(file);
  return f->real()->pMethods->xDeviceCharacteristics(f->real());
}

// Shared memory (the WAL index) is not durable state: passed through, dead or not.
int f_shm_map(sqlite3_file* file, int region, int size, int extend, void volatile** out) {
  FaultFile* f = ff(file);
  return f->real()->pMethods->xShmMap(f->real(), region, size, extend, out);
}

int f_shm_lock(sqlite3_file* file, int offset, int n, int flags) {
  FaultFile* f = ff(file);
  return f->real()->pMethods->xShmLock(f->real(), offset, n, flags);
}

void f_shm_barrier(sqlite3_file* file) {
  FaultFile* f = ff(file);
  f->real()->pMethods->xShmBarrier(f->real());
}

int f_shm_unmap(sqlite3_file* file, int delete_flag) {
  FaultFile* f = ff(file);
  return f->real()->pMethods->xShmUnmap(f->real(), delete_flag);
}

// Version 2: no xFetch/xUnfetch, so SQLite reads every page through xRead.
const sqlite3_io_methods kMethods = {
    2,
    f_close,
    f_read,
    f_write,
    f_truncate,
    f_sync,
    f_file_size,
    f_lock,
    f_unlock,
    f_check_reserved_lock,
    f_file_control,
    f_sector_size,
    f_device_characteristics,
    f_shm_map,
    f_shm_lock,
    f_shm_barrier,
    f_shm_unmap,
    nullptr,
    nullptr,
};

// ---- VFS methods -------------------------------------------------------------------------

int v_open(sqlite3_vfs* vfs, const char* name, sqlite3_file* file, int flags, int* out_flags) {
  State* st = state(vfs);
  FaultFile* f = new (file) FaultFile{};
  f->base.pMethods = nullptr;
  f->st = st;
  f->real()->pMethods = nullptr;
  bool track = name != nullptr && (flags & SQLITE_OPEN_DELETEONCLOSE) == 0;

  std::lock_guard lk(st->mu);
  struct stat sb;
  bool existed = track && ::stat(name, &sb) == 0;
  // The real VFS gets SQLite's own name pointer: it may read URI parameters after it.
  int rc = st->real->xOpen(st->real, name, f->real(), flags, out_flags);
  if (rc != SQLITE_OK) {
    if (f->real()->pMethods) f->real()->pMethods->xClose(f->real());
    f->~FaultFile();
    file->pMethods = nullptr;
    return rc;
  }
  f->epoch = st->epoch;
  ++st->live_open;
  if (track) {
    f->tracked = true;
    f->path = name;
    auto it = st->files.find(f->path);
    if (!existed) {
      st->files[f->path] = Tracked{};  // new: nothing of it is durable yet
    } else if (it == st->files.end()) {
      sqlite3_int64 size = 0;
      if (f->real()->pMethods->xFileSize(f->real(), &size) != SQLITE_OK) size = 0;
      st->files[f->path] = Tracked{.durable = true, .synced_size = size};
    }
    if (flags & SQLITE_OPEN_MAIN_DB) st->files[f->path].main_db = true;
  }
  f->base.pMethods = &kMethods;
  return SQLITE_OK;
}

int v_delete(sqlite3_vfs* vfs, const char* name, int sync_dir) {
  State* st = state(vfs);
  std::lock_guard lk(st->mu);
  if (st->dead_open > 0) return SQLITE_OK;  // a dead store cleaning up: it never happened
  int rc = st->real->xDelete(st->real, name, sync_dir);
  if (rc == SQLITE_OK || rc == SQLITE_IOERR_DELETE_NOENT) st->files.erase(name);
  return rc;
}

int v_access(sqlite3_vfs* vfs, const char* name, int flags, int* out) {
  State* st = state(vfs);
  return st->real->xAccess(st->real, name, flags, out);
}

int v_full_pathname(sqlite3_vfs* vfs, const char* name, int n, char* out) {
  State* st = state(vfs);
  return st->real->xFullPathname(st->real, name, n, out);
}

void* v_dl_open(sqlite3_vfs* vfs, const char* name) {
  State* st = state(vfs);
  return st->real->xDlOpen(st->real, name);
}

void v_dl_error(sqlite3_vfs* vfs, int n, char* msg) {
  State* st = state(vfs);
  st->real->xDlError(st->real, n, msg);
}

void (*v_dl_sym(sqlite3_vfs* vfs, void* handle, const char* sym))(void) {
  State* st = state(vfs);
  return st->real->xDlSym(st->real, handle, sym);
}

void v_dl_close(sqlite3_vfs* vfs, void* handle) {
  State* st = state(vfs);
  st->real->xDlClose(st->real, handle);
}

int v_randomness(sqlite3_vfs* vfs, int n, char* out) {
  State* st = state(vfs);
  return st->real->xRandomness(st->real, n, out);
}

int v_sleep(sqlite3_vfs* vfs, int micros) {
  State* st = state(vfs);
  return st->real->xSleep(st->real, micros);
}

int v_current_time(sqlite3_vfs* vfs, double* out) {
  State* st = state(vfs);
  return st->real->xCurrentTime(st->real, out);
}

int v_get_last_error(sqlite3_vfs* vfs, int n, char* out) {
  State* st = state(vfs);
  return st->real->xGetLastError ? st->real->xGetLastError(st->real, n, out) : 0;
}

int v_current_time_int64(sqlite3_vfs* vfs, sqlite3_int64* out) {
  State* st = state(vfs);
  if (st->real->iVersion >= 2 && st->real->xCurrentTimeInt64)
    return st->real->xCurrentTimeInt64(st->real, out);
  double days = 0;
  int rc = st->real->xCurrentTime(st->real, &days);
  *out = static_cast<sqlite3_int64>(days * 86400000.0);
  return rc;
}

// Puts one file back to its last-synced state. Called with st->mu held.
Result<void> restore(const std::string& path, Tracked& t) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0)
    return fail(Errc::kInternal, "fault vfs: cannot open " + path + " to restore it: " +
                                     std::strerror(errno));
  std::string err;
  if (::ftruncate(fd, t.synced_size) != 0) err = std::string("ftruncate: ") + std::strerror(errno);
  for (const auto& [block, bytes] : t.undo) {
    if (!err.empty()) break;
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::pwrite(fd, bytes.data() + done, bytes.size() - done,
                           static_cast<off_t>(block * kBlock + static_cast<int64_t>(done)));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        err = std::string("pwrite: ") + std::strerror(errno);
        break;
      }
      done += static_cast<size_t>(n);
    }
  }
  ::close(fd);
  if (!err.empty()) return fail(Errc::kInternal, "fault vfs: cannot restore " + path + ": " + err);
  t.undo.clear();
  return {};
}

}  // namespace

FaultVfs::FaultVfs(std::unique_ptr<State> state) : state_(std::move(state)) {}

FaultVfs::~FaultVfs() { sqlite3_vfs_unregister(&state_->vfs); }

const std::string& FaultVfs::name() const { return state_->name; }

Result<std::unique_ptr<FaultVfs>> FaultVfs::install(const std::string& name) {
  if (int rc = sqlite3_initialize(); rc != SQLITE_OK)
    return fail(Errc::kInternal, std::string("sqlite: initialize: ") + sqlite3_errstr(rc));
  if (sqlite3_vfs_find(name.c_str()) != nullptr)
    return fail(Errc::kAlreadyExists, "sqlite: a VFS called " + name + " is registered");
  sqlite3_vfs* real = sqlite3_vfs_find(nullptr);
  if (real == nullptr) return fail(Errc::kInternal, "sqlite: no default VFS");

  auto st = std::make_unique<State>();
  st->real = real;
  st->name = name;
  sqlite3_vfs& v = st->vfs;
  v.iVersion = 2;
  v.szOsFile = static_cast<int>(sizeof(FaultFile)) + real->szOsFile;
  v.mxPathname = real->mxPathname;
  v.zName = st->name.c_str();
  v.pAppData = st.get();
  v.xOpen = v_open;
  v.xDelete = v_delete;
  v.xAccess = v_access;
  v.xFullPathname = v_full_pathname;
  v.xDlOpen = v_dl_open;
  v.xDlError = v_dl_error;
  v.xDlSym = v_dl_sym;
  v.xDlClose = v_dl_close;
  v.xRandomness = v_randomness;
  v.xSleep = v_sleep;
  v.xCurrentTime = v_current_time;
  v.xGetLastError = v_get_last_error;
  v.xCurrentTimeInt64 = v_current_time_int64;
  if (int rc = sqlite3_vfs_register(&v, /*makeDflt=*/0); rc != SQLITE_OK)
    return fail(Errc::kInternal, std::string("sqlite: register VFS: ") + sqlite3_errstr(rc));
  return std::unique_ptr<FaultVfs>(new FaultVfs(std::move(st)));
}

Result<void> FaultVfs::power_cut() {
  State& st = *state_;
  std::lock_guard lk(st.mu);
  ++st.epoch;
  st.dead_open += st.live_open;
  st.live_open = 0;
  std::string errors;
  for (auto it = st.files.begin(); it != st.files.end();) {
    const std::string& path = it->first;
    Tracked& t = it->second;
    if (!t.durable) {
      if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        errors += "fault vfs: cannot remove " + path + ": " + std::strerror(errno) + "; ";
      it = st.files.erase(it);
      continue;
    }
    if (auto r = restore(path, t); !r) errors += r.error().message + "; ";
    if (t.main_db && st.dead_open == 0) (void)::unlink((path + "-shm").c_str());
    ++it;
  }
  if (!errors.empty()) return fail(Errc::kInternal, errors);
  return {};
}

int64_t FaultVfs::sync_count() const {
  std::lock_guard lk(state_->mu);
  return state_->syncs;
}

}  // namespace kos::store
