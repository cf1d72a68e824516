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

// The security-group vocabulary (flows.h): conntrack, conjunctions, resubmit, masked
// fields. OVS accepts each flow and prints it as written; our decoder reads each back equal.
TEST_F(OpenFlowTest, SecurityGroupMatchesAndNiciraActionsAreAcceptedAndReadBack) {
  const api::MacAddress mac = {0x0a, 0x0a, 0x0a, 0x00, 0x00, 0x65};
  const uint32_t full = 0xffffffff;
  std::vector<FlowMod> mods = {
      FlowMod::add(flow(0, 110, 0xc1, Match{.in_port = 5, .eth_type = 0x0800},
                        {Action::set_tun_id(101), Action::ct(false, 2)})),
      FlowMod::add(flow(1, 110, 0xc1,
                        Match{.tun_id = 101, .eth_dst = mac, .eth_type = 0x0800, .ct_state = std::pair{0u, kCtTrk}},
                        {Action::ct(false, 2)})),
      FlowMod::add(flow(2, 100, 0xc1, Match{.ct_state = std::pair{kCtEst | kCtTrk, kCtEst | kCtTrk}}, {Action::resubmit(1)})),
      FlowMod::add(flow(2, 200, 0xc1, Match{.ct_state = std::pair{kCtInv | kCtTrk, kCtInv | kCtTrk}}, {})),
      FlowMod::add(flow(5, 0, 0xc1, Match{.eth_type = 0x0800}, {Action::ct(true), Action::resubmit(1)})),
      FlowMod::add(flow(3, 1000, 0xc1, Match{.in_port = 5, .eth_type = 0x0800, .ipv4_dst = std::pair{0x0a000000u, 0xff000000u}},
                        {Action::conjunction(0x50000, 1, 2)})),
      FlowMod::add(flow(3, 1000, 0xc1, Match{.in_port = 5, .eth_type = 0x0800, .ipv4_dst = std::pair{0x0b000001u, full}},
                        {Action::conjunction(0x50000, 1, 2)})),
      FlowMod::add(flow(3, 1000, 0xc1,
                        Match{.in_port = 5, .eth_type = 0x0800, .ip_proto = 6, .tp_dst = std::pair<uint16_t, uint16_t>{0x100, 0xff00}},
                        {Action::conjunction(0x50000, 2, 2)})),
      FlowMod::add(flow(4, 1001, 0xc1,
                        Match{.tun_id = 101, .eth_dst = mac, .eth_type = 0x0800, .ip_proto = 17,
                              .ipv4_src = std::pair{0x0a000002u, full}, .tp_dst = std::pair<uint16_t, uint16_t>{53, 0xffff}},
                        {}, 5)),
      FlowMod::add(flow(3, 1000, 0xc1, Match{.conj_id = 0x50000}, {}, 4)),
      FlowMod::add(flow(250, 1, 0xc2, Match{.eth_type = 0x0800, .metadata = 0x1234567890abcdefull, .ipv4_src = std::pair{0x0a000009u, full}}, {})),
  };
  auto r = conn_->bundle(mods, 5s);
  ASSERT_TRUE(r) << r.error().message;
  const std::string d = dump();
  for (const char* want : {
           "cookie=0xc1, priority=110,ip,in_port=5 actions=set_field:0x65->tun_id,ct(table=2,zone=NXM_NX_TUN_ID[0..15])",
           "cookie=0xc1, table=1, priority=110,ct_state=-trk,ip,tun_id=0x65,dl_dst=0a:0a:0a:00:00:65 "
           "actions=ct(table=2,zone=NXM_NX_TUN_ID[0..15])",
           "cookie=0xc1, table=2, priority=100,ct_state=+est+trk actions=resubmit(,1)",
           "cookie=0xc1, table=2, priority=200,ct_state=+inv+trk actions=drop",
           "cookie=0xc1, table=5, priority=0,ip actions=ct(commit,zone=NXM_NX_TUN_ID[0..15]),resubmit(,1)",
           "cookie=0xc1, table=3, priority=1000,ip,in_port=5,nw_dst=10.0.0.0/8 actions=conjunction(327680,1/2)",
           "cookie=0xc1, table=3, priority=1000,ip,in_port=5,nw_dst=11.0.0.1 actions=conjunction(327680,1/2)",
           "cookie=0xc1, table=3, priority=1000,tcp,in_port=5,tp_dst=0x100/0xff00 actions=conjunction(327680,2/2)",
           "cookie=0xc1, table=4, priority=1001,udp,tun_id=0x65,dl_dst=0a:0a:0a:00:00:65,nw_src=10.0.0.2,tp_dst=53 "
           "actions=goto_table:5",
           "cookie=0xc1, table=3, priority=1000,conj_id=327680 actions=goto_table:4",
           "cookie=0xc2, table=250, priority=1,ip,metadata=0x1234567890abcdef,nw_src=10.0.0.9 actions=drop",
       })
    EXPECT_NE(d.find(want), std::string::npos) << want << "\n" << d;

  auto flows = conn_->dump_flows(5s);
  ASSERT_TRUE(flows) << flows.error().message;
  EXPECT_EQ(flows->size(), mods.size());
  for (const auto& e : *flows) {
    EXPECT_TRUE(e.understood) << e.flow.cookie << " table " << int(e.flow.table) << " priority " << e.flow.priority;
    EXPECT_EQ(std::count_if(mods.begin(), mods.end(), [&](const FlowMod& m) { return m.flow == e.flow; }), 1)
        << "table " << int(e.flow.table) << " priority " << e.flow.priority;
  }

  // A strict delete takes exactly one flow (a set member leaving), by match and priority.
  ASSERT_TRUE(conn_->bundle({FlowMod::remove_strict(mods[6].flow)}, 5s));
  EXPECT_EQ(dump().find("nw_dst=11.0.0.1"), std::string::npos) << dump();
  EXPECT_NE(dump().find("nw_dst=10.0.0.0/8"), std::string::npos) << dump();
  flows = conn_->dump_flows(5s);
  ASSERT_TRUE(flows);
  EXPECT_EQ(flows->size(), mods.size() - 1);
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
