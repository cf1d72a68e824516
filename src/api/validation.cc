#include "api/validation.h"

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "api/cidr.h"
#include "api/names.h"

namespace kos::api {
namespace {

constexpr std::size_t kMaxAnnotationBytes = 256 * 1024;  // Kubernetes' limit

// A value as Kubernetes shows it after "Invalid value: ": strings quoted and escaped.
std::string show(std::string_view s) {
  constexpr std::size_t kMax = 100;
  std::string out = "\"";
  for (char c : s.substr(0, kMax)) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out + (s.size() > kMax ? "...\"" : "\"");
}

std::string show(const std::vector<std::string>& v) {
  std::string out = "[";
  for (const auto& s : v) out += (out.size() > 1 ? "," : "") + show(s);
  return out + "]";
}

// The part of a parse error after the quoted input (cidr.h/names.h messages have the
// form `invalid X "input": detail`), since "Invalid value: ..." already shows the input.
std::string detail_of(const Error& e) {
  const std::size_t pos = e.message.find("\": ");
  return pos == std::string::npos ? e.message : e.message.substr(pos + 3);
}

class Causes {
 public:
  void required(std::string field, std::string_view detail = {}) {
    add("FieldValueRequired", std::move(field),
        detail.empty() ? "Required value" : "Required value: " + std::string(detail));
  }
  void invalid(std::string field, const std::string& shown, std::string_view detail) {
    add("FieldValueInvalid", std::move(field),
        "Invalid value: " + shown + ": " + std::string(detail));
  }
  void immutable(std::string field, const std::string& shown) {
    invalid(std::move(field), shown, "field is immutable");
  }
  void too_long(std::string field, std::size_t max_bytes) {
    add("FieldValueTooLong", std::move(field),
        "Too long: must have at most " + std::to_string(max_bytes) + " bytes");
  }

  // `Kind.group "name" is invalid: f: m` or `...: [f1: m1, f2: m2]`, as Kubernetes.
  Result<void> result(Kind kind, std::string_view name) && {
    if (causes_.empty()) return {};
    std::string all;
    for (const auto& c : causes_) all += (all.empty() ? "" : ", ") + c.field + ": " + c.message;
    if (causes_.size() > 1) all = "[" + all + "]";
    std::string message = std::string(kind_info(kind).name) + "." + std::string(kGroup) + " \"" +
                          std::string(name) + "\" is invalid: " + all;
    return fail(Error{Errc::kInvalid, std::move(message), std::move(causes_)});
  }

 private:
  void add(std::string reason, std::string field, std::string message) {
    causes_.push_back(FieldCause{std::move(reason), std::move(message), std::move(field)});
  }
  std::vector<FieldCause> causes_;
};

// A reference to another object by name (NA spec.subnet, spec.node, ...).
void check_name_ref(Causes& c, const std::string& field, const std::string& value) {
  if (value.empty()) {
    c.required(field);
  } else if (auto e = dns1123_subdomain_error(value)) {
    c.invalid(field, show(value), *e);
  }
}

void check_meta(Causes& c, const ObjectMeta& m, Kind kind) {
  if (m.name.empty()) {
    c.required("metadata.name", "name or generateName is required");
  } else if (kind == Kind::kIPLock) {
    if (auto r = parse_iplock_name(m.name); !r) {
      c.invalid("metadata.name", show(m.name), detail_of(r.error()));
    }
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

void check(Causes& c, const Subnet& s) {
  check_meta(c, s.metadata, Kind::kSubnet);
  if (s.spec.vni < 1 || s.spec.vni > kMaxVni) {
    c.invalid("spec.vni", std::to_string(s.spec.vni),
              "must be in the range 1.." + std::to_string(kMaxVni));
  }
  if (s.spec.ipv4.empty()) {
    c.required("spec.ipv4");
  } else if (auto cidr = parse_cidr(s.spec.ipv4); !cidr) {
    c.invalid("spec.ipv4", show(s.spec.ipv4), detail_of(cidr.error()));
  } else if (!in_private_ranges(*cidr)) {
    c.invalid("spec.ipv4", show(s.spec.ipv4),
              "must be inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16");
  }
}

void check_exec(Causes& c, const std::string& field, const std::vector<std::string>& command) {
  if (!command.empty() && command.front().empty()) c.required(field + "[0]", "the program to run");
}

void check(Causes& c, const NetworkAttachment& na) {
  check_meta(c, na.metadata, Kind::kNetworkAttachment);
  check_name_ref(c, "spec.node", na.spec.node);
  check_name_ref(c, "spec.subnet", na.spec.subnet);
  check_exec(c, "spec.postCreateExec", na.spec.post_create_exec);
  check_exec(c, "spec.postDeleteExec", na.spec.post_delete_exec);
  // Status is written by trusted controllers; these checks keep a buggy one from
  // publishing values that every agent would then have to reject.
  const NetworkAttachmentStatus& st = na.status;
  if (!st.ipv4.empty()) {
    if (auto ip = parse_ipv4(st.ipv4); !ip) {
      c.invalid("status.ipv4", show(st.ipv4), detail_of(ip.error()));
    }
  }
  if (st.address_vni > kMaxVni) {
    c.invalid("status.addressVNI", std::to_string(st.address_vni),
              "must be in the range 0.." + std::to_string(kMaxVni));
  }
  if (!st.mac_address.empty()) {
    if (auto mac = parse_mac(st.mac_address); !mac) {
      c.invalid("status.macAddress", show(st.mac_address), detail_of(mac.error()));
    }
  }
}

void check(Causes& c, const IPLock& l) {
  check_meta(c, l.metadata, Kind::kIPLock);
  check_name_ref(c, "spec.subnetName", l.spec.subnet_name);
}

void check_update(Causes& c, const Subnet& o, const Subnet& n) {
  if (n.spec.vni != o.spec.vni) c.immutable("spec.vni", std::to_string(n.spec.vni));
  if (n.spec.ipv4 != o.spec.ipv4) c.immutable("spec.ipv4", show(n.spec.ipv4));
}

void check_update(Causes& c, const NetworkAttachment& o, const NetworkAttachment& n) {
  if (n.spec.node != o.spec.node) c.immutable("spec.node", show(n.spec.node));
  if (n.spec.subnet != o.spec.subnet) c.immutable("spec.subnet", show(n.spec.subnet));
  if (n.spec.post_create_exec != o.spec.post_create_exec) {
    c.immutable("spec.postCreateExec", show(n.spec.post_create_exec));
  }
}

void check_update(Causes& c, const IPLock& o, const IPLock& n) {
  if (n.spec.subnet_name != o.spec.subnet_name) {
    c.immutable("spec.subnetName", show(n.spec.subnet_name));
  }
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
