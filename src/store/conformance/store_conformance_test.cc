// One suite, every backend: the semantics KOS relies on (store.h), checked against the
// embedded SQLite store and against a real etcd server.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "store/conformance/etcd_backend.h"
#include "store/conformance/sqlite_backend.h"
#include "test/support/process.h"

namespace kos::store::testing {
namespace {

using namespace std::chrono_literals;

template <class B>
class StoreConformance : public ::testing::Test {
 protected:
  // One backend per suite (one etcd server for all etcd tests); each test works under its
  // own key prefix, so tests do not see each other's keys.
  static void SetUpTestSuite() { backend_ = new B(); }
  static void TearDownTestSuite() {
    delete backend_;
    backend_ = nullptr;
  }
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    prefix_ = std::string("/conformance/") + info->name() + "/";
  }
  void TearDown() override { store_.reset(); }

  // The store is opened on first use, so a test can first run a writer process alone.
  Store& store() {
    if (!store_) {
      OpenOptions opts;
      opts.compaction_interval = 0ms;
      auto s = backend_->open(opts);
      if (!s) throw std::runtime_error("open store: " + s.error().message);
      store_ = std::move(*s);
    }
    return *store_;
  }
  std::string key(const std::string& k) const { return prefix_ + k; }

  // Collects events from `w` until one with revision >= `until` has arrived.
  std::vector<Event> drain_until(Watch& w, Revision until, std::chrono::seconds limit = 30s) {
    std::vector<Event> out;
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (out.empty() || out.back().revision() < until) {
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "watch did not reach revision " << until << " (got " << out.size()
                      << " events)";
        break;
      }
      auto batch = w.next(500ms);
      if (!batch) {
        ADD_FAILURE() << "watch failed: " << batch.error().message;
        break;
      }
      for (auto& e : *batch) out.push_back(std::move(e));
    }
    return out;
  }

  static inline B* backend_ = nullptr;
  std::unique_ptr<Store> store_;
  std::string prefix_;
};

using Backends = ::testing::Types<SqliteBackend, EtcdBackend>;
class BackendNames {
 public:
  template <class T>
  static std::string GetName(int) {
    if constexpr (std::is_same_v<T, SqliteBackend>) return "sqlite";
    else return "etcd";
  }
};
TYPED_TEST_SUITE(StoreConformance, Backends, BackendNames);

TYPED_TEST(StoreConformance, CreateAssignsIncreasingRevisions) {
  auto& s = this->store();
  auto before = s.current_revision();
  ASSERT_TRUE(before.has_value());
  auto a = s.create(this->key("a"), "1");
  ASSERT_TRUE(a.has_value()) << a.error().message;
  auto b = s.create(this->key("b"), "2");
  ASSERT_TRUE(b.has_value()) << b.error().message;
  EXPECT_GT(a->mod_revision, *before);
  EXPECT_GT(b->mod_revision, a->mod_revision);
  EXPECT_EQ(a->create_revision, a->mod_revision);
  EXPECT_EQ(a->version, 1);
  EXPECT_EQ(a->value, "1");
  auto got = s.get(this->key("a"));
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, *a);
  auto now = s.current_revision();
  ASSERT_TRUE(now.has_value());
  EXPECT_GE(*now, b->mod_revision);
}

TYPED_TEST(StoreConformance, CreateFailsWhenKeyExists) {
  auto& s = this->store();
  ASSERT_TRUE(s.create(this->key("x"), "1").has_value());
  auto again = s.create(this->key("x"), "2");
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code, Errc::kAlreadyExists);
  EXPECT_EQ(s.get(this->key("x"))->value, "1");
}

