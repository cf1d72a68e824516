#include "store/sqlite/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <future>
#include <list>
#include <mutex>
#include <thread>
#include <variant>

#include <spdlog/spdlog.h>

#include "common/thread_name.h"

namespace kos::store {
namespace {

// ---- Thin RAII over the SQLite C API ----------------------------------------------------

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;

struct StmtFinalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};

Error db_error(sqlite3* db, const std::string& what) {
  int code = sqlite3_extended_errcode(db);
  Errc errc = (code & 0xff) == SQLITE_BUSY ? Errc::kUnavailable : Errc::kInternal;
  return Error{errc, "sqlite: " + what + ": " + sqlite3_errmsg(db), {}};
}

// A prepared statement, reset and cleared of bindings each time it is used.
class Stmt {
 public:
  Stmt() = default;
  Result<void> prepare(sqlite3* db, const char* sql) {
    db_ = db;
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK)
      return fail(db_error(db, std::string("prepare ") + sql));
    stmt_.reset(s);
    return {};
  }
  sqlite3_stmt* get() { return stmt_.get(); }
  Stmt& reset() {
    sqlite3_reset(stmt_.get());
    sqlite3_clear_bindings(stmt_.get());
    return *this;
  }
  Stmt& bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_.get(), i, v);
    return *this;
  }
  Stmt& bind(int i, const std::string& v) {
    sqlite3_bind_blob64(stmt_.get(), i, v.data(), v.size(), SQLITE_STATIC);
    return *this;
  }
  // SQLITE_ROW -> true, SQLITE_DONE -> false.
  Result<bool> step() {
    int rc = sqlite3_step(stmt_.get());
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return fail(db_error(db_, "step"));
  }
  // Runs a statement without results (BEGIN, COMMIT, ...) and resets it.
  Result<void> run() {
    int rc = sqlite3_step(stmt_.get());
    sqlite3_reset(stmt_.get());
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return fail(db_error(db_, "step"));
    return {};
  }
  int64_t i64(int col) { return sqlite3_column_int64(stmt_.get(), col); }
  std::string blob(int col) {
    const void* p = sqlite3_column_blob(stmt_.get(), col);
    int n = sqlite3_column_bytes(stmt_.get(), col);
    return p ? std::string(static_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
  }

 private:
  sqlite3* db_ = nullptr;
  std::unique_ptr<sqlite3_stmt, StmtFinalizer> stmt_;
};

Result<void> exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return fail(Errc::kInternal, std::string("sqlite: ") + sql + ": " + msg);
  }
  return {};
}

// Page cache per connection, in KiB. The writer keeps the hot index pages; readers (the
// API server's initial lists, watch catch-up) stream through the log and gain little from
// a large cache, and every cached page is resident memory (the API server's budget is a
// few KiB per object).
constexpr int kWriterCacheKiB = 16384;
constexpr int kReaderCacheKiB = 2048;

