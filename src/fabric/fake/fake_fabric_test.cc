#include "fabric/fake/fake_fabric.h"

#include <gtest/gtest.h>

#include "fabric/testing.h"

#include <chrono>
#include <thread>

#include "api/cidr.h"

namespace kos::fabric {
namespace {

using testing::ip;
using testing::local;
using testing::remote;

TEST(FakeFabric, RecordsLocalsAndRemotes) {
  FakeFabric f;
  EXPECT_EQ(f.name(), "fake");
  ASSERT_TRUE(f.create_local(local(7, "10.0.0.2")));
  ASSERT_TRUE(f.create_local(local(5, "10.0.0.3")));
  ASSERT_TRUE(f.create_remote(remote(7, "10.0.0.4", "192.168.1.2")));
  auto ls = f.list_local();
  ASSERT_TRUE(ls);
  ASSERT_EQ(ls->size(), 2u);
  EXPECT_EQ((*ls)[0], local(5, "10.0.0.3"));  // ordered by (vni, mac)
  EXPECT_EQ((*ls)[1], local(7, "10.0.0.2"));
  auto rs = f.list_remote();
  ASSERT_TRUE(rs);
  EXPECT_EQ(*rs, std::vector<RemoteIfc>{remote(7, "10.0.0.4", "192.168.1.2")});
  EXPECT_EQ(f.locals(), *ls);
  EXPECT_EQ(f.remotes(), *rs);

  ASSERT_TRUE(f.delete_local(local(7, "10.0.0.2")));
  ASSERT_TRUE(f.delete_remote(remote(7, "10.0.0.4", "192.168.1.2")));
  EXPECT_EQ(f.locals(), std::vector<LocalIfc>{local(5, "10.0.0.3")});
  EXPECT_TRUE(f.remotes().empty());
  auto c = f.counts();
  EXPECT_EQ(c.create_local, 2u);
  EXPECT_EQ(c.create_remote, 1u);
  EXPECT_EQ(c.delete_local, 1u);
  EXPECT_EQ(c.delete_remote, 1u);
  EXPECT_EQ(c.list_local, 1u);
  EXPECT_EQ(c.list_remote, 1u);
  EXPECT_EQ(c.changes, 5u);
  EXPECT_EQ(c.mutations(), 5u);
}

TEST(FakeFabric, IdempotentCallsCountButChangeNothing) {
  FakeFabric f;
  ASSERT_TRUE(f.create_local(local(7, "10.0.0.2")));
  ASSERT_TRUE(f.create_local(local(7, "10.0.0.2")));
  ASSERT_TRUE(f.create_remote(remote(7, "10.0.0.4", "192.168.1.2")));
  ASSERT_TRUE(f.create_remote(remote(7, "10.0.0.4", "192.168.1.2")));
  ASSERT_TRUE(f.delete_local(local(9, "10.0.0.9")));                 // never existed
  ASSERT_TRUE(f.delete_remote(remote(9, "10.0.0.9", "192.168.1.9")));  // never existed
  auto c = f.counts();
  EXPECT_EQ(c.mutations(), 6u);
  EXPECT_EQ(c.changes, 2u);
  EXPECT_EQ(f.locals().size(), 1u);
  EXPECT_EQ(f.remotes().size(), 1u);
}

TEST(FakeFabric, CreateReplacesAndStaleDeleteKeepsTheNewerMapping) {
  FakeFabric f;
  ASSERT_TRUE(f.create_remote(remote(7, "10.0.0.4", "192.168.1.2")));
  ASSERT_TRUE(f.create_remote(remote(7, "10.0.0.4", "192.168.1.3")));  // moved to another host
  EXPECT_EQ(f.remotes(), std::vector<RemoteIfc>{remote(7, "10.0.0.4", "192.168.1.3")});
  ASSERT_TRUE(f.delete_remote(remote(7, "10.0.0.4", "192.168.1.2")));  // stale: no effect
  EXPECT_EQ(f.remotes(), std::vector<RemoteIfc>{remote(7, "10.0.0.4", "192.168.1.3")});

  LocalIfc l = local(7, "10.0.0.2");
  ASSERT_TRUE(f.create_local(l));
  l.name = "other";
  ASSERT_TRUE(f.create_local(l));
  EXPECT_EQ(f.locals(), std::vector<LocalIfc>{l});
  l.name = "whatever";
  ASSERT_TRUE(f.delete_local(l));  // identified by (vni, mac)
  EXPECT_TRUE(f.locals().empty());
}

TEST(FakeFabric, RejectsWhatTheLinuxFabricRejects) {
  FakeFabric f;
  LocalIfc l = local(7, "10.0.0.2");
  l.vni = 0;
  EXPECT_EQ(f.create_local(l).error().code, Errc::kInvalid);
  l = local(7, "10.0.0.2");
  l.name = "a-name-longer-than-15";
  EXPECT_EQ(f.create_local(l).error().code, Errc::kInvalid);
  l = local(7, "10.0.0.2");
  l.mac[0] |= 1;  // multicast
  EXPECT_EQ(f.create_local(l).error().code, Errc::kInvalid);
  RemoteIfc r = remote(7, "10.0.0.4", "192.168.1.2");
  r.host_ip = 0;
  EXPECT_EQ(f.create_remote(r).error().code, Errc::kInvalid);
  r = remote(api::kMaxVni + 1, "10.0.0.4", "192.168.1.2");
  EXPECT_EQ(f.create_remote(r).error().code, Errc::kInvalid);
  EXPECT_TRUE(f.locals().empty());
  EXPECT_TRUE(f.remotes().empty());
}

TEST(FakeFabric, InjectedFailuresChangeNothing) {
  FakeFabric f;
  f.fail_next(FakeFabric::Op::kCreateRemote, Error{Errc::kUnavailable, "netlink is busy", {}}, 2);
  auto r = remote(7, "10.0.0.4", "192.168.1.2");
  auto e1 = f.create_remote(r);
  ASSERT_FALSE(e1);
  EXPECT_EQ(e1.error().code, Errc::kUnavailable);
  EXPECT_EQ(e1.error().message, "netlink is busy");
  EXPECT_FALSE(f.create_remote(r));
  EXPECT_TRUE(f.remotes().empty());
  EXPECT_TRUE(f.create_remote(r));  // the failures are used up
  EXPECT_EQ(f.remotes().size(), 1u);

  f.fail_next(FakeFabric::Op::kListLocal, Error{Errc::kInternal, "boom", {}});
  EXPECT_FALSE(f.list_local());
  EXPECT_TRUE(f.list_local());
  EXPECT_EQ(f.counts().create_remote, 3u);
}

TEST(FakeFabric, LatencyIsSleptByEveryCallAndOverlapsAcrossThreads) {
  using namespace std::chrono_literals;
  FakeFabric f(FakeFabricOptions{.latency = 30ms});
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(f.create_local(local(7, "10.0.0.2")));
  ASSERT_TRUE(f.list_local());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 60ms);

