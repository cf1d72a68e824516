// Behaviour of the embedded store beyond the shared conformance suite: the lag path of
// the watch fan-out, the single-process lock, reopening, periodic compaction, shutdown.
#include "store/sqlite/sqlite_store.h"

#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "test/support/process.h"

namespace kos::store {
namespace {

using namespace std::chrono_literals;

class SqliteStoreTest : public ::testing::Test {
 protected:
  SqliteOptions options() {
    SqliteOptions o;
    o.path = (dir_.path() / "kos.db").string();
    o.compaction_interval = 0ms;
    return o;
  }
  kos::testing::TempDir dir_{"kos-sqlite-test"};
};

TEST_F(SqliteStoreTest, SlowWatcherCatchesUpFromTheLogWithoutLoss) {
  auto o = options();
  o.watch_queue_limit = 16;
  auto s = SqliteStore::open(o);
  ASSERT_TRUE(s.has_value()) << s.error().message;
  auto w = (*s)->watch("/k/", 0);
  ASSERT_TRUE(w.has_value());
  // Far more events than the queue holds, written before the watcher reads any.
  std::vector<Revision> want;
  for (int i = 0; i < 1000; ++i) {
    auto kv = (*s)->create("/k/" + std::to_string(i), "v");
    ASSERT_TRUE(kv.has_value());
    want.push_back(kv->mod_revision);
    ASSERT_TRUE((*s)->create("/other/" + std::to_string(i), "v").has_value());
  }
  std::vector<Revision> got;
  while (got.size() < want.size()) {
    auto batch = (*w)->next(2s);
    ASSERT_TRUE(batch.has_value()) << batch.error().message;
    ASSERT_FALSE(batch->empty()) << "stalled after " << got.size();
    for (auto& e : *batch) got.push_back(e.revision());
  }
  EXPECT_EQ(got, want);
  // And it is live again afterwards.
  auto more = (*s)->create("/k/live", "v");
  ASSERT_TRUE(more.has_value());
  auto batch = (*w)->next(2s);
  ASSERT_TRUE(batch.has_value());
  ASSERT_EQ(batch->size(), 1u);
  EXPECT_EQ((*batch)[0].revision(), more->mod_revision);
}

// Commits under other prefixes move a watch's progress without waking it; a progress
// request makes next() return at once with the progress it has (a watch cache then knows
// it has reached the store's revision without waiting for its next event or timeout).
TEST_F(SqliteStoreTest, AProgressRequestEndsNextAtOnceWithTheStoresRevision) {
  auto s = SqliteStore::open(options());
  ASSERT_TRUE(s.has_value()) << s.error().message;
  auto w = (*s)->watch("/quiet/", 0);
  ASSERT_TRUE(w.has_value());
  EXPECT_TRUE((*w)->request_progress());
  auto first = (*w)->next(30s);  // the request made before anything was written
  ASSERT_TRUE(first.has_value());
  Revision last = 0;
  for (int i = 0; i < 3; ++i) {
    auto kv = (*s)->create("/busy/" + std::to_string(i), "v");
    ASSERT_TRUE(kv.has_value());
    last = kv->mod_revision;
  }
  std::thread requester([&] {
    std::this_thread::sleep_for(20ms);  // next() is waiting by then (or the request waits for it)
    (*w)->request_progress();
  });
  const auto t0 = std::chrono::steady_clock::now();
  auto batch = (*w)->next(30s);
  const auto took = std::chrono::steady_clock::now() - t0;
  requester.join();
  ASSERT_TRUE(batch.has_value()) << batch.error().message;
  EXPECT_TRUE(batch->empty());
  EXPECT_LT(took, 10s) << "next() waited out its timeout";
  EXPECT_EQ((*w)->progress(), last);
  // A request is answered once: the next call waits for events again.
  auto kv = (*s)->create("/quiet/a", "v");
  ASSERT_TRUE(kv.has_value());
  auto ev = (*w)->next(30s);
  ASSERT_TRUE(ev.has_value());
  ASSERT_EQ(ev->size(), 1u);
  EXPECT_EQ((*ev)[0].revision(), kv->mod_revision);
}

TEST_F(SqliteStoreTest, SecondOpenOfTheSameFileIsRefused) {
  auto first = SqliteStore::open(options());
  ASSERT_TRUE(first.has_value());
  auto second = SqliteStore::open(options());
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code, Errc::kUnavailable);
  EXPECT_NE(second.error().message.find("in use by another process"), std::string::npos);
}

TEST_F(SqliteStoreTest, ReopenKeepsDataRevisionAndCompactionPoint) {
  Revision last = 0;
  {
    auto s = SqliteStore::open(options());
    ASSERT_TRUE(s.has_value());
    for (int i = 0; i < 10; ++i) ASSERT_TRUE((*s)->create("/r/" + std::to_string(i), "v"));
    auto u = (*s)->update("/r/0", "v2", 0);
    ASSERT_TRUE(u.has_value());
    ASSERT_TRUE((*s)->compact(u->mod_revision - 1).has_value());
    last = u->mod_revision;
  }
  auto s = SqliteStore::open(options());
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(*(*s)->current_revision(), last);
  EXPECT_EQ((*s)->get("/r/0")->value, "v2");
  auto old = (*s)->get("/r/0", last - 5);
  ASSERT_FALSE(old.has_value());
  EXPECT_EQ(old.error().code, Errc::kCompacted);
  auto next = (*s)->create("/r/new", "v");
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->mod_revision, last + 1);
}