Result<DbPtr> open_db(const SqliteOptions& opts, int cache_kib) {
  const std::string& path = opts.path;
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           opts.vfs.empty() ? nullptr : opts.vfs.c_str());
  DbPtr db(raw);
  if (rc != SQLITE_OK)
    return fail(Errc::kInternal, "sqlite: cannot open " + path + ": " +
                                     (raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  sqlite3_busy_timeout(db.get(), 10000);
  // WAL lets readers run beside the writer; synchronous=FULL fsyncs the WAL on every
  // commit, so an acknowledged write survives a crash of the process or of the machine.
  const std::string cache = "PRAGMA cache_size=-" + std::to_string(cache_kib);
  const char* sync = opts.unsafe_no_sync ? "PRAGMA synchronous=OFF" : "PRAGMA synchronous=FULL";
  for (const char* pragma : {"PRAGMA journal_mode=WAL", sync,
                             "PRAGMA foreign_keys=OFF", cache.c_str()}) {
    if (auto r = exec(db.get(), pragma); !r) return fail(r.error());
  }
  return db;
}

// The log: one row per write. rev is the global revision; a delete appends a tombstone
// (deleted = 1). prev_rev is the revision of the live version this write replaced (0 for
// a create). Compaction removes rows that no read at or after the compaction point needs.
constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS log (
  rev        INTEGER PRIMARY KEY,
  key        BLOB    NOT NULL,
  value      BLOB    NOT NULL,
  create_rev INTEGER NOT NULL,
  prev_rev   INTEGER NOT NULL,
  version    INTEGER NOT NULL,
  deleted    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_rev ON log(key, rev);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta(name, value) VALUES ('compact_rev', 0);
)sql";

constexpr const char* kSelectLatest =
    "SELECT rev, value, create_rev, version, deleted FROM log WHERE key = ?1 "
    "AND rev <= ?2 ORDER BY rev DESC LIMIT 1";
constexpr const char* kSelectRange =
    "SELECT l.key, l.value, l.create_rev, l.rev, l.version FROM log l "
    "WHERE l.key >= ?1 AND (length(?2) = 0 OR l.key < ?2) AND l.rev <= ?3 AND l.deleted = 0 "
    "AND l.rev = (SELECT MAX(m.rev) FROM log m WHERE m.key = l.key AND m.rev <= ?3) "
    "ORDER BY l.key LIMIT ?4";
constexpr const char* kSelectEvents =
    "SELECT rev, key, value, create_rev, prev_rev, version, deleted FROM log "
    "WHERE rev > ?1 AND rev <= ?2 AND key >= ?3 AND (length(?4) = 0 OR key < ?4) ORDER BY rev";
constexpr const char* kSelectByRev =
    "SELECT key, value, create_rev, version FROM log WHERE rev = ?1 AND deleted = 0";
constexpr const char* kInsert =
    "INSERT INTO log(rev, key, value, create_rev, prev_rev, version, deleted) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
// As in etcd, an empty store is at revision 1 and the first write gets revision 2, so
// revision 0 never names a real state (it means "latest" / "from now" in the API).
constexpr const char* kMaxRev = "SELECT MAX(COALESCE(MAX(rev), 0), 1) FROM log";
constexpr const char* kCompactRev = "SELECT value FROM meta WHERE name = 'compact_rev'";

// The key range [begin, end) of a prefix; end empty = unbounded.
struct KeyRange {
  std::string begin, end;
  explicit KeyRange(const std::string& prefix) : begin(prefix), end(prefix_end(prefix)) {}
  bool contains(const std::string& k) const {
    return k >= begin && (end.empty() || k < end);
  }
};

// A read-only connection with its statements prepared once.
struct ReadConn {
  DbPtr db;
  Stmt latest, range, events, by_rev, max_rev, compact_rev, begin, commit;
  Result<void> prepare() {
    for (auto [stmt, sql] : {std::pair{&latest, kSelectLatest}, {&range, kSelectRange},
                             {&events, kSelectEvents}, {&by_rev, kSelectByRev},
                             {&max_rev, kMaxRev}, {&compact_rev, kCompactRev},
                             {&begin, "BEGIN"}, {&commit, "COMMIT"}}) {
      if (auto r = stmt->prepare(db.get(), sql); !r) return r;
    }
    return {};
  }
};

// Scalar query helper.
Result<int64_t> scalar(Stmt& s) {
  auto row = s.reset().step();
  if (!row) return fail(row.error());
  int64_t v = *row ? s.i64(0) : 0;
  s.reset();
  return v;
}

// A read transaction on a pooled connection; committed (released) on destruction.
class ReadTxn {
 public:
  explicit ReadTxn(ReadConn& c) : c_(c) { ok_ = c.begin.run().has_value(); }
  ~ReadTxn() {
    if (ok_) (void)c_.commit.run();
  }
  bool ok() const { return ok_; }

 private:
  ReadConn& c_;
  bool ok_ = false;
};

}  // namespace

// ---- Shared state ----------------------------------------------------------------------

// Connections for readers (get, list, watch catch-up), created on demand and reused.
class ReadPool {
 public:
  explicit ReadPool(SqliteOptions opts) : opts_(std::move(opts)) {}

  class Lease {
   public:
    Lease(ReadPool& pool, std::unique_ptr<ReadConn> c) : pool_(pool), conn_(std::move(c)) {}
    ~Lease() {
      if (conn_) pool_.put(std::move(conn_));
    }
    Lease(Lease&&) = default;
    ReadConn* operator->() { return conn_.get(); }
    ReadConn& operator*() { return *conn_; }

