// Connection agents with the fake fabric, in process, against a real API server and the
// real IPAM and subnet validator.
#include "agent/agent.h"

#include <gtest/gtest.h>

#include "api/cidr.h"
#include "agent/testing.h"
#include "fabric/fake/fake_fabric.h"

namespace kos::agent {
namespace {

using namespace std::chrono_literals;

void attach(client::RestClient& c, const std::string& name, const std::string& node, const std::string& subnet);
void create_network(client::RestClient& c, const std::string& name, uint32_t vni, const std::string& node,
                    int count);

class AgentTest : public testing::ControllersTest {
 protected:
  void TearDown() override {
    for (auto& a : agents_) a->stop();
    agents_.clear();
    ControllersTest::TearDown();
  }
  // With `clock`, the agent's grace period and its queue's delays run on it: eventually()
  // moves it as fast as real time while it polls, and a test that wants time to stand
  // still waits without eventually().
  void add_agent(const std::string& node, uint32_t host_ip,
                 std::chrono::milliseconds relevance_grace = std::chrono::milliseconds(0),
                 FakeClock* clock = nullptr, bool remotes_inline = true) {
    fabrics_.push_back(std::make_unique<fabric::FakeFabric>());
    AgentOptions o;
    o.remotes_inline = remotes_inline;
    o.node = node;
    o.host_ip = host_ip;
    o.workers = 2;
    o.relevance_grace = relevance_grace;
    o.clock = clock;
    if (clock) ticking_ = clock;
    agents_.push_back(std::make_unique<Agent>(client(), *fabrics_.back(), o));
    ASSERT_TRUE(agents_.back()->start().has_value());
  }
  template <class P>
  bool eventually(P pred, std::chrono::seconds limit = 30s) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred()) return true;
      std::this_thread::sleep_for(20ms);  // polling the agents' effect
      if (ticking_) ticking_->advance(20ms);
    }
    return pred();
  }
  // Network `net` (VNI `vni`, host IPs base+1 and base+2) with attachment net-node1-0 on
  // node1, then node0's agent (agents_.back()) with net-node0-0, until node0 maps node1's.
  void node0_and_node1_on(const std::string& net, uint32_t vni, uint32_t host_base) {
    add_agent("node1", host_base + 2);
    create_network(*c_, net, vni, "node1", 1);
    add_agent("node0", host_base + 1);
    auto& f = *fabrics_.back();
    attach(*c_, net + "-node0-0", "node0", net);
    ASSERT_TRUE(eventually([&] { return f.remotes().size() == 1; }));
  }
  FakeClock* ticking_ = nullptr;

  std::vector<std::unique_ptr<fabric::FakeFabric>> fabrics_;
  std::vector<std::unique_ptr<Agent>> agents_;
};

// 10 nodes, 50 VNIs, each node hosting ~10 of them: every node programs exactly the
// remote attachments of its VNIs, and receives no event about any other VNI.
TEST_F(AgentTest, EachAgentLearnsOnlyTheVnisItHosts) {
  constexpr int kNodes = 10, kVnis = 50;
  for (int n = 0; n < kNodes; ++n) add_agent("node" + std::to_string(n), 0x0a090000u + static_cast<uint32_t>(n) + 1);
  for (int v = 1; v <= kVnis; ++v) {
    api::Subnet s;
    s.metadata.namespace_ = "ns";
    s.metadata.name = "s" + std::to_string(v);
    s.spec.vni = static_cast<uint32_t>(v);
    s.spec.ipv4 = "10.100." + std::to_string(v) + ".0/24";
    ASSERT_TRUE(c_->create(s).has_value());
  }
  // VNI v lives on nodes v%10 and (v+3)%10: two attachments each.
  std::map<int, std::set<int>> node_vnis;
  for (int v = 1; v <= kVnis; ++v)
    for (int n : {v % kNodes, (v + 3) % kNodes}) {
      api::NetworkAttachment na;
      na.metadata.namespace_ = "ns";
      na.metadata.name = "na-" + std::to_string(v) + "-" + std::to_string(n);
      na.spec.node = "node" + std::to_string(n);
      na.spec.subnet = "s" + std::to_string(v);
      ASSERT_TRUE(c_->create(na).has_value());
      node_vnis[n].insert(v);
    }
  // Every node ends with its 10 locals and one remote per hosted VNI.
  for (int n = 0; n < kNodes; ++n) {
    EXPECT_TRUE(eventually([&] {
      return fabrics_[static_cast<size_t>(n)]->locals().size() == node_vnis[n].size() &&
             fabrics_[static_cast<size_t>(n)]->remotes().size() == node_vnis[n].size();
    })) << "node" << n << ": locals " << fabrics_[static_cast<size_t>(n)]->locals().size()
        << " remotes " << fabrics_[static_cast<size_t>(n)]->remotes().size();
    std::set<uint32_t> want(node_vnis[n].begin(), node_vnis[n].end());
    EXPECT_EQ(agents_[static_cast<size_t>(n)]->relevant_vnis(), want);
    auto counts = agents_[static_cast<size_t>(n)]->counts();
    for (const auto& [vni, events] : counts.remote_events_by_vni)
      EXPECT_TRUE(want.count(vni)) << "node" << n << " got " << events << " events for VNI " << vni;
    EXPECT_EQ(counts.irrelevant_events, 0u) << "node" << n;
    EXPECT_GT(counts.remote_events, 0u) << "node" << n;
    // Each remote points at the other node of its VNI.
    for (const auto& r : fabrics_[static_cast<size_t>(n)]->remotes()) {
      int v = static_cast<int>(r.vni);
      int other = v % kNodes == n ? (v + 3) % kNodes : v % kNodes;
      EXPECT_EQ(r.host_ip, 0x0a090000u + static_cast<uint32_t>(other) + 1);
    }
  }
  // Status: every attachment is ready with its node's host IP.
  auto all = c_->list<api::NetworkAttachment>("ns");
  ASSERT_TRUE(all.has_value());
  for (const auto& na : *all) {
    EXPECT_FALSE(na.status.ifc_name.empty()) << na.metadata.name;
    EXPECT_EQ(na.status.mac_address, api::format_mac(api::guest_mac(*api::parse_ipv4(na.status.ipv4), na.status.address_vni)));
  }
  // Deleting one attachment removes its mapping on the other node, and the VNI's
  // relevance where it was the last local one.
  ASSERT_TRUE(c_->remove<api::NetworkAttachment>("ns", "na-7-7").has_value());
  EXPECT_TRUE(eventually([&] { return !agents_[7]->relevant_vnis().count(7); }));
  EXPECT_TRUE(eventually([&] {
    for (const auto& r : fabrics_[0]->remotes())
      if (r.vni == 7) return false;
    return true;
  }));
}

