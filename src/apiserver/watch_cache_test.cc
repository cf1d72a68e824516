#include "apiserver/watch_cache.h"

#include <gtest/gtest.h>

#include "apiserver/registry.h"
#include "store/sqlite/sqlite_store.h"
#include "test/support/process.h"

namespace kos::apiserver {
namespace {

using namespace std::chrono_literals;
namespace json = boost::json;

// Collects lines; refuses live lines beyond `limit` queued (a slow client).
class FakeSink : public WatchSink {
 public:
  explicit FakeSink(size_t limit = SIZE_MAX) : limit_(limit) {}
  bool send(std::shared_ptr<const std::string> line, bool initial) override {
    std::lock_guard lk(mu_);
    if (!initial && lines_.size() >= limit_) return false;
    lines_.push_back(*line);
    cv_.notify_all();
    return true;
  }
  void close(std::optional<Error> error) override {
    std::lock_guard lk(mu_);
    closed_ = true;
    error_ = std::move(error);
    cv_.notify_all();
  }
  // Waits until `n` lines have arrived (or the sink closed).
  std::vector<std::string> wait(size_t n) {
    std::unique_lock lk(mu_);
    cv_.wait_for(lk, 10s, [&] { return lines_.size() >= n || closed_; });
    return lines_;
  }
  bool closed() {
    std::lock_guard lk(mu_);
    return closed_;
  }
  std::optional<Error> error() {
    std::lock_guard lk(mu_);
    return error_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  size_t limit_;
  std::vector<std::string> lines_;
  bool closed_ = false;
  std::optional<Error> error_;
};

class WatchCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store::SqliteOptions o;
    o.path = (dir_.path() / "kos.db").string();
    o.compaction_interval = 0ms;
    store_ = *store::SqliteStore::open(o);
    strategy_ = make_kos_strategy(api::Kind::kNetworkAttachment);
    WatchCache::Options co;
    co.history = 50;
    cache_ = std::make_unique<WatchCache>(*store_, *strategy_, clock_, co);
    ASSERT_TRUE(cache_->start().has_value());
    registry_ = std::make_unique<Registry>(*store_, *cache_, clock_);
  }
  void TearDown() override {
    cache_->stop();
  }

  CachedPtr create(const std::string& name, const std::string& node) {
    auto body = api::parse_json(R"({"metadata":{"name":")" + name + R"("},"spec":{"node":")" +
                                node + R"(","subnet":"s1"}})");
    auto r = registry_->create("ns", *body, {});
    EXPECT_TRUE(r.has_value()) << r.error().message;
    return r ? *r : nullptr;
  }

  WatchRequest by_node(const std::string& node) {
    WatchRequest w;
    w.fields = *api::FieldSelector::parse("spec.node=" + node);
    return w;
  }

  kos::testing::TempDir dir_{"kos-watchcache"};
  FakeClock clock_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<Strategy> strategy_;
  std::unique_ptr<WatchCache> cache_;
  std::unique_ptr<Registry> registry_;
};

TEST_F(WatchCacheTest, IndexedWatchersCostOnlyWhenTheyCanMatch) {
  std::vector<std::shared_ptr<FakeSink>> sinks;
  for (int i = 0; i < 1000; ++i) {
    sinks.push_back(std::make_shared<FakeSink>());
    ASSERT_TRUE(cache_->watch(by_node("node-" + std::to_string(i)), sinks.back()).has_value());
  }
  auto before = cache_->stats();
  auto o = create("a", "node-7");
  ASSERT_TRUE(o);
  ASSERT_TRUE(cache_->wait_for(o->rv, 5s));
  auto lines = sinks[7]->wait(1);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("\"type\":\"ADDED\""), std::string::npos);
  auto after = cache_->stats();
  // One event: one watcher evaluated, one line built and sent (not 1000).
  EXPECT_EQ(after.watchers_evaluated - before.watchers_evaluated, 1u);
  EXPECT_EQ(after.lines_serialized - before.lines_serialized, 1u);
  EXPECT_EQ(after.lines_sent - before.lines_sent, 1u);
  EXPECT_TRUE(sinks[8]->wait(0).empty());
}

