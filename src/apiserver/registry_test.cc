// REST semantics of the registry and the garbage collector, in process, on the embedded
// store.
#include "apiserver/registry.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include <gtest/gtest.h>

#include "apiserver/gc.h"
#include "apiserver/migrate.h"
#include "store/fault_store.h"
#include "store/sqlite/sqlite_store.h"
#include "test/support/process.h"

namespace kos::apiserver {
namespace {

using namespace std::chrono_literals;
namespace json = boost::json;

json::value parse(const std::string& s) { return *api::parse_json(s); }

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store::SqliteOptions o;
    o.path = (dir_.path() / "kos.db").string();
    o.compaction_interval = 0ms;
    fault_ = new store::FaultStore(*store::SqliteStore::open(o));
    store_.reset(fault_);
    for (auto k : {api::Kind::kSubnet, api::Kind::kNetworkAttachment, api::Kind::kIPLock}) {
      strategies_.push_back(make_kos_strategy(k));
      caches_.push_back(std::make_unique<WatchCache>(*store_, *strategies_.back(), clock_));
      ASSERT_TRUE(caches_.back()->start().has_value());
      registries_.push_back(std::make_unique<Registry>(*store_, *caches_.back(), clock_));
    }
  }
  void TearDown() override {
    if (gc_) gc_->stop();
    for (auto& c : caches_) c->stop();
  }
  Registry& subnets() { return *registries_[0]; }
  Registry& nas() { return *registries_[1]; }
  Registry& locks() { return *registries_[2]; }

  CachedPtr make_na(const std::string& name) {
    auto r = nas().create("ns", parse(R"({"metadata":{"name":")" + name +
                                      R"("},"spec":{"node":"n1","subnet":"s1"}})"), {});
    EXPECT_TRUE(r.has_value()) << r.error().message;
    return *r;
  }
  CachedPtr make_lock(const std::string& name, const CachedObject& owner) {
    auto r = locks().create(
        "ns",
        parse(R"({"metadata":{"name":")" + name +
              R"(","ownerReferences":[{"apiVersion":"network.example.com/v1alpha1","kind":"NetworkAttachment","name":")" +
              owner.name + R"(","uid":")" + owner.uid + R"(","controller":true}]},"spec":{"subnetName":"s1"}})"),
        {});
    EXPECT_TRUE(r.has_value()) << r.error().message;
    return *r;
  }
  // Waits (bounded) until `pred` holds; the collector works asynchronously.
  template <class P>
  bool eventually(P pred) {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred()) return true;
      std::this_thread::sleep_for(10ms);  // polling store state the collector changes
    }
    return pred();
  }
  // Waits until the attachments' cache holds `v`, then holds its later events back 1.5 s.
  void lag_attachments_cache_after(const CachedObject& v) {
    ASSERT_TRUE(eventually([&] {
      auto c = caches_[1]->get(v.ns, v.name);
      return c && c->rv == v.rv;
    }));
    fault_->set_watch_delay(std::chrono::milliseconds(1500), strategies_[1]->info().key_prefix());
  }
  void start_gc() {
    std::vector<Registry*> regs;
    for (auto& r : registries_) regs.push_back(r.get());
    gc_ = std::make_unique<GarbageCollector>(regs, clock_);
    gc_->start();
  }
  bool exists(Registry& r, const std::string& name) {
    return r.get("ns", name, std::nullopt).has_value();
  }
  // With the collector running: attachment "a" and its lock v1-5-10-1-0-9, then "a"
  // deleted with propagationPolicy Orphan, until it is gone.
  void delete_owner_orphaning_its_lock() {
    start_gc();
    auto na = make_na("a");
    make_lock("v1-5-10-1-0-9", *na);
    DeleteOptions orphan;
    orphan.propagation_policy = "Orphan";
    ASSERT_TRUE(nas().remove("ns", "a", orphan).has_value());
    EXPECT_TRUE(eventually([&] { return !exists(nas(), "a"); }));
  }

  kos::testing::TempDir dir_{"kos-registry"};
  FakeClock clock_;
  store::FaultStore* fault_ = nullptr;  // owned by store_: the SQLite store, with faults
  std::unique_ptr<store::Store> store_;
  std::vector<std::unique_ptr<Strategy>> strategies_;
  std::vector<std::unique_ptr<WatchCache>> caches_;
  std::vector<std::unique_ptr<Registry>> registries_;
  std::unique_ptr<GarbageCollector> gc_;
};