   private:
    ReadPool& pool_;
    std::unique_ptr<ReadConn> conn_;
  };

  Result<Lease> take() {
    {
      std::lock_guard lk(mu_);
      if (!free_.empty()) {
        auto c = std::move(free_.back());
        free_.pop_back();
        return Lease(*this, std::move(c));
      }
    }
    auto db = open_db(opts_, kReaderCacheKiB);
    if (!db) return fail(db.error());
    auto c = std::make_unique<ReadConn>();
    c->db = std::move(*db);
    if (auto r = exec(c->db.get(), "PRAGMA query_only=1"); !r) return fail(r.error());
    if (auto r = c->prepare(); !r) return fail(r.error());
    return Lease(*this, std::move(c));
  }

 private:
  void put(std::unique_ptr<ReadConn> c) {
    std::lock_guard lk(mu_);
    if (free_.size() < 16) free_.push_back(std::move(c));
  }
  SqliteOptions opts_;
  std::mutex mu_;
  std::vector<std::unique_ptr<ReadConn>> free_;
};

// Reads the events with revision in (after, upto] under `range`, with previous values.
Result<std::vector<Event>> read_events(ReadConn& c, const KeyRange& range, Revision after,
                                       Revision upto) {
  std::vector<Event> out;
  auto& s = c.events.reset().bind(1, after).bind(2, upto).bind(3, range.begin).bind(4, range.end);
  while (true) {
    auto row = s.step();
    if (!row) return fail(row.error());
    if (!*row) break;
    Event e;
    e.kv.mod_revision = s.i64(0);
    e.kv.key = s.blob(1);
    bool deleted = s.i64(6) != 0;
    Revision prev_rev = s.i64(4);
    if (deleted) {
      e.type = Event::Type::kDelete;
    } else {
      e.type = Event::Type::kPut;
      e.kv.value = s.blob(2);
      e.kv.create_revision = s.i64(3);
      e.kv.version = s.i64(5);
    }
    if (prev_rev > 0) {
      auto& p = c.by_rev.reset().bind(1, prev_rev);
      auto prow = p.step();
      if (!prow) return fail(prow.error());
      if (*prow) {
        e.prev = KeyValue{p.blob(0), p.blob(1), p.i64(2), prev_rev, p.i64(3)};
      }
      p.reset();
    }
    out.push_back(std::move(e));
  }
  s.reset();
  return out;
}

// Watchers and the in-process fan-out of committed events.
class Hub {
 public:
  struct Watcher {
    KeyRange range;
    Revision last = 0;        // last revision delivered or queued (events <= last are skipped)
    std::deque<Event> queue;
    bool lagging = false;     // events after `last` must be read from the log
    bool closed = false;
    bool progress_requested = false;  // next() returns at once, events or not
    std::condition_variable cv;
    explicit Watcher(const std::string& prefix) : range(prefix) {}
  };

  explicit Hub(Revision published, size_t queue_limit)
      : published_(published), queue_limit_(queue_limit) {}

  std::mutex mu;

  // Called by the writer after each commit, in revision order.
  void publish(const std::vector<Event>& events) {
    if (events.empty()) return;
    std::lock_guard lk(mu);
    for (auto& w : watchers_) {
      if (w->lagging || w->closed) continue;
      bool added = false;
      for (const auto& e : events) {
        if (e.revision() <= w->last || !w->range.contains(e.kv.key)) continue;
        if (w->queue.size() >= queue_limit_) {
          w->lagging = true;  // the rest comes from the log when the consumer catches up
          break;
        }
        w->queue.push_back(e);
        w->last = e.revision();
        added = true;
      }
      // Every event of this commit under the prefix is queued: the watcher has seen it all.
      if (!w->lagging) w->last = std::max(w->last, events.back().revision());
      if (added || w->lagging) w->cv.notify_all();
    }
    published_ = events.back().revision();
  }

  // The caller holds `mu`.
  Revision published() const { return published_; }

  std::shared_ptr<Watcher> add(const std::string& prefix, Revision after, bool lagging) {
    auto w = std::make_shared<Watcher>(prefix);
    w->last = after;
    w->lagging = lagging;
    watchers_.push_back(w);
    return w;
  }

  void remove(const std::shared_ptr<Watcher>& w) {
    std::lock_guard lk(mu);
    std::erase(watchers_, w);
  }

