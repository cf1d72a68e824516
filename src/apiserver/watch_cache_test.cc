#include "apiserver/watch_cache.h"

#include <gtest/gtest.h>

#include <random>

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

// One watch event as the checks below need it; also one write, as the event it makes.
struct Ev {
  std::string type;  // ADDED, MODIFIED or DELETED
  std::string name;
  store::Revision rv = 0;
  bool operator==(const Ev&) const = default;
};

std::string describe(const Ev& e) { return e.type + " " + e.name + "@" + std::to_string(e.rv); }

Ev parse_event(const std::string& line) {
  auto ev = api::parse_json(line)->as_object();
  const auto& meta = ev.at("object").at("metadata");
  return {std::string(ev.at("type").as_string()), std::string(meta.at("name").as_string()),
          std::stoll(std::string(meta.at("resourceVersion").as_string()))};
}

using State = std::map<std::string, store::Revision>;  // object name -> resourceVersion

void apply_write(State& s, const Ev& write) {
  if (write.type == "DELETED") s.erase(write.name);
  else s[write.name] = write.rv;
}

// The objects after the first `n` writes of `log` (in revision order).
State state_after(const std::vector<Ev>& log, size_t n) {
  State s;
  for (size_t i = 0; i < n; ++i) apply_write(s, log[i]);
  return s;
}

State state_at(const std::vector<Ev>& log, store::Revision rv) {
  size_t n = 0;
  while (n < log.size() && log[n].rv <= rv) ++n;
  return state_after(log, n);
}

std::string difference(const State& have, const State& want) {
  std::string out;
  for (const auto& [name, rv] : want)
    if (auto it = have.find(name); it == have.end()) out += " missing " + name + "@" + std::to_string(rv) + ";";
    else if (it->second != rv) out += " " + name + " at " + std::to_string(it->second) + " instead of " + std::to_string(rv) + ";";
  for (const auto& [name, rv] : have)
    if (!want.count(name)) out += " extra " + name + "@" + std::to_string(rv) + ";";
  return out;
}

// Applies a watch's events to what it held before them: "" or the first inconsistency.
std::string replay(const std::vector<Ev>& evs, State& held) {
  State newest = held;  // the newest resourceVersion seen per object, deleted ones included
  for (size_t i = 0; i < evs.size(); ++i) {
    const Ev& e = evs[i];
    const std::string at = "event " + std::to_string(i) + " of " + std::to_string(evs.size()) + " (" + describe(e) + "): ";
    auto it = held.find(e.name);
    if (e.type == "ADDED") {
      if (it != held.end())
        return at + "overlap: ADDED for an object the watch already has (at " + std::to_string(it->second) + ")";
    } else if (e.type == "MODIFIED" || e.type == "DELETED") {
      if (it == held.end()) return at + "gap: " + e.type + " for an object the watch does not have";
    } else {
      return at + "unexpected event type";
    }
    if (auto n = newest.find(e.name); n != newest.end() && e.rv <= n->second)
      return at + "resourceVersion not above the object's previous " + std::to_string(n->second);
    newest[e.name] = e.rv;
    if (e.type == "DELETED") held.erase(e.name);
    else held[e.name] = e.rv;
  }
  return "";
}

// "" if a watch got exactly the events `want`, else where it went astray.
std::string first_difference(const std::vector<Ev>& have, const std::vector<Ev>& want) {
  size_t i = 0;
  while (i < have.size() && i < want.size() && have[i] == want[i]) ++i;
  if (i == have.size() && i == want.size()) return "";
  return "event " + std::to_string(i) + " is " + (i < have.size() ? describe(have[i]) : "missing") +
         " instead of " + (i < want.size() ? describe(want[i]) : "none") + " (" + std::to_string(have.size()) +
         " events, " + std::to_string(want.size()) + " writes)";
}

// A watch with the current state first must get ADDED events for the state at one
// revision R, then exactly the writes after R, in order: "" or why not.
std::string check_initial_then_live(const std::vector<Ev>& evs, const std::vector<Ev>& log) {
  size_t tail = 0;  // how many of the last events are the last writes
  while (tail < evs.size() && tail < log.size() && evs[evs.size() - 1 - tail] == log[log.size() - 1 - tail]) ++tail;
  // Where the initial state ends: from after the longest matching tail on, each step
  // moves one event into the initial state and the state it must equal one write on.
  State snapshot, expected = state_after(log, log.size() - tail);
  bool all_added = true;  // the initial state has ADDED events only, one per object
  auto add = [&](const Ev& e) { all_added = all_added && e.type == "ADDED" && snapshot.emplace(e.name, e.rv).second; };
  for (size_t i = 0; i < evs.size() - tail; ++i) add(evs[i]);
  for (size_t live = tail; all_added; --live) {
    if (snapshot == expected) return "";
    if (live == 0) break;
    add(evs[evs.size() - live]);
    apply_write(expected, log[log.size() - live]);
  }
  return "its events are not the state at one revision followed by every later write (" +
         std::to_string(evs.size()) + " events, the last " + std::to_string(tail) + " match the last writes)";
}