TEST_F(RegistryTest, CreateSetsServerFieldsAndDropsStatus) {
  auto r = subnets().create(
      "ns", parse(R"({"metadata":{"generateName":"s-"},"spec":{"vni":5,"ipv4":"10.1.0.0/16"},"status":{"validated":true}})"),
      {});
  ASSERT_TRUE(r.has_value()) << r.error().message;
  auto s = *api::from_json<api::Subnet>((*r)->obj());
  EXPECT_TRUE(s.metadata.name.starts_with("s-"));
  EXPECT_EQ(s.metadata.name.size(), 7u);
  EXPECT_EQ(s.metadata.uid.size(), 36u);
  EXPECT_EQ(s.metadata.generation, 1);
  EXPECT_EQ(s.metadata.resource_version, std::to_string((*r)->rv));
  EXPECT_FALSE(s.status.validated) << "status is written through /status only";
  ASSERT_TRUE(s.extended_metadata.write_time("spec").has_value());
}

TEST_F(RegistryTest, CreateRejectsResourceVersionAndNamespaceMismatch) {
  auto rv = subnets().create("ns", parse(R"({"metadata":{"name":"a","resourceVersion":"5"},"spec":{"vni":5,"ipv4":"10.1.0.0/16"}})"), {});
  ASSERT_FALSE(rv.has_value());
  EXPECT_EQ(rv.error().code, Errc::kBadRequest);
  auto ns = subnets().create("ns", parse(R"({"metadata":{"name":"a","namespace":"other"},"spec":{"vni":5,"ipv4":"10.1.0.0/16"}})"), {});
  ASSERT_FALSE(ns.has_value());
  EXPECT_EQ(ns.error().code, Errc::kBadRequest);
}

TEST_F(RegistryTest, UpdateChecksResourceVersionAndBumpsGenerationOnSpecChanges) {
  auto na = make_na("a");
  // Metadata-only change: generation stays.
  auto labelled = nas().patch("ns", "a", PatchType::kMerge, parse(R"({"metadata":{"labels":{"x":"y"}}})"), false, {});
  ASSERT_TRUE(labelled.has_value()) << labelled.error().message;
  auto m1 = *read_meta((*labelled)->obj());
  EXPECT_EQ(m1.generation, 1);
  // Spec change: generation + 1.
  auto spec = nas().patch("ns", "a", PatchType::kMerge, parse(R"({"spec":{"postDeleteExec":["true"]}})"), false, {});
  ASSERT_TRUE(spec.has_value()) << spec.error().message;
  EXPECT_EQ(read_meta((*spec)->obj())->generation, 2);
  // A PUT with the first resourceVersion is stale.
  json::object stale = na->obj();
  stale["spec"].as_object()["postDeleteExec"] = json::array{"false"};
  auto c = nas().update("ns", "a", stale, false, {});
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code, Errc::kConflict);
  // A no-op update writes nothing.
  auto same = nas().update("ns", "a", (*spec)->obj(), false, {});
  ASSERT_TRUE(same.has_value());
  EXPECT_EQ((*same)->rv, (*spec)->rv);
}