  void close_all() {
    std::lock_guard lk(mu);
    for (auto& w : watchers_) {
      w->closed = true;
      w->cv.notify_all();
    }
    watchers_.clear();
  }

 private:
  Revision published_;
  size_t queue_limit_;
  std::vector<std::shared_ptr<Watcher>> watchers_;
};

// ---- Writes ---------------------------------------------------------------------------

namespace {

struct WriteResult {
  KeyValue kv;              // create/update: the new state; delete: the prior state
  Revision revision = 0;    // the revision of this write
};

struct WriteOp {
  enum class Kind { kCreate, kUpdate, kDelete, kCompact } kind;
  std::string key;
  std::string value;
  Revision expected = 0;  // update/delete precondition; compact: the target revision
  std::promise<Result<WriteResult>> done;
};

}  // namespace

struct SqliteStore::Impl {
  SqliteOptions opts;
  int lock_fd = -1;
  DbPtr wdb;  // the writer's connection, used only on the writer thread
  Stmt w_latest, w_insert, w_max_rev, w_begin, w_commit, w_rollback;
  std::shared_ptr<ReadPool> pool;
  std::shared_ptr<Hub> hub;

  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::unique_ptr<WriteOp>> pending;
  bool stopping = false;
  std::thread writer;

  Revision next_rev = 1;                 // writer thread only
  std::atomic<Revision> compact_rev{0};  // history before this revision is gone

  ~Impl() {
    {
      std::lock_guard lk(mu);
      stopping = true;
    }
    cv.notify_all();
    if (writer.joinable()) writer.join();
    if (hub) hub->close_all();
    // Fail anything queued after the writer stopped.
    for (auto& op : pending) op->done.set_value(fail(Errc::kCancelled, "store is closing"));
    wdb.reset();
    if (lock_fd >= 0) close(lock_fd);
  }

  Result<WriteResult> submit(std::unique_ptr<WriteOp> op) {
    auto fut = op->done.get_future();
    {
      std::lock_guard lk(mu);
      if (stopping) return fail(Errc::kCancelled, "store is closing");
      pending.push_back(std::move(op));
    }
    cv.notify_one();
    return fut.get();
  }

  // Applies one write inside the open transaction. Returns the event it produces, or the
  // error for this op alone (a failed precondition does not affect the others).
  Result<Event> apply(WriteOp& op) {
    auto& q = w_latest.reset().bind(1, op.key).bind(2, std::numeric_limits<int64_t>::max());
    auto row = q.step();
    if (!row) return fail(row.error());
    bool live = *row && q.i64(4) == 0;
    KeyValue cur;
    if (live) cur = KeyValue{op.key, q.blob(1), q.i64(2), q.i64(0), q.i64(3)};
    q.reset();

    Event ev;
    Revision rev = next_rev;
    switch (op.kind) {
      case WriteOp::Kind::kCreate:
        if (live) return fail(Errc::kAlreadyExists, "key already exists: " + op.key);
        ev.type = Event::Type::kPut;
        ev.kv = KeyValue{op.key, std::move(op.value), rev, rev, 1};
        break;
      case WriteOp::Kind::kUpdate:
      case WriteOp::Kind::kDelete:
        if (!live) return fail(Errc::kNotFound, "key not found: " + op.key);
        if (op.expected != 0 && op.expected != cur.mod_revision)
          return fail(Errc::kConflict, "mod revision of " + op.key + " is " +
                                           std::to_string(cur.mod_revision) + ", not " +
                                           std::to_string(op.expected));
        if (op.kind == WriteOp::Kind::kUpdate) {
          ev.type = Event::Type::kPut;
          ev.kv = KeyValue{op.key, std::move(op.value), cur.create_revision, rev,
                           cur.version + 1};
        } else {
          ev.type = Event::Type::kDelete;
          ev.kv = KeyValue{op.key, {}, 0, rev, 0};
        }
        ev.prev = std::move(cur);
        break;
      case WriteOp::Kind::kCompact:
        return fail(Errc::kInternal, "compact is not a row write");
    }
    bool deleted = ev.type == Event::Type::kDelete;
    auto& ins = w_insert.reset()
                    .bind(1, rev)
                    .bind(2, ev.kv.key)
                    .bind(3, ev.kv.value)
                    .bind(4, deleted ? ev.prev->create_revision : ev.kv.create_revision)
                    .bind(5, ev.prev ? ev.prev->mod_revision : 0)
                    .bind(6, ev.kv.version)
                    .bind(7, deleted ? 1 : 0);
    if (auto r = ins.step(); !r) return fail(r.error());
    ins.reset();
    ++next_rev;
    return ev;
  }