// VPCs: a node hosting an attachment of VPC A learns every attachment of A's subnets (to
// route to them), with their routing, and nothing of VPC B or of isolated subnets it does
// not host; no node receives an event it does not need.
TEST_F(AgentTest, EachAgentLearnsExactlyTheVpcsItHosts) {
  constexpr int kNodes = 6;
  for (int n = 0; n < kNodes; ++n) add_agent("node" + std::to_string(n), 0x0a080000u + static_cast<uint32_t>(n) + 1);
  for (auto [name, vni] : {std::pair{"a", 900u}, std::pair{"b", 950u}}) {
    api::Vpc v;
    v.metadata.namespace_ = "ns";
    v.metadata.name = name;
    v.spec.vni = vni;
    ASSERT_TRUE(c_->create(v).has_value());
  }
  struct Net {
    const char* name;
    uint32_t vni;
    const char* cidr;
    const char* vpc;
  };
  for (const Net& n : {Net{"a1", 901, "10.1.0.0/24", "a"}, Net{"a2", 902, "10.2.0.0/24", "a"},
                       Net{"a3", 903, "10.3.0.0/24", "a"}, Net{"b1", 951, "10.1.0.0/24", "b"},
                       Net{"b2", 952, "10.2.0.0/24", "b"}, Net{"s", 960, "10.1.0.0/24", ""}}) {
    api::Subnet s;
    s.metadata.namespace_ = "ns";
    s.metadata.name = n.name;
    s.spec.vni = n.vni;
    s.spec.ipv4 = n.cidr;
    s.spec.vpc = n.vpc;
    ASSERT_TRUE(c_->create(s).has_value());
  }
  // (subnet, node) of every attachment.
  const std::vector<std::pair<std::string, int>> placed{{"a1", 0}, {"a2", 1}, {"a3", 2}, {"a1", 2},
                                                        {"b1", 3}, {"b2", 4}, {"s", 5},  {"s", 0}};
  for (size_t i = 0; i < placed.size(); ++i)
    attach(*c_, "na-" + std::to_string(i), "node" + std::to_string(placed[i].second), placed[i].first);
  // What each node must map: the others' attachments of the VPCs and subnets it hosts.
  auto hosted = [&](int n) {
    std::set<std::string> domains;  // "vpc a", "vpc b" or a subnet name
    for (const auto& [sub, node] : placed)
      if (node == n) domains.insert(sub == "s" ? sub : std::string("vpc ") + sub[0]);
    return domains;
  };
  for (int n = 0; n < kNodes; ++n) {
    const auto domains = hosted(n);
    size_t want = 0;
    for (const auto& [sub, node] : placed)
      if (node != n && domains.count(sub == "s" ? sub : std::string("vpc ") + sub[0])) ++want;
    auto& f = *fabrics_[static_cast<size_t>(n)];
    EXPECT_TRUE(eventually([&] { return f.remotes().size() == want; }))
        << "node" << n << ": " << f.remotes().size() << " remotes, want " << want;
    for (const auto& r : f.remotes()) {
      const bool vpc_a = r.vni >= 901 && r.vni <= 903, vpc_b = r.vni == 951 || r.vni == 952;
      EXPECT_TRUE((vpc_a && domains.count("vpc a")) || (vpc_b && domains.count("vpc b")) ||
                  (r.vni == 960 && domains.count("s")))
          << "node" << n << " maps VNI " << r.vni;
      EXPECT_EQ(r.routing.vpc, vpc_a ? 900u : vpc_b ? 950u : 0u) << "node" << n << " VNI " << r.vni;
    }
    for (const auto& l : f.locals()) EXPECT_EQ(l.routing.vpc != 0, l.vni != 960) << "node" << n;
    auto counts = agents_[static_cast<size_t>(n)]->counts();
    EXPECT_EQ(counts.irrelevant_events, 0u) << "node" << n;
  }
  EXPECT_EQ(agents_[0]->relevant_vnis(), (std::set<uint32_t>{900, 960}));
  EXPECT_EQ(agents_[3]->relevant_vnis(), (std::set<uint32_t>{950}));
  const auto locals0 = fabrics_[0]->locals();
  const auto a1 = std::ranges::find_if(locals0, [](const auto& l) { return l.vni == 901; });
  ASSERT_NE(a1, locals0.end());
  EXPECT_EQ(a1->routing, (fabric::Routing{900, *api::parse_ipv4("10.1.0.1"), 24}));
}

