#include "apiserver/admission.h"

#include "api/cidr.h"
#include "api/json.h"
#include "apiserver/authorization.h"

namespace kos::apiserver {
namespace json = boost::json;

namespace {

// `value` is shown as given: quote strings before passing them.
std::unexpected<Error> invalid(const api::Subnet& s, std::string field, std::string value,
                                      std::string why) {
  std::string msg = "Invalid value: " + value + ": " + why;
  return fail(Error{Errc::kInvalid,
                    "Subnet.network.example.com \"" + s.metadata.name + "\" is invalid: " +
                        field + ": " + msg,
                    {{"FieldValueInvalid", msg, field}}});
}

}  // namespace

Result<void> SubnetAdmission::admit(const json::object* old_obj, const json::object& obj) const {
  if (old_obj) return {};  // vni and ipv4 are immutable: checked at create only
  auto s = api::from_json<api::Subnet>(obj);
  if (!s) return fail(s.error());
  auto cidr = api::parse_cidr(s->spec.ipv4);
  if (!cidr) return {};
  auto sel = api::FieldSelector::parse("spec.vni=" + std::to_string(s->spec.vni));
  if (!sel) return {};
  auto same_vni = cache_.list("", api::LabelSelector{}, *sel);
  for (const auto& other : same_vni.items) {
    if (other->ns == s->metadata.namespace_ && other->name == s->metadata.name) continue;
    auto o = api::from_json<api::Subnet>(other->obj());
    if (!o) continue;
    std::string who = other->ns + "/" + other->name;
    if (other->ns != s->metadata.namespace_)
      return invalid(*s, "spec.vni", std::to_string(s->spec.vni) /* unquoted: a number */,
                     "VNI " + std::to_string(s->spec.vni) + " is already used by Subnet " + who +
                         " in another namespace");
    auto ocidr = api::parse_cidr(o->spec.ipv4);
    if (ocidr && cidr->overlaps(*ocidr))
      return invalid(*s, "spec.ipv4", "\"" + s->spec.ipv4 + "\"",
                     "CIDR overlaps with Subnet " + who + " (" + o->spec.ipv4 + ") on VNI " +
                         std::to_string(s->spec.vni));
  }
  for (const auto& [ns, n] : locks_.namespaces_with_name_prefix(
           "v1-" + std::to_string(s->spec.vni) + "-"))
    if (ns != s->metadata.namespace_)
      return invalid(*s, "spec.vni", std::to_string(s->spec.vni),
                     "VNI " + std::to_string(s->spec.vni) + " is still in use in namespace " + ns +
                         " (" + std::to_string(n) + " addresses held there)");
  return {};
}

// ---- the user's admission ------------------------------------------------------------------

namespace {

const json::object* object_at(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v ? v->if_object() : nullptr;
}

std::string string_at(const json::object* o, std::string_view key) {
  const auto* v = o ? o->if_contains(key) : nullptr;
  return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

// The status without what the agent owns: what a node may not change.
json::object status_not_owned_by_agent(const json::object& obj) {
  const auto* st = object_at(obj, "status");
  json::object out = st ? *st : json::object();
  for (std::string_view k : {"macAddress", "ifcName", "hostIP", "postCreateExecReport", "securityGroupsInForce"})
    out.erase(k);
  if (auto* e = out.if_contains("errors"); e && e->is_object()) {
    e->get_object().erase("host");
    if (e->get_object().empty()) out.erase("errors");
  }
  return out;
}

json::value exec_fields(const json::object& obj) {
  const auto* spec = object_at(obj, "spec");
  json::object out;
  for (std::string_view k : {"postCreateExec", "postDeleteExec"})
    if (const auto* v = spec ? spec->if_contains(k) : nullptr; v && !(v->is_array() && v->get_array().empty()))
      out[k] = *v;
  return out;
}

}  // namespace

std::unexpected<Error> UserAdmission::forbidden(const json::object& obj, const std::string& why) const {
  const auto* meta = object_at(obj, "metadata");
  std::string name = string_at(meta, "name");
  std::string what = info_.plural + (info_.group.empty() ? "" : "." + info_.group) +
                     (name.empty() ? "" : " \"" + name + "\"");
  return fail(Errc::kForbidden, what + " is forbidden: User \"" + user_.name + "\": " + why);
}

Result<void> UserAdmission::admit(const json::object* old_obj, const json::object& obj) const {
  if (is_admin_or_controller(user_)) {
    // Controllers never make nodes run programs.
    if (info_.group == api::kGroup && info_.plural == "networkattachments" &&
        !std::count(user_.groups.begin(), user_.groups.end(), std::string(kAdminsGroup)) &&
        exec_fields(obj) != (old_obj ? exec_fields(*old_obj) : json::value(json::object())))
      return forbidden(obj, "only admins and the attachment's node may set postCreateExec or postDeleteExec");
    return {};
  }
  if (info_.group != api::kGroup) return {};
  if (info_.plural == "networkattachments") return admit_attachment(old_obj, obj);
  // Subnets and IPLocks: the status (status.validated, errors) is the controllers'.
  const json::value empty = json::object();
  const json::value* before = old_obj ? old_obj->if_contains("status") : nullptr;
  const json::value* after = obj.if_contains("status");
  if (old_obj && (before ? *before : empty) != (after ? *after : empty))
    return forbidden(obj, "only admins and controllers may write the status of " + info_.plural +
                              " (status.validated, errors)");
  return {};
}

Result<void> UserAdmission::admit_attachment(const json::object* old_obj, const json::object& obj) const {
  const auto node = node_of(user_);
  const std::string obj_node = string_at(object_at(obj, "spec"), "node");
  if (node) {
    if (obj_node != *node)
      return forbidden(obj, "node " + *node + " may write only attachments whose spec.node is " + *node +
                                " (this one's is \"" + obj_node + "\")");
    if (old_obj && status_not_owned_by_agent(*old_obj) != status_not_owned_by_agent(obj))
      return forbidden(obj, "nodes may write only the agent's part of an attachment's status "
                            "(macAddress, ifcName, hostIP, errors.host, postCreateExecReport, "
                            "securityGroupsInForce), not "
                            "IPAM fields (ipv4, addressVNI, lockUID, addressContention, errors.ipam)");
    return {};
  }
  // Tenants (and anyone else): not the programs a node runs.
  if (exec_fields(obj) != (old_obj ? exec_fields(*old_obj) : json::value(json::object())))
    return forbidden(obj, "only admins and the attachment's node may set postCreateExec or postDeleteExec "
                          "(they make the node run a program)");
  return {};
}

Result<void> UserAdmission::admit_delete(const json::object& cur) const {
  if (info_.group != api::kGroup || info_.plural != "networkattachments") return {};
  const auto node = node_of(user_);
  if (!node || is_admin_or_controller(user_)) return {};
  const std::string obj_node = string_at(object_at(cur, "spec"), "node");
  if (obj_node != *node)
    return forbidden(cur, "node " + *node + " may delete only attachments whose spec.node is " + *node +
                              " (this one's is \"" + obj_node + "\")");
  return {};
}

}  // namespace kos::apiserver
