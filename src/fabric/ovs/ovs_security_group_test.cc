// Security groups in the OVS fabric against a real Open vSwitch of the test's own
// (ovsdb-server and a userspace ovs-vswitchd in a namespace; test/support/ovs.h), with
// guests in namespaces of their own: real TCP connections and pings decide what passes.
// Root.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <set>
#include <tuple>

#include <gtest/gtest.h>

#include "api/cidr.h"
#include "fabric/linux/linux_fabric.h"
#include "fabric/ovs/fixture.h"
#include "fabric/ovs/ovs_fabric.h"
#include "fabric/testing.h"
#include "test/support/netns.h"
#include "test/support/ovs.h"
#include "test/support/process.h"
#include "test/support/skip.h"

namespace kos::fabric {
namespace {

using namespace std::chrono_literals;
using testing::ip;
using testing::local;

// Listens on the given TCP ports, answers each connection with a line and closes it.
constexpr const char* kServer = R"(
import socket, sys, selectors
sel = selectors.DefaultSelector()
for p in sys.argv[1:]:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(p))); s.listen(16); sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        c, _ = key.fileobj.accept()
        try: c.sendall(b"hello\n")
        except OSError: pass
        c.close()
)";

// Exit 0 when a connection is made and the server's line comes back.
constexpr const char* kClient = R"(
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.0)
    s.settimeout(1.0)
    sys.exit(0 if s.recv(16) == b"hello\n" else 1)
except OSError:
    sys.exit(1)
)";

// ethtool -K eth0 tx off (ETHTOOL_STXCSUM through SIOCETHTOOL), without ethtool.
constexpr const char* kTxChecksumOff = R"(
import ctypes, fcntl, socket, struct
value = ctypes.create_string_buffer(struct.pack("II", 0x17, 0))
ifreq = struct.pack("16sP", b"eth0", ctypes.addressof(value)) + bytes(16)
fcntl.ioctl(socket.socket(), 0x8946, ifreq)
)";

class OvsSecurityGroupTest : public OvsFixture {
 protected:
  OvsSecurityGroupTest() : OvsFixture("kos-sg") {}
  void TearDown() override {
    servers_.clear();
    guests_.clear();
    OvsFixture::TearDown();
  }

  // A local plugged into a namespace of its own; returns the namespace's name.
  std::string guest(const LocalIfc& l) { return guest(*fabric_, l); }
  std::string guest(Fabric& fabric, const LocalIfc& l) {
    auto ns = std::make_unique<kos::testing::ScopedNetns>(ns_->name() + "-g" + std::to_string(guests_.size()));
    EXPECT_TRUE(fabric.create_local(l));
    auto p = fabric.plug(l, Plug{"/var/run/netns/" + ns->name(), "eth0", l.guest_ip, 24});
    EXPECT_TRUE(p) << p.error().message;
    // The userspace datapath reads packets off the veths as they are: with transmit
    // checksum offload their TCP checksums are never filled in (ethtool -K eth0 tx off).
    kos::testing::run({"ip", "netns", "exec", ns->name(), "python3", "-c", kTxChecksumOff});
    const std::string name = ns->name();
    guests_.push_back(std::move(ns));
    return name;
  }
  void serve(const std::string& ns, const std::vector<std::string>& ports) {
    std::vector<std::string> argv = {"ip", "netns", "exec", ns, "python3", "-c", kServer};
    argv.insert(argv.end(), ports.begin(), ports.end());
    auto p = std::make_unique<kos::testing::ChildProcess>(argv);
    auto line = p->read_line(10s);
    ASSERT_EQ(line.value_or("(nothing)"), "ready");
    servers_.push_back(std::move(p));
  }
  bool connects(const std::string& ns, uint32_t to, int port) {
    return kos::testing::run({"ip", "netns", "exec", ns, "python3", "-c", kClient, api::format_ipv4(to),
                              std::to_string(port)})
               .exit_code == 0;
  }
  bool pings(const std::string& ns, uint32_t to) {
    return kos::testing::run({"ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", api::format_ipv4(to)}).exit_code == 0;
  }
  // The first attempt may wait for ARP, or (just after a change of the flows) for
  // ovs-vswitchd to revalidate the datapath's cached flows, which it does asynchronously.
  bool connects_soon(const std::string& ns, uint32_t to, int port) {
    for (int i = 0; i < 3; ++i)
      if (connects(ns, to, port)) return true;
    return false;
  }
  bool pings_soon(const std::string& ns, uint32_t to) {
    for (int i = 0; i < 3; ++i)
      if (pings(ns, to)) return true;
    return false;
  }
  void flush_neighbours(const std::string& ns) { kos::testing::run({"ip", "-n", ns, "neigh", "flush", "all"}); }

