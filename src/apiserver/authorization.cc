#include "apiserver/authorization.h"

#include <algorithm>

#include "api/names.h"
#include "api/selectors.h"
#include "api/types.h"

namespace kos::apiserver {
namespace {

bool is_read(const std::string& verb) { return verb == "get" || verb == "list" || verb == "watch"; }

bool has_group(const UserInfo& u, std::string_view g) {
  return std::find(u.groups.begin(), u.groups.end(), g) != u.groups.end();
}

bool is_kos(const Attributes& a) { return a.group == api::kGroup; }

// Paths every authenticated user may read: discovery, OpenAPI, version, health.
bool is_discovery_path(const std::string& path) {
  for (std::string_view p : {"/api", "/apis", "/openapi", "/version", "/healthz", "/livez", "/readyz"})
    if (path == p || (path.size() > p.size() && path.compare(0, p.size(), p) == 0 && path[p.size()] == '/'))
      return true;
  return false;
}

bool is_review(const Attributes& a) {
  return a.verb == "create" && ((a.group == "authentication.k8s.io" && a.resource == "selfsubjectreviews") ||
                                (a.group == "authorization.k8s.io" && a.resource == "selfsubjectaccessreviews"));
}

Decision allow(std::string why) { return {true, std::move(why)}; }
Decision deny(std::string why) { return {false, std::move(why)}; }

}  // namespace

std::string Role::to_string() const {
  switch (kind) {
    case Kind::kAdmin: return "admin";
    case Kind::kController: return "controller";
    case Kind::kViewer: return "viewer";
    case Kind::kTenant: return "tenant:" + scope;
    case Kind::kNode: return "node:" + scope;
  }
  return "?";
}

std::optional<std::string> node_of(const UserInfo& u) {
  if (!has_group(u, kNodesGroup) || u.name.size() <= kNodeUserPrefix.size() ||
      u.name.compare(0, kNodeUserPrefix.size(), kNodeUserPrefix) != 0)
    return std::nullopt;
  return u.name.substr(kNodeUserPrefix.size());
}

std::vector<Role> roles_of(const UserInfo& u) {
  std::vector<Role> r;
  if (has_group(u, kAdminsGroup)) r.push_back({Role::Kind::kAdmin, ""});
  if (has_group(u, kControllersGroup)) r.push_back({Role::Kind::kController, ""});
  if (has_group(u, kViewersGroup)) r.push_back({Role::Kind::kViewer, ""});
  if (auto n = node_of(u)) r.push_back({Role::Kind::kNode, *n});
  for (const auto& g : u.groups)
    if (g.size() > kTenantGroupPrefix.size() && g.compare(0, kTenantGroupPrefix.size(), kTenantGroupPrefix) == 0)
      r.push_back({Role::Kind::kTenant, g.substr(kTenantGroupPrefix.size())});
  return r;
}

bool is_admin_or_controller(const UserInfo& u) {
  return has_group(u, kAdminsGroup) || has_group(u, kControllersGroup);
}

Result<UserInfo> user_for_role(const std::string& role, const std::string& scope,
                               const std::string& user_name) {
  auto named = [&](std::string dflt) { return user_name.empty() ? dflt : user_name; };
  if (role == "admin") return UserInfo{named("kos-admin"), "", {std::string(kAdminsGroup)}};
  if (role == "controller")
    return UserInfo{named("kos-controller-manager"), "", {std::string(kControllersGroup)}};
  if (role == "viewer") return UserInfo{named("kos-viewer"), "", {std::string(kViewersGroup)}};
  if (role == "tenant") {
    if (!api::is_dns1123_label(scope))
      return fail(Errc::kBadRequest, "a tenant role needs a namespace (a DNS-1123 label), not \"" + scope + "\"");
    return UserInfo{named("tenant-" + scope), "", {std::string(kTenantGroupPrefix) + scope}};
  }
  if (role == "node") {
    if (scope.empty() || !api::is_dns1123_subdomain(scope))
      return fail(Errc::kBadRequest, "a node role needs a node name (a DNS-1123 subdomain), not \"" + scope + "\"");
    if (!user_name.empty())
      return fail(Errc::kBadRequest, "a node's user name is kos:node:NAME; do not give one");
    return UserInfo{std::string(kNodeUserPrefix) + scope, "", {std::string(kNodesGroup)}};
  }
  return fail(Errc::kBadRequest, "unknown role \"" + role + "\": use admin, controller, viewer, tenant or node");
}

Decision Authorizer::node_rule(const std::string& node, const Attributes& a) const {
  if (!a.resource_request) return deny("nodes may read only discovery paths");
  if (a.group.empty() && a.resource == "events") {
    if (a.verb == "create" || a.verb == "patch" || a.verb == "update" || a.verb == "get")
      return allow("nodes may record events");
    return deny("nodes may only create and update events");
  }
  if (!is_kos(a)) return deny("nodes may not use " + a.resource);
  if (a.resource == "subnets" || a.resource == "securitygroups") {
    if (is_read(a.verb) && a.subresource.empty()) return allow("nodes may read " + a.resource);
    return deny("nodes may not change " + a.resource);
  }
  if (a.resource != "networkattachments") return deny("nodes may not use " + a.resource);
  if (a.subresource == "status") {
    if (a.verb == "update" || a.verb == "patch" || a.verb == "get")
      return allow("nodes may write the status of their own attachments (checked on the object)");
    return deny("nodes may only read and write the status of their own attachments");
  }
  if (!a.subresource.empty()) return deny("nodes may not use networkattachments/" + a.subresource);
  if (a.verb == "get") return allow("nodes may read attachments");
  if (a.verb == "create" || a.verb == "delete")
    return allow("nodes may create and delete their own attachments (checked on the object)");
  if (a.verb == "list" || a.verb == "watch") {
    // Only the agent's selectors: its own attachments, or the remote attachments of a VNI
    // it hosts.
    std::optional<api::FieldSelector> sel;
    if (a.field_selector)
      if (auto s = api::FieldSelector::parse(*a.field_selector)) sel = std::move(*s);
    if (sel) {
      if (auto n = sel->exact_value("spec.node"); n && *n == node)
        return allow("nodes may list and watch their own attachments");
      if (auto v = sel->exact_value("status.addressVNI")) {
        if (hosts_vni_ && hosts_vni_(node, "status.addressVNI", *v))
          return allow("nodes may list and watch the attachments of the VNIs they host");
        return deny("node " + node + " hosts no attachment on VNI " + *v +
                    ": nodes may list and watch only the attachments of the VNIs they host");
      }
      if (auto v = sel->exact_value("status.routingVNI")) {
        if (hosts_vni_ && hosts_vni_(node, "status.routingVNI", *v))
          return allow("nodes may list and watch the attachments of the VPCs they host");
        return deny("node " + node + " hosts no attachment in the VPC of routing VNI " + *v +
                    ": nodes may list and watch only the attachments of the VPCs they host");
      }
    }
    return deny("nodes may list and watch attachments only with fieldSelector spec.node=" + node +
                " (their own), status.addressVNI=VNI (a VNI they host) or status.routingVNI=VNI "
                "(a VPC they host)");
  }
  return deny("nodes may write only the status of their own attachments, and create and "
              "delete their own attachments");
}

Decision Authorizer::authorize(const Attributes& a) const {
  if (!a.resource_request && is_discovery_path(a.path) && (a.verb == "get" || a.verb == "head"))
    return allow("every user may read discovery");
  if (a.resource_request && is_review(a)) return allow("every user may review itself");
  const auto roles = roles_of(a.user);
  if (roles.empty())
    return deny("the user has no KOS role (groups kos:admins, kos:controllers, kos:viewers, "
                "kos:tenant:NS, or a node's kos:node:NAME in kos:nodes)");
  Decision last = deny("no role allows it");
  for (const auto& r : roles) {
    Decision d;
    switch (r.kind) {
      case Role::Kind::kAdmin:
        return allow("admin may do everything");
      case Role::Kind::kViewer:
        d = is_read(a.verb) || (!a.resource_request && a.path == "/metrics" && a.verb == "get")
                ? allow("viewers may read everything")
                : deny("viewers may only read");
        break;
      case Role::Kind::kController:
        if (!a.resource_request)
          d = a.path == "/metrics" && a.verb == "get" ? allow("controllers may read metrics")
                                                       : deny("controllers may not use " + a.path);
        else if (is_kos(a) || (a.group.empty() && a.resource == "events") ||
                 (a.group == "coordination.k8s.io" && a.resource == "leases") ||
                 (a.group.empty() && a.resource == "namespaces" && is_read(a.verb)))
          d = allow("controllers may manage KOS objects, leases and events");
        else
          d = deny("controllers may not use " + a.resource);
        break;
      case Role::Kind::kTenant:
        if (!a.resource_request) {
          d = deny("tenants may read only discovery paths");
        } else if (a.ns != r.scope) {
          d = deny("tenant " + r.scope + " may use namespace " + r.scope + " only" +
                   (a.ns.empty() ? " (name it: -n " + r.scope + ")" : ", not \"" + a.ns + "\""));
        } else if (a.group.empty() && a.resource == "namespaces") {
          d = is_read(a.verb) ? allow("tenants may read their namespace") : deny("tenants may not change namespaces");
        } else if (is_kos(a) && (a.resource == "subnets" || a.resource == "networkattachments" ||
                                 a.resource == "vpcs" || a.resource == "securitygroups")) {
          d = a.subresource.empty() ? allow("tenants may manage the VPCs, subnets, attachments and security groups of their namespace")
                                    : deny("tenants may not write or read " + a.resource + "/" + a.subresource);
        } else if ((is_kos(a) && a.resource == "iplocks") || (a.group.empty() && a.resource == "events")) {
          d = is_read(a.verb) ? allow("tenants may read the " + a.resource + " of their namespace")
                              : deny("tenants may only read " + a.resource);
        } else {
          d = deny("tenants may not use " + a.resource);
        }
        break;
      case Role::Kind::kNode:
        d = node_rule(r.scope, a);
        break;
    }
    if (d.allowed) return d;
    last = d;
  }
  return last;
}

}  // namespace kos::apiserver
