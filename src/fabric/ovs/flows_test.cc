#include "fabric/ovs/flows.h"

#include <map>
#include <set>

#include <gtest/gtest.h>

namespace kos::fabric::ovs {
namespace {

LocalIfc local(uint32_t vni, uint32_t ip) {
  return LocalIfc{vni, api::guest_mac(ip, vni), ip, "kos" + std::to_string(ip), {}, {}};
}
RemoteIfc remote(uint32_t vni, uint32_t ip, uint32_t host) { return RemoteIfc{vni, api::guest_mac(ip, vni), ip, host}; }

TEST(OvsFlows, OneCookiePerAttachmentDerivedFromAllItEncodes) {
  const uint32_t ip = 0x0a000005, host = 0x0afd0002;
  const auto l = local(101, ip);
  EXPECT_EQ(local_cookie(l, 7), local_cookie(l, 7));
  std::set<uint64_t> cookies = {local_cookie(l, 7), local_cookie(l, 8), local_cookie(local(102, ip), 7),
                                local_cookie(local(101, ip + 1), 7), remote_cookie(remote(101, ip, host)),
                                remote_cookie(remote(101, ip, host + 1)), remote_cookie(remote(102, ip, host)),
                                kDefaultsCookie};
  EXPECT_EQ(cookies.size(), 8u);
  EXPECT_EQ(cookie_kind(local_cookie(l, 7)), CookieKind::kLocal);
  EXPECT_EQ(cookie_kind(remote_cookie(remote(101, ip, host))), CookieKind::kRemote);
  EXPECT_EQ(cookie_kind(kDefaultsCookie), CookieKind::kDefaults);
  EXPECT_EQ(cookie_kind(0), CookieKind::kOther);
  EXPECT_EQ(cookie_kind(0x5), CookieKind::kOther);
}

TEST(OvsFlows, AsKosApiDescribes) {
  const auto l = local(101, 0x0a000005);
  auto fs = local_flows(l, 7);
  ASSERT_EQ(fs.size(), 3u);
  EXPECT_EQ(fs[0].table, 0);
  EXPECT_EQ(fs[0].match.in_port, 7u);
  EXPECT_EQ(fs[0].actions, std::vector<of::Action>{of::Action::set_tun_id(101)});
  EXPECT_EQ(fs[0].goto_table, 1);
  EXPECT_EQ(fs[1].match.eth_dst, l.mac);
  EXPECT_EQ(fs[1].actions, std::vector<of::Action>{of::Action::output(7)});
  EXPECT_EQ(fs[2].match.arp_tpa, l.guest_ip);
  EXPECT_EQ(fs[2].match.eth_type, 0x0806);
  for (const auto& f : fs) EXPECT_EQ(f.cookie, local_cookie(l, 7));
  auto d = default_flows();
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].goto_table, 1);
  EXPECT_TRUE(d[1].actions.empty());
  EXPECT_FALSE(d[1].goto_table);
}

TEST(OvsFlows, ARemoteIsReadBackFromItsFlowsInAnyOrderAndOnlyThen) {
  const auto r = remote(101, 0x0a000005, 0x0afd0002);
  auto fs = remote_flows(r, 1);
  EXPECT_EQ(parse_remote(fs, 1), r);
  std::swap(fs[0], fs[1]);
  EXPECT_EQ(parse_remote(fs, 1), r);
  EXPECT_FALSE(parse_remote(fs, 2));  // through another port
  EXPECT_FALSE(parse_remote({fs[0]}, 1));
  auto other = fs;
  other[0].actions.back() = of::Action::output(9);
  EXPECT_FALSE(parse_remote(other, 1));
  auto mixed = remote_flows(r, 1);
  mixed[1] = remote_flows(remote(101, 0x0a000006, 0x0afd0002), 1)[1];  // another remote's ARP flow
  EXPECT_FALSE(parse_remote(mixed, 1));
}

// --- security groups

// Whether the prefixes cover exactly [first, last].
bool covers_exactly(PortRange r, const std::vector<std::pair<uint16_t, uint16_t>>& pfx) {
  std::vector<int> hits(65536);
  for (const auto& [v, m] : pfx)
    for (uint32_t p = 0; p < 65536; ++p)
      if ((p & m) == v) ++hits[p];
  for (uint32_t p = 0; p < 65536; ++p)
    if (hits[p] != (p >= r.first && p <= r.last ? 1 : 0)) return false;
  return true;
}

