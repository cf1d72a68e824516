#include "fabric/ovs/flows.h"

#include <algorithm>

#include <boost/json.hpp>

#include "api/cidr.h"

namespace kos::fabric::ovs {

namespace {

constexpr uint16_t kArp = 0x0806;
constexpr uint64_t kKindShift = 60;
constexpr uint64_t kHashMask = (uint64_t{1} << kKindShift) - 1;

// FNV-1a, 64 bits, over the fields in a fixed order.
struct Hash {
  uint64_t h = 0xcbf29ce484222325ull;
  void byte(uint8_t b) { h = (h ^ b) * 0x100000001b3ull; }
  void u32(uint32_t v) {
    for (int i = 3; i >= 0; --i) byte(static_cast<uint8_t>(v >> (8 * i)));
  }
  void mac(const api::MacAddress& m) {
    for (uint8_t b : m) byte(b);
  }
  void str(const std::string& s) {
    u32(static_cast<uint32_t>(s.size()));
    for (char c : s) byte(static_cast<uint8_t>(c));
  }
};

uint64_t tagged(uint64_t kind, uint64_t h) {
  h &= kHashMask;
  if (h == 0) h = 1;  // never cookie 0 (ovs-ofctl's default for flows added by hand)
  return kind << kKindShift | h;
}

of::Flow flow(uint8_t table, uint16_t priority, uint64_t cookie, of::Match m, std::vector<of::Action> actions,
              std::optional<uint8_t> goto_table = std::nullopt) {
  return of::Flow{table, priority, cookie, std::move(m), std::move(actions), goto_table};
}

of::Match mac_match(uint32_t vni, const api::MacAddress& mac) {
  of::Match m;
  m.tun_id = vni;
  m.eth_dst = mac;
  return m;
}

of::Match arp_match(uint32_t vni, uint32_t ip) {
  of::Match m;
  m.tun_id = vni;
  m.eth_type = kArp;
  m.arp_tpa = ip;
  return m;
}

}  // namespace

CookieKind cookie_kind(uint64_t cookie) {
  if (cookie == kDefaultsCookie || cookie == kPolicyDefaultsCookie) return CookieKind::kDefaults;
  switch (cookie >> kKindShift) {
    case 1: return CookieKind::kLocal;
    case 2: return CookieKind::kRemote;
    case 3: return CookieKind::kPolicy;
    case 4: return CookieKind::kSet;
    default: return CookieKind::kOther;
  }
}

uint64_t local_cookie(const LocalIfc& l, uint32_t ofport) {
  Hash h;
  h.byte('L');
  h.u32(l.vni);
  h.mac(l.mac);
  h.u32(l.guest_ip);
  h.u32(ofport);
  return tagged(1, h.h);
}

uint64_t remote_cookie(const RemoteIfc& r) {
  Hash h;
  h.byte('R');
  h.u32(r.vni);
  h.mac(r.mac);
  h.u32(r.guest_ip);
  h.u32(r.host_ip);
  return tagged(2, h.h);
}

std::vector<of::Flow> default_flows() {
  return {flow(0, 0, kDefaultsCookie, {}, {}, 1), flow(1, 0, kDefaultsCookie, {}, {})};
}

std::vector<of::Flow> local_flows(const LocalIfc& l, uint32_t ofport) {
  const uint64_t c = local_cookie(l, ofport);
  of::Match in;
  in.in_port = ofport;
  return {flow(0, kAttachmentPriority, c, in, {of::Action::set_tun_id(l.vni)}, 1),
          flow(1, kAttachmentPriority, c, mac_match(l.vni, l.mac), {of::Action::output(ofport)}),
          flow(1, kAttachmentPriority, c, arp_match(l.vni, l.guest_ip), {of::Action::output(ofport)})};
}

std::vector<of::Flow> remote_flows(const RemoteIfc& r, uint32_t vtep_ofport) {
  const uint64_t c = remote_cookie(r);
  const std::vector<of::Action> to_host = {of::Action::set_tun_dst(r.host_ip), of::Action::output(vtep_ofport)};
  return {flow(1, kAttachmentPriority, c, mac_match(r.vni, r.mac), to_host),
          flow(1, kAttachmentPriority, c, arp_match(r.vni, r.guest_ip), to_host)};
}

std::optional<RemoteIfc> parse_remote(const std::vector<of::Flow>& flows, uint32_t vtep_ofport) {
  if (flows.size() != 2) return std::nullopt;
  RemoteIfc r;
  for (const auto& f : flows) {
    if (f.match.tun_id) r.vni = static_cast<uint32_t>(*f.match.tun_id);
    if (f.match.eth_dst) r.mac = *f.match.eth_dst;
    if (f.match.arp_tpa) r.guest_ip = *f.match.arp_tpa;
    for (const auto& a : f.actions)
      if (a.kind == of::Action::Kind::kSetTunDst) r.host_ip = static_cast<uint32_t>(a.value);
  }
  if (!same_flows(flows, remote_flows(r, vtep_ofport))) return std::nullopt;
  return r;
}

// Sets of thousands of flows (a set's elements) compare in O(n log n): by their encoding.
bool same_flows(const std::vector<of::Flow>& a, const std::vector<of::Flow>& b) {
  if (a.size() != b.size()) return false;
  if (a.size() <= 8) return std::ranges::is_permutation(a, b);
  auto keys = [](const std::vector<of::Flow>& fs) {
    std::vector<std::vector<uint8_t>> out;
    out.reserve(fs.size());
    for (const auto& f : fs) out.push_back(of::encode_flow_mod(of::FlowMod::add(f), 0));
    std::ranges::sort(out);
    return out;
  };
  return keys(a) == keys(b);
}

// ---------------------------------------------------------------------------------------
// Security groups

namespace {

constexpr uint16_t kIpv4 = 0x0800, kIpv6 = 0x86dd;
constexpr uint32_t kFull = 0xffffffffu;

uint32_t prefix_mask(int len) { return len <= 0 ? 0 : len >= 32 ? kFull : kFull << (32 - len); }

// The fields that say whose rule a flow is: egress, the policed local's port; ingress, the
// destination's VNI and MAC.
of::Match key(const LocalIfc& l, uint32_t ofport, bool ingress) {
  of::Match m;
  if (ingress) {
    m.tun_id = l.vni;
    m.eth_dst = l.mac;
  } else {
    m.in_port = ofport;
  }
  m.eth_type = kIpv4;
  return m;
}

uint32_t conj_id(uint32_t ofport, bool ingress, size_t i) {
  return ofport << 16 | (ingress ? 1u : 0u) << 15 | static_cast<uint32_t>(i);
}

// How a rule's flows end: a conjunction clause, or straight to the next table.
struct RuleShape {
  bool any_peer = false;   // a 0.0.0.0/0 peer: no peer clause
  bool any_proto = false;  // protocol 0, no ports: no protocol clause
  bool conj() const { return !any_peer && !any_proto; }
};
RuleShape shape(const PolicyRule& r) {
  RuleShape s;
  for (const auto& [a, len] : r.cidrs) s.any_peer = s.any_peer || len <= 0;
  s.any_proto = r.protocol == 0 && r.ports.empty();
  return s;
}
bool has_peers(const PolicyRule& r) { return !r.cidrs.empty() || !r.sets.empty(); }

of::Flow peer_flow(const LocalIfc& l, uint32_t ofport, uint64_t cookie, bool ingress, size_t i, uint32_t addr,
                   uint32_t mask) {
  const uint8_t table = ingress ? kTableIngress : kTableEgress;
  of::Match m = key(l, ofport, ingress);
  (ingress ? m.ipv4_src : m.ipv4_dst) = std::pair{addr & mask, mask};
  of::Flow f{table, static_cast<uint16_t>(kRulePriority + i), cookie, std::move(m), {}, std::nullopt};
  if (mask == 0) (ingress ? f.match.ipv4_src : f.match.ipv4_dst).reset();
  return f;
}

// Finishes a rule's flow: its conjunction clause, or the way on.
void finish(of::Flow& f, const RuleShape& s, uint32_t id, uint8_t clause) {
  if (s.conj()) f.actions = {of::Action::conjunction(id, clause, 2)};
  else f.goto_table = static_cast<uint8_t>(f.table + 1);
}

void rule_flows(const LocalIfc& l, uint32_t ofport, uint64_t cookie, bool ingress, size_t i, const PolicyRule& r,
                const Sets& sets, std::vector<of::Flow>& out) {
  if (!has_peers(r)) return;
  const RuleShape s = shape(r);
  const uint32_t id = conj_id(ofport, ingress, i);
  const uint8_t table = ingress ? kTableIngress : kTableEgress;
  const uint16_t prio = static_cast<uint16_t>(kRulePriority + i);
  // Clause 1: peers (distinct (address, mask) pairs).
  if (!s.any_peer) {
    std::set<std::pair<uint32_t, uint32_t>> peers;
    for (const auto& [a, len] : r.cidrs) peers.emplace(a & prefix_mask(len), prefix_mask(len));
    for (const auto& name : r.sets)
      if (auto it = sets.find(name); it != sets.end())
        for (uint32_t a : it->second) peers.emplace(a, kFull);
    for (const auto& [a, m] : peers) {
      auto f = peer_flow(l, ofport, cookie, ingress, i, a, m);
      if (s.any_proto) f.goto_table = static_cast<uint8_t>(table + 1);
      else finish(f, s, id, 1);
      out.push_back(std::move(f));
    }
  }
  // Clause 2: protocol and ports.
  if (!s.any_proto || s.any_peer) {
    std::vector<of::Match> protos;
    of::Match base = key(l, ofport, ingress);
    if (r.protocol != 0) base.ip_proto = r.protocol;
    if (r.ports.empty()) {
      protos.push_back(base);
    } else {
      std::set<std::pair<uint16_t, uint16_t>> pfx;
      for (const auto& pr : r.ports)
        for (const auto& vm : port_prefixes(pr)) pfx.insert(vm);
      for (const auto& vm : pfx) {
        of::Match m = base;
        m.tp_dst = vm;
        protos.push_back(std::move(m));
      }
    }
    for (auto& m : protos) {
      of::Flow f{table, prio, cookie, std::move(m), {}, std::nullopt};
      if (s.any_peer) f.goto_table = static_cast<uint8_t>(table + 1);
      else finish(f, s, id, 2);
      out.push_back(std::move(f));
    }
  }
  if (s.conj()) {
    of::Match m;
    m.conj_id = id;
    out.push_back(of::Flow{table, prio, cookie, std::move(m), {}, static_cast<uint8_t>(table + 1)});
  }
}

}  // namespace

std::optional<Error> check_programmable(const Policy& p) {
  if (p.ingress.size() > kMaxRules || p.egress.size() > kMaxRules)
    return Error{Errc::kInvalid, "the ovs fabric takes at most " + std::to_string(kMaxRules) +
                                     " rules per direction of a policy", {}};
  return std::nullopt;
}

uint64_t policy_cookie(const LocalIfc& l, uint32_t ofport, const Policy& p) {
  Hash h;
  h.byte('P');
  h.u32(static_cast<uint32_t>(local_cookie(l, ofport) >> 32));
  h.u32(static_cast<uint32_t>(local_cookie(l, ofport)));
  h.str(policy_text(p));
  return tagged(3, h.h);
}

uint64_t set_cookie(const std::string& name) {
  Hash h;
  h.byte('S');
  h.str(name);
  return tagged(4, h.h);
}

uint64_t set_metadata(const std::string& name) {
  Hash h;
  h.byte('M');
  h.str(name);
  return h.h;
}

std::vector<of::Flow> policy_default_flows() {
  const uint64_t c = kPolicyDefaultsCookie;
  auto ct = [](uint32_t bits) {
    of::Match m;
    m.ct_state = std::pair{bits | of::kCtTrk, bits | of::kCtTrk};
    return m;
  };
  of::Match ip;  // ct needs an IP match
  ip.eth_type = kIpv4;
  return {flow(kTablePostCt, 200, c, ct(of::kCtInv), {}),
          flow(kTablePostCt, 100, c, ct(of::kCtEst), {of::Action::resubmit(1)}),
          flow(kTablePostCt, 100, c, ct(of::kCtRel), {of::Action::resubmit(1)}),
          flow(kTablePostCt, 50, c, ct(of::kCtNew), {}, kTableEgress),
          flow(kTablePostCt, 0, c, {}, {}),
          flow(kTableEgress, 0, c, {}, {}, kTableIngress),
          flow(kTableIngress, 0, c, {}, {}, kTableCommit),
          flow(kTableCommit, 0, c, ip, {of::Action::ct(true, 1)})};
}

std::vector<of::Flow> policy_flows(const LocalIfc& l, uint32_t ofport, const Policy& p, const Sets& sets) {
  const uint64_t c = policy_cookie(l, ofport, p);
  std::vector<of::Flow> out;
  of::Match in_ip, in_ip6, to_ip, to_ip6;
  in_ip.in_port = in_ip6.in_port = ofport;
  in_ip.eth_type = kIpv4;
  in_ip6.eth_type = kIpv6;
  to_ip.tun_id = to_ip6.tun_id = l.vni;
  to_ip.eth_dst = to_ip6.eth_dst = l.mac;
  to_ip.eth_type = kIpv4;
  to_ip.ct_state = std::pair{0u, of::kCtTrk};
  to_ip6.eth_type = kIpv6;
  out.push_back(flow(0, kPolicedPriority, c, in_ip, {of::Action::set_tun_id(l.vni), of::Action::ct(false, kTablePostCt)}));
  out.push_back(flow(0, kPolicedPriority, c, in_ip6, {}));
  out.push_back(flow(1, kPolicedPriority, c, to_ip, {of::Action::ct(false, kTablePostCt)}));
  out.push_back(flow(1, kPolicedPriority, c, to_ip6, {}));
  for (bool ingress : {false, true}) {
    of::Match deny = key(l, ofport, ingress);
    deny.eth_type.reset();
    out.push_back(flow(ingress ? kTableIngress : kTableEgress, 1, c, deny, {}));
    const auto& rules = ingress ? p.ingress : p.egress;
    for (size_t i = 0; i < rules.size(); ++i) rule_flows(l, ofport, c, ingress, i, rules[i], sets, out);
  }
  return out;
}

std::vector<of::Flow> set_member_flows(const LocalIfc& l, uint32_t ofport, const Policy& p, const std::string& set,
                                       uint32_t addr, const Sets& sets) {
  const uint64_t c = policy_cookie(l, ofport, p);
  std::vector<of::Flow> out;
  for (bool ingress : {false, true}) {
    const auto& rules = ingress ? p.ingress : p.egress;
    for (size_t i = 0; i < rules.size(); ++i) {
      const auto& r = rules[i];
      if (std::ranges::find(r.sets, set) == r.sets.end()) continue;
      const RuleShape s = shape(r);
      if (s.any_peer) continue;
      bool otherwise = false;
      for (const auto& [a, len] : r.cidrs) otherwise = otherwise || (len >= 32 && a == addr);
      for (const auto& other : r.sets) {
        if (other == set) continue;
        auto it = sets.find(other);
        otherwise = otherwise || (it != sets.end() && it->second.contains(addr));
      }
      if (otherwise) continue;
      auto f = peer_flow(l, ofport, c, ingress, i, addr, kFull);
      if (s.any_proto) f.goto_table = static_cast<uint8_t>(f.table + 1);
      else finish(f, s, conj_id(ofport, ingress, i), 1);
      out.push_back(std::move(f));
    }
  }
  return out;
}

of::Flow set_store_flow(const std::string& name, uint32_t addr) {
  of::Match m;
  m.metadata = set_metadata(name);
  m.eth_type = kIpv4;
  m.ipv4_src = std::pair{addr, kFull};
  return flow(kTableSets, 1, set_cookie(name), std::move(m), {});
}

std::set<std::string> sets_named(const Policy& p) {
  std::set<std::string> out;
  for (const auto* rules : {&p.ingress, &p.egress})
    for (const auto& r : *rules) out.insert(r.sets.begin(), r.sets.end());
  return out;
}

std::vector<std::pair<uint16_t, uint16_t>> port_prefixes(PortRange r) {
  std::vector<std::pair<uint16_t, uint16_t>> out;
  uint32_t lo = r.first;
  const uint32_t hi = r.last;
  while (lo <= hi) {
    // The largest aligned block starting at lo that stays within hi.
    uint32_t size = 1;
    while (size < 0x10000 && (lo & (size * 2 - 1)) == 0 && lo + size * 2 - 1 <= hi) size *= 2;
    out.emplace_back(static_cast<uint16_t>(lo), static_cast<uint16_t>(~(size - 1) & 0xffff));
    lo += size;
  }
  return out;
}

namespace {
namespace json = boost::json;
json::array rules_json(const std::vector<PolicyRule>& rules) {
  json::array out;
  for (const auto& r : rules) {
    json::array ports, cidrs, sets;
    for (const auto& p : r.ports) ports.push_back(json::array{p.first, p.last});
    for (const auto& [a, len] : r.cidrs) cidrs.push_back(json::array{json::string(api::format_ipv4(a)), len});
    for (const auto& s : r.sets) sets.push_back(json::string(s));
    out.push_back(json::object{{"p", r.protocol}, {"ports", ports}, {"cidrs", cidrs}, {"sets", sets}});
  }
  return out;
}
std::optional<std::vector<PolicyRule>> rules_of(const json::value* v) {
  if (!v || !v->is_array()) return std::nullopt;
  std::vector<PolicyRule> out;
  for (const auto& e : v->as_array()) {
    const auto* o = e.if_object();
    if (!o) return std::nullopt;
    PolicyRule r;
    const auto* p = o->if_contains("p");
    const auto* ports = o->if_contains("ports");
    const auto* cidrs = o->if_contains("cidrs");
    const auto* sets = o->if_contains("sets");
    if (!p || !p->is_int64() || !ports || !ports->is_array() || !cidrs || !cidrs->is_array() || !sets ||
        !sets->is_array())
      return std::nullopt;
    r.protocol = static_cast<uint8_t>(p->as_int64());
    for (const auto& x : ports->as_array()) {
      const auto* a = x.if_array();
      if (!a || a->size() != 2 || !(*a)[0].is_int64() || !(*a)[1].is_int64()) return std::nullopt;
      r.ports.push_back(PortRange{static_cast<uint16_t>((*a)[0].as_int64()), static_cast<uint16_t>((*a)[1].as_int64())});
    }
    for (const auto& x : cidrs->as_array()) {
      const auto* a = x.if_array();
      if (!a || a->size() != 2 || !(*a)[0].is_string() || !(*a)[1].is_int64()) return std::nullopt;
      auto ip = api::parse_ipv4(std::string((*a)[0].as_string()));
      if (!ip) return std::nullopt;
      r.cidrs.emplace_back(*ip, static_cast<int>((*a)[1].as_int64()));
    }
    for (const auto& x : sets->as_array()) {
      if (!x.is_string()) return std::nullopt;
      r.sets.emplace_back(x.as_string());
    }
    out.push_back(std::move(r));
  }
  return out;
}
}  // namespace

std::string policy_text(const Policy& p) {
  return json::serialize(json::object{{"in", rules_json(p.ingress)}, {"out", rules_json(p.egress)}});
}

std::optional<Policy> parse_policy_text(const std::string& text) {
  boost::system::error_code ec;
  auto v = json::parse(text, ec);
  if (ec || !v.is_object()) return std::nullopt;
  auto in = rules_of(v.as_object().if_contains("in"));
  auto out = rules_of(v.as_object().if_contains("out"));
  if (!in || !out) return std::nullopt;
  Policy p{std::move(*in), std::move(*out)};
  if (check(p) || check_programmable(p)) return std::nullopt;
  return p;
}

}  // namespace kos::fabric::ovs