  std::vector<std::unique_ptr<kos::testing::ScopedNetns>> guests_;
  std::vector<std::unique_ptr<kos::testing::ChildProcess>> servers_;
};

Policy server_policy() {
  Policy p;
  p.ingress.push_back(PolicyRule{6, {{22, 22}, {443, 443}}, {}, {"clients"}});
  return p;
}
Policy client_policy(uint32_t server) {
  Policy p;
  p.egress.push_back(PolicyRule{6, {{22, 22}, {443, 443}}, {{server, 32}}, {}});
  return p;
}

TEST_F(OvsSecurityGroupTest, PoliciesAllowWhatTheySayStatefullyAndSetsUpdateElementByElement) {
  const auto server = local(101, "10.0.0.1"), client = local(101, "10.0.0.2");
  const std::string sns = guest(server), cns = guest(client);
  ASSERT_FALSE(HasFailure());
  serve(sns, {"22", "23", "443"});
  serve(cns, {"22"});
  ASSERT_FALSE(HasFailure());
  const auto baseline = ovs_->flows_without_cookies("kos");

  // Without policies everything passes.
  ASSERT_TRUE(connects_soon(cns, server.guest_ip, 23));
  EXPECT_TRUE(pings(cns, server.guest_ip));
  EXPECT_TRUE(connects(sns, client.guest_ip, 22));

  ASSERT_TRUE(fabric_->update_set("clients", {client.guest_ip}, {}));
  ASSERT_TRUE(fabric_->set_policy(server, server_policy()));
  ASSERT_TRUE(fabric_->set_policy(client, client_policy(server.guest_ip)));
  flush_neighbours(cns);
  flush_neighbours(sns);
  // ARP works and the replies of allowed connections come back.
  EXPECT_TRUE(connects_soon(cns, server.guest_ip, 22));
  EXPECT_TRUE(connects(cns, server.guest_ip, 443));
  EXPECT_FALSE(connects(cns, server.guest_ip, 23));
  EXPECT_FALSE(pings(cns, server.guest_ip));
  EXPECT_FALSE(connects(sns, client.guest_ip, 22));  // the server may not start connections

  // The client leaves the set: no new connections; back in: again.
  ASSERT_TRUE(fabric_->update_set("clients", {}, {client.guest_ip}));
  EXPECT_FALSE(connects(cns, server.guest_ip, 22));
  ASSERT_TRUE(fabric_->update_set("clients", {client.guest_ip}, {}));
  EXPECT_TRUE(connects_soon(cns, server.guest_ip, 22));

  // What the fabric holds, and a new fabric adopts the same without changing a flow.
  const std::map<std::string, std::vector<uint32_t>> want_sets{{"clients", {client.guest_ip}}};
  const std::map<std::string, Policy> want_policies{{server.name, server_policy()},
                                                    {client.name, client_policy(server.guest_ip)}};
  EXPECT_EQ(fabric_->list_sets().value(), want_sets);
  EXPECT_EQ(fabric_->list_policies().value(), want_policies);
  EXPECT_EQ(fabric_->delete_set("clients").error().code, Errc::kConflict);
  const auto live = ovs_->flows("kos");
  fabric_.reset();
  open_fabric();
  EXPECT_EQ(ovs_fabric().stats().flow_mods, 0u);
  EXPECT_EQ(ovs_->flows("kos"), live);
  EXPECT_EQ(fabric_->list_sets().value(), want_sets);
  EXPECT_EQ(fabric_->list_policies().value(), want_policies);
  EXPECT_TRUE(connects(cns, server.guest_ip, 443));
  EXPECT_FALSE(connects(cns, server.guest_ip, 23));

  // ICMP allowed both ways in the rules: pings go through (echo replies are replies).
  Policy sp = server_policy(), cp = client_policy(server.guest_ip);
  sp.ingress.push_back(PolicyRule{1, {}, {}, {"clients"}});
  cp.egress.push_back(PolicyRule{1, {}, {{0, 0}}, {}});
  ASSERT_TRUE(fabric_->set_policy(server, sp));
  ASSERT_TRUE(fabric_->set_policy(client, cp));
  EXPECT_TRUE(pings_soon(cns, server.guest_ip));
  EXPECT_FALSE(pings(sns, client.guest_ip));
  EXPECT_TRUE(connects(cns, server.guest_ip, 22));

  // No policies: everything passes again, and the bridge has the flows it had before.
  ASSERT_TRUE(fabric_->set_policy(server, std::nullopt));
  ASSERT_TRUE(fabric_->set_policy(client, std::nullopt));
  EXPECT_TRUE(connects_soon(cns, server.guest_ip, 23));
  EXPECT_TRUE(pings_soon(cns, server.guest_ip));
  EXPECT_TRUE(connects_soon(sns, client.guest_ip, 22));
  EXPECT_EQ(fabric_->list_policies().value(), (std::map<std::string, Policy>{}));
  ASSERT_TRUE(fabric_->delete_set("clients"));
  EXPECT_EQ(fabric_->list_sets().value(), (std::map<std::string, std::vector<uint32_t>>{}));
  EXPECT_EQ(ovs_->flows_without_cookies("kos"), baseline);
}