TEST_F(SqliteStoreTest, PeriodicCompactionDiscardsHistoryOlderThanOneInterval) {
  auto o = options();
  o.compaction_interval = 100ms;
  auto s = SqliteStore::open(o);
  ASSERT_TRUE(s.has_value());
  auto v1 = (*s)->create("/pc/a", "v1");
  auto v2 = (*s)->update("/pc/a", "v2", 0);
  ASSERT_TRUE(v1 && v2);
  // Two intervals later the revision current one interval ago has been compacted to.
  auto deadline = std::chrono::steady_clock::now() + 10s;
  bool compacted = false;
  while (!compacted && std::chrono::steady_clock::now() < deadline) {
    (void)(*s)->create("/pc/tick" + std::to_string(v2->mod_revision), "t");
    auto old = (*s)->get("/pc/a", v1->mod_revision);
    compacted = !old.has_value() && old.error().code == Errc::kCompacted;
    if (!compacted) std::this_thread::sleep_for(20ms);  // waiting on wall-clock compaction
  }
  EXPECT_TRUE(compacted);
  EXPECT_EQ((*s)->get("/pc/a")->value, "v2");
}

TEST_F(SqliteStoreTest, ClosingTheStoreEndsWatchesAndFailsNoWrite) {
  auto s = SqliteStore::open(options());
  ASSERT_TRUE(s.has_value());
  auto w = (*s)->watch("/c/", 0);
  ASSERT_TRUE(w.has_value());
  std::thread waiter([&] {
    auto r = (*w)->next(30s);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, Errc::kCancelled);
  });
  s->reset();
  waiter.join();
  w->reset();  // destroying a watch after its store is safe
}

TEST_F(SqliteStoreTest, ConcurrentWritersAllSucceedWithDistinctRevisions) {
  auto s = SqliteStore::open(options());
  ASSERT_TRUE(s.has_value());
  constexpr int kThreads = 64, kEach = 50;
  std::vector<std::vector<Revision>> revs(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        auto kv = (*s)->create("/cw/" + std::to_string(t) + "/" + std::to_string(i), "v");
        if (kv) revs[t].push_back(kv->mod_revision);
      }
    });
  for (auto& th : threads) th.join();
  std::set<Revision> all;
  for (auto& v : revs) {
    EXPECT_EQ(v.size(), static_cast<size_t>(kEach));
    EXPECT_TRUE(std::is_sorted(v.begin(), v.end()));
    all.insert(v.begin(), v.end());
  }
  EXPECT_EQ(all.size(), static_cast<size_t>(kThreads * kEach));
  EXPECT_EQ(*all.rbegin(), *(*s)->current_revision());
}

TEST_F(SqliteStoreTest, OpenFailsClearlyOnAnUnusablePath) {
  auto o = options();
  o.path = (dir_.path() / "missing-dir" / "kos.db").string();
  auto s = SqliteStore::open(o);
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message.find("missing-dir"), std::string::npos) << s.error().message;
}

}  // namespace
}  // namespace kos::store
