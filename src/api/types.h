// The KOS object model (group network.example.com, version v1alpha1): plain value
// structs, one per JSON object. Members follow the Go struct order of the original
// KOS, which is also the order json.h encodes them in. Nothing here does I/O.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/error.h"

namespace kos::api {

inline constexpr std::string_view kGroup = "network.example.com";
inline constexpr std::string_view kVersion = "v1alpha1";
inline constexpr std::string_view kApiVersion = "network.example.com/v1alpha1";
// Discovery categories of every KOS resource (`kubectl get kos`, `kubectl get all`).
inline constexpr std::string_view kCategories[] = {"kos", "all"};

// Kubernetes metav1.Time: whole seconds, formatted "2006-01-02T15:04:05Z". As with Go's
// zero time, the zero value (the epoch) means "unset" and is not encoded.
using Time = std::chrono::sys_seconds;
// Kubernetes metav1.MicroTime: formatted "2006-01-02T15:04:05.000000Z"; zero = unset.
using MicroTime = std::chrono::sys_time<std::chrono::microseconds>;

std::string format_time(Time t);
std::string format_micro_time(MicroTime t);
// Both accept any RFC 3339 timestamp ("Z" or a numeric offset, optional fraction of up
// to 9 digits) and truncate towards the past to their precision. Errors are kInvalid.
Result<Time> parse_time(std::string_view s);
Result<MicroTime> parse_micro_time(std::string_view s);

struct OwnerReference {
  std::string api_version;
  std::string kind;
  std::string name;
  std::string uid;
  std::optional<bool> controller;
  std::optional<bool> block_owner_deletion;
  bool operator==(const OwnerReference&) const = default;
};

struct ObjectMeta {
  std::string name;
  std::string generate_name;
  std::string namespace_;
  std::string uid;
  std::string resource_version;  // opaque to clients; the store revision in decimal
  std::int64_t generation = 0;
  Time creation_timestamp{};
  std::optional<Time> deletion_timestamp;
  std::optional<std::int64_t> deletion_grace_period_seconds;
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> annotations;
  std::vector<OwnerReference> owner_references;
  std::vector<std::string> finalizers;
  bool operator==(const ObjectMeta&) const = default;
};

// Section names for ExtendedObjectMeta writes (see kos-api.md).
namespace section {
inline constexpr std::string_view kSpec = "spec";
inline constexpr std::string_view kStatus = "status";                 // Subnet
inline constexpr std::string_view kAddress = "status.address";        // NA, by IPAM
inline constexpr std::string_view kImpl = "status.impl";              // NA, by the agent
inline constexpr std::string_view kExecReport = "status.execReport";  // NA, by the agent
inline constexpr std::string_view kPolicy = "status.policy";          // NA, by the agent
}  // namespace section

struct ObjectWrite {
  std::string section;
  MicroTime server_time{};
  bool operator==(const ObjectWrite&) const = default;
};

// Server-written record of when each section last changed, for latency measurement.
// Encoded as the top-level field "extendedMetadata", a sibling of "metadata".
struct ExtendedObjectMeta {
  std::vector<ObjectWrite> writes;