TYPED_TEST(StoreConformance, UpdateRequiresMatchingRevision) {
  auto& s = this->store();
  auto c = s.create(this->key("u"), "v1");
  ASSERT_TRUE(c.has_value());
  auto u = s.update(this->key("u"), "v2", c->mod_revision);
  ASSERT_TRUE(u.has_value()) << u.error().message;
  EXPECT_GT(u->mod_revision, c->mod_revision);
  EXPECT_EQ(u->create_revision, c->create_revision);
  EXPECT_EQ(u->version, 2);
  EXPECT_EQ(u->value, "v2");

  auto stale = s.update(this->key("u"), "v3", c->mod_revision);
  ASSERT_FALSE(stale.has_value());
  EXPECT_EQ(stale.error().code, Errc::kConflict);
  EXPECT_EQ(s.get(this->key("u"))->value, "v2");

  auto any = s.update(this->key("u"), "v4", 0);
  ASSERT_TRUE(any.has_value()) << any.error().message;
  EXPECT_EQ(any->version, 3);

  auto missing = s.update(this->key("nope"), "v", 0);
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, Errc::kNotFound);
  auto missing_rev = s.update(this->key("nope"), "v", c->mod_revision);
  ASSERT_FALSE(missing_rev.has_value());
  EXPECT_EQ(missing_rev.error().code, Errc::kNotFound);
}

TYPED_TEST(StoreConformance, DeleteRequiresMatchingRevisionAndAllowsRecreate) {
  auto& s = this->store();
  auto c = s.create(this->key("d"), "v1");
  ASSERT_TRUE(c.has_value());
  auto u = s.update(this->key("d"), "v2", 0);
  ASSERT_TRUE(u.has_value());

  auto stale = s.remove(this->key("d"), c->mod_revision);
  ASSERT_FALSE(stale.has_value());
  EXPECT_EQ(stale.error().code, Errc::kConflict);

  Revision deleted_at = 0;
  auto d = s.remove(this->key("d"), u->mod_revision, &deleted_at);
  ASSERT_TRUE(d.has_value()) << d.error().message;
  EXPECT_EQ(*d, *u);
  EXPECT_GT(deleted_at, u->mod_revision);

  auto gone = s.get(this->key("d"));
  ASSERT_FALSE(gone.has_value());
  EXPECT_EQ(gone.error().code, Errc::kNotFound);
  auto again = s.remove(this->key("d"), 0);
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code, Errc::kNotFound);

  auto re = s.create(this->key("d"), "v3");
  ASSERT_TRUE(re.has_value()) << re.error().message;
  EXPECT_EQ(re->version, 1);
  EXPECT_GT(re->create_revision, deleted_at);
}

TYPED_TEST(StoreConformance, ReadsAtPastRevisions) {
  auto& s = this->store();
  auto c = s.create(this->key("p"), "v1");
  auto u = s.update(this->key("p"), "v2", 0);
  Revision deleted_at = 0;
  ASSERT_TRUE(c && u);
  ASSERT_TRUE(s.remove(this->key("p"), 0, &deleted_at).has_value());
  auto other = s.create(this->key("q"), "later");
  ASSERT_TRUE(other.has_value());

  EXPECT_EQ(s.get(this->key("p"), c->mod_revision)->value, "v1");
  EXPECT_EQ(s.get(this->key("p"), u->mod_revision)->value, "v2");
  EXPECT_EQ(s.get(this->key("p"), deleted_at - 1)->value, "v2");
  auto at_delete = s.get(this->key("p"), deleted_at);
  ASSERT_FALSE(at_delete.has_value());
  EXPECT_EQ(at_delete.error().code, Errc::kNotFound);
  auto before_q = s.get(this->key("q"), deleted_at);
  ASSERT_FALSE(before_q.has_value());

  auto l = s.list(this->prefix_, {.revision = u->mod_revision});
  ASSERT_TRUE(l.has_value()) << l.error().message;
  EXPECT_EQ(l->revision, u->mod_revision);
  ASSERT_EQ(l->items.size(), 1u);
  EXPECT_EQ(l->items[0], *u);

  auto future = s.get(this->key("p"), other->mod_revision + 1000000);
  ASSERT_FALSE(future.has_value());
}

