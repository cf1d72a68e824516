// Power cuts through the fault-injecting VFS (fault_vfs.h): a cut loses every write not
// yet synced, which a kill -9 cannot show. The store must keep every acknowledged write
// across a cut, and with synchronous=OFF the same test must see writes lost, which proves
// it can detect a missing fsync.
#include "store/sqlite/fault_vfs.h"

#include <sqlite3.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include <gtest/gtest.h>

#include "store/sqlite/sqlite_store.h"
#include "test/support/process.h"

namespace kos::store {
namespace {

using namespace std::chrono_literals;

// ---- The VFS on raw files ----------------------------------------------------------------

// A file opened through a VFS by hand, as SQLite would open a main database.
class RawFile {
 public:
  RawFile() = default;
  RawFile(const RawFile&) = delete;
  RawFile& operator=(const RawFile&) = delete;
  ~RawFile() {
    if (f_ && f_->pMethods) f_->pMethods->xClose(f_);
  }

  int open(sqlite3_vfs* vfs, const std::filesystem::path& path) {
    name_ = path.string();
    name_.append(2, '\0');  // SQLite's names end with two NULs (no URI parameters)
    mem_.reset(new std::max_align_t[vfs->szOsFile / sizeof(std::max_align_t) + 1]);
    f_ = reinterpret_cast<sqlite3_file*>(mem_.get());
    int out = 0;
    return vfs->xOpen(vfs, name_.c_str(), f_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_MAIN_DB, &out);
  }
  int write(const std::string& s, int64_t off) {
    return f_->pMethods->xWrite(f_, s.data(), static_cast<int>(s.size()), off);
  }
  int sync() { return f_->pMethods->xSync(f_, SQLITE_SYNC_NORMAL); }
  int truncate(int64_t size) { return f_->pMethods->xTruncate(f_, size); }
  int close() {
    int rc = f_->pMethods->xClose(f_);
    f_ = nullptr;
    return rc;
  }