  // Eight threads, one call each: the latency is slept outside the lock, so they overlap.
  f.set_latency(200ms);
  t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> ts;
  for (int i = 0; i < 8; ++i)
    ts.emplace_back([&f, i] {
      EXPECT_TRUE(f.create_remote(remote(7, "10.0.1." + std::to_string(i + 1), "192.168.1.2")));
    });
  for (auto& t : ts) t.join();
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 200ms);
  EXPECT_LT(took, 1500ms);  // serialized would be 1600 ms
  EXPECT_EQ(f.remotes().size(), 8u);
  f.set_latency(0us);
}

TEST(FakeFabric, ConcurrentCallsAreAllRecorded) {
  FakeFabric f;
  constexpr int kThreads = 8, kEach = 500;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&f, t] {
      for (int i = 0; i < kEach; ++i) {
        uint32_t g = ip("10.1.0.0") + static_cast<uint32_t>(t * kEach + i);
        RemoteIfc r{static_cast<uint32_t>(1 + t), api::guest_mac(g, 1 + t), g, ip("192.168.0.1")};
        EXPECT_TRUE(f.create_remote(r));
        if (i % 2) {
          EXPECT_TRUE(f.delete_remote(r));
        }
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(f.remotes().size(), static_cast<size_t>(kThreads * kEach / 2));
  auto c = f.counts();
  EXPECT_EQ(c.create_remote, static_cast<uint64_t>(kThreads * kEach));
  EXPECT_EQ(c.delete_remote, static_cast<uint64_t>(kThreads * kEach / 2));
  EXPECT_EQ(c.changes, c.mutations());
}

}  // namespace
}  // namespace kos::fabric

namespace kos::fabric {
namespace {

// A batch sleeps the latency once, counts each change as its call, answers one result per
// change in order, and an injected or argument failure fails only its own change.
TEST(FakeFabric, ApplyIsOneBatchWithOneResultPerChange) {
  FakeFabric f;
  f.set_latency(std::chrono::milliseconds(50));
  f.fail_next(FakeFabric::Op::kCreateRemote, Error{Errc::kUnavailable, "injected"}, 1);
  RemoteIfc bad = testing::remote(7, "10.0.0.9", "192.168.1.2");
  bad.host_ip = 0;
  std::vector<Change> batch = {
      Change::create(testing::local(7, "10.0.0.2")),
      Change::create(testing::remote(7, "10.0.0.4", "192.168.1.2")),  // the injected failure
      Change::create(testing::remote(7, "10.0.0.5", "192.168.1.3")),
      Change::create(bad),
      Change::remove(testing::local(7, "10.0.0.2")),
      Change::create(testing::local(7, "10.0.0.3")),
  };
  auto t0 = std::chrono::steady_clock::now();
  auto rs = f.apply(batch);
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_EQ(rs.size(), batch.size());
  EXPECT_TRUE(rs[0]);
  ASSERT_FALSE(rs[1]);
  EXPECT_EQ(rs[1].error().code, Errc::kUnavailable);
  EXPECT_TRUE(rs[2]);
  ASSERT_FALSE(rs[3]);
  EXPECT_EQ(rs[3].error().code, Errc::kInvalid);
  EXPECT_TRUE(rs[4]);
  EXPECT_TRUE(rs[5]);
  EXPECT_LT(took, std::chrono::milliseconds(250)) << "the latency is slept once per batch";
  EXPECT_EQ(f.locals(), std::vector<LocalIfc>{testing::local(7, "10.0.0.3")});
  EXPECT_EQ(f.remotes(), std::vector<RemoteIfc>{testing::remote(7, "10.0.0.5", "192.168.1.3")});
  auto c = f.counts();
  EXPECT_EQ(c.batches, 1u);
  EXPECT_EQ(c.create_local, 2u);
  EXPECT_EQ(c.delete_local, 1u);
  EXPECT_EQ(c.create_remote, 3u);
}

}  // namespace
}  // namespace kos::fabric
