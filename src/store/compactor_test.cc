// The Compactor on the embedded store: it compacts to the revision one interval old, and
// several compactors on one store (several API servers) take turns instead of each compacting.
#include "store/compactor.h"

#include <gtest/gtest.h>

#include "store/sqlite/sqlite_store.h"
#include "test/support/process.h"

namespace kos::store {
namespace {

using namespace std::chrono_literals;

class CompactorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SqliteOptions o;
    o.path = (dir_.path() / "kos.db").string();
    o.compaction_interval = 0ms;
    store_ = *SqliteStore::open(o);
  }
  Revision write(const std::string& key) {
    auto kv = store_->get(key);
    auto r = kv ? store_->update(key, "v", 0) : store_->create(key, "v");
    EXPECT_TRUE(r.has_value());
    return r ? r->mod_revision : 0;
  }
  bool readable_at(Revision rev) { return store_->list("/registry/", {.revision = rev}).has_value(); }

  kos::testing::TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(CompactorTest, CompactsToTheRevisionOfThePreviousTick) {
  Compactor c(*store_, 1h);
  const Revision early = write("/registry/x/a");
  ASSERT_EQ(*c.tick(), std::nullopt) << "the first tick only records";
  const Revision before = write("/registry/x/a");
  auto second = c.tick();
  ASSERT_TRUE(second.has_value() && second->has_value()) << "the second tick compacts";
  EXPECT_GE(**second, early) << "to the revision of the first tick";
  EXPECT_LT(**second, before);
  ASSERT_TRUE(readable_at(before)) << "history after the first tick is kept";
  write("/registry/x/a");
  auto third = c.tick();
  ASSERT_TRUE(third.has_value()) << third.error().message;
  ASSERT_TRUE(third->has_value());
  EXPECT_GT(**third, before);
  EXPECT_FALSE(readable_at(early));
  EXPECT_FALSE(readable_at(before)) << "history below the compaction point is gone";
  EXPECT_TRUE(readable_at(**third)) << "the compaction point itself stays readable";
  EXPECT_EQ(c.compacted(), **third);
}

TEST_F(CompactorTest, SeveralCompactorsTakeTurns) {
  Compactor a(*store_, 1h), b(*store_, 1h), c(*store_, 1h);
  int compactions = 0;
  for (int round = 0; round < 12; ++round) {
    write("/registry/x/k" + std::to_string(round));
    int this_round = 0;
    for (Compactor* x : {&a, &b, &c}) {
      auto r = x->tick();
      ASSERT_TRUE(r.has_value()) << r.error().message;
      if (r->has_value()) ++this_round;
    }
    EXPECT_LE(this_round, 1) << "round " << round << ": more than one server compacted";
    compactions += this_round;
  }
  EXPECT_GE(compactions, 4) << "the servers must still compact regularly between them";
}

TEST_F(CompactorTest, ThreadCompactsPeriodicallyAndStops) {
  write("/registry/x/a");
  Compactor c(*store_, 20ms);
  c.start();
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (c.compacted() == 0 && std::chrono::steady_clock::now() < deadline) {
    write("/registry/x/a");
    std::this_thread::sleep_for(5ms);
  }
  c.stop();
  EXPECT_GT(c.compacted(), 0);
}

}  // namespace
}  // namespace kos::store