TEST_F(OvsSecurityGroupTest, APolicyGoesWithItsInterfaceAndBadCallsAreRefused) {
  const auto a = local(101, "10.0.0.1"), b = local(101, "10.0.0.2");
  ASSERT_TRUE(fabric_->create_local(a));
  ASSERT_TRUE(fabric_->create_local(b));
  const auto baseline = ovs_->flows_without_cookies("kos");
  EXPECT_EQ(fabric_->set_policy(local(101, "10.0.0.9"), Policy{}).error().code, Errc::kNotFound);
  EXPECT_TRUE(fabric_->set_policy(local(101, "10.0.0.9"), std::nullopt));  // nothing to remove
  // An address both added and removed stays.
  ASSERT_TRUE(fabric_->update_set("both", {ip("10.9.0.1")}, {ip("10.9.0.1")}));
  EXPECT_EQ(fabric_->list_sets().value().at("both"), std::vector<uint32_t>{ip("10.9.0.1")});
  ASSERT_TRUE(fabric_->delete_set("both"));
  Policy bad;
  bad.ingress.push_back(PolicyRule{6, {{0, 22}}, {}, {}});
  EXPECT_EQ(fabric_->set_policy(a, bad).error().code, Errc::kInvalid);
  EXPECT_EQ(fabric_->update_set("Bad Name", {1}, {}).error().code, Errc::kInvalid);

  ASSERT_TRUE(fabric_->set_policy(a, server_policy()));  // makes set "clients", empty
  ASSERT_TRUE(fabric_->set_policy(b, client_policy(a.guest_ip)));
  EXPECT_EQ(fabric_->list_sets().value(), (std::map<std::string, std::vector<uint32_t>>{{"clients", {}}}));
  ASSERT_TRUE(fabric_->delete_local(b));
  EXPECT_EQ(fabric_->list_policies().value(), (std::map<std::string, Policy>{{a.name, server_policy()}}));
  ASSERT_TRUE(fabric_->delete_local(a));
  EXPECT_EQ(fabric_->list_policies().value(), (std::map<std::string, Policy>{}));
  ASSERT_TRUE(fabric_->delete_set("clients"));
  ASSERT_TRUE(fabric_->delete_set("clients"));  // absent: fine
  // Nothing of either is left: only the defaults.
  for (const auto& line : ovs_->flows("kos"))
    EXPECT_EQ(line.find("cookie=0xf000000000000001"), 0u) << line;
  // A new fabric finds no policy records either.
  fabric_.reset();
  open_fabric();
  EXPECT_EQ(fabric_->list_policies().value(), (std::map<std::string, Policy>{}));
  EXPECT_EQ(fabric_->list_sets().value(), (std::map<std::string, std::vector<uint32_t>>{}));
  EXPECT_NE(baseline.size(), 0u);
}