// An update that names its resourceVersion starts from the watch cache's copy when the
// cache has that version. The cache may lag the store: a stale precondition must still be
// a conflict, also for an update that would change nothing at the version it names.
TEST_F(RegistryTest, UpdatesFromALaggingCacheKeepTheirPreconditions) {
  auto v1 = make_na("a");
  ASSERT_NO_FATAL_FAILURE(lag_attachments_cache_after(*v1));
  auto status = [](const std::string& ip) { return R"({"ipv4":")" + ip + R"(","addressVNI":5})"; };
  auto with_status = [&](const CachedObject& base, const std::string& ip) {
    json::object o = base.obj();
    o["status"] = parse(status(ip));
    return o;
  };
  auto v2 = nas().update("ns", "a", with_status(*v1, "10.1.0.5"), true, {});
  ASSERT_TRUE(v2.has_value()) << v2.error().message;
  ASSERT_EQ(caches_[1]->get("ns", "a")->rv, v1->rv) << "the cache was to lag";
  // Stale, with a change: a conflict.
  auto changed = nas().update("ns", "a", with_status(*v1, "10.1.0.6"), true, {});
  ASSERT_FALSE(changed.has_value());
  EXPECT_EQ(changed.error().code, Errc::kConflict);
  // Stale, changing nothing at v1: a conflict too (the object is at v2).
  auto same = nas().update("ns", "a", v1->obj(), true, {});
  ASSERT_FALSE(same.has_value()) << "a no-op at a stale resourceVersion succeeded";
  EXPECT_EQ(same.error().code, Errc::kConflict);
  // Current (v2), which the cache does not have yet: written.
  auto v3 = nas().update("ns", "a", with_status(**v2, "10.1.0.7"), true, {});
  ASSERT_TRUE(v3.has_value()) << v3.error().message;
  EXPECT_GT((*v3)->rv, (*v2)->rv);
  ASSERT_TRUE(caches_[1]->get("ns", "a")->rv < (*v3)->rv);
  fault_->set_watch_delay(std::chrono::milliseconds(0), "");
  ASSERT_TRUE(eventually([&] { return caches_[1]->get("ns", "a")->rv == (*v3)->rv; }));
  // From the cache at v3: written, and the store has it.
  auto v4 = nas().update("ns", "a", with_status(**v3, "10.1.0.8"), true, {});
  ASSERT_TRUE(v4.has_value()) << v4.error().message;
  auto stored = nas().get("ns", "a", std::nullopt);
  ASSERT_TRUE(stored.has_value());
  EXPECT_EQ((*stored)->rv, (*v4)->rv);
  EXPECT_EQ(api::from_json<api::NetworkAttachment>((*stored)->obj())->status.ipv4, "10.1.0.8");
}

// Deletes start from the watch cache's copy: a lagging copy must not decide a precondition
// or delete a version the caller did not name.
TEST_F(RegistryTest, DeletesFromALaggingCacheKeepTheirPreconditions) {
  auto v1 = make_na("a");
  ASSERT_NO_FATAL_FAILURE(lag_attachments_cache_after(*v1));
  json::object o = v1->obj();
  o["metadata"].as_object()["labels"] = parse(R"({"x":"y"})");
  auto v2 = nas().update("ns", "a", o, false, {});
  ASSERT_TRUE(v2.has_value()) << v2.error().message;
  ASSERT_EQ(caches_[1]->get("ns", "a")->rv, v1->rv) << "the cache was to lag";
  // The cache's (stale) version as precondition: a conflict, and the object stays.
  DeleteOptions at_v1;
  at_v1.precondition_resource_version = std::to_string(v1->rv);
  auto stale = nas().remove("ns", "a", at_v1);
  ASSERT_FALSE(stale.has_value()) << "deleted at a stale resourceVersion";
  EXPECT_EQ(stale.error().code, Errc::kConflict);
  // The current version, which the cache does not have yet: deleted.
  DeleteOptions at_v2;
  at_v2.precondition_resource_version = std::to_string((*v2)->rv);
  auto gone = nas().remove("ns", "a", at_v2);
  ASSERT_TRUE(gone.has_value()) << gone.error().message;
  EXPECT_TRUE(gone->gone);
  fault_->set_watch_delay(std::chrono::milliseconds(0), "");
  EXPECT_FALSE(nas().get("ns", "a", std::nullopt).has_value());
}

TEST_F(RegistryTest, StatusSubresourceChangesOnlyStatusAndStampsItsSections) {
  make_na("a");
  auto st = nas().update("ns", "a",
                         parse(R"({"metadata":{"name":"a","labels":{"ignored":"1"}},"spec":{"node":"other","subnet":"s1"},"status":{"ipv4":"10.1.0.5","addressVNI":5}})"),
                         true, {});
  ASSERT_TRUE(st.has_value()) << st.error().message;
  auto na = *api::from_json<api::NetworkAttachment>((*st)->obj());
  EXPECT_EQ(na.status.ipv4, "10.1.0.5");
  EXPECT_EQ(na.spec.node, "n1");
  EXPECT_TRUE(na.metadata.labels.empty());
  EXPECT_TRUE(na.extended_metadata.write_time("status.address").has_value());
  EXPECT_FALSE(na.extended_metadata.write_time("status.impl").has_value());
  // The main resource keeps the status.
  auto main = nas().patch("ns", "a", PatchType::kMerge, parse(R"({"status":{"ipv4":"10.9.9.9"}})"), false, {});
  ASSERT_TRUE(main.has_value());
  EXPECT_EQ(api::from_json<api::NetworkAttachment>((*main)->obj())->status.ipv4, "10.1.0.5");
}

