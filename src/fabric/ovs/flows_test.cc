#include "fabric/ovs/flows.h"

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

}  // namespace
}  // namespace kos::fabric::ovs