TYPED_TEST(StoreConformance, ListsPrefixInKeyOrderWithPaging) {
  auto& s = this->store();
  std::vector<std::string> want;
  for (int i = 24; i >= 0; --i) {
    char k[8];
    std::snprintf(k, sizeof k, "k%02d", i);
    ASSERT_TRUE(s.create(this->key(k), std::to_string(i)).has_value());
    want.push_back(this->key(k));
  }
  std::sort(want.begin(), want.end());
  // Neighbours that share the prefix's leading bytes must not show up.
  ASSERT_TRUE(s.create(this->prefix_.substr(0, this->prefix_.size() - 1) + "x", "out").has_value());
  ASSERT_TRUE(s.create(this->prefix_.substr(0, this->prefix_.size() - 1) + "0", "out").has_value());

  auto all = s.list(this->prefix_);
  ASSERT_TRUE(all.has_value()) << all.error().message;
  EXPECT_FALSE(all->more);
  std::vector<std::string> got;
  for (auto& kv : all->items) got.push_back(kv.key);
  EXPECT_EQ(got, want);

  // Page through at the first page's revision while writes go on: the pages stay a
  // consistent snapshot.
  std::vector<std::string> paged;
  ListOptions opts{.limit = 10};
  Revision snapshot = 0;
  int pages = 0;
  while (true) {
    auto page = s.list(this->prefix_, opts);
    ASSERT_TRUE(page.has_value()) << page.error().message;
    ++pages;
    if (snapshot == 0) {
      snapshot = page->revision;
      ASSERT_TRUE(s.create(this->key("k05a"), "new").has_value());
      ASSERT_TRUE(s.remove(this->key("k20"), 0).has_value());
    }
    EXPECT_EQ(page->revision, snapshot);
    EXPECT_LE(page->items.size(), 10u);
    for (auto& kv : page->items) paged.push_back(kv.key);
    if (!page->more) break;
    opts.revision = snapshot;
    opts.start_key = page->next_key;
  }
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(paged, want);

  auto latest = s.list(this->prefix_);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->items.size(), want.size());  // +k05a, -k20
  EXPECT_GT(latest->revision, snapshot);
}

TYPED_TEST(StoreConformance, WatchDeliversEveryEventWithPreviousValues) {
  auto& s = this->store();
  auto start = s.current_revision();
  ASSERT_TRUE(start.has_value());
  auto c = s.create(this->key("w"), "v1");
  auto u = s.update(this->key("w"), "v2", 0);
  Revision deleted_at = 0;
  ASSERT_TRUE(c && u);
  ASSERT_TRUE(s.remove(this->key("w"), 0, &deleted_at).has_value());
  ASSERT_TRUE(s.create(this->prefix_.substr(0, this->prefix_.size() - 1) + "-outside", "x").has_value());

  // Started after the writes, from a revision before them: catches up from history.
  auto w = s.watch(this->prefix_, *start);
  ASSERT_TRUE(w.has_value()) << w.error().message;
  auto events = this->drain_until(**w, deleted_at);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].type, Event::Type::kPut);
  EXPECT_TRUE(events[0].is_create());
  EXPECT_EQ(events[0].kv, *c);
  EXPECT_FALSE(events[0].prev.has_value());
  EXPECT_EQ(events[1].kv, *u);
  ASSERT_TRUE(events[1].prev.has_value());
  EXPECT_EQ(*events[1].prev, *c);
  EXPECT_EQ(events[2].type, Event::Type::kDelete);
  EXPECT_EQ(events[2].kv.key, this->key("w"));
  EXPECT_EQ(events[2].revision(), deleted_at);
  ASSERT_TRUE(events[2].prev.has_value());
  EXPECT_EQ(*events[2].prev, *u);
  {
    // Without previous values: the same events, `prev` optional.
    auto bare = s.watch(this->prefix_, *start, Store::WatchOptions{.prev = false});
    ASSERT_TRUE(bare.has_value()) << bare.error().message;
    auto got = this->drain_until(**bare, deleted_at);
    ASSERT_EQ(got.size(), events.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].type, events[i].type) << i;
      EXPECT_EQ(got[i].kv, events[i].kv) << i;
      if (got[i].prev) {
        EXPECT_EQ(got[i].prev, events[i].prev) << i;
      }
    }
  }

  // Live events after the catch-up.
  auto live = s.create(this->key("w2"), "v");
  ASSERT_TRUE(live.has_value());
  auto more = this->drain_until(**w, live->mod_revision);
  ASSERT_EQ(more.size(), 1u);
  EXPECT_EQ(more[0].kv, *live);
}