// The race the cache's single lock closes: a write landing while a watch is being
// registered (between its initial state or replayed history and its registration for
// live events). Two writers create, modify and delete objects without pause while 240
// watches start, each after a write more and at a random moment: 160 with the current
// state first (resourceVersion unset), 80 from a revision seen a moment before. Each
// watch, replayed, must end with exactly the final objects at their final
// resourceVersions, never get an ADDED for an object it has (overlap) nor a MODIFIED or
// DELETED for one it lacks (gap), see every object's resourceVersion increase, and get
// exactly the writes after its start, in order.
TEST_F(WatchCacheTest, WatchesStartedDuringWritesSeeNoGapOrOverlap) {
  WatchCache::Options co;
  co.history = 1 << 20;  // every watch from a revision stays within the window
  WatchCache cache(*store_, *strategy_, clock_, co);
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));

  std::mutex log_mu;
  std::vector<Ev> log;  // every write, as the event it makes
  auto record = [&](Ev e) {
    std::lock_guard lk(log_mu);
    log.push_back(std::move(e));
  };
  for (int i = 0; i < 5; ++i) {
    auto o = create("pre" + std::to_string(i), "n1");
    ASSERT_TRUE(o);
    record({"ADDED", o->name, o->rv});
  }
  ASSERT_TRUE(cache.start().has_value());
  const store::Revision start_rv = cache.revision();

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> writes{0};
  auto writer = [&](int id) {
    std::mt19937 rng(seed + static_cast<unsigned>(id));
    State mine;  // this writer's objects: no other writer touches them
    for (int k = 0; !stop; ++k) {
      const std::string name = "w" + std::to_string(id) + "-" + std::to_string(rng() % 8);
      auto it = mine.find(name);
      if (it == mine.end()) {
        auto o = create(name, "n1");
        if (!o) return;
        mine[name] = o->rv;
        record({"ADDED", name, o->rv});
      } else if (rng() % 3 != 0) {
        auto patch = api::parse_json(R"({"metadata":{"labels":{"k":")" + std::to_string(k) + R"("}}})");
        auto r = registry_->patch("ns", name, PatchType::kMerge, *patch, false, {});
        if (!r) {
          ADD_FAILURE() << "patch " << name << ": " << r.error().message;
          return;
        }
        it->second = (*r)->rv;
        record({"MODIFIED", name, (*r)->rv});
      } else {
        store::Revision at = 0;
        auto r = store_->remove(strategy_->info().key("ns", name), it->second, &at);
        if (!r) {
          ADD_FAILURE() << "delete " << name << ": " << r.error().message;
          return;
        }
        mine.erase(it);
        record({"DELETED", name, at});
      }
      ++writes;
    }
  };
  std::vector<std::thread> writers;
  for (int id = 0; id < 2; ++id) writers.emplace_back(writer, id);
  struct Join {
    std::atomic<bool>& stop;
    std::vector<std::thread>& threads;
    ~Join() {
      stop = true;
      for (auto& t : threads)
        if (t.joinable()) t.join();
    }
  } join{stop, writers};
  // Returns once `n` more writes have landed (false: the writers stopped).
  auto more_writes = [&](uint64_t n) {
    const uint64_t want = writes.load() + n;
    for (auto deadline = std::chrono::steady_clock::now() + 5s; writes.load() < want;)
      if (std::chrono::steady_clock::now() > deadline) return false;
      else std::this_thread::yield();
    return true;
  };

  struct Started {
    std::shared_ptr<FakeSink> sink;
    std::optional<store::Revision> since;
  };
  std::vector<Started> watches;
  std::mt19937 rng(seed);
  for (int i = 0; i < 240; ++i) {
    ASSERT_TRUE(more_writes(1)) << "the writers stopped";
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 500));
    WatchRequest w;
    if (i % 3 == 2) w.since = std::max(start_rv, cache.revision() - static_cast<store::Revision>(rng() % 20));
    auto sink = std::make_shared<FakeSink>();
    auto r = cache.watch(w, sink);
    ASSERT_TRUE(r.has_value()) << r.error().message;
    watches.push_back({sink, w.since});
  }
  ASSERT_TRUE(more_writes(20)) << "the writers stopped";
  stop = true;
  for (auto& t : writers) t.join();

  std::sort(log.begin(), log.end(), [](const Ev& a, const Ev& b) { return a.rv < b.rv; });
  ASSERT_TRUE(cache.wait_for(log.back().rv, 5s));
  const State final_state = state_after(log, log.size());
  // The writers' record is the store's state.
  State stored;
  auto l = store_->list(strategy_->info().key_prefix());
  ASSERT_TRUE(l.has_value());
  for (const auto& kv : l->items) {
    auto c = make_cached(*strategy_, kv.key, kv.value, kv.mod_revision);
    ASSERT_TRUE(c.has_value());
    stored[(*c)->name] = kv.mod_revision;
  }
  ASSERT_EQ(difference(stored, final_state), "");

  for (size_t i = 0; i < watches.size(); ++i) {
    const auto& [sink, since] = watches[i];
    const std::string what = "watch " + std::to_string(i) +
                             (since ? " from revision " + std::to_string(*since) : " with the current state first");
    EXPECT_FALSE(sink->closed()) << what;
    std::vector<Ev> evs;
    for (const auto& line : sink->wait(0)) evs.push_back(parse_event(line));
    State held = since ? state_at(log, *since) : State{};
    if (auto e = replay(evs, held); !e.empty()) {
      ADD_FAILURE() << what << ": " << e;
      continue;
    }
    if (auto d = difference(held, final_state); !d.empty()) {
      ADD_FAILURE() << what << " ends with other objects than the store:" << d;
      continue;
    }
    if (since) {
      std::vector<Ev> want;
      for (const auto& e : log)
        if (e.rv > *since) want.push_back(e);
      EXPECT_EQ(first_difference(evs, want), "") << what << ": not exactly the writes after its revision";
    } else {
      EXPECT_EQ(check_initial_then_live(evs, log), "") << what;
    }
  }
  cache.stop();
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