TEST_F(RegistryTest, ImmutableFieldsAreRejected) {
  make_na("a");
  auto r = nas().patch("ns", "a", PatchType::kJson, parse(R"([{"op":"replace","path":"/spec/node","value":"n2"}])"), false, {});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::kInvalid);
  ASSERT_FALSE(r.error().causes.empty());
  EXPECT_EQ(r.error().causes[0].field, "spec.node");
}

TEST_F(RegistryTest, DeletePreconditionsAndFinalizers) {
  auto na = make_na("a");
  DeleteOptions wrong_uid;
  wrong_uid.precondition_uid = "not-the-uid";
  auto r = nas().remove("ns", "a", wrong_uid);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::kConflict);

  ASSERT_TRUE(nas().patch("ns", "a", PatchType::kMerge, parse(R"({"metadata":{"finalizers":["example.com/hold"]}})"), false, {}));
  auto held = nas().remove("ns", "a", {});
  ASSERT_TRUE(held.has_value());
  EXPECT_FALSE(held->gone);
  auto meta = *read_meta(held->obj->obj());
  EXPECT_TRUE(meta.deletion_timestamp.has_value());
  // No new finalizers while deleting.
  auto add = nas().patch("ns", "a", PatchType::kMerge, parse(R"({"metadata":{"finalizers":["example.com/hold","b.com/x"]}})"), false, {});
  ASSERT_FALSE(add.has_value());
  EXPECT_EQ(add.error().code, Errc::kInvalid);
  // Removing the last finalizer deletes it.
  ASSERT_TRUE(nas().patch("ns", "a", PatchType::kMerge, parse(R"({"metadata":{"finalizers":null}})"), false, {}));
  EXPECT_FALSE(exists(nas(), "a"));
}

TEST_F(RegistryTest, ListPagesWithContinueTokensAtOneRevision) {
  for (int i = 0; i < 7; ++i) make_na("na" + std::to_string(i));
  ListRequest req;
  req.ns = "ns";
  req.limit = 3;
  std::vector<std::string> names;
  store::Revision rv = 0;
  int pages = 0;
  while (true) {
    auto l = nas().list(req);
    ASSERT_TRUE(l.has_value()) << l.error().message;
    if (rv == 0) {
      rv = l->rv;
      make_na("na9");  // not in the snapshot the pages share
    }
    EXPECT_EQ(l->rv, rv);
    for (auto& o : l->items) names.push_back(o->name);
    ++pages;
    if (l->continue_token.empty()) break;
    req.continue_token = l->continue_token;
  }
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(names, (std::vector<std::string>{"na0", "na1", "na2", "na3", "na4", "na5", "na6"}));
  req.continue_token = "garbage";
  auto bad = nas().list(req);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code, Errc::kBadRequest);
}

TEST_F(RegistryTest, GarbageCollectorDeletesDependentsOfDeletedOwners) {
  start_gc();
  auto na = make_na("a");
  make_lock("v1-5-10-1-0-5", *na);
  ASSERT_TRUE(nas().remove("ns", "a", {}).has_value());
  EXPECT_TRUE(eventually([&] { return !exists(locks(), "v1-5-10-1-0-5"); }));
}

TEST_F(RegistryTest, GarbageCollectorKeepsDependentsOfARecreatedOwnerName) {
  start_gc();
  auto old_na = make_na("a");
  ASSERT_TRUE(nas().remove("ns", "a", {}).has_value());
  auto new_na = make_na("a");
  // A lock naming the old incarnation is garbage; one naming the new one is not.
  make_lock("v1-5-10-1-0-6", *old_na);
  make_lock("v1-5-10-1-0-7", *new_na);
  EXPECT_TRUE(eventually([&] { return !exists(locks(), "v1-5-10-1-0-6"); }));
  EXPECT_TRUE(exists(locks(), "v1-5-10-1-0-7"));
}