TYPED_TEST(StoreConformance, WatchFromNowSeesOnlyLaterEvents) {
  auto& s = this->store();
  ASSERT_TRUE(s.create(this->key("before"), "x").has_value());
  auto w = s.watch(this->prefix_, 0);
  ASSERT_TRUE(w.has_value());
  auto after = s.create(this->key("after"), "y");
  ASSERT_TRUE(after.has_value());
  auto events = this->drain_until(**w, after->mod_revision);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kv.key, this->key("after"));
  auto idle = (*w)->next(50ms);
  ASSERT_TRUE(idle.has_value());
  EXPECT_TRUE(idle->empty());
}

// 8 writers create, update and delete their own keys concurrently. A watch opened before
// them and one opened half-way from an older revision must each see every committed write
// exactly once, in revision order.
TYPED_TEST(StoreConformance, WatchHasNoGapOrDuplicateUnderConcurrentWriters) {
  auto& s = this->store();
  auto start = s.current_revision();
  ASSERT_TRUE(start.has_value());
  auto early = s.watch(this->prefix_, *start);
  ASSERT_TRUE(early.has_value());

  constexpr int kWriters = 8, kOpsPerWriter = 150;
  std::vector<std::vector<Revision>> revs(kWriters);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kWriters; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kOpsPerWriter; ++i) {
        std::string k = this->key("t" + std::to_string(t) + "/" + std::to_string(i % 10));
        Result<KeyValue> r;
        Revision at = 0;
        switch (i / 10 % 3) {
          case 0: r = s.create(k, "c"); at = r ? r->mod_revision : 0; break;
          case 1: r = s.update(k, "u" + std::to_string(i), 0); at = r ? r->mod_revision : 0; break;
          case 2: r = s.remove(k, 0, &at); break;
        }
        if (!r) {
          ++failures;
          continue;
        }
        revs[t].push_back(at);
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(failures.load(), 0);

  std::set<Revision> written;
  for (auto& v : revs) written.insert(v.begin(), v.end());
  ASSERT_EQ(written.size(), static_cast<size_t>(kWriters * kOpsPerWriter));
  Revision last = *written.rbegin();

  auto middle = *std::next(written.begin(), static_cast<long>(written.size() / 2));
  auto late = s.watch(this->prefix_, middle);
  ASSERT_TRUE(late.has_value());

  for (auto* w : {&*early, &*late}) {
    auto events = this->drain_until(**w, last);
    std::vector<Revision> seen;
    for (auto& e : events) seen.push_back(e.revision());
    EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
    EXPECT_EQ(std::adjacent_find(seen.begin(), seen.end()), seen.end()) << "duplicate event";
    Revision from = w == &*early ? *start : middle;
    std::vector<Revision> want(written.upper_bound(from), written.end());
    EXPECT_EQ(seen, want);
  }
}

