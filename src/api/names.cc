#include "api/names.h"

#include <cctype>

#include <algorithm>

#include "api/cidr.h"

namespace kos::api {
namespace {

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool is_alnum(char c) { return is_lower_alnum(c) || (c >= 'A' && c <= 'Z'); }

// [a-z0-9]([-a-z0-9]*[a-z0-9])?
bool label_shape(std::string_view s) {
  return !s.empty() && is_lower_alnum(s.front()) && is_lower_alnum(s.back()) &&
         std::ranges::all_of(s, [](char c) { return is_lower_alnum(c) || c == '-'; });
}

// ([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]
bool name_part_shape(std::string_view s) {
  return !s.empty() && is_alnum(s.front()) && is_alnum(s.back()) &&
         std::ranges::all_of(
             s, [](char c) { return is_alnum(c) || c == '-' || c == '_' || c == '.'; });
}

std::string too_long(std::size_t max) {
  return "must be no more than " + std::to_string(max) + " characters";
}

constexpr std::string_view kLabelMsg =
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name' or '123-abc')";
constexpr std::string_view kSubdomainMsg =
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com')";
constexpr std::string_view kNamePartMsg =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
    "an alphanumeric character (e.g. 'MyName', 'my.name' or '123-abc')";

}  // namespace

std::string format_iplock_name(std::uint32_t vni, std::uint32_t ipv4) {
  std::string dotted = format_ipv4(ipv4);
  std::ranges::replace(dotted, '.', '-');
  return "v1-" + std::to_string(vni) + "-" + dotted;
}

Result<IPLockName> parse_iplock_name(std::string_view name) {
  auto bad = [&] {
    return fail(Errc::kInvalid, "invalid IPLock name \"" + std::string(name.substr(0, 64)) +
                                    "\": want v1-<vni>-<a>-<b>-<c>-<d>, VNI 1.." +
                                    std::to_string(kMaxVni) +
                                    ", octets 0..255, decimal without leading zeros");
  };
  if (!name.starts_with("v1-")) return bad();
  const std::string_view rest = name.substr(3);
  const std::size_t dash = rest.find('-');
  if (dash == std::string_view::npos) return bad();
  const auto vni = parse_decimal(rest.substr(0, dash), kMaxVni);
  // The address part uses '-' where dotted notation has '.', so a '.' in it is foreign.
  std::string dotted(rest.substr(dash + 1));
  if (!vni || *vni == 0 || dotted.find('.') != std::string::npos) return bad();
  std::ranges::replace(dotted, '-', '.');
  const auto ip = parse_ipv4(dotted);
  if (!ip) return bad();
  return IPLockName{*vni, *ip};
}

MacAddress guest_mac(std::uint32_t ipv4, std::uint32_t vni) {
  const auto ip0 = static_cast<std::uint8_t>(ipv4 >> 24);
  return MacAddress{
      static_cast<std::uint8_t>((static_cast<std::uint8_t>(vni >> 13) & 0xF8) |
                                ((ip0 & 0x02) << 1) | 0x02),
      static_cast<std::uint8_t>(ipv4 >> 16),
      static_cast<std::uint8_t>(ipv4 >> 8),
      static_cast<std::uint8_t>(ipv4),
      static_cast<std::uint8_t>(vni >> 8),
      static_cast<std::uint8_t>(vni),
  };
}

std::string format_mac(const MacAddress& mac) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (std::uint8_t b : mac) {
    if (!out.empty()) out += ':';
    out += kHex[b >> 4];
    out += kHex[b & 0xf];
  }
  return out;
}

Result<MacAddress> parse_mac(std::string_view s) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  MacAddress mac{};
  bool ok = s.size() == 17;
  for (std::size_t i = 0; ok && i < mac.size(); ++i) {
    const int hi = hex(s[3 * i]), lo = hex(s[3 * i + 1]);
    ok = hi >= 0 && lo >= 0 && (i == 5 || s[3 * i + 2] == ':');
    if (ok) mac[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  if (!ok) {
    return fail(Errc::kInvalid, "invalid MAC address \"" + std::string(s.substr(0, 64)) +
                                    "\": want xx:xx:xx:xx:xx:xx");
  }
  return mac;
}

std::optional<std::string> linux_ifname_error(std::string_view n) {
  if (n.empty()) return "is empty";
  if (n.size() > 15) return "is longer than 15 characters";
  if (n == "." || n == "..") return "is not an interface name";
  for (char c : n)
    if (c == '/' || c == ':' || std::isspace(static_cast<unsigned char>(c)) || !std::isprint(static_cast<unsigned char>(c)))
      return "contains '/', ':', whitespace or a control character";
  return std::nullopt;
}

std::string interface_name(const MacAddress& mac) {
  std::string hex = format_mac(mac);
  std::erase(hex, ':');
  return "kos" + hex;
}

std::optional<std::string> dns1123_label_error(std::string_view s) {
  if (s.size() > 63) return too_long(63);
  if (!label_shape(s)) return std::string(kLabelMsg);
  return std::nullopt;
}

std::optional<std::string> dns1123_subdomain_error(std::string_view s) {
  if (s.size() > 253) return too_long(253);
  // Every dot-separated part must be label-shaped; Kubernetes does not cap each at 63.
  for (std::size_t start = 0;;) {
    const std::size_t dot = s.find('.', start);
    if (!label_shape(s.substr(start, dot - start))) return std::string(kSubdomainMsg);
    if (dot == std::string_view::npos) return std::nullopt;
    start = dot + 1;
  }
}

std::optional<std::string> qualified_name_error(std::string_view s) {
  std::string_view name = s;
  if (const std::size_t slash = s.find('/'); slash != std::string_view::npos) {
    const std::string_view prefix = s.substr(0, slash);
    name = s.substr(slash + 1);
    if (prefix.empty()) return "prefix part must be non-empty";
    if (auto e = dns1123_subdomain_error(prefix)) return "prefix part " + *e;
    if (name.find('/') != std::string_view::npos) {
      return "a qualified name has at most one '/' (e.g. 'example.com/MyName')";
    }
  }
  if (name.empty()) return "name part must be non-empty";
  if (name.size() > 63) return "name part " + too_long(63);
  if (!name_part_shape(name)) return "name part " + std::string(kNamePartMsg);
  return std::nullopt;
}

std::optional<std::string> label_value_error(std::string_view s) {
  if (s.size() > 63) return too_long(63);
  if (!s.empty() && !name_part_shape(s)) {
    return "a label value must be empty or " + std::string(kNamePartMsg);
  }
  return std::nullopt;
}

std::string generate_name(std::string_view prefix, std::mt19937_64& rng) {
  constexpr std::size_t kMaxPrefix = 63 - kNameSuffixLength;
  std::string out(prefix.substr(0, kMaxPrefix));
  std::uniform_int_distribution<std::size_t> pick(0, kNameSuffixAlphabet.size() - 1);
  for (std::size_t i = 0; i < kNameSuffixLength; ++i) out += kNameSuffixAlphabet[pick(rng)];
  return out;
}

std::string generate_name(std::string_view prefix) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return generate_name(prefix, rng);
}

}  // namespace kos::api
