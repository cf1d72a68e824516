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
// bundle). The top four bits say the kind: 1 local, 2 remote, 3 a local's policy, 4 an
// address set, 0xf the defaults (and the security-group defaults).
//
// Security groups (fabric.h's Policy). Nothing below exists until some local has a policy,
// so a bridge without policies carries exactly the program above. Conntrack (the
// userspace datapath's, zone = the VNI's low 16 bits: VNIs equal modulo 65536 share a zone,
// which matters only to connections of identical addresses and ports in both) sees only
// the IPv4 traffic of policed locals; a packet is looked up once whichever ends are
// policed, and a new connection is committed (a second pass, for its first packet) only
// after both ends' checks passed: the source's egress rules, then the destination's
// ingress rules.
//
//   policed local (OpenFlow port P, VNI V, MAC M), cookie: the policy's
//   table 0, priority 110:  in_port=P, ip -> set_field:V->tun_id, ct(zone, table=2)
//   table 0, priority 110:  in_port=P, ipv6 -> drop
//   table 1, priority 110:  tun_id=V, dl_dst=M, ip, ct_state=-trk -> ct(zone, table=2)
//   table 1, priority 110:  tun_id=V, dl_dst=M, ipv6 -> drop
//   (ARP and the rest keep the priority-100 flows: ARP works as without a policy)
//   security-group defaults (kPolicyDefaultsCookie), after conntrack:
//   table 2, priority 200:  ct_state=+inv+trk -> drop
//   table 2, priority 100:  ct_state=+est+trk / +rel+trk -> resubmit(,1)   (forwarding)
//   table 2, priority 50:   ct_state=+new+trk -> goto_table:3
//   table 2, priority 0:    drop
//   table 3 (egress of the source), priority 0: goto_table:4    (source not policed)
//   table 4 (ingress of the destination), priority 0: goto_table:5
//   table 5, priority 0:    ip -> ct(commit, zone, table=1)         (then forwarding)
//   (recirculating, not resubmitting: after a ct without a table OVS clears ct_state, so
//   the packet would be -trk again in table 1 and go round)
//   policed local's rules: table 3 keyed by in_port=P (peer: nw_dst); table 4 keyed by
//   tun_id=V, dl_dst=M (peer: nw_src); table T = 3 or 4, T' = T + 1:
//   priority 1:             KEY -> drop                   (a new connection no rule allows)
//   rule i, priority 1000+i, conjunction id C = P << 16 | (ingress) << 15 | i:
//     a peer flow per CIDR and per address of each set it names (clause 1):
//                           KEY, ip, nw_dst=CIDR -> conjunction(C, 1/2)
//     a protocol flow per protocol/port prefix (clause 2):
//                           KEY, tcp, tp_dst=0x100/0xff00 -> conjunction(C, 2/2)
//                           conj_id=C -> goto_table:T'
//     a rule whose peers include 0.0.0.0/0, or of any protocol without ports, has one
//     dimension only: its flows go straight to T' (both: one flow KEY, ip -> T').
//     A rule without peers allows nothing (as in the linux fabric): no flows.
//   Port ranges are prefix-masked tp_dst matches (1-65535: 16 flows).
//
// Address sets. A set element is one flow per rule naming the set (with the policed
// local's key), so update_set costs O(rules naming the set) flow adds or strict deletes,
// whatever the set's size; an address that is a peer of the rule otherwise too (the same
// /32 or another set of the rule) shares that flow and keeps it. The sets themselves are
// kept for adoption as flows of a table no packet visits (cookie: the set's):
//   table 250, priority 1:  metadata=H(name), ip, nw_src=ADDR -> drop     (one per element)
// and their names (so an empty set survives too) in the bridge's external_ids
// kos-set-<name>; each policy, as given, in kos-policy-<interface name> (policy_text).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "fabric/fabric.h"
#include "fabric/ovs/openflow.h"

namespace kos::fabric::ovs {

inline constexpr uint64_t kDefaultsCookie = 0xf000000000000001ull;
inline constexpr uint64_t kPolicyDefaultsCookie = 0xf000000000000002ull;
inline constexpr uint16_t kAttachmentPriority = 100;
inline constexpr uint16_t kPolicedPriority = 110;
inline constexpr uint16_t kRulePriority = 1000;
inline constexpr uint8_t kTablePostCt = 2, kTableEgress = 3, kTableIngress = 4, kTableCommit = 5, kTableSets = 250;
inline constexpr size_t kMaxRules = 4096;  // per direction of a policy

enum class CookieKind { kOther, kLocal, kRemote, kPolicy, kSet, kDefaults };
CookieKind cookie_kind(uint64_t cookie);

uint64_t local_cookie(const LocalIfc& l, uint32_t ofport);
uint64_t remote_cookie(const RemoteIfc& r);

std::vector<of::Flow> default_flows();
std::vector<of::Flow> local_flows(const LocalIfc& l, uint32_t ofport);
std::vector<of::Flow> remote_flows(const RemoteIfc& r, uint32_t vtep_ofport);

// --- Security groups (see above).
using Sets = std::map<std::string, std::set<uint32_t>>;

// Why flows.h cannot express `p` (more than kMaxRules rules in a direction), or nullopt.
std::optional<Error> check_programmable(const Policy& p);
uint64_t policy_cookie(const LocalIfc& l, uint32_t ofport, const Policy& p);
uint64_t set_cookie(const std::string& name);
uint64_t set_metadata(const std::string& name);

std::vector<of::Flow> policy_default_flows();
// Every flow of local `l`'s policy, with the sets' current addresses (a set not in `sets`:
// empty).
std::vector<of::Flow> policy_flows(const LocalIfc& l, uint32_t ofport, const Policy& p, const Sets& sets);
// The flows that address `addr` of set `set` contributes to `p`'s rules naming the set,
// leaving out those the rule has otherwise too (the same /32, or `addr` in another set of
// the rule as `sets` says): what update_set adds for a new member or deletes for a gone one.
std::vector<of::Flow> set_member_flows(const LocalIfc& l, uint32_t ofport, const Policy& p, const std::string& set,
                                       uint32_t addr, const Sets& sets);
of::Flow set_store_flow(const std::string& name, uint32_t addr);
// Every set `p` names.
std::set<std::string> sets_named(const Policy& p);
// A port range as prefix-masked matches (value, mask), fewest first-to-last.
std::vector<std::pair<uint16_t, uint16_t>> port_prefixes(PortRange r);
// A policy as stored in OVSDB (compact JSON) and back: exactly what was given.
std::string policy_text(const Policy& p);
std::optional<Policy> parse_policy_text(const std::string& text);

// Whether two sets of flows (one cookie's) are the same, in any order.
bool same_flows(const std::vector<of::Flow>& a, const std::vector<of::Flow>& b);

// A remote attachment read back from the flows of one cookie as the switch reports them:
// set only if they are exactly remote_flows() of it (and the cookie is its cookie).
std::optional<RemoteIfc> parse_remote(const std::vector<of::Flow>& flows, uint32_t vtep_ofport);

}  // namespace kos::fabric::ovs
