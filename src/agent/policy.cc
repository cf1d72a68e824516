#include "agent/policy.h"

#include <cstdio>

#include "api/cidr.h"
#include "api/security_groups.h"

namespace kos::agent {

std::string address_domain(const api::NetworkAttachment& na) {
  if (na.status.routing_vni != 0) return "r" + std::to_string(na.status.routing_vni);
  return std::to_string(na.status.address_vni);
}

std::string member_selector(const std::string& group, const std::string& domain) {
  const bool routed = !domain.empty() && domain.front() == 'r';
  return "spec.securityGroups=" + group + (routed ? ",status.routingVNI=" + domain.substr(1)
                                                  : ",status.addressVNI=" + domain) +
         ",status.ipv4!=";
}

std::string member_set_name(const std::string& ns, const std::string& group, const std::string& domain) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64
  for (const std::string* part : {&ns, &group, &domain}) {
    for (unsigned char c : *part) {
      h ^= c;
      h *= 1099511628211ull;
    }
    h ^= 0xff;  // a separator no name holds
    h *= 1099511628211ull;
  }
  char buf[24];
  std::snprintf(buf, sizeof buf, "m%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::set<std::string> referenced_groups(const api::SecurityGroup& g) {
  std::set<std::string> out;
  for (const auto& r : g.spec.ingress)
    for (const auto& p : r.from)
      if (!p.security_group.empty()) out.insert(p.security_group);
  for (const auto& r : g.spec.egress)
    for (const auto& p : r.to)
      if (!p.security_group.empty()) out.insert(p.security_group);
  return out;
}

namespace {

// Validated objects only reach the agent; anything unparsable is skipped, never guessed.
fabric::PolicyRule rule_of(const std::string& protocol, const std::vector<std::string>& ports,
                           const std::vector<api::SecurityGroupPeer>& peers, const std::string& ns,
                           const std::string& domain) {
  fabric::PolicyRule r;
  r.protocol = api::protocol_number(protocol).value_or(0);
  if (api::protocol_has_ports(r.protocol))
    for (const auto& p : ports)
      if (auto range = api::parse_port_range(p)) r.ports.push_back({range->first, range->second});
  for (const auto& peer : peers) {
    if (!peer.security_group.empty()) {
      r.sets.push_back(member_set_name(ns, peer.security_group, domain));
    } else if (auto c = api::parse_cidr(peer.cidr)) {
      r.cidrs.emplace_back(c->addr, c->prefix);
    }
  }
  return r;
}

}  // namespace

fabric::Policy build_policy(const std::vector<const api::SecurityGroup*>& groups, const std::string& ns,
                            const std::string& domain) {
  fabric::Policy p;
  for (const auto* g : groups) {
    for (const auto& r : g->spec.ingress) {
      auto rule = rule_of(r.protocol, r.ports, r.from, ns, domain);
      if (rule.cidrs.empty() && rule.sets.empty()) continue;  // no peer: allows nothing
      p.ingress.push_back(std::move(rule));
    }
    for (const auto& r : g->spec.egress) {
      auto rule = rule_of(r.protocol, r.ports, r.to, ns, domain);
      if (rule.cidrs.empty() && rule.sets.empty()) continue;
      p.egress.push_back(std::move(rule));
    }
  }
  return p;
}

MemberSet::Delta MemberSet::set(const std::string& key, std::optional<uint32_t> ip) {
  Delta d;
  auto it = by_key_.find(key);
  if (it != by_key_.end()) {
    if (ip && it->second == *ip) return d;
    auto c = count_.find(it->second);
    if (--c->second == 0) {
      d.remove.push_back(it->second);
      count_.erase(c);
    }
    by_key_.erase(it);
  }
  if (ip) {
    by_key_[key] = *ip;
    if (++count_[*ip] == 1) d.add.push_back(*ip);
  }
  // Re-adding what was just removed (an address moving between members) is no change.
  if (d.add.size() == 1 && d.remove.size() == 1 && d.add[0] == d.remove[0]) return {};
  return d;
}

void MemberSet::restore(const std::string& key, std::optional<uint32_t> ip_before) { (void)set(key, ip_before); }

std::optional<uint32_t> MemberSet::of(const std::string& key) const {
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return std::nullopt;
  return it->second;
}

MemberSet::Delta MemberSet::against(const std::set<uint32_t>& have) const {
  Delta d;
  for (const auto& [ip, _] : count_)
    if (!have.contains(ip)) d.add.push_back(ip);
  for (uint32_t ip : have)
    if (!count_.contains(ip)) d.remove.push_back(ip);
  return d;
}

}  // namespace kos::agent
