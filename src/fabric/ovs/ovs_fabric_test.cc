// OvsFabric against a real Open vSwitch of the test's own (ovsdb-server and a userspace
// ovs-vswitchd in a namespace; test/support/ovs.h). What it made is read back with
// ovs-ofctl, ovs-vsctl and ip, independently of the fabric's code. Root.
#include "fabric/ovs/fixture.h"
#include "fabric/ovs/ovs_fabric.h"

#include <unistd.h>

#include <algorithm>
#include <set>

#include <gtest/gtest.h>

#include "api/cidr.h"
#include "fabric/linux/linux_fabric.h"
#include "fabric/testing.h"
#include "test/support/netns.h"
#include "test/support/ovs.h"
#include "test/support/process.h"
#include "test/support/skip.h"

namespace kos::fabric {
namespace {

using namespace std::chrono_literals;
using testing::local;
using testing::remote;
using kos::testing::flow_cookie;
using kos::testing::poll_until;

using kos::testing::expected_flows;

class OvsFabricTest : public OvsFixture {
 protected:
  OvsFabricTest() : OvsFixture("kos-ovs") {}

  int ofport(const std::string& iface) {
    auto r = ovs_->vsctl({"get", "interface", iface, "ofport"});
    return r.exit_code == 0 ? std::stoi(r.out) : -1;
  }
  std::vector<std::string> flows_without_cookies() { return ovs_->flows_without_cookies("kos"); }
  std::vector<std::string> expected(const std::vector<LocalIfc>& ls, const std::vector<RemoteIfc>& rs) {
    std::vector<std::pair<LocalIfc, int>> with_ports;
    for (const auto& l : ls) with_ports.emplace_back(l, ofport(host_end_name(l.mac)));
    return expected_flows(with_ports, rs, ofport("vtep"));
  }
  // Distinct cookies on the bridge, and whether each cookie's flows are one attachment's.
  std::set<uint64_t> cookies() {
    std::set<uint64_t> out;
    for (const auto& l : ovs_->flows("kos")) out.insert(flow_cookie(l));
    return out;
  }
  std::string ip_link(const std::string& dev) {
    return kos::testing::run({"ip", "-n", ns_->name(), "-o", "link", "show", dev}).out;
  }

};

TEST(OvsFabricOpen, RejectsBadOptions) {
  OvsFabricOptions o;
  o.db = "tcp:127.0.0.1:6640";
  EXPECT_EQ(OvsFabric::open(o).error().code, Errc::kInvalid);
  o.db = "unix:/nonexistent/db.sock";
  o.bridge = "a-bridge-name-too-long";
  EXPECT_EQ(OvsFabric::open(o).error().code, Errc::kInvalid);
  o.bridge = "kos";
  o.datapath_type = "dpdk";
  EXPECT_EQ(OvsFabric::open(o).error().code, Errc::kInvalid);
  o.datapath_type = "";
  auto r = OvsFabric::open(o);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kUnavailable) << r.error().message;
}

TEST_F(OvsFabricTest, ABatchMakesPortsVethsAndTheFlowsOfKosApiInOneBundle) {
  const auto l1 = local(101, "10.0.0.1"), l2 = local(102, "10.0.0.1");
  const auto r1 = remote(101, "10.0.0.2", "10.253.0.2"), r2 = remote(101, "10.0.0.3", "10.253.0.3");
  const auto before = ovs_fabric().stats();
  auto res = fabric_->apply({Change::create(l1), Change::create(l2), Change::create(r1), Change::create(r2)});
  for (const auto& r : res) ASSERT_TRUE(r) << r.error().message;
  const auto after = ovs_fabric().stats();
  EXPECT_EQ(after.bundles - before.bundles, 1u);
  EXPECT_EQ(after.flow_mods - before.flow_mods, 10u);

  EXPECT_EQ(flows_without_cookies(), expected({l1, l2}, {r1, r2}));
  EXPECT_EQ(cookies().size(), 5u);  // the defaults, and one per attachment
  // The ports: the veths' host ends, carrying the attachment in external_ids.
  auto ext = ovs_->vsctl({"get", "interface", host_end_name(l1.mac), "external_ids"});
  EXPECT_EQ(ext.out, "{attached-mac=\"" + api::format_mac(l1.mac) + "\", kos-ifname=" + l1.name +
                         ", kos-ip=\"10.0.0.1\", kos-vni=\"101\"}\n");
  EXPECT_EQ(ovs_->vsctl({"list-ports", "kos"}).out,
            std::min(host_end_name(l1.mac), host_end_name(l2.mac)) + "\n" +
                std::max(host_end_name(l1.mac), host_end_name(l2.mac)) + "\nvtep\n");
  // The guest end: the attachment's interface name and MAC, in the fabric's namespace.
  EXPECT_NE(ip_link(l1.name).find(api::format_mac(l1.mac)), std::string::npos) << ip_link(l1.name);

  auto ll = fabric_->list_local();
  ASSERT_TRUE(ll);
  EXPECT_EQ(*ll, (std::vector<LocalIfc>{l1, l2}));
  auto lr = fabric_->list_remote();
  ASSERT_TRUE(lr);
  EXPECT_EQ(*lr, (std::vector<RemoteIfc>{r1, r2}));

  // Again: nothing sent.
  res = fabric_->apply({Change::create(l1), Change::create(r1)});
  for (const auto& r : res) ASSERT_TRUE(r);
  EXPECT_EQ(ovs_fabric().stats().bundles, after.bundles);
}

// Routing between the subnets of a VPC is the linux fabric's so far: a routed interface is
// refused with a message that says so, and the rest of its batch goes through.
TEST_F(OvsFabricTest, RoutedInterfacesAreRefusedUntilTheOvsFabricRoutes) {
  auto routed = local(201, "10.1.0.2");
  routed.routing = Routing{200, *api::parse_ipv4("10.1.0.1"), 24};
  const auto plain = local(202, "10.2.0.2");
  auto res = fabric_->apply({Change::create(routed), Change::create(plain)});
  ASSERT_EQ(res.size(), 2u);
  ASSERT_FALSE(res[0]);
  EXPECT_EQ(res[0].error().code, Errc::kUnsupported);
  EXPECT_NE(res[0].error().message.find("does not route the subnets of a VPC"), std::string::npos);
  EXPECT_TRUE(res[1]) << res[1].error().message;
  EXPECT_EQ(fabric_->list_local().value(), std::vector<LocalIfc>{plain});
}

TEST_F(OvsFabricTest, DeletesLeaveOnlyTheDefaultsAndAStaleRemoteDeleteChangesNothing) {
  const auto l1 = local(101, "10.0.0.1");
  const auto r1 = remote(101, "10.0.0.2", "10.253.0.2");
  ASSERT_TRUE(fabric_->create_local(l1));
  ASSERT_TRUE(fabric_->create_remote(r1));
  // The remote moved to another host: replaced in one bundle; the old host's delete is stale.
  auto moved = r1;
  moved.host_ip = testing::ip("10.253.0.9");
  ASSERT_TRUE(fabric_->create_remote(moved));
  ASSERT_TRUE(fabric_->delete_remote(r1));
  EXPECT_EQ(flows_without_cookies(), expected({l1}, {moved}));
  ASSERT_TRUE(fabric_->delete_remote(moved));
  ASSERT_TRUE(fabric_->delete_local(l1));
  ASSERT_TRUE(fabric_->delete_local(l1));  // idempotent
  EXPECT_EQ(flows_without_cookies(), expected({}, {}));
  EXPECT_EQ(ovs_->vsctl({"list-ports", "kos"}).out, "vtep\n");
  EXPECT_EQ(ip_link(host_end_name(l1.mac)), "");
  EXPECT_EQ(ip_link(l1.name), "");
}

TEST_F(OvsFabricTest, ARestartedAgentAdoptsWithoutTouchingLiveFlowsAndRemovesOrphans) {
  const auto l1 = local(101, "10.0.0.1");
  const auto r1 = remote(101, "10.0.0.2", "10.253.0.2");
  ASSERT_TRUE(fabric_->create_local(l1));
  ASSERT_TRUE(fabric_->create_remote(r1));
  const auto live = ovs_->flows("kos");
  fabric_.reset();
  // Orphans: a flow nobody made, a port without its veth, a veth without its port.
  ASSERT_EQ(ovs_->ofctl({"add-flow", ovs_->mgmt("kos"), "cookie=0x5,table=1,priority=50,dl_dst=02:00:00:00:00:99,actions=drop"})
                .exit_code,
            0);
  ASSERT_EQ(ovs_->vsctl({"add-port", "kos", "kh0a0000000063", "--", "set", "interface", "kh0a0000000063",
                         "external_ids:kos-vni=5"}).exit_code,
            0);
  ASSERT_EQ(kos::testing::run({"ip", "-n", ns_->name(), "link", "add", "kh0a0000000064", "type", "veth", "peer", "name",
                               "kos0a0000000064"}).exit_code,
            0);
  open_fabric();
  // The live attachments' flows are the same rows (OVS keeps a flow's duration across an
  // identical re-add, but not its counters: compare whole lines, counters stripped, and
  // the bundle count: one bundle, deleting only the orphan's cookie).
  EXPECT_EQ(ovs_->flows("kos"), live);
  EXPECT_EQ(ovs_fabric().stats().flow_mods, 1u);
  EXPECT_EQ(ovs_->vsctl({"list-ports", "kos"}).out, host_end_name(l1.mac) + "\nvtep\n");
  EXPECT_EQ(ip_link("kh0a0000000064"), "");
  auto ll = fabric_->list_local();
  ASSERT_TRUE(ll);
  EXPECT_EQ(*ll, std::vector<LocalIfc>{l1});
  auto lr = fabric_->list_remote();
  ASSERT_TRUE(lr);
  EXPECT_EQ(*lr, std::vector<RemoteIfc>{r1});
}

TEST_F(OvsFabricTest, ARestartedVswitchdGetsItsFlowsBackWithoutTheAgent) {
  const auto l1 = local(101, "10.0.0.1");
  const auto r1 = remote(101, "10.0.0.2", "10.253.0.2");
  ASSERT_TRUE(fabric_->create_local(l1));
  ASSERT_TRUE(fabric_->create_remote(r1));
  const auto want = expected({l1}, {r1});
  ASSERT_EQ(ovs_->restart_vswitchd(), "");
  // Nobody calls the fabric: it notices the dropped connection and restores by itself.
  EXPECT_TRUE(poll_until([&] { return flows_without_cookies() == want && ovs_fabric().stats().reconnects >= 1; }, 10s,
                         50ms))
      << ::testing::PrintToString(ovs_->flows("kos"));
  // And it goes on working.
  const auto l2 = local(101, "10.0.0.7");
  ASSERT_TRUE(fabric_->create_local(l2));
  EXPECT_EQ(flows_without_cookies(), expected({l1, l2}, {r1}));
}

// ovsdb-server restarts on its database: the fabric reconnects and finds everything in
// place (no flow changes). Then it restarts on an empty database (the configuration lost,
// so ovs-vswitchd drops the bridge and its flows): the fabric makes the bridge, the ports
// and the flows again from what it holds, and the guest end is the same device.
TEST_F(OvsFabricTest, ARestartedOvsdbServerIsReconnectedAndALostConfigurationRestored) {
  const auto l1 = local(101, "10.0.0.1");
  const auto r1 = remote(101, "10.0.0.2", "10.253.0.2");
  ASSERT_TRUE(fabric_->create_local(l1));
  ASSERT_TRUE(fabric_->create_remote(r1));
  const auto want = expected({l1}, {r1});
  const auto guest = ip_link(l1.name);

  const auto before = ovs_fabric().stats();
  const auto mods = before.flow_mods;
  ASSERT_EQ(ovs_->restart_ovsdb(false), "");
  EXPECT_TRUE(poll_until([&] {
    const auto s = ovs_fabric().stats();
    return s.reconnects > before.reconnects && s.restored > before.restored;
  }, 10s, 50ms));
  EXPECT_EQ(ovs_fabric().stats().flow_mods, mods);
  EXPECT_EQ(flows_without_cookies(), want);

  ASSERT_EQ(ovs_->restart_ovsdb(true), "");
  EXPECT_TRUE(poll_until([&] {
    return ovs_->vsctl({"list-ports", "kos"}).out == host_end_name(l1.mac) + "\nvtep\n" && flows_without_cookies() == expected({l1}, {r1});  // its port renumbered
  }, 10s, 50ms)) << ovs_->vsctl({"show"}).out << ::testing::PrintToString(ovs_->flows("kos"));
  EXPECT_EQ(ip_link(l1.name), guest);
  const auto l2 = local(101, "10.0.0.7");
  ASSERT_TRUE(fabric_->create_local(l2));
  EXPECT_EQ(flows_without_cookies(), expected({l1, l2}, {r1}));
}

// The agent restarts while the database is lost (ovsdb-server on an empty one): the local
// is adopted from its veth (the host end's alias), its guest end is the same device, and
// its port and flows come back.
TEST_F(OvsFabricTest, AnAgentRestartOverALostDatabaseKeepsTheInterfaces) {
  const auto l1 = local(101, "10.0.0.1");
  ASSERT_TRUE(fabric_->create_local(l1));
  const auto guest = ip_link(l1.name);
  fabric_.reset();
  ASSERT_EQ(ovs_->restart_ovsdb(true), "");
  open_fabric();
  auto ll = fabric_->list_local();
  ASSERT_TRUE(ll);
  EXPECT_EQ(*ll, std::vector<LocalIfc>{l1});
  EXPECT_EQ(ip_link(l1.name), guest);
  EXPECT_EQ(ovs_->vsctl({"list-ports", "kos"}).out, host_end_name(l1.mac) + "\nvtep\n");
  EXPECT_EQ(flows_without_cookies(), expected({l1}, {}));
}

TEST_F(OvsFabricTest, GuestsOnOneNodeReachEachOtherOnTheirVniOnly) {
  // Three guests: two on VNI 101, one on VNI 102 with the first one's address.
  struct Guest {
    LocalIfc ifc;
    std::unique_ptr<kos::testing::ScopedNetns> ns;
  };
  std::vector<Guest> gs;
  for (auto [vni, ip] : {std::pair{101u, "10.0.0.1"}, std::pair{101u, "10.0.0.2"}, std::pair{102u, "10.0.0.2"}}) {
    Guest g{local(vni, ip), std::make_unique<kos::testing::ScopedNetns>(ns_->name() + "-g" + std::to_string(gs.size()))};
    ASSERT_TRUE(fabric_->create_local(g.ifc));
    auto p = fabric_->plug(g.ifc, Plug{"/var/run/netns/" + g.ns->name(), "eth0", g.ifc.guest_ip, 24});
    ASSERT_TRUE(p) << p.error().message;
    gs.push_back(std::move(g));
  }
  auto ping = [&](const Guest& from, const std::string& to) {
    return kos::testing::run({"ip", "netns", "exec", from.ns->name(), "ping", "-c", "1", "-W", "1", to}).exit_code == 0;
  };
  bool ok = false;
  for (int i = 0; i < 5 && !ok; ++i) ok = ping(gs[0], "10.0.0.2");
  EXPECT_TRUE(ok) << "VNI 101 guests do not reach each other";
  // The VNI 102 guest has 10.0.0.2 too, yet only its VNI's 10.0.0.1 would answer it: none.
  EXPECT_FALSE(ping(gs[2], "10.0.0.1"));
}

}  // namespace
}  // namespace kos::fabric
