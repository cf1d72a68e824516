#include "fabric/fabric.h"

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

}  // namespace kos::fabric