TEST(OvsSecurityGroupFlows, PortRangesArePrefixMaskedMatches) {
  EXPECT_EQ(port_prefixes({22, 22}), (std::vector<std::pair<uint16_t, uint16_t>>{{22, 0xffff}}));
  EXPECT_EQ(port_prefixes({256, 511}), (std::vector<std::pair<uint16_t, uint16_t>>{{256, 0xff00}}));
  EXPECT_EQ(port_prefixes({1, 65535}).size(), 16u);
  for (PortRange r : {PortRange{1, 65535}, PortRange{22, 22}, PortRange{1000, 2000}, PortRange{65535, 65535},
                      PortRange{8080, 8089}, PortRange{1, 1}, PortRange{32768, 65535}})
    EXPECT_TRUE(covers_exactly(r, port_prefixes(r))) << r.first << "-" << r.last;
}

TEST(OvsSecurityGroupFlows, APolicyIsStoredExactlyAsGiven) {
  Policy p;
  p.ingress.push_back(PolicyRule{6, {{22, 22}, {443, 443}}, {{0x0a000000, 8}, {0x0a000001, 32}}, {"clients", "b"}});
  p.ingress.push_back(PolicyRule{1, {}, {{0, 0}}, {}});
  p.egress.push_back(PolicyRule{17, {{53, 53}}, {}, {"dns"}});
  p.egress.push_back(PolicyRule{0, {}, {}, {}});
  const std::string t = policy_text(p);
  EXPECT_EQ(parse_policy_text(t), p) << t;
  EXPECT_EQ(parse_policy_text(policy_text(Policy{})), Policy{});
  EXPECT_FALSE(parse_policy_text("{\"in\":[{\"p\":3}],\"out\":[]}"));
  EXPECT_FALSE(parse_policy_text("not json"));
  EXPECT_EQ(sets_named(p), (std::set<std::string>{"b", "clients", "dns"}));
  Policy big;
  big.egress.resize(kMaxRules + 1, PolicyRule{0, {}, {{0, 0}}, {}});
  EXPECT_TRUE(check_programmable(big));
}

TEST(OvsSecurityGroupFlows, ARuleIsAConjunctionOfPeersAndPorts) {
  const auto l = local(101, 0x0a000005);
  Policy p;
  // Ingress rule 0: tcp 22 and 443 from set "clients" and 10.1.0.0/16.
  p.ingress.push_back(PolicyRule{6, {{22, 22}, {443, 443}}, {{0x0a010000, 16}}, {"clients"}});
  Sets sets{{"clients", {0x0a000002, 0x0a000003}}};
  auto fs = policy_flows(l, 7, p, sets);
  const uint64_t c = policy_cookie(l, 7, p);
  const uint32_t id = 7u << 16 | 1u << 15;
  size_t peers = 0, ports = 0, conj = 0;
  for (const auto& f : fs) {
    EXPECT_EQ(f.cookie, c);
    if (f.table != kTableIngress || f.priority != kRulePriority) continue;
    if (f.match.conj_id) {
      ++conj;
      EXPECT_EQ(f.match.conj_id, id);
      EXPECT_EQ(f.goto_table, kTableCommit);
      continue;
    }
    EXPECT_EQ(f.match.tun_id, 101u);
    EXPECT_EQ(f.match.eth_dst, l.mac);
    if (f.match.ipv4_src) {
      ++peers;
      EXPECT_EQ(f.actions, std::vector<of::Action>{of::Action::conjunction(id, 1, 2)});
    } else {
      ++ports;
      EXPECT_EQ(f.match.ip_proto, 6);
      EXPECT_EQ(f.actions, std::vector<of::Action>{of::Action::conjunction(id, 2, 2)});
    }
  }
  EXPECT_EQ(peers, 3u);  // the /16 and the two members
  EXPECT_EQ(ports, 2u);
  EXPECT_EQ(conj, 1u);
  // 4 steering flows (tables 0 and 1), a deny per direction, and the rule's 6.
  EXPECT_EQ(fs.size(), 4u + 2u + 6u);

  // A member joining: one flow, which is exactly what policy_flows makes with it.
  auto more = sets;
  more["clients"].insert(0x0a000009);
  auto add = set_member_flows(l, 7, p, "clients", 0x0a000009, sets);
  ASSERT_EQ(add.size(), 1u);
  auto with = fs;
  with.push_back(add[0]);
  EXPECT_TRUE(same_flows(with, policy_flows(l, 7, p, more)));
  // An address the rule has otherwise (the same /32 in another set) shares that flow.
  Policy two = p;
  two.ingress[0].sets.push_back("admins");
  Sets both{{"clients", {0x0a000002}}, {"admins", {0x0a000002}}};
  EXPECT_TRUE(set_member_flows(l, 7, two, "clients", 0x0a000002, both).empty());
  // Policies naming the set elsewhere: one flow per rule naming it.
  Policy many;
  for (int i = 0; i < 3; ++i) many.egress.push_back(PolicyRule{17, {{53, 53}}, {}, {"clients"}});
  EXPECT_EQ(set_member_flows(l, 7, many, "clients", 0x0a000009, sets).size(), 3u);
}

