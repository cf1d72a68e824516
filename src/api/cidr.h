// IPv4 addresses and CIDR blocks as integers (host byte order), with the strict dotted
// syntax the API accepts: four decimal octets, no leading zeros, no whitespace.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.h"

namespace kos::api {

// A decimal number in [0, max]: digits only, no sign, no leading zero except "0" itself.
std::optional<std::uint32_t> parse_decimal(std::string_view s, std::uint32_t max);

Result<std::uint32_t> parse_ipv4(std::string_view s);  // kInvalid on error
std::string format_ipv4(std::uint32_t ip);

struct Ipv4Cidr {
  std::uint32_t addr = 0;  // the network address: host bits are always zero
  int prefix = 0;          // 0..32

  std::uint32_t mask() const { return prefix == 0 ? 0 : ~std::uint32_t{0} << (32 - prefix); }
  std::uint32_t last() const { return addr | ~mask(); }  // the broadcast address
  std::uint64_t size() const { return std::uint64_t{1} << (32 - prefix); }
  bool contains(std::uint32_t ip) const { return (ip & mask()) == addr; }
  bool contains(const Ipv4Cidr& o) const { return o.prefix >= prefix && contains(o.addr); }
  bool overlaps(const Ipv4Cidr& o) const { return contains(o.addr) || o.contains(addr); }

  // The addresses IPAM may hand out. With at least 5 addresses it skips the network
  // address, the gateway (base+1) and the broadcast address; smaller blocks (/30, /31,
  // /32) have no such roles on the overlay, so every address is usable.
  std::uint32_t first_usable() const { return size() >= 5 ? addr + 2 : addr; }
  std::uint32_t last_usable() const { return size() >= 5 ? last() - 1 : last(); }

  std::string to_string() const;  // "10.1.2.0/24"
  bool operator==(const Ipv4Cidr&) const = default;
};

// "a.b.c.d/n". Host bits must be zero: "10.1.2.3/24" is rejected with a message that
// names the network address, because silently masking hides typos. kInvalid on error.
Result<Ipv4Cidr> parse_cidr(std::string_view s);

// True when c lies inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16, the ranges where
// the guest MAC scheme (names.h) is collision-free.
bool in_private_ranges(const Ipv4Cidr& c);

}  // namespace kos::api
