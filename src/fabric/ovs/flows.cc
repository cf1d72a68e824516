#include "fabric/ovs/flows.h"

#include <algorithm>

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
  if (cookie == kDefaultsCookie) return CookieKind::kDefaults;
  switch (cookie >> kKindShift) {
    case 1: return CookieKind::kLocal;
    case 2: return CookieKind::kRemote;
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

bool same_flows(const std::vector<of::Flow>& a, const std::vector<of::Flow>& b) {
  return a.size() == b.size() && std::ranges::is_permutation(a, b);
}

}  // namespace kos::fabric::ovs