TEST_F(WatchCacheTest, AnyAndListsPinnedToTwoIndexedFieldsMatchBoth) {
  // Node n1 has many attachments, VNI 7 few; node n2 has one, on VNI 8, which has many.
  // Whichever field is the rarer, the answer is the objects matching both.
  auto address = [&](const std::string& name, const std::string& node, int vni) {
    auto r = registry_->update("ns", name, *api::parse_json(R"({"metadata":{"name":")" + name + R"("},"spec":{"node":")" + node + R"(","subnet":"s1"},"status":{"addressVNI":)" + std::to_string(vni) + R"(,"ipv4":"10.0.0.9"}})"), true, {});
    EXPECT_TRUE(r.has_value()) << r.error().message;
    return r ? (*r)->rv : 0;
  };
  for (int i = 0; i < 20; ++i) create("n1-" + std::to_string(100 + i), "n1");
  for (int i = 0; i < 20; ++i) create("n3-" + std::to_string(100 + i), "n3");
  create("n2-a", "n2");
  address("n1-105", "n1", 7);
  address("n1-111", "n1", 7);
  for (int i = 0; i < 20; ++i) address("n3-" + std::to_string(100 + i), "n3", 8);
  auto rv = address("n2-a", "n2", 8);
  ASSERT_TRUE(cache_->wait_for(rv, 5s));
  auto sel = [](const std::string& s) { return *api::FieldSelector::parse(s); };
  auto names = [&](const std::string& s) {
    std::vector<std::string> out;
    for (auto& o : cache_->list("", {}, sel(s)).items) out.push_back(o->name);
    return out;
  };
  EXPECT_TRUE(cache_->any("", {}, sel("spec.node=n1,status.addressVNI=7")));
  EXPECT_EQ(names("spec.node=n1,status.addressVNI=7"), (std::vector<std::string>{"n1-105", "n1-111"}));
  EXPECT_TRUE(cache_->any("", {}, sel("status.addressVNI=8,spec.node=n2")));
  EXPECT_EQ(names("status.addressVNI=8,spec.node=n2"), (std::vector<std::string>{"n2-a"}));
  EXPECT_FALSE(cache_->any("", {}, sel("spec.node=n1,status.addressVNI=8")));
  EXPECT_FALSE(cache_->any("", {}, sel("spec.node=n2,status.addressVNI=7")));
  EXPECT_FALSE(cache_->any("", {}, sel("spec.node=n9,status.addressVNI=7")));
  EXPECT_TRUE(names("spec.node=n3,status.addressVNI=7").empty());
  // Other requirements still apply to the candidates.
  EXPECT_FALSE(cache_->any("", {}, sel("status.addressVNI=7,spec.node=n1,metadata.name=n1-999")));
  EXPECT_TRUE(cache_->any("", {}, sel("status.addressVNI=7,spec.node=n1,metadata.name=n1-111")));
  EXPECT_FALSE(cache_->any("other", {}, sel("spec.node=n1,status.addressVNI=7")));
  EXPECT_EQ(names("status.addressVNI=8").size(), 21u);
}

}  // namespace
}  // namespace kos::apiserver
