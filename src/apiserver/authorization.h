// Stage 3 of the request pipeline: may this user do this? KOS has fixed roles, read from
// the user's name and groups (so a client certificate or a token line carries its role):
//
//   admin            group kos:admins            everything
//   controller       group kos:controllers       Subnets (and status), IPLocks,
//                                                attachments (and status), leases, events
//   tenant:NS        group kos:tenant:NS         Subnets and attachments in NS (never their
//                                                status); read its IPLocks and events
//   node:NAME        user kos:node:NAME,         read Subnets and attachments (lists and
//                    group kos:nodes             watches only with the agent's selectors:
//                                                its own attachments, or the VNIs it hosts);
//                                                write the status of its attachments, create
//                                                and delete its attachments (the CNI path),
//                                                create events
//   viewer           group kos:viewers           read everything
//
// Every authenticated user may read discovery and OpenAPI, and ask who it is
// (SelfSubjectReview) and what it may do (SelfSubjectAccessReview). What depends on an
// object's content (a node's own attachments, who may set status.validated, IPAM fields or
// postCreateExec) is admission's (admission.h), which sees the objects.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "apiserver/authentication.h"

namespace kos::apiserver {

inline constexpr std::string_view kAdminsGroup = "kos:admins";
inline constexpr std::string_view kControllersGroup = "kos:controllers";
inline constexpr std::string_view kViewersGroup = "kos:viewers";
inline constexpr std::string_view kNodesGroup = "kos:nodes";
inline constexpr std::string_view kNodeUserPrefix = "kos:node:";
inline constexpr std::string_view kTenantGroupPrefix = "kos:tenant:";

struct Role {
  enum class Kind { kAdmin, kController, kTenant, kNode, kViewer };
  Kind kind;
  std::string scope;  // the namespace of a tenant, the name of a node
  std::string to_string() const;  // "admin", "tenant:NS", "node:NAME", ...
  bool operator==(const Role&) const = default;
};

// The roles a user holds (any number; a request is allowed if one role allows it).
std::vector<Role> roles_of(const UserInfo& user);
// The node a user is (node role), if any.
std::optional<std::string> node_of(const UserInfo& user);
bool is_admin_or_controller(const UserInfo& user);

// The user and groups that carry a role ("admin", "controller", "viewer", "tenant" with
// `scope` = namespace, "node" with `scope` = node name). Errors: kBadRequest.
Result<UserInfo> user_for_role(const std::string& role, const std::string& scope,
                               const std::string& user_name = "");

struct Attributes {
  UserInfo user;
  std::string verb;
  bool resource_request = false;
  std::string group, resource, subresource, ns, name;
  std::string path;  // non-resource requests
  std::optional<std::string> field_selector;  // lists and watches
};

struct Decision {
  bool allowed = false;
  std::string reason;  // why (the rule that allowed or the reason it is denied)
};

class Authorizer {
 public:
  // hosts_vni(node, field, vni): whether `node` has an attachment whose `field`
  // (status.addressVNI: addressed on that VNI; status.routingVNI: on a subnet of the VPC of
  // that VNI) is `vni`: the attachments a node's per-VNI and per-VPC watches may ask for.
  // Called only for node list/watch requests with such a selector.
  using HostsVni =
      std::function<bool(const std::string& node, const std::string& field, const std::string& vni)>;
  explicit Authorizer(HostsVni hosts_vni) : hosts_vni_(std::move(hosts_vni)) {}
  Decision authorize(const Attributes& a) const;

 private:
  Decision node_rule(const std::string& node, const Attributes& a) const;
  HostsVni hosts_vni_;
};

}  // namespace kos::apiserver
