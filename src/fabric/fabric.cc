#include "fabric/fabric.h"

#include <algorithm>

namespace kos::fabric {

namespace {
std::optional<Error> check_common(uint32_t vni, const api::MacAddress& mac, uint32_t guest_ip) {
  if (vni == 0 || vni > api::kMaxVni)
    return Error{Errc::kInvalid,
                 "VNI " + std::to_string(vni) + " is out of range 1.." + std::to_string(api::kMaxVni), {}};
  if (mac == api::MacAddress{} || (mac[0] & 0x01) != 0)
    return Error{Errc::kInvalid, "guest MAC " + api::format_mac(mac) + " is not a unicast address", {}};
  if (guest_ip == 0) return Error{Errc::kInvalid, "guest IP 0.0.0.0 is not an address", {}};
  return std::nullopt;
}
bool valid_ifname(const std::string& n) { return !api::linux_ifname_error(n); }
std::optional<Error> check_routing(uint32_t vni, const Routing& r);
}  // namespace

namespace {
std::optional<Error> check_routing(uint32_t vni, const Routing& r) {
  if (r == Routing{}) return std::nullopt;
  if (r.vpc < 1 || r.vpc > api::kMaxVni || r.vpc == vni)
    return Error{Errc::kInvalid, "VPC VNI " + std::to_string(r.vpc) + " is out of range 1.." +
                                     std::to_string(api::kMaxVni) + " or the interface's own VNI", {}};
  if (r.gateway == 0) return Error{Errc::kInvalid, "a routed interface needs a gateway address", {}};
  if (r.prefix_len < 8 || r.prefix_len > 29)
    return Error{Errc::kInvalid, "gateway prefix length " + std::to_string(r.prefix_len) + " is out of range 8..29", {}};
  return std::nullopt;
}
}  // namespace

std::optional<Error> check(const LocalIfc& ifc) {
  if (auto e = check_common(ifc.vni, ifc.mac, ifc.guest_ip)) return e;
  if (auto e = check_routing(ifc.vni, ifc.routing)) return e;
  if (!valid_ifname(ifc.name))
    return Error{Errc::kInvalid, "interface name \"" + ifc.name + "\" is not a valid Linux interface name", {}};
  if (!ifc.guest_netns.empty() && (ifc.guest_netns.front() != '/' || !valid_ifname(ifc.guest_ifname)))
    return Error{Errc::kInvalid, "a guest end in network namespace \"" + ifc.guest_netns +
                                     "\" needs an absolute path and a valid interface name (\"" + ifc.guest_ifname + "\")", {}};
  return std::nullopt;
}

std::optional<Error> check(const Plug& plug) {
  if (plug.netns.empty() || plug.netns.front() != '/')
    return Error{Errc::kInvalid, "network namespace \"" + plug.netns + "\" is not an absolute path", {}};
  if (!valid_ifname(plug.ifname))
    return Error{Errc::kInvalid, "interface name \"" + plug.ifname + "\" is not a valid Linux interface name", {}};
  if (plug.ipv4 == 0) return Error{Errc::kInvalid, "the address 0.0.0.0 cannot be set", {}};
  if (plug.prefix_len < 0 || plug.prefix_len > 32)
    return Error{Errc::kInvalid, "prefix length " + std::to_string(plug.prefix_len) + " is out of range 0..32", {}};
  return std::nullopt;
}

std::optional<Error> check(const RemoteIfc& ifc) {
  if (auto e = check_common(ifc.vni, ifc.mac, ifc.guest_ip)) return e;
  if (auto e = check_routing(ifc.vni, ifc.routing)) return e;
  if (ifc.host_ip == 0) return Error{Errc::kInvalid, "host IP 0.0.0.0 is not an address", {}};
  return std::nullopt;
}

std::vector<Result<void>> Fabric::apply(const std::vector<Change>& changes) {
  std::vector<Result<void>> out;
  out.reserve(changes.size());
  for (const auto& c : changes) {
    switch (c.op) {
      case Change::Op::kCreateLocal: out.push_back(create_local(c.local)); break;
      case Change::Op::kDeleteLocal: out.push_back(delete_local(c.local)); break;
      case Change::Op::kCreateRemote: out.push_back(create_remote(c.remote)); break;
      case Change::Op::kDeleteRemote: out.push_back(delete_remote(c.remote)); break;
    }
  }
  return out;
}

std::optional<Error> check_set_name(const std::string& name) {
  const bool ok = !name.empty() && name.size() <= 63 && name[0] >= 'a' && name[0] <= 'z' &&
                  std::all_of(name.begin(), name.end(), [](char c) {
                    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
                  });
  if (ok) return std::nullopt;
  return Error{Errc::kInvalid, "address set name \"" + name + "\" is not 1..63 characters of [a-z0-9_-] starting with a letter", {}};
}

std::optional<Error> check(const Policy& policy) {
  for (const auto* rules : {&policy.ingress, &policy.egress}) {
    for (const auto& r : *rules) {
      if (r.protocol != 0 && r.protocol != 1 && r.protocol != 6 && r.protocol != 17)
        return Error{Errc::kInvalid, "protocol " + std::to_string(r.protocol) + " is not 0 (any), 1, 6 or 17", {}};
      if (!r.ports.empty() && r.protocol != 6 && r.protocol != 17)
        return Error{Errc::kInvalid, "ports need protocol tcp or udp", {}};
      for (const auto& p : r.ports) {
        if (p.first == 0 || p.first > p.last)
          return Error{Errc::kInvalid, "port range " + std::to_string(p.first) + "-" + std::to_string(p.last) + " is empty or reversed", {}};
      }
      for (const auto& [addr, len] : r.cidrs) {
        if (len < 0 || len > 32)
          return Error{Errc::kInvalid, "prefix length " + std::to_string(len) + " is out of range 0..32", {}};
      }
      for (const auto& s : r.sets) {
        if (auto e = check_set_name(s)) return e;
      }
    }
  }
  return std::nullopt;
}

Result<void> Fabric::set_policy(const LocalIfc&, const std::optional<Policy>& policy) {
  if (!policy) return {};
  return fail(Errc::kUnsupported, "the " + name() + " fabric does not enforce security groups");
}

Result<void> Fabric::update_set(const std::string&, const std::vector<uint32_t>&, const std::vector<uint32_t>&) {
  return fail(Errc::kUnsupported, "the " + name() + " fabric does not enforce security groups");
}

Result<void> Fabric::delete_set(const std::string&) { return {}; }

Result<std::map<std::string, std::vector<uint32_t>>> Fabric::list_sets() {
  return std::map<std::string, std::vector<uint32_t>>{};
}

Result<std::map<std::string, Policy>> Fabric::list_policies() { return std::map<std::string, Policy>{}; }

}  // namespace kos::fabric
