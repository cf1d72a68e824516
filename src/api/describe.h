// One description per kind. A kind's fields (JSON names, types, documentation), which of
// them are required, immutable and selectable, the section of the object each belongs
// to, the kind's own validation rules, its table columns and its documentation are
// written once, in src/api/kinds/<kind>.cc. The JSON codec (json.cc), validation
// (validation.cc), field selectors (selectors.cc), the API server's strategies and its
// OpenAPI document all work from the description, so a new kind is its struct in
// types.h (with its Kind, KindInfo and AnyObject entries), one description file and its
// declaration below.
//
// Descriptions are built on first use and never change; any thread may read them.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include "api/causes.h"
#include "api/decoder.h"
#include "api/selectors.h"
#include "api/types.h"

namespace kos::api {

enum class FieldType { kString, kInteger, kBoolean, kStringList, kTime, kObject, kObjectList };

struct StructInfo;

// What a field is, whatever struct it is in: enough to document it.
struct FieldInfo {
  std::string_view name{};  // the JSON name; filled in by field()
  FieldType type = FieldType::kString;  // filled in by field()
  std::string description{};
  std::string_view format{};  // OpenAPI format of integers: "int32", "int64"
  // Integers: the valid range (checked by validation, published in the schema).
  std::optional<std::int64_t> minimum{};
  std::optional<std::int64_t> maximum{};
  bool required = false;    // strings and lists: a create without it is invalid
  bool immutable = false;   // an update that changes it is invalid
  bool selectable = false;  // field selectors may name it ("spec.vni")
  bool always = false;      // encoded even when empty (a Go JSON tag without omitempty)
  // The ExtendedObjectMeta section a change of the field belongs to; empty: the
  // section of the struct it is in.
  std::string_view section{};
  const StructInfo* nested = nullptr;  // kObject, kObjectList: the nested struct's description
};

// What a struct is: its OpenAPI definition.
struct StructInfo {
  std::string name;  // "SubnetSpec": the OpenAPI definition's last name part
  std::string description;
  std::vector<const FieldInfo*> fields;  // in JSON encoding order
};

template <class S>
struct Field : FieldInfo {
  std::function<void(detail::Decoder&, const boost::json::value&, const std::string& path, S&)>
      decode;
  std::function<void(boost::json::object&, const S&)> encode;
  std::function<bool(const S&, const S&)> equal;
  // Field selectors: strings as they are, numbers in decimal, string lists as a list value
  // (selectors.h).
  std::function<std::string(const S&)> text;
  // Error messages: as Kubernetes shows values after "Invalid value: ".
  std::function<std::string(const S&)> shown;
  // A `kubectl get` cell: numbers and booleans as they are, lists joined with "; ".
  std::function<boost::json::value(const S&)> cell;
  // Validation of a create: required, range, the field's own rule, nested fields.
  std::function<void(Causes&, const FieldPath& path, const S&)> check;
  // Adds the sections whose fields differ between old (nullptr: a new object) and new.
  std::function<void(const S* old_s, const S& new_s, std::string_view section,
                     std::vector<std::string_view>& out)>
      sections;
};

template <class S>
class StructDesc : public StructInfo {
 public:
  StructDesc(std::string name, std::string description, std::vector<Field<S>> fields)
      : StructInfo{std::move(name), std::move(description), {}}, all_(std::move(fields)) {
    for (const auto& f : all_) StructInfo::fields.push_back(&f);
  }
  StructDesc(const StructDesc&) = delete;
  StructDesc& operator=(const StructDesc&) = delete;

  const std::vector<Field<S>>& all() const { return all_; }
  const Field<S>* find(std::string_view name) const {
    for (const auto& f : all_) {
      if (f.name == name) return &f;
    }
    return nullptr;
  }

