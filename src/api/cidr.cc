#include "api/cidr.h"

#include <algorithm>
#include <optional>

namespace kos::api {
namespace {

std::string quoted(std::string_view s) { return "\"" + std::string(s.substr(0, 64)) + "\""; }

}  // namespace

std::optional<std::uint32_t> parse_decimal(std::string_view s, std::uint32_t max) {
  // At most 10 digits, so the uint64 accumulator cannot overflow.
  if (s.empty() || s.size() > 10 || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (v > max) return std::nullopt;
  return static_cast<std::uint32_t>(v);
}

Result<std::uint32_t> parse_ipv4(std::string_view s) {
  std::uint32_t ip = 0;
  std::string_view rest = s;
  for (int i = 0; i < 4; ++i) {
    // The last octet runs to the end, so trailing garbage fails parse_decimal.
    const std::size_t end = i < 3 ? rest.find('.') : rest.size();
    const auto octet =
        end == std::string_view::npos ? std::nullopt : parse_decimal(rest.substr(0, end), 255);
    if (!octet) {
      return fail(Errc::kInvalid, "invalid IPv4 address " + quoted(s) +
                                      ": want four decimal octets 0..255 without leading zeros");
    }
    ip = ip << 8 | *octet;
    rest.remove_prefix(std::min(end + 1, rest.size()));
  }
  return ip;
}

std::string format_ipv4(std::uint32_t ip) {
  return std::to_string(ip >> 24) + "." + std::to_string(ip >> 16 & 0xff) + "." +
         std::to_string(ip >> 8 & 0xff) + "." + std::to_string(ip & 0xff);
}

std::string Ipv4Cidr::to_string() const { return format_ipv4(addr) + "/" + std::to_string(prefix); }

Result<Ipv4Cidr> parse_cidr(std::string_view s) {
  const std::size_t slash = s.find('/');
  if (slash == std::string_view::npos) {
    return fail(Errc::kInvalid, "invalid CIDR " + quoted(s) + ": want the form a.b.c.d/n");
  }
  auto ip = parse_ipv4(s.substr(0, slash));
  if (!ip) return fail(std::move(ip.error()));
  const auto prefix = parse_decimal(s.substr(slash + 1), 32);
  if (!prefix) {
    return fail(Errc::kInvalid,
                "invalid CIDR " + quoted(s) + ": prefix length must be a number 0..32");
  }
  Ipv4Cidr c{*ip, static_cast<int>(*prefix)};
  if ((c.addr & c.mask()) != c.addr) {
    c.addr &= c.mask();
    return fail(Errc::kInvalid, "invalid CIDR " + quoted(s) +
                                    ": host bits are set; the network is " + c.to_string());
  }
  return c;
}

bool in_private_ranges(const Ipv4Cidr& c) {
  static constexpr Ipv4Cidr kRanges[] = {{0x0a000000, 8}, {0xac100000, 12}, {0xc0a80000, 16}};
  for (const auto& r : kRanges) {
    if (r.contains(c)) return true;
  }
  return false;
}

}  // namespace kos::api