  // Commits a batch of row writes in one transaction (one fsync).
  void commit_batch(std::vector<std::unique_ptr<WriteOp>>& batch) {
    Revision first_rev = next_rev;
    std::vector<Result<Event>> results;
    results.reserve(batch.size());
    auto begin = w_begin.run();
    if (!begin) {
      for (auto& op : batch) op->done.set_value(fail(begin.error()));
      return;
    }
    std::optional<Error> fatal;
    for (auto& op : batch) {
      auto r = apply(*op);
      if (!r && (r.error().code == Errc::kInternal || r.error().code == Errc::kUnavailable)) {
        fatal = r.error();
        break;
      }
      results.push_back(std::move(r));
    }
    if (!fatal) {
      if (auto c = w_commit.run(); !c) fatal = c.error();
    }
    if (fatal) {
      (void)w_rollback.run();
      next_rev = first_rev;
      spdlog::error("sqlite store: batch of {} writes rolled back: {}", batch.size(),
                    fatal->message);
      for (auto& op : batch) op->done.set_value(fail(*fatal));
      return;
    }
    std::vector<Event> events;
    for (auto& r : results)
      if (r) events.push_back(*r);
    // Publish before acknowledging: a watch opened after an acknowledgement already sees
    // the acknowledged revision as published.
    hub->publish(events);
    for (size_t i = 0; i < batch.size(); ++i) {
      auto& r = results[i];
      if (!r) {
        batch[i]->done.set_value(fail(r.error()));
        continue;
      }
      WriteResult wr{r->type == Event::Type::kDelete ? *r->prev : r->kv, r->revision()};
      batch[i]->done.set_value(std::move(wr));
    }
  }

  // Removes history older than `rev`, keeping every row a read at revision >= rev needs.
  Result<void> do_compact(Revision rev) {
    if (rev >= next_rev) return fail(Errc::kInvalid, "cannot compact to revision " +
                                                         std::to_string(rev) +
                                                         ": the current revision is " +
                                                         std::to_string(next_rev - 1));
    if (rev <= compact_rev.load()) return {};
    auto t0 = std::chrono::steady_clock::now();
    if (auto r = exec(wdb.get(), "BEGIN IMMEDIATE"); !r) return r;
    int64_t changes_before = sqlite3_total_changes64(wdb.get());
    std::string c = std::to_string(rev);
    // 1: versions superseded by a later version at or before rev;
    // 2: tombstones that are the latest state at rev (their key is simply absent).
    std::string sql =
        "DELETE FROM log WHERE rev < " + c +
        " AND EXISTS (SELECT 1 FROM log n WHERE n.key = log.key AND n.rev > log.rev AND n.rev <= " +
        c + "); DELETE FROM log WHERE rev < " + c +
        " AND deleted = 1; UPDATE meta SET value = " + c + " WHERE name = 'compact_rev';";
    if (auto r = exec(wdb.get(), sql.c_str()); !r) {
      (void)exec(wdb.get(), "ROLLBACK");
      return r;
    }
    int64_t removed = sqlite3_total_changes64(wdb.get()) - changes_before - 1;
    if (auto r = exec(wdb.get(), "COMMIT"); !r) {
      (void)exec(wdb.get(), "ROLLBACK");
      return r;
    }
    compact_rev.store(rev);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - t0).count();
    spdlog::info("sqlite store: compacted revision={} rows_removed={} took_ms={}", rev,
                 removed, ms);
    return {};
  }

  void run_writer() {
    using clock = std::chrono::steady_clock;
    auto interval = opts.compaction_interval;
    auto next_compaction = clock::now() + interval;
    Revision compact_target = next_rev - 1;  // the revision current one interval ago
    std::unique_lock lk(mu);
    while (true) {
      if (interval.count() > 0) {
        cv.wait_until(lk, next_compaction, [&] { return stopping || !pending.empty(); });
      } else {
        cv.wait(lk, [&] { return stopping || !pending.empty(); });
      }
      if (stopping) break;
      if (interval.count() > 0 && clock::now() >= next_compaction) {
        lk.unlock();
        if (compact_target > compact_rev.load()) {
          if (auto r = do_compact(compact_target); !r)
            spdlog::warn("sqlite store: periodic compaction failed: {}", r.error().message);
        }
        compact_target = next_rev - 1;
        next_compaction = clock::now() + interval;
        lk.lock();
        continue;
      }
      std::vector<std::unique_ptr<WriteOp>> batch;
      while (!pending.empty() && batch.size() < opts.max_batch) {
        if (pending.front()->kind == WriteOp::Kind::kCompact) {
          if (!batch.empty()) break;  // compaction runs alone, in order
          batch.push_back(std::move(pending.front()));
          pending.pop_front();
          break;
        }
        batch.push_back(std::move(pending.front()));
        pending.pop_front();
      }
      lk.unlock();
      if (batch.size() == 1 && batch[0]->kind == WriteOp::Kind::kCompact) {
        auto r = do_compact(batch[0]->expected);
        if (r) batch[0]->done.set_value(WriteResult{});
        else batch[0]->done.set_value(fail(r.error()));
      } else {
        commit_batch(batch);
      }
      lk.lock();
    }
  }
};

