#include "client/leader_election.h"

#include <gtest/gtest.h>

#include "client/event_recorder.h"
#include "client/test_server.h"

namespace kos::client {
namespace {

using namespace std::chrono_literals;

class LeaderElectionTest : public testing::ApiServerTest {
 protected:
  LeaderElectionConfig config(const std::string& id) {
    LeaderElectionConfig c;
    c.name = "kos-test";
    c.identity = id;
    c.lease_duration = 1500ms;
    c.renew_deadline = 1000ms;
    c.retry_period = 100ms;
    return c;
  }
  template <class P>
  bool eventually(P pred, std::chrono::milliseconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred()) return true;
      std::this_thread::sleep_for(20ms);  // polling the electors' state
    }
    return pred();
  }
};

TEST_F(LeaderElectionTest, OneLeaderAtATimeAndTakeoverWithinTheLeaseDuration) {
  auto c = client();
  std::atomic<int> leaders{0}, max_leaders{0};
  auto track = [&](LeaderElectionConfig cfg) {
    cfg.on_started_leading = [&] {
      int n = ++leaders;
      int m = max_leaders.load();
      while (n > m && !max_leaders.compare_exchange_weak(m, n)) {
      }
    };
    cfg.on_stopped_leading = [&] { --leaders; };
    return cfg;
  };
  auto a = std::make_unique<LeaderElector>(c, track(config("a")));
  auto b = std::make_unique<LeaderElector>(c, track(config("b")));
  a->start();
  ASSERT_TRUE(eventually([&] { return a->is_leader(); }, 5s));
  b->start();
  // b keeps waiting while a renews.
  EXPECT_FALSE(eventually([&] { return b->is_leader(); }, 2500ms));
  EXPECT_EQ(b->leader(), "a");
  // a dies without releasing: b takes over once it has not seen the lease renewed for its
  // duration (1.5 s): at most one lease duration plus one retry period (b's last
  // observation) after the kill, plus request time.
  auto killed = std::chrono::steady_clock::now();
  a->abandon();
  ASSERT_TRUE(eventually([&] { return b->is_leader(); }, 3s));
  auto took = std::chrono::steady_clock::now() - killed;
  EXPECT_GE(took, 1400ms);
  EXPECT_LE(took, 1500ms + 2 * 100ms + 300ms);
  EXPECT_EQ(max_leaders.load(), 1);
  b->stop();
}

TEST_F(LeaderElectionTest, AReleasedLeaseIsTakenAtOnce) {
  auto c = client();
  LeaderElector a(c, config("a"));
  a.start();
  ASSERT_TRUE(eventually([&] { return a.is_leader(); }, 5s));
  LeaderElector b(c, config("b"));
  b.start();
  a.stop();  // releases
  EXPECT_TRUE(eventually([&] { return b.is_leader(); }, 1000ms));
  b.stop();
}

TEST_F(LeaderElectionTest, EventRecorderAggregatesRepeats) {
  auto c = client();
  api::NetworkAttachment na;
  na.metadata.name = "na1";
  na.metadata.namespace_ = "ns";
  na.spec.node = "n1";
  na.spec.subnet = "s1";
  auto created = c->create(na);
  ASSERT_TRUE(created.has_value());
  EventRecorder rec(c, "kos-test", "host1");
  api::AnyObject obj(*created);
  for (int i = 0; i < 5; ++i) rec.event(obj, "Warning", "NoAddress", "subnet s1 is full");
  rec.event(obj, "Normal", "Addressed", "got 10.0.0.5");
  rec.flush();
  auto events = c->list(ResourceRef::events(), "ns");
  ASSERT_TRUE(events.has_value());
  ASSERT_EQ(events->items.size(), 2u);
  int64_t warning_count = 0;
  for (const auto& e : events->items) {
    const auto& o = e.get_object();
    if (o.at("reason").as_string() == "NoAddress") warning_count = o.at("count").as_int64();
    EXPECT_EQ(o.at("involvedObject").at("uid").as_string(), created->metadata.uid);
  }
  EXPECT_EQ(warning_count, 5);
  EXPECT_EQ(rec.dropped(), 0u);
}

}  // namespace
}  // namespace kos::client
