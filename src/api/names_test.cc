#include "api/names.h"

#include <set>

#include <gtest/gtest.h>

#include "api/cidr.h"

namespace kos::api {
namespace {

TEST(IPLockName, FormatsAndParses) {
  struct Row {
    std::uint32_t vni;
    std::string_view ip;
    std::string_view name;
  };
  const Row rows[] = {
      {65537, "172.24.0.5", "v1-65537-172-24-0-5"},
      {1, "0.0.0.0", "v1-1-0-0-0-0"},
      {kMaxVni, "255.255.255.255", "v1-2097151-255-255-255-255"},
  };
  for (const auto& r : rows) {
    const std::uint32_t ip = *parse_ipv4(r.ip);
    EXPECT_EQ(format_iplock_name(r.vni, ip), r.name);
    auto parsed = parse_iplock_name(r.name);
    ASSERT_TRUE(parsed.has_value()) << r.name << ": " << parsed.error().message;
    EXPECT_EQ(*parsed, (IPLockName{r.vni, ip}));
  }
}

TEST(IPLockName, RejectsEverythingElse) {
  const std::string_view bad[] = {
      "",
      "v1",
      "v1-",
      "v1-5",
      "v1-5-10-0-0",      // three octets
      "v1-5-10-0-0-1-2",  // five octets
      "v2-5-10-0-0-1",    // wrong version
      "V1-5-10-0-0-1",
      "x1-5-10-0-0-1",
      "v1-0-10-0-0-1",        // VNI 0
      "v1-2097152-10-0-0-1",  // VNI too big
      "v1-4294967296-10-0-0-1",
      "v1-05-10-0-0-1",  // leading zero in VNI
      "v1-5-010-0-0-1",  // leading zero in octet
      "v1-5-10-0-0-01",
      "v1-5-256-0-0-1",
      "v1-5-10-0-0-",
      "v1-5--10-0-0-1",
      "v1--5-10-0-0-1",
      "v1-5-10.0.0.1",  // dots instead of dashes
      "v1-5-10-0.0-1",
      "v1-5-10-0-0-1 ",
      "v1-5-10-0-0-1\n",
      "v1-+5-10-0-0-1",
      "v1-5-10-0-0-1x",
      "v1-x-10-0-0-1",
  };
  for (auto s : bad) {
    auto r = parse_iplock_name(s);
    ASSERT_FALSE(r.has_value()) << "accepted: " << s;
    EXPECT_EQ(r.error().code, Errc::kInvalid);
  }
}

TEST(Mac, DerivesFromAddressAndVni) {
  struct Row {
    std::string_view ip;
    std::uint32_t vni;
    std::string_view mac;
    std::string_view ifc;
  };
  // Worked by hand from kos-api.md:
  // mac[0] = (byte(vni>>13) & 0xF8) | ((ip[0] & 0x02) << 1) | 0x02.
  const Row rows[] = {
      // 10 has bit 1 set; 65537>>13 = 8.
      {"10.1.2.3", 65537, "0e:01:02:03:00:01", "kos0e0102030001"},
      // 172 has bit 1 clear; 2097151>>13 = 0xff, & 0xf8 = 0xf8.
      {"172.24.0.5", kMaxVni, "fa:18:00:05:ff:ff", "kosfa180005ffff"},
      {"192.168.1.1", 1, "02:a8:01:01:00:01", "kos02a801010001"},
      {"10.255.255.255", 0x1234, "06:ff:ff:ff:12:34", "kos06ffffff1234"},
  };
  for (const auto& r : rows) {
    const MacAddress mac = guest_mac(*parse_ipv4(r.ip), r.vni);
    EXPECT_EQ(format_mac(mac), r.mac) << r.ip;
    EXPECT_EQ(interface_name(mac), r.ifc) << r.ip;
    EXPECT_EQ(interface_name(mac).size(), 15u);  // Linux IFNAMSIZ - 1
    auto back = parse_mac(r.mac);
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, mac);
  }
}

TEST(Mac, IsUniqueAcrossPrivateRangesAndVnis) {
  // Same low three octets in each range, with VNIs differing only in the bits that
  // share byte 0: all MACs must differ.
  std::set<std::string> seen;
  for (auto ip : {"10.16.0.1", "172.16.0.1", "192.168.0.1", "10.168.0.1"}) {
    for (std::uint32_t vni : {1u, 1u << 16, 1u << 19, 1u << 20}) {
      EXPECT_TRUE(seen.insert(format_mac(guest_mac(*parse_ipv4(ip), vni))).second)
          << ip << " " << vni;
    }
  }
}

TEST(Mac, ParseAcceptsUppercaseRejectsMalformed) {
  auto m = parse_mac("0A:0B:0C:0D:0E:0F");
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(format_mac(*m), "0a:0b:0c:0d:0e:0f");
  const std::string_view bad[] = {"",
                                  "0a:0b:0c:0d:0e",
                                  "0a:0b:0c:0d:0e:0f:",
                                  "0a-0b-0c-0d-0e-0f",
                                  "0a0b0c0d0e0f",
                                  "0g:0b:0c:0d:0e:0f",
                                  "a:b:c:d:e:f",
                                  " 0a:0b:0c:0d:0e:0f",
                                  "0a:0b:0c:0d:0e:0f0"};
  for (auto s : bad) EXPECT_FALSE(parse_mac(s).has_value()) << s;
}

TEST(DnsNames, Labels) {
  const std::string max_label(63, 'a');
  for (std::string_view s :
       {std::string_view("a"), std::string_view("0"), std::string_view("my-name"),
        std::string_view("123-abc"), std::string_view(max_label)}) {
    EXPECT_EQ(dns1123_label_error(s), std::nullopt) << s;
  }
  const std::string too_long(64, 'a');
  for (std::string_view s :
       {std::string_view(""), std::string_view("-a"), std::string_view("a-"), std::string_view("A"),
        std::string_view("a.b"), std::string_view("a_b"), std::string_view("a b"),
        std::string_view(too_long)}) {
    EXPECT_TRUE(dns1123_label_error(s).has_value()) << s;
    EXPECT_FALSE(is_dns1123_label(s)) << s;
  }
  EXPECT_EQ(dns1123_label_error(too_long), "must be no more than 63 characters");
}

TEST(DnsNames, Subdomains) {
  const std::string long_part(100, 'a');  // parts are not capped at 63
  const std::string max = std::string(126, 'a') + "." + std::string(126, 'b');
  for (std::string_view s :
       {std::string_view("a"), std::string_view("example.com"), std::string_view("a-b.c-d.e"),
        std::string_view(long_part), std::string_view(max), std::string_view("v1-5-10-0-0-1")}) {
    EXPECT_TRUE(is_dns1123_subdomain(s)) << s;
  }
  const std::string too_long = max + "c";
  for (std::string_view s :
       {std::string_view(""), std::string_view("."), std::string_view("a."), std::string_view(".a"),
        std::string_view("a..b"), std::string_view("a.-b"), std::string_view("a-.b"),
        std::string_view("Example.com"), std::string_view("a_b"), std::string_view("a/b"),
        std::string_view(too_long)}) {
    EXPECT_TRUE(dns1123_subdomain_error(s).has_value()) << s;
  }
}

TEST(QualifiedNames, FollowKubernetesRules) {
  const std::string name63(63, 'a'), prefix253 = std::string(253, 'b');
  const std::string good[] = {"app", "App_1.x-y", "example.com/app", "a/B",
                              "x",   name63,      prefix253 + "/a",  "kubernetes.io/metadata.name"};
  for (const auto& s : good) EXPECT_EQ(qualified_name_error(s), std::nullopt) << s;
  struct Row {
    std::string text;
    std::string_view message;
  };
  const Row bad[] = {
      {"", "name part must be non-empty"},
      {"example.com/", "name part must be non-empty"},
      {"/app", "prefix part must be non-empty"},
      {"a/b/c", "at most one '/'"},
      {"Example.com/app", "prefix part a lowercase RFC 1123 subdomain"},
      {prefix253 + "c/app", "prefix part must be no more than 253"},
      {name63 + "a", "name part must be no more than 63"},
      {"-app", "name part must consist"},
      {"app-", "name part must consist"},
      {"a pp", "name part must consist"},
      {"a:b", "name part must consist"},
  };
  for (const auto& r : bad) {
    auto e = qualified_name_error(r.text);
    ASSERT_TRUE(e.has_value()) << "accepted: " << r.text;
    EXPECT_NE(e->find(r.message), std::string::npos) << r.text << " -> " << *e;
  }
}

TEST(LabelValues, FollowKubernetesRules) {
  const std::string good[] = {"", "v", "MyValue", "my_value", "1.2.3", std::string(63, 'z')};
  for (const auto& s : good) EXPECT_EQ(label_value_error(s), std::nullopt) << s;
  const std::string bad[] = {"-v", "v-", "_v", "a/b", "a b", "\xc3\xa9", std::string(64, 'z')};
  for (const auto& s : bad) EXPECT_TRUE(label_value_error(s).has_value()) << s;
}

TEST(GenerateName, AppendsFiveCharsFromTheAlphabet) {
  std::mt19937_64 rng(42);
  const std::string n = generate_name("web-", rng);
  ASSERT_EQ(n.size(), 9u);
  EXPECT_TRUE(n.starts_with("web-"));
  for (char c : n.substr(4)) EXPECT_NE(kNameSuffixAlphabet.find(c), std::string_view::npos) << n;
  EXPECT_TRUE(is_dns1123_label(n));

  const std::string long_prefix(100, 'p');
  const std::string m = generate_name(long_prefix, rng);
  EXPECT_EQ(m.size(), 63u);
  EXPECT_EQ(m.substr(0, 58), long_prefix.substr(0, 58));

  std::set<std::string> names;
  for (int i = 0; i < 100; ++i) names.insert(generate_name("x-"));
  EXPECT_GT(names.size(), 95u);  // 27^5 possibilities: collisions are rare

  std::mt19937_64 a(7), b(7);
  EXPECT_EQ(generate_name("s", a), generate_name("s", b));  // deterministic given the rng
}

}  // namespace
}  // namespace kos::api