// ---- Watch ----------------------------------------------------------------------------

namespace {

class SqliteWatch final : public Watch {
 public:
  SqliteWatch(std::shared_ptr<Hub> hub, std::shared_ptr<ReadPool> pool,
              std::shared_ptr<Hub::Watcher> w, std::weak_ptr<SqliteStore::Impl> owner)
      : hub_(std::move(hub)), pool_(std::move(pool)), w_(std::move(w)),
        owner_(std::move(owner)), progress_(w_->last) {}
  ~SqliteWatch() override { hub_->remove(w_); }

  Revision progress() const override { return progress_; }

  // Commits that touch nothing under the prefix move `last` without waking next().
  bool request_progress() override {
    std::lock_guard lk(hub_->mu);
    w_->progress_requested = true;
    w_->cv.notify_all();
    return true;
  }

  Result<std::vector<Event>> next(std::chrono::milliseconds timeout) override {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::unique_lock lk(hub_->mu);
    while (true) {
      if (w_->closed) return fail(Errc::kCancelled, "store is closing");
      if (!w_->queue.empty()) {
        std::vector<Event> out(std::make_move_iterator(w_->queue.begin()),
                               std::make_move_iterator(w_->queue.end()));
        w_->queue.clear();
        progress_ = w_->last;  // every event up to `last` is in `out` or was returned
        if (!w_->lagging) w_->progress_requested = false;
        return out;
      }
      if (w_->lagging) {
        Revision after = w_->last;
        lk.unlock();
        auto r = catch_up(after);
        lk.lock();
        if (!r) return fail(r.error());
        continue;
      }
      if (w_->progress_requested) {
        w_->progress_requested = false;
        progress_ = w_->last;
        return std::vector<Event>{};
      }
      if (w_->cv.wait_until(lk, deadline) == std::cv_status::timeout &&
          w_->queue.empty() && !w_->lagging && !w_->closed) {
        progress_ = w_->last;
        return std::vector<Event>{};
      }
    }
  }

 private:
  // Reads the next stretch of the log into the queue; leaves lagging mode once the log
  // has been read up to what the writer has published.
  Result<void> catch_up(Revision after) {
    auto owner = owner_.lock();
    if (!owner) return fail(Errc::kCancelled, "store is closing");
    auto conn = pool_->take();
    if (!conn) return fail(conn.error());
    ReadTxn txn(**conn);
    if (!txn.ok()) return fail(Errc::kInternal, "sqlite: cannot begin read");
    auto max_rev = scalar((*conn)->max_rev);
    if (!max_rev) return fail(max_rev.error());
    auto compacted = scalar((*conn)->compact_rev);
    if (!compacted) return fail(compacted.error());
    if (after + 1 < *compacted)
      return fail(Errc::kCompacted, "required revision " + std::to_string(after + 1) +
                                        " has been compacted");
    Revision upto = std::min(*max_rev, after + 4096);
    auto events = read_events(**conn, w_->range, after, upto);
    if (!events) return fail(events.error());
    std::lock_guard lk(hub_->mu);
    if (w_->last != after) return {};  // raced with nothing else: only next() advances it
    for (auto& e : *events) w_->queue.push_back(std::move(e));
    w_->last = std::max(w_->last, upto);
    if (upto >= hub_->published()) w_->lagging = false;
    return {};
  }