TEST(OvsSecurityGroupFlows, OneDimensionalRulesSkipTheConjunction) {
  const auto l = local(101, 0x0a000005);
  Policy p;
  p.egress.push_back(PolicyRule{0, {}, {{0, 0}}, {}});              // anything anywhere
  p.egress.push_back(PolicyRule{1, {}, {{0, 0}}, {}});              // icmp anywhere
  p.egress.push_back(PolicyRule{0, {}, {{0x0a000000, 8}}, {"s"}});  // anything to 10/8 or s
  p.egress.push_back(PolicyRule{6, {}, {}, {}});                    // no peers: nothing
  Sets sets{{"s", {0x0b000001}}};
  auto fs = policy_flows(l, 7, p, sets);
  std::map<uint16_t, int> per_rule;
  for (const auto& f : fs) {
    if (f.table != kTableEgress || f.priority < kRulePriority) continue;
    ++per_rule[f.priority];
    EXPECT_TRUE(f.actions.empty());
    EXPECT_EQ(f.goto_table, kTableIngress);
    EXPECT_FALSE(f.match.conj_id);
  }
  EXPECT_EQ(per_rule, (std::map<uint16_t, int>{{kRulePriority, 1}, {kRulePriority + 1, 1}, {kRulePriority + 2, 2}}));
}

TEST(OvsSecurityGroupFlows, CookiesAndTheSetsTable) {
  const auto l = local(101, 0x0a000005);
  Policy a, b;
  b.egress.push_back(PolicyRule{6, {{22, 22}}, {{0, 0}}, {}});
  EXPECT_NE(policy_cookie(l, 7, a), policy_cookie(l, 7, b));
  EXPECT_NE(policy_cookie(l, 7, b), policy_cookie(l, 8, b));
  EXPECT_EQ(cookie_kind(policy_cookie(l, 7, b)), CookieKind::kPolicy);
  EXPECT_EQ(cookie_kind(set_cookie("clients")), CookieKind::kSet);
  EXPECT_NE(set_cookie("a"), set_cookie("b"));
  EXPECT_EQ(cookie_kind(kPolicyDefaultsCookie), CookieKind::kDefaults);
  const auto f = set_store_flow("clients", 0x0a000002);
  EXPECT_EQ(f.table, kTableSets);
  EXPECT_EQ(f.cookie, set_cookie("clients"));
  EXPECT_EQ(f.match.metadata, set_metadata("clients"));
  for (const auto& d : policy_default_flows()) EXPECT_EQ(d.cookie, kPolicyDefaultsCookie);
}

TEST(OvsSecurityGroupFlows, LargeSetsCompareQuickly) {
  std::vector<of::Flow> a, b;
  for (uint32_t i = 0; i < 20000; ++i) a.push_back(set_store_flow("big", 0x0a000000 + i));
  b.assign(a.rbegin(), a.rend());
  EXPECT_TRUE(same_flows(a, b));
  b[5] = set_store_flow("big", 0x0b000000);
  EXPECT_FALSE(same_flows(a, b));
}

}  // namespace
}  // namespace kos::fabric::ovs