TEST_F(WatchCacheTest, SelectorTransitionsBecomeAddedAndDeleted) {
  auto sink = std::make_shared<FakeSink>();
  WatchRequest w;
  w.labels = *api::LabelSelector::parse("app=x");
  ASSERT_TRUE(cache_->watch(w, sink).has_value());
  auto o = create("a", "n1");
  auto patch = api::parse_json(R"({"metadata":{"labels":{"app":"x"}}})");
  ASSERT_TRUE(registry_->patch("ns", "a", PatchType::kMerge, *patch, false, {}).has_value());
  auto unlabel = api::parse_json(R"({"metadata":{"labels":{"app":"y"}}})");
  ASSERT_TRUE(registry_->patch("ns", "a", PatchType::kMerge, *unlabel, false, {}).has_value());
  auto lines = sink->wait(2);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[0].find("\"ADDED\""), std::string::npos);
  EXPECT_NE(lines[1].find("\"DELETED\""), std::string::npos);
}

TEST_F(WatchCacheTest, ResumesFromHistoryAndRefusesTooOldRevisions) {
  auto first = create("a", "n1");
  auto second = create("b", "n1");
  ASSERT_TRUE(first && second);
  ASSERT_TRUE(cache_->wait_for(second->rv, 5s));
  WatchRequest w = by_node("n1");
  w.since = first->rv;
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(cache_->watch(w, sink).has_value());
  auto lines = sink->wait(1);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("\"name\":\"b\""), std::string::npos);

  // Push the window (50 events) past revision `first`.
  CachedPtr last;
  for (int i = 0; i < 60; ++i) last = create("x" + std::to_string(i), "n2");
  ASSERT_TRUE(cache_->wait_for(last->rv, 5s));
  WatchRequest old = by_node("n1");
  old.since = first->rv;
  auto r = cache_->watch(old, std::make_shared<FakeSink>());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::kCompacted);
  EXPECT_EQ(r.error().http_status(), 410);
}

TEST_F(WatchCacheTest, AWatcherThatCannotKeepUpIsClosedWith410) {
  auto slow = std::make_shared<FakeSink>(3);
  ASSERT_TRUE(cache_->watch(by_node("n1"), slow).has_value());
  CachedPtr last;
  for (int i = 0; i < 10; ++i) last = create("s" + std::to_string(i), "n1");
  ASSERT_TRUE(cache_->wait_for(last->rv, 5s));
  EXPECT_TRUE(slow->closed());
  ASSERT_TRUE(slow->error().has_value());
  EXPECT_EQ(slow->error()->http_status(), 410);
  EXPECT_EQ(cache_->stats().watchers, 0u);
}

TEST_F(WatchCacheTest, InitialStateThenLiveEventsWithoutGapOrOverlap) {
  for (int i = 0; i < 5; ++i) create("pre" + std::to_string(i), "n1");
  auto sink = std::make_shared<FakeSink>();
  WatchRequest w;  // resourceVersion unset: current state first
  ASSERT_TRUE(cache_->watch(w, sink).has_value());
  auto o = create("post", "n1");
  auto lines = sink->wait(6);
  ASSERT_EQ(lines.size(), 6u);
  for (int i = 0; i < 5; ++i) EXPECT_NE(lines[static_cast<size_t>(i)].find("\"pre"), std::string::npos);
  EXPECT_NE(lines[5].find("\"post\""), std::string::npos);
}