 private:
  std::string name_;
  std::unique_ptr<std::max_align_t[]> mem_;
  sqlite3_file* f_ = nullptr;
};

std::optional<std::string> contents(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

TEST(FaultVfs, PowerCutLeavesOnlyTheSyncedBytesOfAFile) {
  kos::testing::TempDir dir("kos-fault-vfs-test");
  auto vfs = FaultVfs::install();
  ASSERT_TRUE(vfs.has_value()) << vfs.error().message;
  sqlite3_vfs* v = sqlite3_vfs_find((*vfs)->name().c_str());
  ASSERT_NE(v, nullptr);
  EXPECT_NE(sqlite3_vfs_find(nullptr), v) << "the fault VFS must not become the default";

  // a: synced, then overwritten across a block boundary and extended.
  const std::string synced = "synced:" + std::string(6000, 'a');
  RawFile a;
  ASSERT_EQ(a.open(v, dir.path() / "a"), SQLITE_OK);
  ASSERT_EQ(a.write(synced, 0), SQLITE_OK);
  ASSERT_EQ(a.sync(), SQLITE_OK);
  ASSERT_EQ(a.write("UNSYNCED", 0), SQLITE_OK);
  ASSERT_EQ(a.write(std::string(5000, 'b'), 4090), SQLITE_OK);
  ASSERT_EQ(a.write("tail", 20000), SQLITE_OK);
  ASSERT_EQ(a.close(), SQLITE_OK);

  // b: synced, then cut short and written inside what is left.
  std::string pattern;
  for (int i = 0; pattern.size() < 10000; ++i) pattern += std::to_string(i) + ",";
  RawFile b;
  ASSERT_EQ(b.open(v, dir.path() / "b"), SQLITE_OK);
  ASSERT_EQ(b.write(pattern, 0), SQLITE_OK);
  ASSERT_EQ(b.sync(), SQLITE_OK);
  ASSERT_EQ(b.truncate(100), SQLITE_OK);
  ASSERT_EQ(b.write("zz", 50), SQLITE_OK);
  ASSERT_EQ(b.close(), SQLITE_OK);

  // c: never synced.
  RawFile c;
  ASSERT_EQ(c.open(v, dir.path() / "c"), SQLITE_OK);
  ASSERT_EQ(c.write("lost", 0), SQLITE_OK);
  ASSERT_EQ(c.close(), SQLITE_OK);

  // Before the cut the page cache has every write, as after a kill -9.
  EXPECT_EQ(contents(dir.path() / "a")->substr(0, 8), "UNSYNCED");
  EXPECT_EQ(contents(dir.path() / "b")->size(), 100u);
  EXPECT_EQ(contents(dir.path() / "c"), "lost");
  EXPECT_EQ((*vfs)->sync_count(), 2);

  ASSERT_TRUE((*vfs)->power_cut().has_value());
  EXPECT_EQ(contents(dir.path() / "a"), synced);
  EXPECT_EQ(contents(dir.path() / "b"), pattern);
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "c"));
}

TEST(FaultVfs, HandlesOpenAtAPowerCutAreDead) {
  kos::testing::TempDir dir("kos-fault-vfs-test");
  auto vfs = FaultVfs::install();
  ASSERT_TRUE(vfs.has_value()) << vfs.error().message;
  sqlite3_vfs* v = sqlite3_vfs_find((*vfs)->name().c_str());
  ASSERT_NE(v, nullptr);
  const auto path = dir.path() / "d";

  RawFile d;
  ASSERT_EQ(d.open(v, path), SQLITE_OK);
  ASSERT_EQ(d.write("before", 0), SQLITE_OK);
  ASSERT_EQ(d.sync(), SQLITE_OK);
  ASSERT_EQ(d.write("after", 6), SQLITE_OK);
  ASSERT_TRUE((*vfs)->power_cut().has_value());
  EXPECT_EQ(contents(path), "before");

  // The dead handle changes nothing, and nothing is deleted while it is open.
  EXPECT_EQ(d.write("x", 0), SQLITE_IOERR_WRITE);
  EXPECT_EQ(d.truncate(0), SQLITE_IOERR_TRUNCATE);
  EXPECT_EQ(d.sync(), SQLITE_IOERR_FSYNC);
  std::string name = path.string();
  EXPECT_EQ(v->xDelete(v, name.c_str(), 0), SQLITE_OK);
  EXPECT_EQ(contents(path), "before");
  ASSERT_EQ(d.close(), SQLITE_OK);

  // A handle opened after the cut works, deletes too.
  RawFile e;
  ASSERT_EQ(e.open(v, path), SQLITE_OK);
  ASSERT_EQ(e.write("again!", 0), SQLITE_OK);
  ASSERT_EQ(e.close(), SQLITE_OK);
  EXPECT_EQ(contents(path), "again!");
  EXPECT_EQ(v->xDelete(v, name.c_str(), 0), SQLITE_OK);
  EXPECT_FALSE(std::filesystem::exists(path));
}

// ---- The store across a power cut ----------------------------------------------------------

constexpr int kKeys = 200;

std::string key(int i) { return "/registry/k/" + std::to_string(i); }
std::string value(int i) { return "value-" + std::to_string(i) + std::string(100, 'x'); }

enum class Cut {
  kWhileOpen,   // the machine loses power under the running store
  kAfterClose,  // the store closes cleanly (checkpoint on close), then the power goes
};
const char* cut_name(Cut c) { return c == Cut::kWhileOpen ? "while open" : "after close"; }

struct Outcome {
  std::string reopen_error;  // empty: the store reopened
  std::vector<int> lost;     // acknowledged keys missing, or with another value, afterwards
  int64_t syncs = 0;

