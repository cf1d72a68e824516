// OpenFlow 1.4 against a real ovs-vswitchd (userspace datapath) of the test's own, in a
// network namespace of its own: bundles are applied atomically and read back by OVS's own
// ovs-ofctl (an independent decoder of what we encoded), deletes by cookie, flow dumps.
// Needs root and openvswitch-switch.
#include "fabric/ovs/openflow.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>

#include "api/cidr.h"
#include "test/support/netns.h"
#include "test/support/ovs.h"
#include "test/support/skip.h"

namespace kos::fabric::ovs::of {
namespace {

using namespace std::chrono_literals;

TEST(OpenFlowEncoding, MessagesHaveTheirLengthsAndAlignment) {
  Flow f;
  f.table = 1;
  f.priority = 100;
  f.cookie = 0x1234;
  f.match.tun_id = 101;
  f.match.arp_tpa = 0x0a0a0002;
  f.actions = {Action::set_tun_dst(0x0afe0002), Action::output(7)};
  auto m = encode_flow_mod(FlowMod::add(f), 9);
  ASSERT_GE(m.size(), 56u);
  EXPECT_EQ(m[0], kVersion);
  EXPECT_EQ(m[1], 14);  // OFPT_FLOW_MOD
  EXPECT_EQ(static_cast<size_t>(m[2] << 8 | m[3]), m.size());
  EXPECT_EQ(m.size() % 8, 0u);
  auto b = encode_bundle_add(3, m, 9);
  EXPECT_EQ(b.size(), m.size() + 16);
  EXPECT_EQ(encode_flow_stats_request(1).size() % 8, 0u);
}

class OpenFlowTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) KOS_SKIP_UNLESS_CI() << "needs root (ovs-vswitchd makes tap devices)";
    if (!kos::testing::ovs_installed()) KOS_SKIP_UNLESS_CI() << "needs openvswitch-switch";
    ns_ = std::make_unique<kos::testing::ScopedNetns>("kos-of-" + std::to_string(getpid()));
    ovs_ = std::make_unique<kos::testing::OvsInstance>(ns_->name());
    ASSERT_EQ(ovs_->start(), "");
    auto br = ovs_->vsctl({"add-br", "kos", "--", "set", "bridge", "kos", "datapath_type=netdev", "fail-mode=secure"});
    ASSERT_EQ(br.exit_code, 0) << br.err;
    auto c = Connection::connect(ovs_->mgmt("kos"), 5s);
    ASSERT_TRUE(c) << c.error().message;
    conn_ = std::move(*c);
  }
  void TearDown() override {
    conn_.reset();
    ovs_.reset();
    ns_.reset();
  }
  std::string dump() { return ovs_->ofctl({"dump-flows", "--no-stats", ovs_->mgmt("kos")}).out; }

  std::unique_ptr<kos::testing::ScopedNetns> ns_;
  std::unique_ptr<kos::testing::OvsInstance> ovs_;
  std::unique_ptr<Connection> conn_;
};

Flow flow(uint8_t table, uint16_t prio, uint64_t cookie, Match m, std::vector<Action> a, std::optional<uint8_t> go = {}) {
  return Flow{table, prio, cookie, m, std::move(a), go};
}

