// Test helpers shared by the fabric tests: interfaces built from text addresses, with the
// MAC and name derived as the agent derives them.
#pragma once

#include <string_view>

#include "api/cidr.h"
#include "fabric/fabric.h"

namespace kos::fabric::testing {

inline uint32_t ip(std::string_view s) { return *api::parse_ipv4(s); }

inline LocalIfc local(uint32_t vni, std::string_view guest) {
  LocalIfc l;
  l.vni = vni;
  l.guest_ip = ip(guest);
  l.mac = api::guest_mac(l.guest_ip, vni);
  l.name = api::interface_name(l.mac);
  return l;
}

inline RemoteIfc remote(uint32_t vni, std::string_view guest, std::string_view host) {
  RemoteIfc r;
  r.vni = vni;
  r.guest_ip = ip(guest);
  r.mac = api::guest_mac(r.guest_ip, vni);
  r.host_ip = ip(host);
  return r;
}

}  // namespace kos::fabric::testing