TEST_F(WatchCacheTest, RevisionFollowsTheStoreWhileTheResourceIsQuiet) {
  auto o = create("a", "n1");
  ASSERT_TRUE(o);
  ASSERT_TRUE(cache_->wait_for(o->rv, 5s));
  // Writes of another resource: the store's revision moves on, this cache sees no event of
  // its own, yet it is as current as the store (a list or watch from that revision must
  // not wait for the next NetworkAttachment write).
  store::Revision last = 0;
  for (int i = 0; i < 3; ++i) {
    auto kv = store_->create("/registry/other/k" + std::to_string(i), "v");
    ASSERT_TRUE(kv.has_value()) << kv.error().message;
    last = kv->mod_revision;
  }
  EXPECT_TRUE(cache_->wait_for(last, 5s));
  EXPECT_GE(cache_->revision(), last);
}

TEST_F(WatchCacheTest, BookmarksNeverGoBelowTheWatchersStart) {
  WatchCache::Options co;
  co.bookmark_interval = 1s;
  WatchCache cache(*store_, *strategy_, clock_, co);
  ASSERT_TRUE(cache.start().has_value());
  // A watch from a revision the store has and the cache has not reached yet (a consistent
  // list's, served by the store while the cache lags).
  WatchRequest w;
  w.since = cache.revision() + 1000;
  w.bookmarks = true;
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(cache.watch(w, sink).has_value());
  // The cache's loop reads the clock every 100 ms of real time: step the fake clock until
  // a bookmark is due and sent.
  std::vector<std::string> lines;
  for (int i = 0; i < 100 && lines.empty(); ++i) {
    clock_.advance(1s);
    std::this_thread::sleep_for(50ms);
    lines = sink->wait(0);
  }
  cache.stop();
  ASSERT_FALSE(lines.empty());
  auto ev = api::parse_json(lines[0])->as_object();
  EXPECT_EQ(ev.at("type").as_string(), "BOOKMARK");
  auto rv = std::stoll(std::string(ev.at("object").at("metadata").at("resourceVersion").as_string()));
  EXPECT_GE(rv, *w.since) << "a bookmark below the watch's start would send the client back";
}

TEST_F(WatchCacheTest, ListsPinnedToAnIndexedFieldFollowChanges) {
  create("a", "n1");
  create("b", "n1");
  auto c = create("c", "n2");
  auto st = registry_->update("ns", "c", *api::parse_json(R"({"metadata":{"name":"c"},"spec":{"node":"n2","subnet":"s1"},"status":{"addressVNI":7,"ipv4":"10.0.0.9"}})"), true, {});
  ASSERT_TRUE(st.has_value()) << st.error().message;
  ASSERT_TRUE(cache_->wait_for((*st)->rv, 5s));
  auto names = [&](const std::string& sel) {
    std::vector<std::string> out;
    for (auto& o : cache_->list("", {}, *api::FieldSelector::parse(sel)).items) out.push_back(o->name);
    return out;
  };
  EXPECT_EQ(names("spec.node=n1"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(names("spec.node=n2,status.addressVNI=7"), (std::vector<std::string>{"c"}));
  EXPECT_EQ(names("status.addressVNI=7"), (std::vector<std::string>{"c"}));
  EXPECT_TRUE(names("status.addressVNI=8").empty());
  // The address moves to another VNI: the index follows.
  auto moved = registry_->update("ns", "c", *api::parse_json(R"({"metadata":{"name":"c"},"spec":{"node":"n2","subnet":"s1"},"status":{"addressVNI":8,"ipv4":"10.0.0.9"}})"), true, {});
  ASSERT_TRUE(moved.has_value());
  ASSERT_TRUE(cache_->wait_for((*moved)->rv, 5s));
  EXPECT_TRUE(names("status.addressVNI=7").empty());
  EXPECT_EQ(names("status.addressVNI=8"), (std::vector<std::string>{"c"}));
  ASSERT_TRUE(registry_->remove("ns", "a", {}).has_value());
  auto last = create("z", "n9");
  ASSERT_TRUE(cache_->wait_for(last->rv, 5s));
  EXPECT_EQ(names("spec.node=n1"), (std::vector<std::string>{"b"}));
}

}  // namespace
}  // namespace kos::apiserver