// Events that cannot concern the collector queue nothing for its workers: a lock created for
// an attachment the caches show alive, an attachment marked for deletion that waits for an
// ordinary finalizer. The owner's deletion still has its lock collected.
TEST_F(RegistryTest, GarbageCollectorQueuesOnlyWhatMayConcernIt) {
  start_gc();
  auto na = make_na("a");
  ASSERT_TRUE(eventually([&] { return nas().cache().get("ns", "a") != nullptr; }));
  make_lock("v1-5-10-1-0-14", *na);
  ASSERT_TRUE(nas().patch("ns", "a", PatchType::kMerge, parse(R"({"metadata":{"finalizers":["example.com/hold"]}})"), false, {}));
  auto held = nas().remove("ns", "a", {});
  ASSERT_TRUE(held.has_value());
  ASSERT_FALSE(held->gone);
  ASSERT_TRUE(eventually([&] {
    auto c = nas().cache().get("ns", "a");
    return c && c->deleting && locks().cache().get("ns", "v1-5-10-1-0-14");
  }));
  // Queued (if at all) on the caches' threads while they applied the events above.
  EXPECT_EQ(gc_->queued(), 0u);

  ASSERT_TRUE(nas().patch("ns", "a", PatchType::kMerge, parse(R"({"metadata":{"finalizers":null}})"), false, {}));
  EXPECT_TRUE(eventually([&] { return !exists(locks(), "v1-5-10-1-0-14"); }));
  EXPECT_GT(gc_->queued(), 0u);
}

// A list of the latest state (no resourceVersion) is served from the watch cache once the
// cache has reached the store's revision: no store read, however busy other resources are
// (a subnet validator's list per subnet read every subnet from the store), and it still
// sees every write made before it.
TEST_F(RegistryTest, ConsistentListsAreServedFromTheCacheAndSeeEveryEarlierWrite) {
  fault_->inject({store::StoreOp::kList, "", -1, 0ms, Error{Errc::kUnavailable, "injected: a store list", {}}, false});
  for (int i = 0; i < 20; ++i) {
    const std::string name = "s" + std::to_string(i);
    auto made = subnets().create("ns", parse(R"({"metadata":{"name":")" + name +
                                             R"("},"spec":{"vni":)" + std::to_string(100 + i % 2) +
                                             R"(,"ipv4":"10.)" + std::to_string(i) + R"(.0.0/24"}})"),
                                 {});
    ASSERT_TRUE(made) << made.error().message;
    make_na("a" + std::to_string(i));  // the store's revision moves on without a subnet event
    ListRequest req;
    req.ns = "ns";
    req.fields = *api::FieldSelector::parse("spec.vni=" + std::to_string(100 + i % 2));
    auto l = subnets().list(req);
    ASSERT_TRUE(l) << l.error().message;
    EXPECT_EQ(l->items.size(), static_cast<size_t>(i / 2 + 1));
    EXPECT_TRUE(std::ranges::any_of(l->items, [&](const CachedPtr& o) { return o->name == name; }))
        << name << " written before the list is missing";
    EXPECT_GE(l->rv, made.value()->rv);
  }
  EXPECT_EQ(fault_->fired(), 0u) << "a store list";
  fault_->clear();
}

// A cache that lags (its store watch holds events back) does not answer a consistent list
// with what it has: the store does.
TEST_F(RegistryTest, AConsistentListFromALaggingCacheIsReadFromTheStore) {
  make_na("a");
  ASSERT_TRUE(eventually([&] { return nas().cache().get("ns", "a") != nullptr; }));
  fault_->hold_watches(true);
  make_na("b");
  ListRequest req;
  req.ns = "ns";
  auto l = nas().list(req);
  ASSERT_TRUE(l) << l.error().message;
  EXPECT_EQ(l->items.size(), 2u) << "the lagging cache's list";
  EXPECT_EQ(nas().cache().get("ns", "b"), nullptr) << "the cache was not lagging";
  fault_->hold_watches(false);
}

// With the caches current, deleting an attachment and collecting its lock read nothing
// from the store: the delete starts from the watch cache's copy, and the collector takes a
// cache that has reached the lock's revision without its owner as the owner's absence.
TEST_F(RegistryTest, DeletingAndCollectingCurrentObjectsReadNothingFromTheStore) {
  start_gc();
  auto na = make_na("a");
  make_lock("v1-5-10-1-0-13", *na);
  ASSERT_TRUE(eventually([&] { return nas().cache().get("ns", "a") && locks().cache().get("ns", "v1-5-10-1-0-13"); }));
  fault_->inject({store::StoreOp::kGet, "", -1, 0ms, Error{Errc::kUnavailable, "injected: a store read", {}}, false});
  ASSERT_TRUE(nas().remove("ns", "a", {}).has_value());
  EXPECT_TRUE(eventually([&] { return !locks().cache().get("ns", "v1-5-10-1-0-13"); }));
  EXPECT_EQ(fault_->fired(), 0u) << "a store read";
  fault_->clear();
}

