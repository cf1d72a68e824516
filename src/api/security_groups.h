// What the fields of a SecurityGroup mean as numbers: shared by validation (the kind's
// description) and the connection agent, which turns rules into a fabric Policy.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>

namespace kos::api {

// "tcp" 6, "udp" 17, "icmp" 1, "any" 0; nullopt for anything else.
std::optional<std::uint8_t> protocol_number(std::string_view protocol);
// Whether rules of that protocol may name ports (tcp and udp).
inline bool protocol_has_ports(std::uint8_t protocol) { return protocol == 6 || protocol == 17; }

// "22" -> (22, 22), "8000-8080" -> (8000, 8080); ports 1..65535, first <= last; nullopt
// for anything else.
std::optional<std::pair<std::uint16_t, std::uint16_t>> parse_port_range(std::string_view text);

// Most rules per direction, ports per rule and peers per rule a group may have.
inline constexpr std::size_t kMaxSecurityGroupRules = 64;
inline constexpr std::size_t kMaxRulePorts = 32;
inline constexpr std::size_t kMaxRulePeers = 64;
// Most groups an attachment may be in.
inline constexpr std::size_t kMaxAttachmentGroups = 16;

}  // namespace kos::api