  std::string describe() const {
    if (!reopen_error.empty()) return "reopen failed: " + reopen_error;
    std::string s = std::to_string(lost.size()) + " of " + std::to_string(kKeys) +
                    " acknowledged writes lost";
    for (size_t i = 0; i < lost.size() && i < 5; ++i) s += (i ? ", " : ": ") + key(lost[i]);
    if (lost.size() > 5) s += ", ...";
    return s + " (" + std::to_string(syncs) + " syncs)";
  }
};

// Creates kKeys keys through the fault VFS (each acknowledged), cuts the power, reopens
// the store with the default VFS and reports which acknowledged writes are gone.
void write_cut_reopen(const std::filesystem::path& dir, bool unsafe_no_sync, Cut cut,
                      Outcome* out) {
  auto vfs = FaultVfs::install();
  ASSERT_TRUE(vfs.has_value()) << vfs.error().message;
  SqliteOptions o;
  o.path = (dir / "kos.db").string();
  o.compaction_interval = 0ms;
  o.vfs = (*vfs)->name();
  o.unsafe_no_sync = unsafe_no_sync;
  {
    auto s = SqliteStore::open(o);
    ASSERT_TRUE(s.has_value()) << s.error().message;
    for (int i = 0; i < kKeys; ++i) {
      auto kv = (*s)->create(key(i), value(i));
      ASSERT_TRUE(kv.has_value()) << kv.error().message;
    }
    auto got = (*s)->get(key(0), 0);  // a read connection is open at the cut too
    ASSERT_TRUE(got.has_value()) << got.error().message;
    if (cut == Cut::kWhileOpen) {
      auto r = (*vfs)->power_cut();
      ASSERT_TRUE(r.has_value()) << r.error().message;
    }
  }  // the store closes; after a cut, whatever it writes on the way out is lost
  if (cut == Cut::kAfterClose) {
    auto r = (*vfs)->power_cut();
    ASSERT_TRUE(r.has_value()) << r.error().message;
  }
  out->syncs = (*vfs)->sync_count();

  // What is on disk is all there is: reopen with the default VFS.
  o.vfs.clear();
  o.unsafe_no_sync = false;
  auto s = SqliteStore::open(o);
  if (!s) {
    out->reopen_error = s.error().message;
    return;
  }
  for (int i = 0; i < kKeys; ++i) {
    auto kv = (*s)->get(key(i), 0);
    if (!kv || kv->value != value(i)) out->lost.push_back(i);
  }
}

TEST(FaultVfs, PowerCutKeepsEveryAcknowledgedWrite) {
  for (Cut cut : {Cut::kWhileOpen, Cut::kAfterClose}) {
    SCOPED_TRACE(std::string("power cut ") + cut_name(cut));
    kos::testing::TempDir dir("kos-durability-test");
    Outcome out;
    ASSERT_NO_FATAL_FAILURE(write_cut_reopen(dir.path(), /*unsafe_no_sync=*/false, cut, &out));
    EXPECT_EQ(out.reopen_error, "");
    EXPECT_TRUE(out.lost.empty()) << out.describe();
    EXPECT_GE(out.syncs, kKeys) << "one fsync per acknowledged commit at least";
    std::printf("synchronous=FULL, power cut %s: %s\n", cut_name(cut), out.describe().c_str());
  }
}

// The check on the check: without fsync the same test must fail.
TEST(FaultVfs, PowerCutCatchesSynchronousOff) {
  for (Cut cut : {Cut::kWhileOpen, Cut::kAfterClose}) {
    SCOPED_TRACE(std::string("power cut ") + cut_name(cut));
    kos::testing::TempDir dir("kos-durability-test");
    Outcome out;
    ASSERT_NO_FATAL_FAILURE(write_cut_reopen(dir.path(), /*unsafe_no_sync=*/true, cut, &out));
    EXPECT_TRUE(!out.reopen_error.empty() || !out.lost.empty())
        << "synchronous=OFF lost nothing across a power cut: the VFS cannot see a missing "
           "fsync";
    std::printf("synchronous=OFF, power cut %s: %s\n", cut_name(cut), out.describe().c_str());
  }
}

}  // namespace
}  // namespace kos::store