 private:
  std::vector<Field<S>> all_;
};

// A rule of one field beyond its type, required and range: adds causes for a bad value.
// Runs only on non-empty values.
template <class V>
using FieldRule = std::function<void(Causes&, const FieldPath& path, const V&)>;

namespace describe_detail {

inline std::string path_of(std::string_view prefix, std::string_view name) {
  return prefix.empty() ? std::string(name) : std::string(prefix) + "." + std::string(name);
}

inline void add_section(std::vector<std::string_view>& out, std::string_view s) {
  for (auto x : out) {
    if (x == s) return;
  }
  out.push_back(s);
}

template <class V>
constexpr FieldType field_type() {
  if constexpr (std::is_same_v<V, std::string>) return FieldType::kString;
  else if constexpr (std::is_same_v<V, bool>) return FieldType::kBoolean;
  else if constexpr (std::is_integral_v<V>) return FieldType::kInteger;
  else if constexpr (std::is_same_v<V, std::vector<std::string>>) return FieldType::kStringList;
  else if constexpr (std::is_same_v<V, MicroTime>) return FieldType::kTime;
  else static_assert(sizeof(V) == 0, "a field of a type describe.h does not handle");
}

template <class V>
bool is_zero(const V& v) {
  if constexpr (std::is_same_v<V, bool>) return !v;
  else if constexpr (std::is_integral_v<V>) return v == 0;
  else if constexpr (std::is_same_v<V, MicroTime>) return v == MicroTime{};
  else return v.empty();
}

template <class V>
boost::json::value to_value(const V& v) {
  if constexpr (std::is_same_v<V, std::string>) return boost::json::value(v);
  else if constexpr (std::is_same_v<V, bool>) return boost::json::value(v);
  else if constexpr (std::is_integral_v<V>) return boost::json::value(v);
  else if constexpr (std::is_same_v<V, MicroTime>) return boost::json::value(format_micro_time(v));
  else {
    boost::json::array a;
    a.reserve(v.size());
    for (const auto& s : v) a.emplace_back(s);
    return a;
  }
}

template <class V>
std::string text_of(const V& v) {
  if constexpr (std::is_same_v<V, std::string>) return v;
  else if constexpr (std::is_same_v<V, bool>) return v ? "true" : "false";
  else if constexpr (std::is_integral_v<V>) return std::to_string(v);
  else if constexpr (std::is_same_v<V, MicroTime>) return is_zero(v) ? "" : format_micro_time(v);
  else {
    std::string out;
    for (const auto& s : v) out += (out.empty() ? "" : "; ") + s;
    return out;
  }
}

template <class V>
std::string shown_of(const V& v) {
  if constexpr (std::is_same_v<V, std::string> || std::is_same_v<V, std::vector<std::string>>)
    return show(v);
  else return text_of(v);
}

}  // namespace describe_detail

// A field of scalar or string-list type: `field("vni", &SubnetSpec::vni, {...}, rule)`.
template <class S, class V>
Field<S> field(std::string_view name, V S::*member, FieldInfo info, FieldRule<V> rule = {}) {
  namespace dd = describe_detail;
  Field<S> f;
  static_cast<FieldInfo&>(f) = std::move(info);
  f.name = name;
  f.type = dd::field_type<V>();
  const bool always = f.always;
  f.decode = [member](detail::Decoder& d, const boost::json::value& v, const std::string& path,
                      S& s) { d.read(v, path, s.*member); };
  f.encode = [member, name, always](boost::json::object& o, const S& s) {
    if (!always && dd::is_zero(s.*member)) return;
    if constexpr (std::is_same_v<V, std::string> || std::is_arithmetic_v<V>) o.emplace(name, s.*member);
    else o.emplace(name, dd::to_value(s.*member));
  };
  f.equal = [member](const S& a, const S& b) { return a.*member == b.*member; };
  if constexpr (std::is_same_v<V, std::vector<std::string>>) {
    // A selectable list: selectors.h's list value (kListMark before each element).
    f.text = [member](const S& s) {
      std::string out;
      for (const auto& e : s.*member) out.append(1, kListMark).append(e);
      return out;
    };
  } else {
    f.text = [member](const S& s) { return dd::text_of(s.*member); };
  }
  f.shown = [member](const S& s) { return dd::shown_of(s.*member); };
  f.cell = [member](const S& s) -> boost::json::value {
    if constexpr (std::is_arithmetic_v<V>) return s.*member;
    else return boost::json::value(dd::text_of(s.*member));
  };
  const bool required = f.required;
  const auto minimum = f.minimum, maximum = f.maximum;
  f.check = [member, required, minimum, maximum, rule](Causes& c, const FieldPath& path,
                                                       const S& s) {
    const V& v = s.*member;
    if constexpr (std::is_integral_v<V> && !std::is_same_v<V, bool>) {
      const auto x = static_cast<std::int64_t>(v);
      if ((minimum && x < *minimum) || (maximum && x > *maximum)) {
        c.invalid(path, std::to_string(v),
                  "must be in the range " + std::to_string(minimum.value_or(0)) + ".." +
                      (maximum ? std::to_string(*maximum) : std::string("")));
        return;
      }
    } else {
      if (dd::is_zero(v)) {
        if (required) c.required(path);
        return;
      }
    }
    if (rule) rule(c, path, v);
  };
  f.sections = [member](const S* o, const S& n, std::string_view section,
                        std::vector<std::string_view>& out) {
    if (o ? !(o->*member == n.*member) : !dd::is_zero(n.*member)) dd::add_section(out, section);
  };
  return f;
}

// A nested struct (`N S::*`) or an optional one (`std::optional<N> S::*`, absent: null).
// A nested struct that is empty is omitted unless `always`.
template <class S, class M, class N>
Field<S> object_field(std::string_view name, M S::*member, const StructDesc<N>& nested,
                      FieldInfo info);

// A list of nested structs (`std::vector<N> S::*`), each element checked at path[i].
// `rule` runs on each element after its fields' checks.
template <class S, class N>
Field<S> list_field(std::string_view name, std::vector<N> S::*member, const StructDesc<N>& nested,
                    FieldInfo info,
                    std::type_identity_t<std::function<void(Causes&, const std::string& path, const N&)>> rule = {});

// ---- operations on described structs ----

template <class S>
void decode_struct(detail::Decoder& d, const boost::json::value& v, const std::string& path,
                   const StructDesc<S>& desc, S& s) {
  detail::for_each_field(d, v, path,
                         [&](std::string_view k, const boost::json::value& val,
                             const std::string& p) {
                           if (const Field<S>* f = desc.find(k)) f->decode(d, val, p, s);
                           else d.unknown(p);
                         });
}

template <class S>
boost::json::object encode_struct(const StructDesc<S>& desc, const S& s) {
  boost::json::object o;
  o.reserve(desc.all().size());
  for (const auto& f : desc.all()) f.encode(o, s);
  return o;
}

template <class S>
void check_struct(Causes& c, std::string_view prefix, const StructDesc<S>& desc, const S& s) {
  for (const auto& f : desc.all()) f.check(c, FieldPath{prefix, f.name}, s);
}

// An update that changes an immutable field (top-level fields of the struct).
template <class S>
void check_immutable(Causes& c, std::string_view prefix, const StructDesc<S>& desc,
                     const S& old_s, const S& new_s) {
  for (const auto& f : desc.all()) {
    if (f.immutable && !f.equal(old_s, new_s)) {
      c.immutable(describe_detail::path_of(prefix, f.name), f.shown(new_s));
    }
  }
}

template <class S>
void struct_sections(const StructDesc<S>& desc, const S* old_s, const S& new_s,
                     std::string_view section, std::vector<std::string_view>& out) {
  for (const auto& f : desc.all()) {
    f.sections(old_s, new_s, f.section.empty() ? section : f.section, out);
  }
}

template <class S, class M, class N>
Field<S> object_field(std::string_view name, M S::*member, const StructDesc<N>& nested,
                      FieldInfo info) {
  namespace dd = describe_detail;
  constexpr bool kOptional = std::is_same_v<M, std::optional<N>>;
  static_assert(kOptional || std::is_same_v<M, N>);
  Field<S> f;
  static_cast<FieldInfo&>(f) = std::move(info);
  f.name = name;
  f.type = FieldType::kObject;
  f.nested = &nested;
  const StructDesc<N>* n = &nested;
  const bool always = f.always;
  auto get = [member](const S& s) -> const N* {
    if constexpr (kOptional) return (s.*member) ? &*(s.*member) : nullptr;
    else return &(s.*member);
  };
  f.decode = [member, n](detail::Decoder& d, const boost::json::value& v, const std::string& path,
                         S& s) {
    if constexpr (kOptional) {
      if (v.is_null()) {
        (s.*member).reset();
        return;
      }
      decode_struct(d, v, path, *n, (s.*member).emplace());
    } else {
      decode_struct(d, v, path, *n, s.*member);
    }
  };
  f.encode = [get, n, name, always](boost::json::object& o, const S& s) {
    const N* x = get(s);
    if (!x) return;
    boost::json::object j = encode_struct(*n, *x);
    if (always || kOptional || !j.empty()) o.emplace(name, std::move(j));
  };
  f.equal = [member](const S& a, const S& b) { return a.*member == b.*member; };
  f.text = [](const S&) { return std::string(); };
  f.shown = [](const S&) { return std::string("{...}"); };
  f.cell = [](const S&) { return boost::json::value(""); };
  f.check = [get, n](Causes& c, const FieldPath& path, const S& s) {
    if (const N* x = get(s)) check_struct(c, path.str(), *n, *x);
  };
  f.sections = [get, n, member](const S* o, const S& s, std::string_view section,
                                std::vector<std::string_view>& out) {
    const N* x = get(s);
    const N* old_x = o ? get(*o) : nullptr;
    if constexpr (kOptional) {
      // Appearing or going away is a change of the whole section.
      if (o ? !((*o).*member == s.*member) : x != nullptr) dd::add_section(out, section);
    } else {
      struct_sections(*n, old_x, *x, section, out);
    }
  };
  return f;
}

template <class S, class N>
Field<S> list_field(std::string_view name, std::vector<N> S::*member, const StructDesc<N>& nested,
                    FieldInfo info,
                    std::type_identity_t<std::function<void(Causes&, const std::string& path, const N&)>> rule) {
  namespace dd = describe_detail;
  Field<S> f;
  static_cast<FieldInfo&>(f) = std::move(info);
  f.name = name;
  f.type = FieldType::kObjectList;
  f.nested = &nested;
  const StructDesc<N>* n = &nested;
  const bool always = f.always, required = f.required;
  f.decode = [member, n](detail::Decoder& d, const boost::json::value& v, const std::string& path,
                         S& s) {
    detail::read_list(d, v, path, s.*member,
                      [&](const boost::json::value& e, const std::string& p, N& x) {
                        decode_struct(d, e, p, *n, x);
                      });
  };
  f.encode = [member, n, name, always](boost::json::object& o, const S& s) {
    if (!always && (s.*member).empty()) return;
    boost::json::array a;
    a.reserve((s.*member).size());
    for (const auto& x : s.*member) a.emplace_back(encode_struct(*n, x));
    o.emplace(name, std::move(a));
  };
  f.equal = [member](const S& a, const S& b) { return a.*member == b.*member; };
  f.text = [](const S&) { return std::string(); };
  f.shown = [](const S&) { return std::string("[...]"); };
  f.cell = [member](const S& s) { return boost::json::value(std::to_string((s.*member).size())); };
  f.check = [member, n, required, rule](Causes& c, const FieldPath& path, const S& s) {
    const auto& v = s.*member;
    if (v.empty()) {
      if (required) c.required(path);
      return;
    }
    const std::string p = path.str();
    for (std::size_t i = 0; i < v.size(); ++i) {
      const std::string ep = p + "[" + std::to_string(i) + "]";
      check_struct(c, ep, *n, v[i]);
      if (rule) rule(c, ep, v[i]);
    }
  };
  f.sections = [member](const S* o, const S& s, std::string_view section,
                        std::vector<std::string_view>& out) {
    if (o ? !((*o).*member == s.*member) : !(s.*member).empty()) dd::add_section(out, section);
  };
  return f;
}

// ---- kinds ----

// Each kind's status type; NoStatus for a kind without one (IPLock).
struct NoStatus {
  bool operator==(const NoStatus&) const = default;
};
template <class T>
struct StatusOf {
  using type = NoStatus;
};
template <class T>
  requires requires(T t) { t.status; }
struct StatusOf<T> {
  using type = decltype(T::status);
};
template <class T>
using SpecOf = decltype(T::spec);

// A column of `kubectl get` between Name (first) and Age (last), which every kind has:
// a field of the kind (field_column), or a cell computed from the object.
template <class T>
struct Column {
  std::string name;
  std::string type;  // "string", "integer", "boolean" (a field column: the field's)
  std::string description;
  int priority = 0;  // 1: only with -o wide
  std::function<boost::json::value(const T&)> cell;  // a field column: set by finish()
  std::string field{};  // "spec.vni": the column shows that field
};

template <class T>
Column<T> field_column(std::string name, std::string field, std::string description, int priority = 0) {
  return Column<T>{std::move(name), {}, std::move(description), priority, {}, std::move(field)};
}

// What code that does not know the kind's type reads (OpenAPI, discovery, indexes).
struct KindDescBase {
  Kind kind;
  std::string description;         // the kind's documentation (kubectl explain)
  std::string spec_description;    // of its "spec" property
  std::string status_description;  // of its "status" property; kinds with status only
  const StructInfo* spec = nullptr;
  const StructInfo* status = nullptr;  // nullptr: the kind has no status
  // Fields the API server's watch cache indexes watchers and lists by.
  std::vector<std::string_view> indexed_fields;
  // Names unique across namespaces (one holder per address: IPLock).
  bool cluster_unique_names = false;
  // The ExtendedObjectMeta sections of the kind, in the order writes are recorded.
  std::vector<std::string_view> sections;
  // metadata.name, metadata.namespace, then the selectable fields of spec and status.
  std::vector<std::string> selectable;
};

template <class T>
struct KindDesc : KindDescBase {
  using Spec = SpecOf<T>;
  using Status = typename StatusOf<T>::type;
  const StructDesc<Spec>* spec_desc = nullptr;
  const StructDesc<Status>* status_desc = nullptr;
  // The rule for metadata.name when it is not a DNS-1123 subdomain (IPLock names): the
  // detail of a bad name, or nullopt.
  std::function<std::optional<std::string>(std::string_view)> name_rule;
  // Rules across fields, after the fields' own checks.
  std::function<void(Causes&, const T&)> rules;
  std::vector<Column<T>> columns;