TYPED_TEST(StoreConformance, CompactionMakesOldRevisionsUnavailable) {
  auto& s = this->store();
  auto v1 = s.create(this->key("c"), "v1");
  auto v2 = s.update(this->key("c"), "v2", 0);
  auto gone = s.create(this->key("gone"), "x");
  ASSERT_TRUE(v1 && v2 && gone);
  Revision gone_at = 0;
  ASSERT_TRUE(s.remove(this->key("gone"), 0, &gone_at).has_value());
  auto v3 = s.update(this->key("c"), "v3", 0);
  ASSERT_TRUE(v3.has_value());

  ASSERT_TRUE(s.compact(gone_at).has_value());
  ASSERT_TRUE(s.compact(gone_at).has_value()) << "compacting twice is a no-op";

  auto old_get = s.get(this->key("c"), v1->mod_revision);
  ASSERT_FALSE(old_get.has_value());
  EXPECT_EQ(old_get.error().code, Errc::kCompacted);
  auto old_list = s.list(this->prefix_, {.revision = v2->mod_revision});
  ASSERT_FALSE(old_list.has_value());
  EXPECT_EQ(old_list.error().code, Errc::kCompacted);

  // The compaction point itself stays readable, with exactly the state it had.
  auto at = s.list(this->prefix_, {.revision = gone_at});
  ASSERT_TRUE(at.has_value()) << at.error().message;
  ASSERT_EQ(at->items.size(), 1u);
  EXPECT_EQ(at->items[0], *v2);
  EXPECT_EQ(s.get(this->key("c"))->value, "v3");

  // A watch that needs an event before the compaction point fails as compacted...
  auto w = s.watch(this->prefix_, v1->mod_revision);
  bool compacted = !w.has_value() && w.error().code == Errc::kCompacted;
  if (w.has_value()) {
    auto first = (*w)->next(5s);
    compacted = !first.has_value() && first.error().code == Errc::kCompacted;
  }
  EXPECT_TRUE(compacted);
  // ...one from the compaction point on still sees the later update, with its prev.
  auto ok = s.watch(this->prefix_, gone_at);
  ASSERT_TRUE(ok.has_value()) << ok.error().message;
  auto events = this->drain_until(**ok, v3->mod_revision);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kv, *v3);
  ASSERT_TRUE(events[0].prev.has_value());
  EXPECT_EQ(*events[0].prev, *v2);

  auto beyond = s.compact(v3->mod_revision + 1000000);
  ASSERT_FALSE(beyond.has_value());
}

// A writer process creates keys and prints each acknowledged create; the process holding
// the data (the writer itself for SQLite, the etcd server for etcd) is killed with SIGKILL
// mid-stream. After recovery, every acknowledged write must be there.
TYPED_TEST(StoreConformance, AcknowledgedWritesSurviveKill9) {
  std::filesystem::path writer_path = KOS_TEST_STORE_WRITER;
  ASSERT_TRUE(std::filesystem::exists(writer_path)) << writer_path;
  std::map<std::string, Revision> acked;
  {
    kos::testing::ChildProcess writer(
        {writer_path.string(), "--store", this->backend_->url(), "--prefix", this->key("dur/")});
    while (acked.size() < 400) {
      auto line = writer.read_line(30s);
      ASSERT_TRUE(line.has_value()) << "writer stopped after " << acked.size() << " acks";
      auto sp = line->find(' ');
      ASSERT_NE(sp, std::string::npos) << *line;
      acked[line->substr(0, sp)] = std::stoll(line->substr(sp + 1));
    }
    this->backend_->crash_store();
    writer.signal(SIGKILL);
    // Acknowledgements already printed before the kill count too.
    while (auto line = writer.read_line(2s)) {
      auto sp = line->find(' ');
      if (sp == std::string::npos) break;
      acked[line->substr(0, sp)] = std::stoll(line->substr(sp + 1));
    }
    writer.wait(10s);
  }
  this->backend_->recover_store();
  auto& s = this->store();
  for (const auto& [k, rev] : acked) {
    auto kv = s.get(k);
    ASSERT_TRUE(kv.has_value()) << "acknowledged write lost: " << k << " at " << rev;
    EXPECT_EQ(kv->mod_revision, rev) << k;
  }
  auto list = s.list(this->key("dur/"));
  ASSERT_TRUE(list.has_value());
  EXPECT_GE(list->items.size(), acked.size());
}

}  // namespace
}  // namespace kos::store::testing