  std::optional<MicroTime> write_time(std::string_view section) const;
  // Replaces any earlier write of `section`; the newest write goes first, as in the
  // original, so the list reads as a history.
  void set_write(std::string_view section, MicroTime server_time);
  bool operator==(const ExtendedObjectMeta&) const = default;
};

enum class Kind { kSubnet, kNetworkAttachment, kIPLock, kVpc, kSecurityGroup };

struct KindInfo {
  Kind kind;
  std::string_view name;        // "Subnet": the JSON "kind"
  std::string_view plural;      // "subnets": the URL resource
  std::string_view singular;    // "subnet"
  std::string_view short_name;  // "sn"
  bool has_status;              // serves the /status subresource
};

const KindInfo& kind_info(Kind kind);
std::span<const KindInfo> all_kinds();
std::optional<Kind> kind_from_plural(std::string_view plural);
std::optional<Kind> kind_from_name(std::string_view name);

struct SubnetSpec {
  std::string ipv4;  // CIDR, e.g. "10.1.2.0/24"
  std::uint32_t vni = 0;
  std::string vpc;  // the Vpc (same namespace) that routes it; empty: an isolated network
  bool operator==(const SubnetSpec&) const = default;
};

struct SubnetStatus {
  bool validated = false;
  std::vector<std::string> errors;
  // Subnets of a VPC, set with validated: the gateway address (the first usable), the
  // destinations routed through it, and the VPC's routing VNI.
  std::string gateway;
  std::vector<std::string> routes;
  std::uint32_t routing_vni = 0;
  bool operator==(const SubnetStatus&) const = default;
};

struct Subnet {
  static constexpr Kind kKind = Kind::kSubnet;
  ObjectMeta metadata;
  ExtendedObjectMeta extended_metadata;
  SubnetSpec spec;
  SubnetStatus status;
  bool operator==(const Subnet&) const = default;
};

struct NetworkAttachmentSpec {
  std::string node;
  std::string subnet;
  std::vector<std::string> post_create_exec;
  std::vector<std::string> post_delete_exec;
  std::vector<std::string> security_groups;  // SecurityGroups (same namespace) it is in
  bool operator==(const NetworkAttachmentSpec&) const = default;
};

struct NetworkAttachmentErrors {
  std::vector<std::string> ipam;
  std::vector<std::string> host;
  bool operator==(const NetworkAttachmentErrors&) const = default;
};

struct ExecReport {
  std::vector<std::string> command;
  std::int32_t exit_status = 0;  // negative: the command could not run (see std_err)
  MicroTime start_time{};
  MicroTime stop_time{};
  std::string std_out;
  std::string std_err;
  bool operator==(const ExecReport&) const = default;
};

struct SecurityGroupRevision {
  std::string name;
  std::string resource_version;
  bool operator==(const SecurityGroupRevision&) const = default;
};

struct NetworkAttachmentStatus {
  NetworkAttachmentErrors errors;
  bool address_contention = false;
  std::string lock_uid;
  std::uint32_t address_vni = 0;
  std::string ipv4;
  std::string mac_address;
  std::string ifc_name;
  std::string host_ip;
  std::optional<ExecReport> post_create_exec_report;
  // Attachments on a subnet of a VPC (written by IPAM with the address, from the Subnet's
  // status): the gateway, the subnet's prefix length, the routes through the gateway and
  // the VPC's routing VNI.
  std::string gateway;
  std::int32_t prefix_length = 0;
  std::vector<std::string> routes;
  std::uint32_t routing_vni = 0;
  // The SecurityGroups whose rules are in force on the attachment's node, each at the
  // resourceVersion the agent programmed (written by the agent).
  std::vector<SecurityGroupRevision> security_groups_in_force;
  bool operator==(const NetworkAttachmentStatus&) const = default;
};

struct NetworkAttachment {
  static constexpr Kind kKind = Kind::kNetworkAttachment;
  ObjectMeta metadata;
  ExtendedObjectMeta extended_metadata;
  NetworkAttachmentSpec spec;
  NetworkAttachmentStatus status;
  bool operator==(const NetworkAttachment&) const = default;
};

struct IPLockSpec {
  std::string subnet_name;
  bool operator==(const IPLockSpec&) const = default;
};

struct IPLock {
  static constexpr Kind kKind = Kind::kIPLock;
  ObjectMeta metadata;
  ExtendedObjectMeta extended_metadata;
  IPLockSpec spec;
  bool operator==(const IPLock&) const = default;
};

// A virtual private cloud: subnets that name it in spec.vpc are routed to each other, and
// to nothing else. Its VNI carries nothing itself: it names the VPC's routing domain.
struct VpcSpec {
  std::uint32_t vni = 0;
  std::vector<std::string> cidr_blocks;  // optional: where its subnets must lie
  bool operator==(const VpcSpec&) const = default;
};

struct VpcStatus {
  bool validated = false;
  std::vector<std::string> errors;
  std::int32_t subnet_count = 0;
  bool operator==(const VpcStatus&) const = default;
};

struct Vpc {
  static constexpr Kind kKind = Kind::kVpc;
  ObjectMeta metadata;
  ExtendedObjectMeta extended_metadata;
  VpcSpec spec;
  VpcStatus status;
  bool operator==(const Vpc&) const = default;
};

// Alternatives are in Kind order, so index() == static_cast<size_t>(kind).
// A security group: what its member attachments (those naming it in
// spec.securityGroups) may accept and send. Peers are CIDRs or other groups' members.
struct SecurityGroupPeer {
  std::string cidr;            // either this
  std::string security_group;  // or this: a group in the same namespace
  bool operator==(const SecurityGroupPeer&) const = default;
};

struct SecurityGroupIngressRule {
  std::string protocol;            // tcp, udp, icmp or any
  std::vector<std::string> ports;  // "N" or "N-M"; tcp and udp only; empty: all
  std::vector<SecurityGroupPeer> from;
  bool operator==(const SecurityGroupIngressRule&) const = default;
};

struct SecurityGroupEgressRule {
  std::string protocol;
  std::vector<std::string> ports;
  std::vector<SecurityGroupPeer> to;
  bool operator==(const SecurityGroupEgressRule&) const = default;
};

struct SecurityGroupSpec {
  std::vector<SecurityGroupIngressRule> ingress;
  std::vector<SecurityGroupEgressRule> egress;
  bool operator==(const SecurityGroupSpec&) const = default;
};

struct SecurityGroup {
  static constexpr Kind kKind = Kind::kSecurityGroup;
  ObjectMeta metadata;
  ExtendedObjectMeta extended_metadata;
  SecurityGroupSpec spec;
  bool operator==(const SecurityGroup&) const = default;
};

using AnyObject = std::variant<Subnet, NetworkAttachment, IPLock, Vpc, SecurityGroup>;

inline Kind kind_of(const AnyObject& o) { return static_cast<Kind>(o.index()); }
AnyObject make_object(Kind kind);  // a default-constructed object of that kind

inline ObjectMeta& meta(AnyObject& o) {
  return std::visit([](auto& x) -> ObjectMeta& { return x.metadata; }, o);
}
inline const ObjectMeta& meta(const AnyObject& o) {
  return std::visit([](const auto& x) -> const ObjectMeta& { return x.metadata; }, o);
}
inline ExtendedObjectMeta& extended_meta(AnyObject& o) {
  return std::visit([](auto& x) -> ExtendedObjectMeta& { return x.extended_metadata; }, o);
}
inline const ExtendedObjectMeta& extended_meta(const AnyObject& o) {
  return std::visit([](const auto& x) -> const ExtendedObjectMeta& { return x.extended_metadata; },
                    o);
}

}  // namespace kos::api