// Security groups on the fake fabric: a node learns the members of a group only where a
// rule of a group of one of its attachments names it, and only those in its attachments'
// address domains; membership changes reach the set element by element.
TEST_F(AgentTest, EachNodeLearnsOnlyTheGroupMembersItsRulesUse) {
  for (int n = 0; n < 4; ++n) add_agent("node" + std::to_string(n), 0x0a0a0000u + static_cast<uint32_t>(n) + 1);
  auto group = [&](const std::string& name, std::vector<api::SecurityGroupIngressRule> in,
                   std::vector<api::SecurityGroupEgressRule> out) {
    api::SecurityGroup g;
    g.metadata.namespace_ = "ns";
    g.metadata.name = name;
    g.spec.ingress = std::move(in);
    g.spec.egress = std::move(out);
    auto r = c_->create(g);
    EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
  };
  group("servers", {{"tcp", {"22", "443"}, {{"", "clients"}}}}, {});
  group("clients", {}, {{"any", {}, {{"0.0.0.0/0", ""}}}});
  group("admins", {}, {});
  for (auto [name, vni] : {std::pair{"s1", 700u}, std::pair{"s2", 710u}}) {
    api::Subnet s;
    s.metadata.namespace_ = "ns";
    s.metadata.name = name;
    s.spec.vni = vni;
    s.spec.ipv4 = "10.7.0.0/24";
    ASSERT_TRUE(c_->create(s).has_value());
  }
  auto member = [&](const std::string& name, const std::string& node, const std::string& subnet,
                    std::vector<std::string> groups) {
    api::NetworkAttachment na;
    na.metadata.namespace_ = "ns";
    na.metadata.name = name;
    na.spec.node = node;
    na.spec.subnet = subnet;
    na.spec.security_groups = std::move(groups);
    ASSERT_TRUE(c_->create(na).has_value()) << name;
  };
  member("srv", "node0", "s1", {"servers"});
  member("cli1", "node1", "s1", {"clients"});
  member("cli2", "node2", "s1", {"clients"});
  member("cli3", "node3", "s2", {"clients"});  // another VNI: not srv's clients
  member("x", "node3", "s1", {});
  auto ip_of = [&](const std::string& name) -> uint32_t {
    auto na = c_->get<api::NetworkAttachment>("ns", name);
    if (!na) return 0;
    return api::parse_ipv4(na->status.ipv4).value_or(0);
  };
  auto na_of = [&](const std::string& name) { return *c_->get<api::NetworkAttachment>("ns", name); };
  const std::string clients_700 = member_set_name("ns", "clients", "700");
  auto& f0 = *fabrics_[0];
  ASSERT_TRUE(eventually([&] {
    auto sets = f0.sets();
    return sets.contains(clients_700) && sets[clients_700] == std::set<uint32_t>{ip_of("cli1"), ip_of("cli2")} &&
           ip_of("cli1") != 0 && ip_of("cli2") != 0;
  })) << "node0's set of clients";
  EXPECT_EQ(f0.sets().size(), 1u);
  // srv's policy: ingress 22 and 443 from the set; nothing sent but replies.
  const std::string srv_ifc = na_of("srv").status.ifc_name;
  ASSERT_TRUE(eventually([&] { return f0.policies().contains(na_of("srv").status.ifc_name); }));
  const fabric::Policy srv_policy = f0.policies().at(na_of("srv").status.ifc_name);
  ASSERT_EQ(srv_policy.ingress.size(), 1u);
  EXPECT_EQ(srv_policy.ingress[0].protocol, 6);
  EXPECT_EQ(srv_policy.ingress[0].ports, (std::vector<fabric::PortRange>{{22, 22}, {443, 443}}));
  EXPECT_EQ(srv_policy.ingress[0].sets, std::vector<std::string>{clients_700});
  EXPECT_TRUE(srv_policy.egress.empty());
  // In force, at the group's version.
  const auto servers = *c_->get<api::SecurityGroup>("ns", "servers");
  EXPECT_TRUE(eventually([&] {
    return na_of("srv").status.security_groups_in_force ==
           std::vector<api::SecurityGroupRevision>{{"servers", servers.metadata.resource_version}};
  }));
  // The clients' rules name no group: their nodes watch no members, and x has no policy.
  for (int n = 1; n < 4; ++n) {
    EXPECT_TRUE(eventually([&] { return fabrics_[static_cast<size_t>(n)]->policies().size() == 1u; })) << n;
    EXPECT_TRUE(fabrics_[static_cast<size_t>(n)]->sets().empty()) << n;
    EXPECT_EQ(agents_[static_cast<size_t>(n)]->counts().member_watches, 0u) << n;
  }
  EXPECT_EQ(agents_[0]->counts().watched_groups, std::set<std::string>{"ns/clients"});

  // cli2 leaves the group, x joins it: one element each.
  const auto before = f0.counts().set_elements_changed;
  auto cli2 = na_of("cli2");
  cli2.spec.security_groups.clear();
  ASSERT_TRUE(c_->update(cli2).has_value());
  auto x = na_of("x");
  x.spec.security_groups = {"clients"};
  ASSERT_TRUE(c_->update(x).has_value());
  EXPECT_TRUE(eventually([&] {
    return f0.sets()[clients_700] == std::set<uint32_t>{ip_of("cli1"), ip_of("x")};
  }));
  EXPECT_EQ(f0.counts().set_elements_changed - before, 2u);
  EXPECT_TRUE(eventually([&] { return fabrics_[2]->policies().empty(); })) << "cli2 has no group now";

  // servers now also takes ssh from admins: node0 watches admins too.
  auto srv_group = servers;
  srv_group.spec.ingress.push_back({"tcp", {"22"}, {{"", "admins"}}});
  ASSERT_TRUE(c_->update(srv_group).has_value());
  EXPECT_TRUE(eventually([&] {
    return agents_[0]->counts().watched_groups == std::set<std::string>{"ns/admins", "ns/clients"} &&
           f0.policies().at(srv_ifc).ingress.size() == 2u;
  }));
  for (int n = 0; n < 4; ++n)
    EXPECT_EQ(agents_[static_cast<size_t>(n)]->counts().irrelevant_member_events, 0u) << "node" << n;

  // srv goes: node0 stops watching and removes its sets.
  ASSERT_TRUE(c_->remove<api::NetworkAttachment>("ns", "srv").has_value());
  EXPECT_TRUE(eventually([&] { return f0.sets().empty() && f0.policies().empty(); }));
  EXPECT_EQ(agents_[0]->counts().member_watches, 0u);
}