TEST_F(OpenFlowTest, ABundleIsAppliedAndReadBackByOvs) {
  const api::MacAddress mac = {0x0a, 0x0a, 0x0a, 0x00, 0x00, 0x65};
  std::vector<FlowMod> mods = {
      FlowMod::add(flow(0, 0, 1, {}, {}, 1)),  // table 0 default: on to table 1; table 1 default: drop
      FlowMod::add(flow(1, 0, 1, {}, {})),
      FlowMod::add(flow(0, 100, 0xa1, Match{.in_port = 5}, {Action::set_tun_id(101)}, 1)),
      FlowMod::add(flow(1, 100, 0xa1, Match{.tun_id = 101, .eth_dst = mac}, {Action::output(5)})),
      FlowMod::add(flow(1, 100, 0xa1, Match{.tun_id = 101, .arp_tpa = 0x0a0a0002}, {Action::output(5)})),
      FlowMod::add(flow(1, 100, 0xb2, Match{.tun_id = 101, .arp_tpa = 0x0a0a0003},
                        {Action::set_tun_dst(0x0afe0002), Action::output(1)})),
  };
  auto r = conn_->bundle(mods, 5s);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(conn_->bundles_committed(), 1u);
  const std::string d = dump();
  EXPECT_NE(d.find("cookie=0x1, priority=0 actions=goto_table:1"), std::string::npos) << d;
  EXPECT_NE(d.find("cookie=0xa1, priority=100,in_port=5 actions=set_field:0x65->tun_id,goto_table:1"), std::string::npos) << d;
  EXPECT_NE(d.find("cookie=0xa1, table=1, priority=100,tun_id=0x65,dl_dst=0a:0a:0a:00:00:65 actions=output:5"),
            std::string::npos) << d;
  EXPECT_NE(d.find("cookie=0xa1, table=1, priority=100,arp,tun_id=0x65,arp_tpa=10.10.0.2 actions=output:5"),
            std::string::npos) << d;
  EXPECT_NE(d.find("cookie=0xb2, table=1, priority=100,arp,tun_id=0x65,arp_tpa=10.10.0.3 "
                   "actions=set_field:10.254.0.2->tun_dst,output:1"),
            std::string::npos) << d;
  EXPECT_NE(d.find("cookie=0x1, table=1, priority=0 actions=drop"), std::string::npos) << d;

  auto flows = conn_->dump_flows(5s);
  ASSERT_TRUE(flows) << flows.error().message;
  EXPECT_EQ(flows->size(), 6u);
  EXPECT_EQ(std::count_if(flows->begin(), flows->end(), [](const FlowEntry& e) { return e.flow.cookie == 0xa1; }), 3);
  // Our own decoder reads each flow back as it was sent (an ARP match with the eth_type the
  // encoder adds for it), and understands all of them.
  for (auto& m : mods)
    if (m.flow.match.arp_tpa) m.flow.match.eth_type = 0x0806;
  for (const auto& e : *flows) {
    EXPECT_TRUE(e.understood) << e.flow.cookie;
    EXPECT_EQ(std::count_if(mods.begin(), mods.end(), [&](const FlowMod& m) { return m.flow == e.flow; }), 1)
        << "cookie " << e.flow.cookie << " table " << int(e.flow.table) << " priority " << e.flow.priority;
  }

  // Deleting by cookie takes exactly that attachment's flows.
  ASSERT_TRUE(conn_->bundle({FlowMod::remove(0xa1)}, 5s));
  flows = conn_->dump_flows(5s);
  ASSERT_TRUE(flows);
  EXPECT_EQ(flows->size(), 3u);
  EXPECT_EQ(std::count_if(flows->begin(), flows->end(), [](const FlowEntry& e) { return e.flow.cookie == 0xa1; }), 0);
}

TEST_F(OpenFlowTest, ARefusedChangeLeavesTheWholeBundleUnapplied) {
  // goto_table may not go backwards: OVS refuses the third change; the first two must not land.
  std::vector<FlowMod> mods = {
      FlowMod::add(flow(0, 0, 7, {}, {}, 1)),
      FlowMod::add(flow(1, 10, 7, Match{.in_port = 3}, {Action::output(4)})),
      FlowMod::add(flow(1, 20, 7, Match{.in_port = 4}, {}, 0)),
  };
  auto r = conn_->bundle(mods, 5s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kInvalid);
  EXPECT_NE(r.error().message.find("change 2"), std::string::npos) << r.error().message;
  EXPECT_EQ(dump().find("cookie=0x7"), std::string::npos) << dump();
  auto flows = conn_->dump_flows(5s);
  ASSERT_TRUE(flows);
  EXPECT_TRUE(flows->empty());
  // The connection still works.
  ASSERT_TRUE(conn_->bundle({FlowMod::add(flow(0, 0, 8, {}, {}, 1))}, 5s));
  EXPECT_NE(dump().find("cookie=0x8"), std::string::npos);
}

TEST_F(OpenFlowTest, ARestartedSwitchIsNoticed) {
  ASSERT_EQ(ovs_->restart_vswitchd(), "");
  for (int i = 0; i < 200 && conn_->connected(); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_FALSE(conn_->connected());
  EXPECT_EQ(conn_->bundle({FlowMod::add(flow(0, 0, 9, {}, {}, 1))}, 2s).error().code, Errc::kUnavailable);
}

}  // namespace
}  // namespace kos::fabric::ovs::of