// A failed owner read or delete is retried with backoff: the collector dropped the item
// before (the store was unavailable for a moment, the lock stayed forever).
TEST_F(RegistryTest, GarbageCollectorRetriesFailedReadsAndDeletes) {
  start_gc();
  const Error down{Errc::kUnavailable, "injected: store unavailable", {}};
  // The owner is not in the cache, which has not reached the lock's revision, so the
  // collector reads it live: that read fails 3 times.
  // Each retry waits its backoff (100 ms, then 200 ms) on the collector's clock, and not
  // a moment less; real time does not count.
  fault_->inject({store::StoreOp::kGet, strategies_[1]->info().key_prefix(), 3, 0ms, down, false});
  // The attachments' cache lags (an event held back), so it cannot vouch for the owner's
  // absence: the collector must read.
  fault_->set_watch_delay(std::chrono::seconds(60), strategies_[1]->info().key_prefix());
  make_na("held");
  CachedObject owner;
  owner.name = "ghost";
  owner.uid = "6f1c1fd0-5a0e-4c43-9d43-2f4a1f0c0a01";  // never existed
  make_lock("v1-5-10-1-0-11", owner);
  ASSERT_TRUE(eventually([&] { return fault_->fired() == 1; }));
  for (auto [backoff, failures] : {std::pair{100ms, 2u}, std::pair{200ms, 3u}}) {
    std::this_thread::sleep_for(300ms);  // real time, past the backoff: no retry may come
    EXPECT_EQ(fault_->fired(), failures - 1) << "retried before its backoff passed on the clock";
    clock_.advance(backoff - 1ms);
    std::this_thread::sleep_for(20ms);  // the collector sees the clock within a millisecond
    EXPECT_EQ(fault_->fired(), failures - 1) << "retried before its backoff passed on the clock";
    clock_.advance(1ms);
    EXPECT_TRUE(eventually([&] { return fault_->fired() == failures; })) << "no retry after " << backoff.count() << " ms";
  }
  clock_.advance(400ms);
  EXPECT_TRUE(eventually([&] { return !exists(locks(), "v1-5-10-1-0-11"); }));
  EXPECT_EQ(fault_->fired(), 3u);
  fault_->set_watch_delay(0ms, "");

  // Now its delete fails twice.
  auto na = make_na("a");
  make_lock("v1-5-10-1-0-12", *na);
  fault_->inject({store::StoreOp::kRemove, strategies_[2]->info().key_prefix(), 2, 0ms, down, false});
  ASSERT_TRUE(nas().remove("ns", "a", {}).has_value());
  ASSERT_TRUE(eventually([&] { return fault_->fired() == 4; }));
  clock_.advance(100ms);
  ASSERT_TRUE(eventually([&] { return fault_->fired() == 5; }));
  clock_.advance(200ms);
  EXPECT_TRUE(eventually([&] { return !exists(locks(), "v1-5-10-1-0-12"); }));
  EXPECT_EQ(fault_->fired(), 5u);
}

// An owner deleted while the caches' store watches were down (they relist afterwards, with
// no event of the delete) still has its dependents collected: the relist reports it.
TEST_F(RegistryTest, GarbageCollectorSeesOwnersDeletedWhileTheCachesRelist) {
  start_gc();
  auto na = make_na("a");
  make_lock("v1-5-10-1-0-13", *na);
  ASSERT_TRUE(caches_[2]->wait_for(caches_[2]->revision(), 5s));
  fault_->hold_watches(true);  // the caches see nothing from here
  auto key = strategies_[1]->info().key_prefix() + "ns/a";
  ASSERT_TRUE(fault_->inner().remove(key, 0).has_value()) << key;
  fault_->break_watches(Error{Errc::kCompacted, "injected: history compacted", {}});
  fault_->hold_watches(false);
  EXPECT_TRUE(eventually([&] { return !caches_[1]->get("ns", "a"); })) << "the cache did not relist";
  EXPECT_TRUE(eventually([&] { return !exists(locks(), "v1-5-10-1-0-13"); }));
}