// A second node over VXLAN: each node's own OVS in its namespace, the underlay address on
// an OVS bridge brul holding the underlay veth (OVS's userspace tunnelling sends and
// receives VXLAN through the bridge that has the address), as kos up --fabric ovs does.
TEST_F(OvsSecurityGroupTest, PoliciesHoldAcrossNodesOverVxlan) {
  const std::string a_ns = ns_->name();
  kos::testing::ScopedNetns b_ns(ns_->name() + "-b");
  auto must = [](std::vector<std::string> argv) {
    auto r = kos::testing::run(argv);
    EXPECT_EQ(r.exit_code, 0) << ::testing::PrintToString(argv) << ": " << r.err;
  };
  must({"ip", "-n", a_ns, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", b_ns.name()});
  kos::testing::OvsInstance ovs_b(b_ns.name());
  ASSERT_EQ(ovs_b.start(), "");
  const std::string host_a = "10.253.0.1", host_b = "10.253.0.2";
  for (auto [ovs, ns, host] : {std::tuple{ovs_.get(), a_ns, host_a}, std::tuple{&ovs_b, b_ns.name(), host_b}}) {
    auto r = ovs->vsctl({"add-br", "brul", "--", "set", "bridge", "brul", "datapath_type=netdev", "--", "add-port",
                         "brul", "ul0"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    must({"ip", "-n", ns, "link", "set", "ul0", "up"});
    must({"ip", "-n", ns, "addr", "add", host + "/24", "dev", "brul"});
    must({"ip", "-n", ns, "link", "set", "brul", "up"});
  }
  OvsFabricOptions o;
  o.db = ovs_b.db();
  o.netns = b_ns.name();
  o.datapath_type = "netdev";
  auto opened = OvsFabric::open(o);
  ASSERT_TRUE(opened) << opened.error().message;
  std::unique_ptr<Fabric> fabric_b = std::move(*opened);

  const auto server = local(101, "10.0.0.1"), client = local(101, "10.0.0.3");
  const std::string sns = guest(server), cns = guest(*fabric_b, client);
  ASSERT_TRUE(fabric_->create_remote(testing::remote(101, "10.0.0.3", host_b)));
  ASSERT_TRUE(fabric_b->create_remote(testing::remote(101, "10.0.0.1", host_a)));
  ASSERT_FALSE(HasFailure());
  serve(sns, {"22", "23", "443"});
  serve(cns, {"22"});
  ASSERT_FALSE(HasFailure());
  bool up = false;
  for (int i = 0; i < 10 && !up; ++i) up = pings(cns, server.guest_ip);
  ASSERT_TRUE(up) << "no VXLAN between the nodes";
  ASSERT_TRUE(connects_soon(cns, server.guest_ip, 23));

  ASSERT_TRUE(fabric_->update_set("clients", {client.guest_ip}, {}));
  ASSERT_TRUE(fabric_->set_policy(server, server_policy()));
  ASSERT_TRUE(fabric_b->set_policy(client, client_policy(server.guest_ip)));
  EXPECT_TRUE(connects_soon(cns, server.guest_ip, 22));
  EXPECT_TRUE(connects(cns, server.guest_ip, 443));
  EXPECT_FALSE(connects(cns, server.guest_ip, 23));
  EXPECT_FALSE(pings(cns, server.guest_ip));
  EXPECT_FALSE(connects(sns, client.guest_ip, 22));
  // Only the server's side polices: the client may try 23, the server still refuses it.
  ASSERT_TRUE(fabric_b->set_policy(client, std::nullopt));
  EXPECT_FALSE(connects(cns, server.guest_ip, 23));
  EXPECT_TRUE(connects(cns, server.guest_ip, 443));
  ASSERT_TRUE(fabric_->update_set("clients", {}, {client.guest_ip}));
  EXPECT_FALSE(connects(cns, server.guest_ip, 443));
  ASSERT_TRUE(fabric_->set_policy(server, std::nullopt));
  EXPECT_TRUE(connects_soon(cns, server.guest_ip, 23));
  servers_.clear();
  guests_.clear();
  fabric_b.reset();
}

// OVS restarts (ovs-vswitchd; ovsdb-server on an empty database): the fabric puts the
// policies' and sets' flows and records back by itself, from what it holds.
TEST_F(OvsSecurityGroupTest, PoliciesAndSetsComeBackAfterOvsRestarts) {
  const auto a = local(101, "10.0.0.1"), b = local(101, "10.0.0.2");
  ASSERT_TRUE(fabric_->create_local(a));
  ASSERT_TRUE(fabric_->create_local(b));
  ASSERT_TRUE(fabric_->update_set("clients", {b.guest_ip, ip("10.9.0.1")}, {}));
  ASSERT_TRUE(fabric_->update_set("unused", {ip("10.9.0.2")}, {}));
  ASSERT_TRUE(fabric_->set_policy(a, server_policy()));
  ASSERT_TRUE(fabric_->set_policy(b, client_policy(a.guest_ip)));
  const auto want = ovs_->flows_without_cookies("kos");
  const auto sets = fabric_->list_sets().value();
  const auto policies = fabric_->list_policies().value();

  auto restored = [&] {
    return kos::testing::poll_until([&] { return ovs_->flows_without_cookies("kos") == want; }, 10s, 50ms);
  };
  ASSERT_EQ(ovs_->restart_vswitchd(), "");
  EXPECT_TRUE(restored()) << ::testing::PrintToString(ovs_->flows("kos"));
  ASSERT_EQ(ovs_->restart_ovsdb(true), "");
  EXPECT_TRUE(kos::testing::poll_until(
      [&] { return ovs_->vsctl({"get", "bridge", "kos", "external_ids"}).out.find("kos-set-unused") != std::string::npos; },
      10s, 50ms))
      << ovs_->vsctl({"get", "bridge", "kos", "external_ids"}).out;
  // Ports are numbered again: compare what a new fabric adopts rather than port numbers.
  ASSERT_TRUE(kos::testing::poll_until([&] { return ovs_fabric().stats().restored >= 3; }, 10s, 50ms));
  fabric_.reset();
  open_fabric();
  EXPECT_EQ(fabric_->list_sets().value(), sets);
  EXPECT_EQ(fabric_->list_policies().value(), policies);
  EXPECT_EQ(ovs_fabric().stats().flow_mods, 0u);
}

// A member joining or leaving a set of 10,000 costs the same few flows as in a set of 10.
TEST_F(OvsSecurityGroupTest, AnUpdateOfALargeSetSendsAFewFlows) {
  const auto a = local(101, "10.0.0.1");
  ASSERT_TRUE(fabric_->create_local(a));
  ASSERT_TRUE(fabric_->set_policy(a, server_policy()));
  auto measure = [&](uint32_t size) {
    std::vector<uint32_t> addrs;
    for (uint32_t i = 0; i < size; ++i) addrs.push_back(ip("10.128.0.0") + i);
    ASSERT_TRUE(fabric_->update_set("clients", addrs, {}));
    // Median of 9 joins and leaves of one more member.
    constexpr int kRounds = 9;
    std::vector<double> join, leave;
    const auto before = ovs_fabric().stats();
    for (int i = 0; i < kRounds; ++i) {
      const uint32_t extra = ip("10.200.0.1") + static_cast<uint32_t>(i);
      const auto t0 = std::chrono::steady_clock::now();
      ASSERT_TRUE(fabric_->update_set("clients", {extra}, {}));
      const auto t1 = std::chrono::steady_clock::now();
      ASSERT_TRUE(fabric_->update_set("clients", {}, {extra}));
      const auto t2 = std::chrono::steady_clock::now();
      join.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      leave.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
    }
    const auto after = ovs_fabric().stats();
    EXPECT_EQ(after.bundles - before.bundles, 2u * kRounds);
    // Per update: the set's own record and the one rule naming it.
    EXPECT_EQ(after.flow_mods - before.flow_mods, 4u * kRounds);
    std::ranges::sort(join);
    std::ranges::sort(leave);
    std::printf("[ figure ] set of %u: a member joins in %.2f ms, leaves in %.2f ms (medians of %d), %llu flow mods each\n",
                size, join[kRounds / 2], leave[kRounds / 2], kRounds,
                static_cast<unsigned long long>((after.flow_mods - before.flow_mods) / (2 * kRounds)));
    ASSERT_TRUE(fabric_->update_set("clients", {}, addrs));
  };
  measure(10);
  measure(10000);
  // The bridge holds a flow per member twice (the set's record and the rule's), no more.
  std::vector<uint32_t> addrs;
  for (uint32_t i = 0; i < 10000; ++i) addrs.push_back(ip("10.128.0.0") + i);
  ASSERT_TRUE(fabric_->update_set("clients", addrs, {}));
  size_t members = 0;
  for (const auto& line : ovs_->flows("kos"))
    if (line.find("nw_src=10.128.") != std::string::npos) ++members;
  EXPECT_EQ(members, 20000u);
  // And a new fabric adopts all 10,000 from the flows.
  fabric_.reset();
  open_fabric();
  auto sets = fabric_->list_sets();
  ASSERT_TRUE(sets);
  EXPECT_EQ(sets->at("clients").size(), 10000u);
  EXPECT_EQ(ovs_fabric().stats().flow_mods, 0u);
}

}  // namespace
}  // namespace kos::fabric
