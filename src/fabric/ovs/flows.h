// The OpenFlow program of KOS's OVS fabric (kos-api.md), as values: what the bridge holds for
// the defaults, for each local attachment and for each remote one, and the cookie that tags
// each attachment's flows. Pure functions: the fabric sends them, tests compare them with
// what `ovs-ofctl dump-flows` shows, and adoption reads remote attachments back from them.
//
//   table 0, priority 0:    goto_table:1                                      (defaults)
//   table 1, priority 0:    drop
//   local (OpenFlow port P):
//   table 0, priority 100:  in_port=P -> set_field:VNI->tun_id, goto_table:1
//   table 1, priority 100:  tun_id=VNI, dl_dst=MAC -> output:P
//   table 1, priority 100:  tun_id=VNI, arp, arp_tpa=IP -> output:P
//   remote (on host H, through port vtep):
//   table 1, priority 100:  tun_id=VNI, dl_dst=MAC -> set_field:H->tun_dst, output:vtep
//   table 1, priority 100:  tun_id=VNI, arp, arp_tpa=IP -> set_field:H->tun_dst, output:vtep
//
// No broadcast, no flooding: ARP is steered by its target address. A packet from the
// tunnel keeps the VNI it came with (table 0's default) and reaches only the local port of
// its destination on that VNI.
//
// Cookies. Each attachment's flows share one cookie derived from everything they encode
// (kind, VNI, MAC, IP, and the port P or host H), so a cookie on the bridge names exactly one
// set of flows: adoption keeps flows whose cookie it expects and deletes the rest by
// cookie, and a change of port or host is a new cookie (the old flows go in the same
// bundle). The top four bits say the kind: 1 local, 2 remote, 0xf the defaults.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "fabric/fabric.h"
#include "fabric/ovs/openflow.h"

namespace kos::fabric::ovs {

inline constexpr uint64_t kDefaultsCookie = 0xf000000000000001ull;
inline constexpr uint16_t kAttachmentPriority = 100;

enum class CookieKind { kOther, kLocal, kRemote, kDefaults };
CookieKind cookie_kind(uint64_t cookie);

uint64_t local_cookie(const LocalIfc& l, uint32_t ofport);
uint64_t remote_cookie(const RemoteIfc& r);

std::vector<of::Flow> default_flows();
std::vector<of::Flow> local_flows(const LocalIfc& l, uint32_t ofport);
std::vector<of::Flow> remote_flows(const RemoteIfc& r, uint32_t vtep_ofport);

// Whether two sets of flows (as one cookie's, a handful) are the same, in any order.
bool same_flows(const std::vector<of::Flow>& a, const std::vector<of::Flow>& b);

// A remote attachment read back from the flows of one cookie as the switch reports them:
// set only if they are exactly remote_flows() of it (and the cookie is its cookie).
std::optional<RemoteIfc> parse_remote(const std::vector<of::Flow>& flows, uint32_t vtep_ofport);

}  // namespace kos::fabric::ovs