TEST_F(RegistryTest, ForegroundDeletionRemovesDependentsFirst) {
  start_gc();
  auto na = make_na("a");
  make_lock("v1-5-10-1-0-8", *na);
  DeleteOptions fg;
  fg.propagation_policy = "Foreground";
  auto r = nas().remove("ns", "a", fg);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->gone);
  EXPECT_TRUE(eventually([&] { return !exists(nas(), "a"); }));
  EXPECT_FALSE(exists(locks(), "v1-5-10-1-0-8"));
}

// The dependents' cache lags the owner's by 1 s: the lock is in the store, with its owner
// reference, before the owner's orphan deletion, but its cache hears of it (and later of
// its orphaning) late. The orphaning must wait for that cache to reach the deletion's
// revision, or it finds no dependent and lets the owner go; and the collector must not
// delete the lock on the strength of its stale owner reference once the owner is gone.
TEST_F(RegistryTest, OrphanDeletionWaitsForALaggingDependentsCache) {
  fault_->set_watch_delay(std::chrono::milliseconds(1000), "/registry/network.example.com/iplocks");
  delete_owner_orphaning_its_lock();
  EXPECT_TRUE(eventually([&] {
    auto l = locks().cache().get("ns", "v1-5-10-1-0-9");
    return l && l->owners.empty();
  }));
  auto lock = locks().get("ns", "v1-5-10-1-0-9", std::nullopt);
  ASSERT_TRUE(lock.has_value());
  EXPECT_TRUE((*lock)->owners.empty());
}

TEST_F(RegistryTest, OrphanDeletionKeepsDependentsWithoutTheReference) {
  delete_owner_orphaning_its_lock();
  auto lock = locks().get("ns", "v1-5-10-1-0-9", std::nullopt);
  ASSERT_TRUE(lock.has_value());
  EXPECT_TRUE((*lock)->owners.empty());
}

// UIDs are RFC 4122 version 4 and come from the kernel, not from a generator in the process:
// a forked child (the state of a user-space PRNG is copied by fork) draws different ones.
// One (VNI, address) has one holder in the whole cluster: a lock of the same name in
// another namespace is refused by the store, and every read, list and delete stays scoped
// to the namespace that holds it.
TEST_F(RegistryTest, IPLockNamesAreUniqueAcrossNamespaces) {
  auto owner = make_na("na1");
  auto mine = make_lock("v1-5-10-0-0-2", *owner);
  auto body = [](const std::string& ns) {
    return parse(R"({"metadata":{"name":"v1-5-10-0-0-2","namespace":")" + ns +
                 R"("},"spec":{"subnetName":"s1"}})");
  };
  auto other = locks().create("other", body("other"), {});
  ASSERT_FALSE(other.has_value());
  EXPECT_EQ(other.error().code, Errc::kAlreadyExists);
  EXPECT_EQ(other.error().message,
            "iplocks.network.example.com \"v1-5-10-0-0-2\" already exists in namespace ns");
  // The holder's namespace sees it; the other sees nothing of that name.
  EXPECT_TRUE(locks().get("ns", "v1-5-10-0-0-2", std::nullopt).has_value());
  auto g = locks().get("other", "v1-5-10-0-0-2", std::nullopt);
  ASSERT_FALSE(g.has_value());
  EXPECT_EQ(g.error().code, Errc::kNotFound);
  EXPECT_FALSE(locks().get("other", "v1-5-10-0-0-2", "0").has_value());  // from the cache
  ListRequest in_other;
  in_other.ns = "other";
  EXPECT_TRUE(locks().list(in_other)->items.empty());
  in_other.resource_version = "0";
  EXPECT_TRUE(locks().list(in_other)->items.empty());
  EXPECT_EQ(locks().list(ListRequest{})->items.size(), 1u);
  auto d = locks().remove("other", "v1-5-10-0-0-2", {});
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code, Errc::kNotFound);
  auto u = locks().update("other", "v1-5-10-0-0-2", body("other"), false, {});
  ASSERT_FALSE(u.has_value());
  EXPECT_EQ(u.error().code, Errc::kNotFound);
  EXPECT_TRUE(exists(locks(), "v1-5-10-0-0-2"));
  // Released, the address can be taken in the other namespace.
  ASSERT_TRUE(locks().remove("ns", "v1-5-10-0-0-2", {}).has_value());
  EXPECT_TRUE(locks().create("other", body("other"), {}).has_value());
  (void)mine;
}