// A restarted agent adopts the fabric's policies and sets: nothing is re-programmed that
// is as wanted (no moment without a policy), and a set is made exactly the members it has
// now (a member that left while the agent was down is removed, one that joined added).
TEST_F(AgentTest, RestartAdoptsPoliciesAndCorrectsSetsToTheMembersOfNow) {
  add_agent("node0", 0x0a0b0001u);
  api::SecurityGroup servers, clients;
  servers.metadata.namespace_ = clients.metadata.namespace_ = "ns";
  servers.metadata.name = "servers";
  servers.spec.ingress = {{"tcp", {"22"}, {{"", "clients"}}}};
  clients.metadata.name = "clients";
  ASSERT_TRUE(c_->create(servers).has_value());
  ASSERT_TRUE(c_->create(clients).has_value());
  api::Subnet s;
  s.metadata.namespace_ = "ns";
  s.metadata.name = "s";
  s.spec.vni = 720;
  s.spec.ipv4 = "10.72.0.0/24";
  ASSERT_TRUE(c_->create(s).has_value());
  for (auto [name, node, group] : {std::tuple{"srv", "node0", "servers"}, std::tuple{"c1", "elsewhere", "clients"},
                                   std::tuple{"c2", "elsewhere", "clients"}, std::tuple{"c3", "elsewhere", ""}}) {
    api::NetworkAttachment na;
    na.metadata.namespace_ = "ns";
    na.metadata.name = name;
    na.spec.node = node;
    na.spec.subnet = "s";
    if (*group) na.spec.security_groups = {group};
    ASSERT_TRUE(c_->create(na).has_value()) << name;
  }
  auto ip_of = [&](const std::string& name) {
    auto na = c_->get<api::NetworkAttachment>("ns", name);
    return na ? api::parse_ipv4(na->status.ipv4).value_or(0) : 0u;
  };
  auto& f = *fabrics_[0];
  const std::string set = member_set_name("ns", "clients", "720");
  ASSERT_TRUE(eventually([&] {
    return ip_of("c1") && ip_of("c2") && f.sets()[set] == std::set<uint32_t>{ip_of("c1"), ip_of("c2")} &&
           f.policies().size() == 1u;
  }));
  const auto policies = f.policies();
  agents_[0]->stop();
  // While it is down: c1 leaves, c3 joins.
  auto c1 = *c_->get<api::NetworkAttachment>("ns", "c1");
  c1.spec.security_groups.clear();
  ASSERT_TRUE(c_->update(c1).has_value());
  auto c3 = *c_->get<api::NetworkAttachment>("ns", "c3");
  c3.spec.security_groups = {"clients"};
  ASSERT_TRUE(c_->update(c3).has_value());
  const auto before = f.counts();
  AgentOptions o;
  o.node = "node0";
  o.host_ip = 0x0a0b0001u;
  o.workers = 2;
  agents_[0] = std::make_unique<Agent>(client(), f, o);
  ASSERT_TRUE(agents_[0]->start().has_value());
  EXPECT_TRUE(eventually([&] { return f.sets()[set] == std::set<uint32_t>{ip_of("c2"), ip_of("c3")}; }));
  EXPECT_EQ(f.counts().set_elements_changed - before.set_elements_changed, 2u) << "c1 removed, c3 added";
  EXPECT_EQ(f.counts().set_policy, before.set_policy) << "the adopted policy was as wanted";
  EXPECT_EQ(f.policies(), policies);
}

