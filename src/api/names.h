// Names: IPLock names, guest MACs and interface names, the Kubernetes name and label
// syntax rules, and generateName suffixes.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>

#include "common/error.h"

namespace kos::api {

inline constexpr std::uint32_t kMaxVni = 2097151;  // 21 bits

// An IPLock's name is its identity: "v1-<vni>-<a>-<b>-<c>-<d>" (decimal), so the store's
// name uniqueness makes (VNI, address) ownership exclusive.
struct IPLockName {
  std::uint32_t vni = 0;
  std::uint32_t ipv4 = 0;
  bool operator==(const IPLockName&) const = default;
};

std::string format_iplock_name(std::uint32_t vni, std::uint32_t ipv4);
// Strict: exactly the format above, VNI 1..kMaxVni, octets 0..255, no leading zeros.
// kInvalid on error.
Result<IPLockName> parse_iplock_name(std::string_view name);

using MacAddress = std::array<std::uint8_t, 6>;

// The guest MAC of (ipv4, 21-bit vni), as the original KOS derives it: locally
// administered unicast, high VNI bits and bit 1 of the first octet in byte 0, the other
// three octets in bytes 1..3, the low 16 VNI bits in bytes 4..5.
MacAddress guest_mac(std::uint32_t ipv4, std::uint32_t vni);
std::string format_mac(const MacAddress& mac);      // "0a:0b:0c:0d:0e:0f"
Result<MacAddress> parse_mac(std::string_view s);   // that form, either case; kInvalid
std::string interface_name(const MacAddress& mac);  // "kos" + 12 hex digits
// Why s cannot be a Linux interface name (empty, over 15 characters, "." or "..", or with
// '/', ':', whitespace or a control character), or nullopt.
std::optional<std::string> linux_ifname_error(std::string_view s);

// Kubernetes name syntax. Each *_error returns why s is invalid, or nullopt if valid;
// the messages are Kubernetes' own so that kubectl users see familiar text.
std::optional<std::string> dns1123_label_error(std::string_view s);      // <= 63
std::optional<std::string> dns1123_subdomain_error(std::string_view s);  // <= 253
// Label and annotation keys, finalizers: an optional DNS subdomain prefix and "/", then
// a name of <= 63 alphanumerics, '-', '_', '.', starting and ending alphanumeric.
std::optional<std::string> qualified_name_error(std::string_view s);
std::optional<std::string> label_value_error(std::string_view s);  // may be empty
inline bool is_dns1123_label(std::string_view s) { return !dns1123_label_error(s); }
inline bool is_dns1123_subdomain(std::string_view s) { return !dns1123_subdomain_error(s); }

// Kubernetes' generateName: the prefix truncated to 58 characters, then 5 characters
// from an alphabet without vowels (no accidental words) or look-alikes (0/o, 1/l).
inline constexpr std::string_view kNameSuffixAlphabet = "bcdfghjklmnpqrstvwxz2456789";
inline constexpr std::size_t kNameSuffixLength = 5;
std::string generate_name(std::string_view prefix, std::mt19937_64& rng);
// As above with a per-thread generator seeded from std::random_device.
std::string generate_name(std::string_view prefix);

}  // namespace kos::api
