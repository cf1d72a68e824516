// VPCs end to end on a simulated 3-node cluster (test/e2e/cluster.h): VPC A with subnets
// A1 10.1.0.0/24 and A2 10.2.0.0/24, VPC B with subnet B1 10.1.0.0/24 (A1's range again).
// Guests get their gateway from the shipped postCreateExec script (scripts/kos-guest-netns
// with ${gateway}). Needs root; every namespace, link and process goes when a test ends.
#include <unistd.h>

#include <gtest/gtest.h>

#include <thread>

#include "test/support/skip.h"
#include "api/cidr.h"
#include "api/names.h"
#include "fabric/linux/router.h"
#include "test/e2e/cluster.h"

namespace kos::e2e {
namespace {

using namespace std::chrono_literals;
using ctltest::make_attachment;
using ctltest::make_subnet;
using ctltest::poll_until;
using kos::testing::run;

constexpr const char* kNs = "e2e-vpc";
constexpr uint32_t kVpcA = 5100, kA1 = 5101, kA2 = 5102, kVpcB = 5200, kB1 = 5201;

// Echo requests a guest namespace has received (Icmp InEchos of /proc/net/snmp there).
long echoes_received(const std::string& ns) {
  auto r = run({"ip", "netns", "exec", ns, "cat", "/proc/net/snmp"});
  const auto names_at = r.out.find("Icmp:"), values_at = r.out.find("Icmp:", names_at + 1);
  if (values_at == std::string::npos) return -1;
  std::istringstream names(r.out.substr(names_at, r.out.find('\n', names_at) - names_at)),
      values(r.out.substr(values_at, r.out.find('\n', values_at) - values_at));
  std::string n, v;
  while (names >> n && values >> v)
    if (n == "InEchos") return std::stol(v);
  return -1;
}

std::set<std::string> router_namespaces(const Cluster& c) {
  std::set<std::string> out;
  for (const auto& n : fabric::nl::named_netns())
    for (int i = 0; i < c.nodes(); ++i)
      if (fabric::parse_router_netns_name(c.node_ns(i), n)) out.insert(n);
  return out;
}

TEST(VpcNodes, SubnetsOfAVpcRouteOnTheirNodeAndVpcsStayApart) {
  if (geteuid() != 0) KOS_SKIP_UNLESS_CI() << "needs root (network namespaces)";
  if (run({"traceroute", "--version"}).exit_code != 0 && run({"which", "traceroute"}).exit_code != 0)
    KOS_SKIP_UNLESS_CI() << "traceroute is not installed (scripts/install-deps.sh installs it)";
  Cluster cluster(Cluster::Options{});
  if (auto e = cluster.start(); !e.empty()) FAIL() << e << "\n" << cluster.logs();
  auto c = cluster.client();
  auto vpc = [&](const std::string& name, uint32_t vni) {
    api::Vpc v;
    v.metadata.namespace_ = kNs;
    v.metadata.name = name;
    v.spec.vni = vni;
    ASSERT_TRUE(c->create(v));
  };
  auto subnet = [&](const std::string& name, const std::string& cidr, uint32_t vni, const std::string& in) {
    auto s = make_subnet(kNs, name, cidr, vni);
    s.spec.vpc = in;
    ASSERT_TRUE(c->create(s));
  };
  vpc("a", kVpcA);
  vpc("b", kVpcB);
  subnet("a1", "10.1.0.0/24", kA1, "a");
  subnet("a2", "10.2.0.0/24", kA2, "a");
  subnet("b1", "10.1.0.0/24", kB1, "b");
  ASSERT_TRUE(poll_until([&] {
    auto l = c->list<api::Subnet>(kNs);
    if (!l || l->size() != 3) return false;
    for (const auto& s : *l)
      if (!s.status.validated) return false;
    return true;
  }, 30s));

  // a1-0 on node 0, a2-2 on node 2; b1-0 on node 0 and b1-1 on node 1 (VPC B only there).
  struct Guest {
    std::string name, subnet;
    int node;
  };
  const std::vector<Guest> guests{{"a1-0", "a1", 0}, {"a2-2", "a2", 2}, {"b1-0", "b1", 0}, {"b1-1", "b1", 1}};
  for (const auto& g : guests) {
    auto na = make_attachment(kNs, g.name, g.subnet, cluster.node_name(g.node));
    na.spec.post_create_exec = cluster.post_create_exec(g.name, 24, true);
    na.spec.post_delete_exec = cluster.post_delete_exec(g.name);
    ASSERT_TRUE(ctltest::with_retries([&] { return c->create(na); }));
  }
  std::map<std::string, api::NetworkAttachment> by_name;
  ASSERT_TRUE(poll_until([&] {
    auto l = c->list<api::NetworkAttachment>(kNs);
    if (!l) return false;
    by_name.clear();
    for (const auto& na : *l) {
      if (na.status.ifc_name.empty() || !na.status.post_create_exec_report) return false;
      by_name[na.metadata.name] = na;
    }
    return by_name.size() == guests.size();
  }, 60s)) << cluster.logs();
  for (const auto& [name, na] : by_name) {
    EXPECT_EQ(na.status.post_create_exec_report->exit_status, 0) << name << ": " << na.status.post_create_exec_report->std_err;
    EXPECT_EQ(na.status.gateway, name.starts_with("a2") ? "10.2.0.1" : "10.1.0.1") << name;
  }
  const std::string a1 = cluster.guest_ns("a1-0"), a2 = cluster.guest_ns("a2-2"), b1 = cluster.guest_ns("b1-0"),
                    b1n1 = cluster.guest_ns("b1-1");
  const std::string a1_ip = by_name["a1-0"].status.ipv4, a2_ip = by_name["a2-2"].status.ipv4,
                    b1_ip = by_name["b1-0"].status.ipv4, b1n1_ip = by_name["b1-1"].status.ipv4;
  ASSERT_EQ(a1_ip, b1_ip) << "both are the first address of 10.1.0.0/24, on different VNIs";

  // A1 on node 0 reaches A2 on node 2 through its gateway, and back.
  EXPECT_TRUE(ping(a1, a2_ip, 2) || ping(a1, a2_ip, 2)) << "a1-0 -> a2-2";
  EXPECT_TRUE(ping(a2, a1_ip, 2)) << "a2-2 -> a1-0";
  // traceroute: one routed hop, the gateway of the guest's own subnet (on its own node).
  auto tr = run({"ip", "netns", "exec", a1, "traceroute", "-n", "-q", "1", "-w", "2", "-m", "5", a2_ip});
  EXPECT_EQ(tr.exit_code, 0) << tr.err;
  std::vector<std::string> hops;
  std::istringstream lines(tr.out);
  for (std::string line; std::getline(lines, line);)
    if (!line.empty() && line[0] == ' ') {
      std::istringstream f(line);
      std::string n, addr;
      f >> n >> addr;
      hops.push_back(addr);
    }
  EXPECT_EQ(hops, (std::vector<std::string>{"10.1.0.1", a2_ip})) << tr.out;

  // VPC B: its guest with a1-0's address never reaches A2, nor A1's guest; and nothing of A
  // reaches B's guests.
  EXPECT_FALSE(ping(b1, a2_ip)) << "b1-0 reached A2";
  const long b1_before = echoes_received(b1), b1n1_before = echoes_received(b1n1);
  EXPECT_TRUE(ping(a2, a1_ip, 3)) << "a2-2 -> 10.1.0.x reaches A1's guest...";
  EXPECT_FALSE(ping(a2, b1n1_ip)) << "...and B1's other guest is out of reach";
  EXPECT_FALSE(ping(a1, b1n1_ip)) << "a1-0 reached b1-1";
  EXPECT_EQ(echoes_received(b1), b1_before) << "an echo from A reached b1-0";
  EXPECT_EQ(echoes_received(b1n1), b1n1_before) << "an echo from A reached b1-1";
  EXPECT_TRUE(ping(b1, b1n1_ip, 2)) << "B1's guests reach each other";

  // Relevance: node 1 hosts only B, so it holds nothing of A (no device of A's VNIs, no
  // router of A); node 0 and node 2 route A.
  auto n1 = cluster.kernel_state(1);
  EXPECT_FALSE(n1.vxlan_vnis.count(kA1) || n1.vxlan_vnis.count(kA2)) << describe(n1);
  const auto routers = router_namespaces(cluster);
  EXPECT_EQ(routers, (std::set<std::string>{fabric::router_netns_name(cluster.node_ns(0), kVpcA),
                                            fabric::router_netns_name(cluster.node_ns(0), kVpcB),
                                            fabric::router_netns_name(cluster.node_ns(1), kVpcB),
                                            fabric::router_netns_name(cluster.node_ns(2), kVpcA)}));

  // Deleting the attachments and subnets removes every device, gateway and router namespace.
  for (const auto& [name, _] : by_name) EXPECT_TRUE(c->remove<api::NetworkAttachment>(kNs, name));
  for (const char* s : {"a1", "a2", "b1"}) EXPECT_TRUE(c->remove<api::Subnet>(kNs, s));
  for (const char* v : {"a", "b"}) EXPECT_TRUE(c->remove<api::Vpc>(kNs, v));
  EXPECT_TRUE(poll_until([&] {
    for (int i = 0; i < cluster.nodes(); ++i)
      if (!(cluster.kernel_state(i) == NodeKernelState{})) return false;
    return router_namespaces(cluster).empty();
  }, 30s));
  for (int i = 0; i < cluster.nodes(); ++i)
    EXPECT_EQ(describe(cluster.kernel_state(i)), describe(NodeKernelState{})) << cluster.node_name(i);
  EXPECT_TRUE(router_namespaces(cluster).empty());
  if (HasFailure()) std::cerr << cluster.logs();
}

}  // namespace
}  // namespace kos::e2e