// Creates attachment ns/`name` of Subnet `subnet` on `node`.
void attach(client::RestClient& c, const std::string& name, const std::string& node,
            const std::string& subnet) {
  api::NetworkAttachment na;
  na.metadata.namespace_ = "ns";
  na.metadata.name = name;
  na.spec.node = node;
  na.spec.subnet = subnet;
  ASSERT_TRUE(c.create(na).has_value()) << name;
}

// Creates Subnet `name` (VNI `vni`, 10.200.<vni>.0/24) and `count` attachments on `node`.
void create_network(client::RestClient& c, const std::string& name, uint32_t vni,
                    const std::string& node, int count) {
  api::Subnet s;
  s.metadata.namespace_ = "ns";
  s.metadata.name = name;
  s.spec.vni = vni;
  s.spec.ipv4 = "10.200." + std::to_string(vni) + ".0/24";
  ASSERT_TRUE(c.create(s).has_value());
  for (int i = 0; i < count; ++i) attach(c, name + "-" + node + "-" + std::to_string(i), node, name);
}

// A failing fabric makes the agent write the error into status while events keep arriving
// on the client's transport thread. The agent used to hold its mutex across the status
// write, which the transport's event handlers also take: a deadlock (this test hung).
TEST_F(AgentTest, FailingFabricCallsReportErrorsAndNeverHang) {
  add_agent("node0", 0x0a090001u);
  fabrics_[0]->fail_next(fabric::FakeFabric::Op::kCreateLocal,
                         Error{Errc::kInternal, "injected fault"}, 1 << 30);
  constexpr int kCount = 40;
  create_network(*c_, "f", 31, "node0", kCount);
  auto with = [&](auto pred) {
    auto all = c_->list<api::NetworkAttachment>("ns");
    if (!all) return 0;
    int n = 0;
    for (const auto& na : *all) n += pred(na) ? 1 : 0;
    return n;
  };
  EXPECT_TRUE(eventually([&] {
    return with([](const api::NetworkAttachment& na) {
             return !na.status.errors.host.empty() &&
                    na.status.errors.host[0].find("injected fault") != std::string::npos;
           }) == kCount;
  })) << "not every attachment reports the fabric's error";
  // The fault goes away: everything converges (the failed keys are retried with backoff).
  fabrics_[0]->fail_next(fabric::FakeFabric::Op::kCreateLocal, Error{}, 0);
  EXPECT_TRUE(eventually([&] {
    return with([](const api::NetworkAttachment& na) {
             return !na.status.ifc_name.empty() && na.status.errors.host.empty();
           }) == kCount;
  }, 60s)) << "the agent did not converge after the fault cleared";
  EXPECT_EQ(fabrics_[0]->locals().size(), static_cast<size_t>(kCount));
}

// Slow fabric calls (10 ms each) on two nodes sharing a VNI, with failing remote creates
// for a while: every local and remote converges, nothing hangs.
TEST_F(AgentTest, SlowAndFailingFabricConverges) {
  add_agent("node0", 0x0a090001u);
  add_agent("node1", 0x0a090002u);
  for (auto& f : fabrics_) {
    f->set_latency(10ms);
    f->fail_next(fabric::FakeFabric::Op::kCreateRemote, Error{Errc::kUnavailable, "slow fault"}, 15);
  }
  create_network(*c_, "g", 32, "node0", 10);
  for (int i = 0; i < 10; ++i) attach(*c_, "g-node1-" + std::to_string(i), "node1", "g");
  for (auto& f : fabrics_)
    EXPECT_TRUE(eventually([&] { return f->locals().size() == 10 && f->remotes().size() == 10; }, 60s))
        << "locals " << f->locals().size() << " remotes " << f->remotes().size();
}

// A node that starts with many remote mappings to program (a restart on a busy cluster, a
// VNI becoming relevant) hands them to the fabric in a few batches, not one call each.
TEST_F(AgentTest, ColdStartProgramsRemoteMappingsInBatches) {
  constexpr size_t kRemotes = 200;
  add_agent("node1", 0x0a090002u);
  create_network(*c_, "b", 33, "node1", static_cast<int>(kRemotes));
  auto implemented = [&](const std::string& node) {
    size_t n = 0;
    auto l = c_->list<api::NetworkAttachment>("ns");
    if (l)
      for (const auto& na : *l) n += na.spec.node == node && !na.status.host_ip.empty();
    return n;
  };
  ASSERT_TRUE(eventually([&] { return implemented("node1") == kRemotes; }, 60s)) << implemented("node1");
  attach(*c_, "b-node0-0", "node0", "b");
  ASSERT_TRUE(eventually([&] {
    auto na = c_->get<api::NetworkAttachment>("ns", "b-node0-0");
    return na && !na->status.ipv4.empty();
  }));

  add_agent("node0", 0x0a090001u);
  auto& f = *fabrics_.back();
  ASSERT_TRUE(eventually([&] { return f.remotes().size() == kRemotes; }, 60s)) << f.remotes().size();
  auto counts = f.counts();
  EXPECT_EQ(counts.create_remote, kRemotes);
  EXPECT_GE(counts.batches, 1u);
  EXPECT_LE(counts.batches, 20u) << "the mappings were not batched: " << counts.create_remote
                                 << " creates in " << counts.batches << " batches";
  std::printf("[ batches ] %llu remote mappings in %llu fabric batches\n",
              static_cast<unsigned long long>(counts.create_remote),
              static_cast<unsigned long long>(counts.batches));
}

}  // namespace
}  // namespace kos::agent