  std::shared_ptr<Hub> hub_;
  std::shared_ptr<ReadPool> pool_;
  std::shared_ptr<Hub::Watcher> w_;
  std::weak_ptr<SqliteStore::Impl> owner_;
  Revision progress_;
};

}  // namespace

// ---- SqliteStore ----------------------------------------------------------------------

SqliteStore::SqliteStore(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

SqliteStore::~SqliteStore() = default;

Result<std::unique_ptr<Store>> SqliteStore::open(const SqliteOptions& opts) {
  auto impl = std::make_shared<Impl>();
  impl->opts = opts;
  std::string lock_path = opts.path + ".lock";
  impl->lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (impl->lock_fd < 0)
    return fail(Errc::kInternal, "cannot open lock file " + lock_path + ": " + strerror(errno));
  if (flock(impl->lock_fd, LOCK_EX | LOCK_NB) != 0)
    return fail(Errc::kUnavailable,
                "store " + opts.path + " is in use by another process (lock " + lock_path + ")");

  auto db = open_db(opts, kWriterCacheKiB);
  if (!db) return fail(db.error());
  impl->wdb = std::move(*db);
  if (auto r = exec(impl->wdb.get(), kSchema); !r) return fail(r.error());
  for (auto [stmt, sql] : {std::pair{&impl->w_latest, kSelectLatest},
                           {&impl->w_insert, kInsert}, {&impl->w_max_rev, kMaxRev},
                           {&impl->w_begin, "BEGIN IMMEDIATE"}, {&impl->w_commit, "COMMIT"},
                           {&impl->w_rollback, "ROLLBACK"}}) {
    if (auto r = stmt->prepare(impl->wdb.get(), sql); !r) return fail(r.error());
  }
  auto max_rev = scalar(impl->w_max_rev);
  if (!max_rev) return fail(max_rev.error());
  Stmt cr;
  if (auto r = cr.prepare(impl->wdb.get(), kCompactRev); !r) return fail(r.error());
  auto compacted = scalar(cr);
  if (!compacted) return fail(compacted.error());
  impl->next_rev = *max_rev + 1;
  impl->compact_rev = *compacted;
  impl->pool = std::make_shared<ReadPool>(opts);
  impl->hub = std::make_shared<Hub>(*max_rev, opts.watch_queue_limit);
  impl->writer = named_thread("kos-sqlite-w", [raw = impl.get()] { raw->run_writer(); });
  spdlog::info("sqlite store: opened path={} revision={} compacted={}", opts.path, *max_rev,
               *compacted);
  return std::unique_ptr<Store>(new SqliteStore(std::move(impl)));
}

namespace {

Result<void> check_read_revision(ReadConn& c, Revision rev, Revision* resolved) {
  auto max_rev = scalar(c.max_rev);
  if (!max_rev) return fail(max_rev.error());
  if (rev == 0) {
    *resolved = *max_rev;
    return {};
  }
  if (rev > *max_rev)
    return fail(Errc::kInvalid, "revision " + std::to_string(rev) +
                                    " is in the future (current revision is " +
                                    std::to_string(*max_rev) + ")");
  auto compacted = scalar(c.compact_rev);
  if (!compacted) return fail(compacted.error());
  if (rev < *compacted)
    return fail(Errc::kCompacted, "required revision " + std::to_string(rev) +
                                      " has been compacted (compacted up to " +
                                      std::to_string(*compacted) + ")");
  *resolved = rev;
  return {};
}

}  // namespace

Result<KeyValue> SqliteStore::get(const std::string& key, Revision rev) {
  auto conn = impl_->pool->take();
  if (!conn) return fail(conn.error());
  ReadTxn txn(**conn);
  if (!txn.ok()) return fail(Errc::kInternal, "sqlite: cannot begin read");
  Revision at = 0;
  if (auto r = check_read_revision(**conn, rev, &at); !r) return fail(r.error());
  auto& s = (*conn)->latest.reset().bind(1, key).bind(2, at);
  auto row = s.step();
  if (!row) return fail(row.error());
  if (!*row || s.i64(4) != 0) {
    s.reset();
    return fail(Errc::kNotFound, "key not found: " + key);
  }
  KeyValue kv{key, s.blob(1), s.i64(2), s.i64(0), s.i64(3)};
  s.reset();
  return kv;
}

Result<ListResult> SqliteStore::list(const std::string& prefix, const ListOptions& opts) {
  auto conn = impl_->pool->take();
  if (!conn) return fail(conn.error());
  ReadTxn txn(**conn);
  if (!txn.ok()) return fail(Errc::kInternal, "sqlite: cannot begin read");
  ListResult out;
  if (auto r = check_read_revision(**conn, opts.revision, &out.revision); !r)
    return fail(r.error());
  KeyRange range(prefix);
  std::string begin = std::max(range.begin, opts.start_key);
  int64_t limit = opts.limit > 0 ? opts.limit + 1 : -1;
  auto& s = (*conn)->range.reset().bind(1, begin).bind(2, range.end).bind(3, out.revision)
                .bind(4, limit);
  while (true) {
    auto row = s.step();
    if (!row) return fail(row.error());
    if (!*row) break;
    out.items.push_back(KeyValue{s.blob(0), s.blob(1), s.i64(2), s.i64(3), s.i64(4)});
  }
  s.reset();
  if (opts.limit > 0 && static_cast<int64_t>(out.items.size()) > opts.limit) {
    out.more = true;
    out.next_key = std::move(out.items.back().key);
    out.items.pop_back();
  }
  return out;
}

namespace {
std::unique_ptr<WriteOp> make_op(WriteOp::Kind kind, const std::string& key,
                                 const std::string& value, Revision expected) {
  auto op = std::make_unique<WriteOp>();
  op->kind = kind;
  op->key = key;
  op->value = value;
  op->expected = expected;
  return op;
}
}  // namespace

Result<KeyValue> SqliteStore::create(const std::string& key, const std::string& value) {
  auto r = impl_->submit(make_op(WriteOp::Kind::kCreate, key, value, 0));
  if (!r) return fail(r.error());
  return std::move(r->kv);
}

Result<KeyValue> SqliteStore::update(const std::string& key, const std::string& value,
                                     Revision expected_mod_revision) {
  auto r = impl_->submit(make_op(WriteOp::Kind::kUpdate, key, value, expected_mod_revision));
  if (!r) return fail(r.error());
  return std::move(r->kv);
}

Result<KeyValue> SqliteStore::remove(const std::string& key, Revision expected_mod_revision,
                                     Revision* deleted_at) {
  auto r = impl_->submit(make_op(WriteOp::Kind::kDelete, key, {}, expected_mod_revision));
  if (!r) return fail(r.error());
  if (deleted_at) *deleted_at = r->revision;
  return std::move(r->kv);
}

Result<void> SqliteStore::compact(Revision rev) {
  auto r = impl_->submit(make_op(WriteOp::Kind::kCompact, {}, {}, rev));
  if (!r) return fail(r.error());
  return {};
}

Result<Revision> SqliteStore::current_revision() {
  std::lock_guard lk(impl_->hub->mu);
  return impl_->hub->published();
}

// The previous values cost nothing here (the writer has them): opts.prev is not needed.
Result<std::unique_ptr<Watch>> SqliteStore::watch(const std::string& prefix, Revision after, const WatchOptions&) {
  auto& hub = *impl_->hub;
  std::shared_ptr<Hub::Watcher> w;
  {
    std::lock_guard lk(hub.mu);
    Revision published = hub.published();
    if (after == 0) after = published;
    if (after + 1 < impl_->compact_rev.load())
      return fail(Errc::kCompacted, "required revision " + std::to_string(after + 1) +
                                        " has been compacted (compacted up to " +
                                        std::to_string(impl_->compact_rev.load()) + ")");
    w = hub.add(prefix, after, /*lagging=*/after < published);
  }
  return std::unique_ptr<Watch>(
      new SqliteWatch(impl_->hub, impl_->pool, std::move(w), impl_));
}

}  // namespace kos::store
