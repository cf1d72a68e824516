// Distributed routing for the subnets of a VPC (linux fabric): on every node that has a
// VNI of VPC R, a router network namespace `<base>-vpc<R>` holds one gateway interface
// per such VNI. The gateway is a veth pair: its node end `kosgw<V>` is a port of the VNI's
// bridge `kosbr<V>`; its router end `gw<V>` carries the subnet's gateway address and the
// anycast gateway MAC api::guest_mac(gateway, V), the same on every node, so a guest's
// first hop is always its own node. The router namespace holds only the connected routes
// of its VPC's subnets: nothing routes between VPCs, to the host or to the underlay, by
// construction (the kernel here has no VRF device; a namespace is its own routing
// domain, as OpenStack Neutron's distributed routers are). Routed packets leave on the
// destination subnet's bridge and VNI (asymmetric routing): the router's ARP for a guest
// on another node is answered by the VNI's VXLAN device from the neighbour entry the
// fabric programs for that guest anyway, so a route costs no state per remote guest.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "fabric/fabric.h"

namespace kos::fabric {

std::string gateway_port_name(uint32_t vni);    // "kosgw<vni>", on the node
std::string router_gateway_name(uint32_t vni);  // "gw<vni>", in the router namespace
std::optional<uint32_t> parse_gateway_port_name(std::string_view name);
// What the node end carries, so the kernel alone tells the routing: "kos gw vpc=R ip=A.B.C.D/P".
std::string gateway_port_alias(const Routing& r);
std::optional<Routing> parse_gateway_port_alias(std::string_view alias);
// The router namespace of VPC `vpc` of the fabric in network namespace `fabric_netns`
// (a name or a path; empty: the host's): "<base>-vpc<vpc>", base the namespace's last
// path part or "kos".
std::string router_netns_name(const std::string& fabric_netns, uint32_t vpc);
std::optional<uint32_t> parse_router_netns_name(const std::string& fabric_netns, std::string_view name);

namespace nl {

// /var/run/netns/NAME, as `ip netns add` makes it (a bind mount of a new namespace),
// created if absent; returned open (close-on-exec).
Result<int> create_named_netns(const std::string& name);
// Unmounts and removes /var/run/netns/NAME; absent is fine.
Result<void> delete_named_netns(const std::string& name);
// The names under /var/run/netns.
std::vector<std::string> named_netns();
// Inside the namespace: lo up, IPv4 forwarding on, reverse-path filtering and redirects
// off (every route there is a connected one, and the answer to a guest must not name
// another node's gateway).
Result<void> configure_router(int netns_fd, const std::string& name);

}  // namespace nl
}  // namespace kos::fabric
