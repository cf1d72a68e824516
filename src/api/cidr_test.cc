#include "api/cidr.h"

#include <gtest/gtest.h>

namespace kos::api {
namespace {

TEST(Ipv4, ParsesAndFormats) {
  struct Row {
    std::string_view text;
    std::uint32_t ip;
  };
  const Row rows[] = {
      {"0.0.0.0", 0},
      {"10.1.2.3", 0x0a010203},
      {"255.255.255.255", 0xffffffff},
      {"192.168.0.10", 0xc0a8000a},
  };
  for (const auto& r : rows) {
    auto ip = parse_ipv4(r.text);
    ASSERT_TRUE(ip.has_value()) << r.text;
    EXPECT_EQ(*ip, r.ip) << r.text;
    EXPECT_EQ(format_ipv4(r.ip), r.text);
  }
}

TEST(Ipv4, RejectsMalformed) {
  const std::string_view bad[] = {
      "",
      "1",
      "1.2.3",
      "1.2.3.4.5",
      "1.2.3.",
      ".1.2.3",
      "1..2.3",
      "256.0.0.0",
      "1.2.3.256",
      "01.2.3.4",
      "1.2.3.04",
      "1.2.3.00",
      "-1.2.3.4",
      "+1.2.3.4",
      "1.2.3.4 ",
      " 1.2.3.4",
      "1.2.3.4/8",
      "a.b.c.d",
      "1.2.3.4x",
      "0x1.2.3.4",
      "4294967296.0.0.0",
      "99999999999.0.0.0",
      "1.2.3.4\n",
      std::string_view("1.2.3\0", 6),
  };
  for (auto s : bad) {
    auto ip = parse_ipv4(s);
    ASSERT_FALSE(ip.has_value()) << "accepted: " << s;
    EXPECT_EQ(ip.error().code, Errc::kInvalid);
  }
}

TEST(Cidr, ParsesAndFormats) {
  const std::string_view good[] = {"10.0.0.0/8",  "172.16.0.0/12", "192.168.1.0/24",
                                   "10.1.2.3/32", "10.1.2.2/31",   "0.0.0.0/0"};
  for (auto s : good) {
    auto c = parse_cidr(s);
    ASSERT_TRUE(c.has_value()) << s << ": " << c.error().message;
    EXPECT_EQ(c->to_string(), s);
  }
}

TEST(Cidr, RejectsMalformed) {
  struct Row {
    std::string_view text;
    std::string_view message;  // a substring of the error
  };
  const Row bad[] = {
      {"", "want the form a.b.c.d/n"},
      {"10.0.0.0", "want the form a.b.c.d/n"},
      {"10.0.0.0/", "prefix length"},
      {"10.0.0.0/33", "prefix length"},
      {"10.0.0.0/-1", "prefix length"},
      {"10.0.0.0/08", "prefix length"},
      {"10.0.0.0/8/8", "prefix length"},
      {"10.0.0.0/ 8", "prefix length"},
      {"10.0.0/8", "invalid IPv4 address"},
      {"/8", "invalid IPv4 address"},
      {"10.1.2.3/24", "host bits are set; the network is 10.1.2.0/24"},
      {"10.1.2.1/31", "the network is 10.1.2.0/31"},
      {"172.17.0.0/12", "the network is 172.16.0.0/12"},
  };
  for (const auto& r : bad) {
    auto c = parse_cidr(r.text);
    ASSERT_FALSE(c.has_value()) << "accepted: " << r.text;
    EXPECT_EQ(c.error().code, Errc::kInvalid);
    EXPECT_NE(c.error().message.find(r.message), std::string::npos)
        << r.text << " -> " << c.error().message;
  }
}

TEST(Cidr, ContainsAndOverlaps) {
  auto c = [](std::string_view s) { return *parse_cidr(s); };
  struct Row {
    std::string_view a, b;
    bool a_contains_b, overlap;
  };
  const Row rows[] = {
      {"10.0.0.0/8", "10.1.0.0/16", true, true},
      {"10.1.0.0/16", "10.0.0.0/8", false, true},
      {"10.1.0.0/16", "10.2.0.0/16", false, false},
      {"10.1.2.0/24", "10.1.2.0/24", true, true},
      {"10.1.2.0/25", "10.1.2.128/25", false, false},
      {"0.0.0.0/0", "255.255.255.255/32", true, true},
      {"10.1.2.3/32", "10.1.2.3/32", true, true},
      {"10.1.2.3/32", "10.1.2.2/31", false, true},
  };
  for (const auto& r : rows) {
    EXPECT_EQ(c(r.a).contains(c(r.b)), r.a_contains_b) << r.a << " " << r.b;
    EXPECT_EQ(c(r.a).overlaps(c(r.b)), r.overlap) << r.a << " " << r.b;
    EXPECT_EQ(c(r.b).overlaps(c(r.a)), r.overlap) << r.b << " " << r.a;
  }
  EXPECT_TRUE(c("10.1.2.0/24").contains(*parse_ipv4("10.1.2.255")));
  EXPECT_FALSE(c("10.1.2.0/24").contains(*parse_ipv4("10.1.3.0")));
}

TEST(Cidr, UsableRange) {
  struct Row {
    std::string_view cidr, first, last;
    std::uint64_t size;
  };
  const Row rows[] = {
      {"10.1.2.0/24", "10.1.2.2", "10.1.2.254", 256},
      {"10.1.2.0/29", "10.1.2.2", "10.1.2.6", 8},
      {"10.1.2.0/30", "10.1.2.0", "10.1.2.3", 4},  // fewer than 5: all of it
      {"10.1.2.2/31", "10.1.2.2", "10.1.2.3", 2},
      {"10.1.2.3/32", "10.1.2.3", "10.1.2.3", 1},
      {"10.0.0.0/8", "10.0.0.2", "10.255.255.254", 1u << 24},
      {"0.0.0.0/0", "0.0.0.2", "255.255.255.254", 1ull << 32},
  };
  for (const auto& r : rows) {
    const auto c = *parse_cidr(r.cidr);
    EXPECT_EQ(format_ipv4(c.first_usable()), r.first) << r.cidr;
    EXPECT_EQ(format_ipv4(c.last_usable()), r.last) << r.cidr;
    EXPECT_EQ(c.size(), r.size) << r.cidr;
  }
}

TEST(Cidr, PrivateRanges) {
  struct Row {
    std::string_view cidr;
    bool inside;
  };
  const Row rows[] = {
      {"10.0.0.0/8", true},        {"10.255.255.0/24", true}, {"172.16.0.0/12", true},
      {"172.31.255.252/30", true}, {"192.168.0.0/16", true},  {"192.168.7.7/32", true},
      {"10.0.0.0/7", false},       {"11.0.0.0/8", false},     {"172.32.0.0/16", false},
      {"172.0.0.0/8", false},      {"192.168.0.0/15", false}, {"8.8.8.0/24", false},
      {"0.0.0.0/0", false},
  };
  for (const auto& r : rows) EXPECT_EQ(in_private_ranges(*parse_cidr(r.cidr)), r.inside) << r.cidr;
}

TEST(Decimal, IsStrict) {
  EXPECT_EQ(parse_decimal("0", 5), 0u);
  EXPECT_EQ(parse_decimal("5", 5), 5u);
  EXPECT_EQ(parse_decimal("4294967295", 4294967295u), 4294967295u);
  struct Row {
    std::string_view text;
    std::uint32_t max;
  };
  const Row bad[] = {{"", 5},   {"00", 5},  {"01", 5},          {"6", 5},
                     {"-1", 5}, {"+1", 5},  {"1a", 5},          {" 1", 5},
                     {"1 ", 5}, {"0x1", 5}, {"99999999999", 5}, {"4294967296", 4294967295u}};
  for (const auto& r : bad) EXPECT_EQ(parse_decimal(r.text, r.max), std::nullopt) << r.text;
}

}  // namespace
}  // namespace kos::api
