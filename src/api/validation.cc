#include "api/validation.h"

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "api/cidr.h"
#include "api/causes.h"
#include "api/describe.h"
#include "api/names.h"

namespace kos::api {
namespace {

constexpr std::size_t kMaxAnnotationBytes = 256 * 1024;  // Kubernetes' limit

void check_meta(
    Causes& c, const ObjectMeta& m,
    const std::function<std::optional<std::string>(std::string_view)>& name_rule) {
  if (m.name.empty()) {
    c.required("metadata.name", "name or generateName is required");
  } else if (name_rule) {
    if (auto e = name_rule(m.name)) c.invalid("metadata.name", show(m.name), *e);
  } else if (auto e = dns1123_subdomain_error(m.name)) {
    c.invalid("metadata.name", show(m.name), *e);
  }
  if (!m.generate_name.empty()) {
    // A prefix may end in '-'; the random suffix follows it.
    std::string masked = m.generate_name;
    if (masked.back() == '-') masked.back() = 'a';
    if (auto e = dns1123_subdomain_error(masked)) {
      c.invalid("metadata.generateName", show(m.generate_name), *e);
    }
  }
  if (m.namespace_.empty()) {
    c.required("metadata.namespace");
  } else if (auto e = dns1123_label_error(m.namespace_)) {
    c.invalid("metadata.namespace", show(m.namespace_), *e);
  }
  if (m.generation < 0) {
    c.invalid("metadata.generation", std::to_string(m.generation),
              "must be greater than or equal to 0");
  }
  for (const auto& [key, value] : m.labels) {
    if (auto e = qualified_name_error(key)) c.invalid("metadata.labels", show(key), *e);
    if (auto e = label_value_error(value)) {
      c.invalid("metadata.labels[" + key + "]", show(value), *e);
    }
  }
  std::size_t annotation_bytes = 0;
  for (const auto& [key, value] : m.annotations) {
    // Kubernetes checks annotation keys case-insensitively.
    std::string lower = key;
    std::ranges::transform(lower, lower.begin(), [](unsigned char ch) { return std::tolower(ch); });
    if (auto e = qualified_name_error(lower)) c.invalid("metadata.annotations", show(key), *e);
    annotation_bytes += key.size() + value.size();
  }
  if (annotation_bytes > kMaxAnnotationBytes) {
    c.too_long("metadata.annotations", kMaxAnnotationBytes);
  }
  for (std::size_t i = 0; i < m.finalizers.size(); ++i) {
    if (auto e = qualified_name_error(m.finalizers[i])) {
      c.invalid("metadata.finalizers[" + std::to_string(i) + "]", show(m.finalizers[i]), *e);
    }
  }
  int controllers = 0;
  for (std::size_t i = 0; i < m.owner_references.size(); ++i) {
    const OwnerReference& r = m.owner_references[i];
    const std::string path = "metadata.ownerReferences[" + std::to_string(i) + "].";
    if (r.api_version.empty()) c.required(path + "apiVersion");
    if (r.kind.empty()) c.required(path + "kind");
    if (r.name.empty()) c.required(path + "name");
    if (r.uid.empty()) c.required(path + "uid");
    if (r.controller.value_or(false)) ++controllers;
  }
  if (controllers > 1) {
    c.invalid("metadata.ownerReferences", std::to_string(controllers) + " controllers",
              "only one reference can have controller set to true");
  }
}

void check_meta_update(Causes& c, const ObjectMeta& old_m, const ObjectMeta& new_m) {
  if (new_m.name != old_m.name) c.immutable("metadata.name", show(new_m.name));
  if (new_m.namespace_ != old_m.namespace_) {
    c.immutable("metadata.namespace", show(new_m.namespace_));
  }
  if (new_m.uid != old_m.uid) c.immutable("metadata.uid", show(new_m.uid));
}

template <class T>
void check(Causes& c, const T& obj) {
  const KindDesc<T>& desc = describe<T>();
  check_meta(c, obj.metadata, desc.name_rule);
  check_struct(c, "spec", *desc.spec_desc, obj.spec);
  // Status is written by trusted controllers; its checks keep a buggy one from
  // publishing values that every agent would then have to reject.
  if constexpr (requires { obj.status; }) check_struct(c, "status", *desc.status_desc, obj.status);
  if (desc.rules) desc.rules(c, obj);
}

template <class T>
void check_update(Causes& c, const T& o, const T& n) {
  check_immutable(c, "spec", *describe<T>().spec_desc, o.spec, n.spec);
}

template <class T>
Result<void> validate_one(const T& obj) {
  Causes c;
  check(c, obj);
  return std::move(c).result(T::kKind, obj.metadata.name);
}

template <class T>
Result<void> validate_one_update(const T& old_obj, const T& new_obj) {
  Causes c;
  check_meta_update(c, old_obj.metadata, new_obj.metadata);
  check_update(c, old_obj, new_obj);
  check(c, new_obj);
  return std::move(c).result(T::kKind, new_obj.metadata.name);
}

}  // namespace

Result<void> validate_subnet(const Subnet& obj) { return validate_one(obj); }
Result<void> validate_network_attachment(const NetworkAttachment& obj) { return validate_one(obj); }
Result<void> validate_iplock(const IPLock& obj) { return validate_one(obj); }

Result<void> validate_subnet_update(const Subnet& old_obj, const Subnet& new_obj) {
  return validate_one_update(old_obj, new_obj);
}
Result<void> validate_network_attachment_update(const NetworkAttachment& old_obj,
                                                const NetworkAttachment& new_obj) {
  return validate_one_update(old_obj, new_obj);
}
Result<void> validate_iplock_update(const IPLock& old_obj, const IPLock& new_obj) {
  return validate_one_update(old_obj, new_obj);
}

Result<void> validate(const AnyObject& obj) {
  return std::visit([](const auto& x) { return validate_one(x); }, obj);
}

Result<void> validate_update(const AnyObject& old_obj, const AnyObject& new_obj) {
  if (old_obj.index() != new_obj.index()) {
    return fail(Errc::kInternal, "validate_update: objects of different kinds");
  }
  return std::visit(
      [&](const auto& n) {
        using T = std::decay_t<decltype(n)>;
        return validate_one_update(std::get<T>(old_obj), n);
      },
      new_obj);
}

}  // namespace kos::api