// Locks stored by an earlier version under /<namespace>/<name> move to /<name> at start-up;
// where two namespaces held one name, the earliest-created keeps it.
TEST(MigrateIPLockKeys, MovesOldLayoutAndResolvesDuplicates) {
  kos::testing::TempDir dir("kos-migrate");
  store::SqliteOptions o;
  o.path = (dir.path() / "kos.db").string();
  o.compaction_interval = 0ms;
  auto st = *store::SqliteStore::open(o);
  auto strategy = make_kos_strategy(api::Kind::kIPLock);
  const std::string p = strategy->info().key_prefix();
  auto lock = [](const std::string& ns, const std::string& name, const std::string& uid) {
    return R"({"apiVersion":"network.example.com/v1alpha1","kind":"IPLock","metadata":{"name":")" +
           name + R"(","namespace":")" + ns + R"(","uid":")" + uid + R"("},"spec":{"subnetName":"s"}})";
  };
  ASSERT_TRUE(st->create(p + "zz/v1-7-10-0-0-2", lock("zz", "v1-7-10-0-0-2", "u-old")));  // the first
  ASSERT_TRUE(st->create(p + "aa/v1-7-10-0-0-2", lock("aa", "v1-7-10-0-0-2", "u-dup")));
  ASSERT_TRUE(st->create(p + "aa/v1-7-10-0-0-3", lock("aa", "v1-7-10-0-0-3", "u-3")));
  // A move interrupted by a crash: both keys hold the same object.
  ASSERT_TRUE(st->create(p + "aa/v1-7-10-0-0-4", lock("aa", "v1-7-10-0-0-4", "u-4")));
  ASSERT_TRUE(st->create(p + "v1-7-10-0-0-4", lock("aa", "v1-7-10-0-0-4", "u-4")));

  auto rep = migrate_to_cluster_unique_keys(*st, strategy->info());
  ASSERT_TRUE(rep.has_value()) << rep.error().message;
  EXPECT_EQ(rep->moved, 3u);
  EXPECT_EQ(rep->duplicates, 1u);
  auto all = st->list(p);
  ASSERT_TRUE(all.has_value());
  std::vector<std::string> keys;
  for (const auto& kv : all->items) keys.push_back(kv.key.substr(p.size()));
  EXPECT_EQ(keys, (std::vector<std::string>{"v1-7-10-0-0-2", "v1-7-10-0-0-3", "v1-7-10-0-0-4"}));
  EXPECT_NE(st->get(p + "v1-7-10-0-0-2")->value.find("u-old"), std::string::npos);
  // Idempotent.
  auto again = migrate_to_cluster_unique_keys(*st, strategy->info());
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->moved + again->duplicates, 0u);
  // Other kinds keep their layout.
  auto nas = make_kos_strategy(api::Kind::kNetworkAttachment);
  EXPECT_EQ(nas->info().key("ns", "a"), nas->info().key_prefix() + "ns/a");
  EXPECT_EQ(strategy->info().key("ns", "a"), p + "a");
}

TEST(NewUid, Rfc4122Version4FromTheKernel) {
  std::set<std::string> seen;
  for (int i = 0; i < 20000; ++i) {
    std::string u = new_uid();
    ASSERT_EQ(u.size(), 36u) << u;
    for (int j : {8, 13, 18, 23}) ASSERT_EQ(u[j], '-') << u;
    ASSERT_EQ(u[14], '4') << "version nibble: " << u;
    ASSERT_TRUE(u[19] == '8' || u[19] == '9' || u[19] == 'a' || u[19] == 'b') << "variant: " << u;
    ASSERT_TRUE(seen.insert(u).second) << "duplicate " << u;
  }
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::string u = new_uid();
    ssize_t n = ::write(fds[1], u.data(), u.size());
    ::_exit(n == static_cast<ssize_t>(u.size()) ? 0 : 1);
  }
  ::close(fds[1]);
  std::string parent = new_uid();
  char buf[64] = {};
  ssize_t n = ::read(fds[0], buf, sizeof buf);
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_EQ(n, 36) << "child wrote no UID";
  EXPECT_NE(std::string(buf, 36), parent) << "a forked child drew the parent's next UID";
}

}  // namespace
}  // namespace kos::apiserver