  // Fills the parts of KindDescBase that follow from the rest; call once built.
  void finish();
};

// The description of kind T; defined in src/api/kinds/.
template <class T>
const KindDesc<T>& describe();

template <>
const KindDesc<Subnet>& describe<Subnet>();
template <>
const KindDesc<NetworkAttachment>& describe<NetworkAttachment>();
template <>
const KindDesc<IPLock>& describe<IPLock>();
template <>
const KindDesc<Vpc>& describe<Vpc>();
template <>
const KindDesc<SecurityGroup>& describe<SecurityGroup>();

const KindDescBase& describe(Kind kind);

template <class T>
void KindDesc<T>::finish() {
  this->spec = spec_desc;
  this->status = status_desc;
  for (auto& c : columns) {
    if (c.field.empty()) continue;
    auto bind = [&c](const auto& desc, std::string_view name, auto part) {
      const auto* f = desc.find(name);
      if (!f) return;  // no cell: Describe.EveryKindIsDescribedCompletely fails
      c.type = f->type == FieldType::kInteger ? "integer" : f->type == FieldType::kBoolean ? "boolean" : "string";
      c.cell = [f, part](const T& x) { return f->cell(part(x)); };
    };
    const std::string_view path = c.field;
    if (path.starts_with("spec.")) {
      bind(*spec_desc, path.substr(5), [](const T& x) -> const Spec& { return x.spec; });
    } else if constexpr (requires(const T& x) { x.status; }) {
      if (path.starts_with("status."))
        bind(*status_desc, path.substr(7), [](const T& x) -> const Status& { return x.status; });
    }
  }
  this->selectable = {"metadata.name", "metadata.namespace"};
  for (const auto& f : spec_desc->all()) {
    if (f.selectable) this->selectable.push_back("spec." + std::string(f.name));
  }
  if (status_desc) {
    for (const auto& f : status_desc->all()) {
      if (f.selectable) this->selectable.push_back("status." + std::string(f.name));
    }
  }
}

// The value of a selectable field of obj ("spec.vni" -> "5"), nullopt if the kind has no
// such selectable field. metadata.name and metadata.namespace are the caller's.
template <class T>
std::optional<std::string> described_field_value(const T& obj, std::string_view path) {
  const KindDesc<T>& d = describe<T>();
  auto look = [&](const auto& desc, const auto& s,
                  std::string_view name) -> std::optional<std::string> {
    const auto* f = desc.find(name);
    if (!f || !f->selectable) return std::nullopt;
    return f->text(s);
  };
  if (path.starts_with("spec.")) return look(*d.spec_desc, obj.spec, path.substr(5));
  if constexpr (requires { obj.status; }) {
    if (path.starts_with("status.")) return look(*d.status_desc, obj.status, path.substr(7));
  }
  return std::nullopt;
}

}  // namespace kos::api