namespace kos::agent {
namespace {

// A VNI whose only local attachment is deleted and another created soon after keeps its
// informer (no relist of its remote attachments, no removal and re-programming of their
// mappings); once it stays irrelevant past the grace period, the informer and the
// mappings go.
TEST_F(AgentTest, AVniThatFlapsKeepsItsInformerForTheGracePeriod) {
  add_agent("node1", 0x0a090002u);
  create_network(*c_, "h", 34, "node1", 10);
  FakeClock clock;
  add_agent("node0", 0x0a090001u, std::chrono::milliseconds(1500), &clock);
  auto& agent = *agents_.back();
  auto& f = *fabrics_.back();
  attach(*c_, "h-node0-a", "node0", "h");
  ASSERT_TRUE(eventually([&] { return f.locals().size() == 1 && f.remotes().size() == 10; }))
      << f.locals().size() << " " << f.remotes().size();
  ASSERT_EQ(agent.counts().vni_informers_started, 1u);

  // Out of relevance and back within the grace period.
  ASSERT_TRUE(c_->remove<api::NetworkAttachment>("ns", "h-node0-a").has_value());
  ASSERT_TRUE(eventually([&] { return f.locals().empty(); }));
  attach(*c_, "h-node0-b", "node0", "h");
  ASSERT_TRUE(eventually([&] { return f.locals().size() == 1; }));
  EXPECT_EQ(f.remotes().size(), 10u);
  EXPECT_EQ(agent.counts().vni_informers_started, 1u) << "the VNI was relisted on a flap";
  EXPECT_EQ(f.counts().delete_remote, 0u) << "mappings were removed on a flap";

  // Out for good. The grace period is on the agent's clock: while the clock stands still
  // the VNI stays, however long that takes in real time; once the clock has moved past
  // it, the VNI and its mappings go.
  ASSERT_TRUE(c_->remove<api::NetworkAttachment>("ns", "h-node0-b").has_value());
  ASSERT_TRUE(eventually([&] { return f.locals().empty(); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(2000));  // real time past the grace
  EXPECT_EQ(agent.relevant_vnis(), std::set<uint32_t>{34}) << "the grace period ended on real time";
  EXPECT_EQ(f.remotes().size(), 10u);
  clock.advance(std::chrono::milliseconds(1500));
  EXPECT_TRUE(eventually([&] { return agent.relevant_vnis().empty() && f.remotes().empty(); }))
      << f.remotes().size();
  EXPECT_EQ(agent.counts().vni_informers_started, 1u);
}

}  // namespace
}  // namespace kos::agent

namespace kos::agent {
namespace {

// Store faults under the API server: status writes refused (some after committing), a
// moment of failing lists, and lagging watches. Both nodes still converge: every
// attachment implemented with its status, every remote mapping programmed.
TEST_F(AgentTest, StoreFaultsUnderTheApiServerConverge) {
  const std::string nas = "/registry/network.example.com/networkattachments/";
  const Error down{Errc::kUnavailable, "injected: store unavailable", {}};
  faults().set_watch_delay(std::chrono::milliseconds(150));
  add_agent("node0", 0x0a090001u);
  add_agent("node1", 0x0a090002u);
  faults().inject({store::StoreOp::kUpdate, nas, 10, std::chrono::milliseconds(10), down, false});
  faults().inject({store::StoreOp::kUpdate, nas, 5, std::chrono::milliseconds(0), down, true});
  create_network(*c_, "k", 35, "node0", 15);
  for (int i = 0; i < 15; ++i) attach(*c_, "k-node1-" + std::to_string(i), "node1", "k");
  auto ready = [&] {
    auto l = c_->list<api::NetworkAttachment>("ns");
    if (!l || l->size() != 30) return false;
    for (const auto& na : *l)
      if (na.status.ifc_name.empty() || na.status.host_ip.empty()) return false;
    return true;
  };
  EXPECT_TRUE(eventually(ready, std::chrono::seconds(60)));
  for (auto& f : fabrics_)
    EXPECT_TRUE(eventually([&] { return f->locals().size() == 15 && f->remotes().size() == 15; }, std::chrono::seconds(30)))
        << "locals " << f->locals().size() << " remotes " << f->remotes().size();
  EXPECT_GE(faults().fired(), 15u);
}

}  // namespace
}  // namespace kos::agent

namespace kos::agent {

namespace {

// The relevance race, made deterministic: a VNI informer that has left (its VNI is no
// longer relevant) delivers one more event before its stop returns. That event must not
// register a holder: one would never be removed, and the attachment, held "by two
// informers" once it shows up in another, would be left alone forever.
TEST_F(AgentTest, AnEventFromAVniInformerThatLeftIsDropped) {
  ASSERT_NO_FATAL_FAILURE(node0_and_node1_on("r", 36, 0x0a090000u));
  auto& agent = *agents_.back();
  auto& f = *fabrics_.back();
  const std::string remote_key = "ns/r-node1-0";
  const client::Informer* old = AgentTestPeer::informer(agent, 36);
  ASSERT_NE(old, nullptr);
  auto stale = old->indexer().get(remote_key);
  ASSERT_TRUE(stale);
  ASSERT_EQ(AgentTestPeer::holders(agent, remote_key), std::set<uint32_t>{36});

  ASSERT_TRUE(c_->remove<api::NetworkAttachment>("ns", "r-node0-0").has_value());
  ASSERT_TRUE(eventually([&] { return agent.relevant_vnis().empty() && f.remotes().empty(); }));
  // The departed informer's late event (its object outlives it here: `stale` holds it).
  AgentTestPeer::deliver(agent, 36, old, stale);
  EXPECT_TRUE(AgentTestPeer::holders(agent, remote_key).empty()) << "a holder that never goes away";
  // A reconcile it queued has run once the agent's queue is idle.
  ASSERT_TRUE(eventually([&] { return AgentTestPeer::idle(agent); }));
  EXPECT_TRUE(f.remotes().empty());
}

// Events about a remote attachment that change nothing programmed here (here: a label)
// queue no reconcile; the events that do change it still reach the fabric.
TEST_F(AgentTest, RemoteEventsThatChangeNothingProgrammedQueueNoWork) {
  ASSERT_NO_FATAL_FAILURE(node0_and_node1_on("u", 37, 0x0a0a0000u));
  auto& agent = *agents_.back();
  auto& f = *fabrics_.back();
  ASSERT_TRUE(eventually([&] { return AgentTestPeer::idle(agent); }));
  const auto before = agent.counts();
  const auto programmed = f.remotes();

  auto na = c_->get<api::NetworkAttachment>("ns", "u-node1-0");
  ASSERT_TRUE(na.has_value());
  na->metadata.labels["touched"] = "yes";
  ASSERT_TRUE(c_->update(*na).has_value());
  ASSERT_TRUE(eventually([&] { return agent.counts().remote_events > before.remote_events; }));
  auto after = agent.counts();
  EXPECT_EQ(after.remote_unchanged, before.remote_unchanged + 1) << "the label change queued a reconcile";
  EXPECT_EQ(f.remotes(), programmed);

  ASSERT_TRUE(c_->remove<api::NetworkAttachment>("ns", "u-node1-0").has_value());
  ASSERT_TRUE(eventually([&] { return f.remotes().empty(); })) << "the deletion was not programmed";
  EXPECT_EQ(agent.counts().remote_unchanged, after.remote_unchanged);
}

// The echo of the agent's own status write, and a label change, leave the local interface
// and its status as they are: no reconcile is queued and relevance is not looked at again.
// A change of address still reaches the fabric.
TEST_F(AgentTest, LocalEventsThatChangeNothingQueueNoWork) {
  ASSERT_NO_FATAL_FAILURE(node0_and_node1_on("e", 38, 0x0a0b0000u));
  auto& agent = *agents_.back();  // node0's
  auto& f = *fabrics_.back();
  ASSERT_TRUE(eventually([&] {
    auto na = c_->get<api::NetworkAttachment>("ns", "e-node0-0");
    return na && !na->status.host_ip.empty() && AgentTestPeer::idle(agent);
  }));
  auto settled = agent.counts();
  EXPECT_GE(settled.local_unchanged, 1u) << "the echo of the status write queued a reconcile";
  const auto locals = f.locals();
  ASSERT_EQ(locals.size(), 1u);

  auto na = c_->get<api::NetworkAttachment>("ns", "e-node0-0");
  ASSERT_TRUE(na.has_value());
  na->metadata.labels["touched"] = "yes";
  ASSERT_TRUE(c_->update(*na).has_value());
  ASSERT_TRUE(eventually([&] { return agent.counts().local_events > settled.local_events; }));
  auto after = agent.counts();
  EXPECT_EQ(after.local_unchanged, settled.local_unchanged + 1) << "the label change queued a reconcile";
  EXPECT_EQ(after.relevance_checks, settled.relevance_checks) << "the label change looked at relevance";
  EXPECT_EQ(f.locals(), locals);

  ASSERT_TRUE(c_->remove<api::NetworkAttachment>("ns", "e-node0-0").has_value());
  ASSERT_TRUE(eventually([&] { return f.locals().empty(); })) << "the deletion was not programmed";
  EXPECT_GT(agent.counts().relevance_checks, after.relevance_checks);
}

// A security group added to an attachment that is already addressed and implemented (its
// domain stays the same) is watched, and its rules come into force.
TEST_F(AgentTest, AGroupAddedToAnImplementedAttachmentComesIntoForce) {
  add_agent("node0", 0x0a0c0001u);
  auto& agent = *agents_.back();
  api::SecurityGroup g;
  g.metadata.namespace_ = "ns";
  g.metadata.name = "late";
  g.spec.egress = {{"any", {}, {{"0.0.0.0/0", ""}}}};
  auto group = c_->create(g);
  ASSERT_TRUE(group.has_value()) << group.error().message;
  create_network(*c_, "lg", 39, "node0", 0);
  attach(*c_, "lg-node0-0", "node0", "lg");
  auto na_of = [&] { return *c_->get<api::NetworkAttachment>("ns", "lg-node0-0"); };
  ASSERT_TRUE(eventually([&] { return !na_of().status.host_ip.empty() && AgentTestPeer::idle(agent); }));
  EXPECT_EQ(agent.counts().group_informers, 0u);

  auto na = na_of();
  na.spec.security_groups = {"late"};
  ASSERT_TRUE(c_->update(na).has_value());
  EXPECT_TRUE(eventually([&] {
    return na_of().status.security_groups_in_force ==
           std::vector<api::SecurityGroupRevision>{{"late", group->metadata.resource_version}};
  })) << "the group's rules did not come into force";
  EXPECT_EQ(agent.counts().group_informers, 1u);
  EXPECT_EQ(fabrics_.back()->policies().size(), 1u);
}

// A remote attachment's events after its VNI informer synced are programmed on the thread
// that delivered them (no worker woken); the initial list goes to the workers, and with
// remotes_inline off everything does. Both converge to the same fabric.
TEST_F(AgentTest, RemoteEventsAreProgrammedWhereTheyArriveUnlessTurnedOff) {
  for (bool inline_ : {true, false}) {
    SCOPED_TRACE(inline_ ? "inline" : "on workers");
    const std::string net = inline_ ? "il" : "wk", n0 = net + "0", n1 = net + "1";
    const uint32_t vni = inline_ ? 38 : 39;
    const uint32_t base = inline_ ? 0x0a0c0000u : 0x0a0d0000u;
    add_agent(n1, base + 2, 0ms, nullptr, inline_);
    create_network(*c_, net, vni, n1, 1);  // net-n1-0
    ASSERT_TRUE(eventually([&] {  // implemented: in node0's initial list, not an event after it
      auto na = c_->get<api::NetworkAttachment>("ns", net + "-" + n1 + "-0");
      return na && !na->status.host_ip.empty();
    }));
    add_agent(n0, base + 1, 0ms, nullptr, inline_);
    auto& agent = *agents_.back();
    auto& f = *fabrics_.back();
    attach(*c_, net + "-" + n0 + "-0", n0, net);
    ASSERT_TRUE(eventually([&] { return f.remotes().size() == 1; }));
    EXPECT_EQ(agent.counts().remote_inline, 0u) << "the informer's initial list is the workers'";

    attach(*c_, net + "-" + n1 + "-1", n1, net);
    ASSERT_TRUE(eventually([&] { return f.remotes().size() == 2; }));
    ASSERT_TRUE(c_->remove<api::NetworkAttachment>("ns", net + "-" + n1 + "-0").has_value());
    ASSERT_TRUE(eventually([&] { return f.remotes().size() == 1; }));
    auto left = c_->get<api::NetworkAttachment>("ns", net + "-" + n1 + "-1");
    ASSERT_TRUE(left.has_value());
    EXPECT_EQ(api::format_ipv4(f.remotes()[0].guest_ip), left->status.ipv4);
    if (inline_) EXPECT_GE(agent.counts().remote_inline, 2u);
    else EXPECT_EQ(agent.counts().remote_inline, 0u);
  }
}

// A remote attachment that is addressed but not implemented by its node (no status.hostIP
// yet: here a node without an agent) cannot be mapped, and a node is not told about it.
TEST_F(AgentTest, RemoteAttachmentsAreSentOnlyOnceTheirNodeImplementedThem) {
  add_agent("node1", 0x0a0b0002u);
  add_agent("node0", 0x0a0b0001u);
  auto& agent = *agents_.back();
  auto& f = *fabrics_.back();
  create_network(*c_, "h", 38, "node0", 1);
  attach(*c_, "h-ghost-0", "ghost", "h");
  ASSERT_TRUE(eventually([&] {
    auto na = c_->get<api::NetworkAttachment>("ns", "h-ghost-0");
    return na && !na->status.ipv4.empty();
  })) << "the IPAM did not address the attachment";
  // Events reach a watch in order: once node1's later attachment is mapped here, an event
  // about the ghost's would have arrived.
  attach(*c_, "h-node1-0", "node1", "h");
  ASSERT_TRUE(eventually([&] { return f.remotes().size() == 1; }));
  EXPECT_TRUE(AgentTestPeer::holders(agent, "ns/h-ghost-0").empty())
      << "the node was sent a remote attachment that its node has not implemented";
  EXPECT_EQ(AgentTestPeer::holders(agent, "ns/h-node1-0"), std::set<uint32_t>{38});
}

}  // namespace
}  // namespace kos::agent
