#include "api/json.h"

#include "api/decoder.h"
#include "api/describe.h"

#include <charconv>
#include <cmath>
#include <concepts>
#include <limits>
#include <utility>

#include <boost/json/parser.hpp>
#include <boost/json/serialize.hpp>

namespace kos::api {
namespace json = boost::json;
using namespace detail;
namespace {

void read_struct(Decoder& d, const json::value& v, const std::string& path, OwnerReference& r) {
  for_each_field(d, v, path, [&](std::string_view k, const json::value& val, const std::string& p) {
    if (k == "apiVersion") d.read(val, p, r.api_version);
    else if (k == "kind") d.read(val, p, r.kind);
    else if (k == "name") d.read(val, p, r.name);
    else if (k == "uid") d.read(val, p, r.uid);
    else if (k == "controller") d.read(val, p, r.controller);
    else if (k == "blockOwnerDeletion") d.read(val, p, r.block_owner_deletion);
    else d.unknown(p);
  });
}

void read_struct(Decoder& d, const json::value& v, const std::string& path, ObjectMeta& m) {
  for_each_field(d, v, path, [&](std::string_view k, const json::value& val, const std::string& p) {
    // Kubernetes ObjectMeta fields that clients echo back but KOS does not keep.
    if (k == "selfLink" || k == "managedFields") return;
    if (k == "name") d.read(val, p, m.name);
    else if (k == "generateName") d.read(val, p, m.generate_name);
    else if (k == "namespace") d.read(val, p, m.namespace_);
    else if (k == "uid") d.read(val, p, m.uid);
    else if (k == "resourceVersion") d.read(val, p, m.resource_version);
    else if (k == "generation") d.read(val, p, m.generation);
    else if (k == "creationTimestamp") d.read(val, p, m.creation_timestamp);
    else if (k == "deletionTimestamp") d.read(val, p, m.deletion_timestamp);
    else if (k == "deletionGracePeriodSeconds") d.read(val, p, m.deletion_grace_period_seconds);
    else if (k == "labels") d.read(val, p, m.labels);
    else if (k == "annotations") d.read(val, p, m.annotations);
    else if (k == "ownerReferences") {
      read_list(d, val, p, m.owner_references,
                [&](const json::value& e, const std::string& ep, OwnerReference& r) {
                  read_struct(d, e, ep, r);
                });
    } else if (k == "finalizers") d.read(val, p, m.finalizers);
    else d.unknown(p);
  });
}

void read_struct(Decoder& d, const json::value& v, const std::string& path, ExtendedObjectMeta& x) {
  for_each_field(d, v, path, [&](std::string_view k, const json::value& val, const std::string& p) {
    if (k != "writes") return d.unknown(p);
    read_list(
        d, val, p, x.writes, [&](const json::value& e, const std::string& ep, ObjectWrite& w) {
          for_each_field(d, e, ep,
                         [&](std::string_view wk, const json::value& wv, const std::string& wp) {
                           if (wk == "section") d.read(wv, wp, w.section);
                           else if (wk == "serverTime") d.read(wv, wp, w.server_time);
                           else d.unknown(wp);
                         });
        });
  });
}

template <class Obj>
Result<Obj> decode_top(const json::value& v, const DecodeOptions& options) {
  Decoder d(options);
  Obj obj;
  if (!v.is_object()) {
    d.type_error(v, "", "object");
    return d.finish(std::move(obj));
  }
  for (const auto& [key, val] : v.get_object()) {
    const std::string_view k = sv(key);
    const std::string p(k);
    if (k == "kind") d.expect(val, p, kind_info(Obj::kKind).name);
    else if (k == "apiVersion") d.expect(val, p, kApiVersion);
    else if (k == "metadata") read_struct(d, val, p, obj.metadata);
    else if (k == "extendedMetadata") read_struct(d, val, p, obj.extended_metadata);
    else if (k == "spec") decode_struct(d, val, p, *describe<Obj>().spec_desc, obj.spec);
    else if constexpr (requires(Obj o) { o.status; }) {
      if (k == "status") decode_struct(d, val, p, *describe<Obj>().status_desc, obj.status);
      else d.unknown(p);
    } else {
      d.unknown(p);
    }
  }
  return d.finish(std::move(obj));
}

// ---- encoding ----

void put(json::object& o, std::string_view k, const std::string& s) {
  if (!s.empty()) o.emplace(k, s);
}
void put(json::object& o, std::string_view k, const std::vector<std::string>& v) {
  if (!v.empty()) o.emplace(k, describe_detail::to_value(v));
}
void put(json::object& o, std::string_view k, const std::map<std::string, std::string>& m) {
  if (m.empty()) return;
  json::object j;
  for (const auto& [key, val] : m) j.emplace(key, val);
  o.emplace(k, std::move(j));
}
void put(json::object& o, std::string_view k, Time t) {
  if (t != Time{}) o.emplace(k, format_time(t));
}
void put(json::object& o, std::string_view k, std::int64_t i) {
  if (i != 0) o.emplace(k, i);
}

json::object type_meta(Kind kind) {
  json::object o;
  o.emplace("kind", kind_info(kind).name);
  o.emplace("apiVersion", kApiVersion);
  return o;
}

void put_common(json::object& o, const ObjectMeta& m, const ExtendedObjectMeta& x) {
  o.emplace("metadata", to_json(m));
  if (x.writes.empty()) return;
  json::array writes;
  for (const auto& w : x.writes) {
    json::object j;
    j.emplace("section", w.section);
    j.emplace("serverTime", format_micro_time(w.server_time));
    writes.emplace_back(std::move(j));
  }
  json::object ext;
  ext.emplace("writes", std::move(writes));
  o.emplace("extendedMetadata", std::move(ext));
}

Errc errc_from_status(std::string_view reason, int http_status) {
  static constexpr std::pair<std::string_view, Errc> kReasons[] = {
      {"NotFound", Errc::kNotFound},      {"AlreadyExists", Errc::kAlreadyExists},
      {"Conflict", Errc::kConflict},      {"Invalid", Errc::kInvalid},
      {"BadRequest", Errc::kBadRequest},  {"Expired", Errc::kCompacted},
      {"Gone", Errc::kCompacted},         {"ServiceUnavailable", Errc::kUnavailable},
      {"Timeout", Errc::kTimeout},        {"UnsupportedMediaType", Errc::kUnsupported},
      {"InternalError", Errc::kInternal}, {"Unauthorized", Errc::kUnauthorized},
      {"Forbidden", Errc::kForbidden},
  };
  for (const auto& [name, code] : kReasons) {
    if (reason == name) return code;
  }
  switch (http_status) {
    case 401: return Errc::kUnauthorized;
    case 403: return Errc::kForbidden;
    case 404: return Errc::kNotFound;
    case 409: return Errc::kConflict;
    case 410: return Errc::kCompacted;
    case 415: return Errc::kUnsupported;
    case 422: return Errc::kInvalid;
    case 429: return Errc::kUnavailable;
    case 503: return Errc::kUnavailable;
    case 504: return Errc::kTimeout;
  }
  return http_status >= 400 && http_status < 500 ? Errc::kBadRequest : Errc::kInternal;
}

std::string string_member(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  const json::string* s = v ? v->if_string() : nullptr;
  return s ? std::string(s->data(), s->size()) : std::string();
}

}  // namespace

namespace {

// Runs a parser over a whole text; its result's storage is the one p was reset with.
Result<json::value> run_parser(json::parser& p, std::string_view text) {
  try {
    boost::system::error_code ec;
    const std::size_t n = p.write(text.data(), text.size(), ec);
    if (ec) {
      p.reset();
      return fail(Errc::kBadRequest,
                  "malformed JSON at byte " + std::to_string(n) + ": " + ec.message());
    }
    return p.release();
  } catch (const std::exception& e) {
    // Only allocation can throw here; the error_code overloads report everything else.
    p.reset();
    return fail(Errc::kBadRequest, std::string("cannot parse JSON: ") + e.what());
  }
}

}  // namespace

Result<json::value> parse_json(std::string_view text) {
  json::parser p;
  return run_parser(p, text);
}

Result<const json::value*> ScratchJson::parse(std::string_view text) {
  // The parser keeps its work space between parses: one per thread.
  thread_local json::parser p;
  p.reset(json::storage_ptr(&arena_));
  auto v = run_parser(p, text);
  p.reset();  // holds nothing of this arena after the call
  if (!v) return fail(std::move(v.error()));
  value_.emplace(std::move(*v));  // move-constructed: keeps the arena as its storage
  return &*value_;
}

template <class T>
Result<T> from_json(const json::value& v, const DecodeOptions& options) {
  if constexpr (std::is_same_v<T, ObjectMeta>) {
    Decoder d(options);
    ObjectMeta m;
    if (!v.is_object()) d.type_error(v, "", "object");
    else read_struct(d, v, "", m);
    return d.finish(std::move(m));
  } else {
    return decode_top<T>(v, options);
  }
}

template <class T>
Result<T> decode(std::string_view text, const DecodeOptions& options) {
  ScratchJson scratch;
  auto v = scratch.parse(text);
  if (!v) return fail(std::move(v.error()));
  return from_json<T>(**v, options);
}

template Result<ObjectMeta> from_json(const json::value&, const DecodeOptions&);
template Result<ObjectMeta> decode(std::string_view, const DecodeOptions&);

Result<AnyObject> object_from_json(Kind kind, const json::value& v, const DecodeOptions& options) {
  return std::visit(
      [&](const auto& zero) -> Result<AnyObject> {
        auto r = from_json<std::decay_t<decltype(zero)>>(v, options);
        if (!r) return fail(std::move(r.error()));
        return AnyObject(std::move(*r));
      },
      make_object(kind));
}

Result<AnyObject> decode_object(Kind kind, std::string_view text, const DecodeOptions& options) {
  ScratchJson scratch;
  auto v = scratch.parse(text);
  if (!v) return fail(std::move(v.error()));
  return object_from_json(kind, **v, options);
}

json::object to_json(const ObjectMeta& m) {
  json::object o;
  put(o, "name", m.name);
  put(o, "generateName", m.generate_name);
  put(o, "namespace", m.namespace_);
  put(o, "uid", m.uid);
  put(o, "resourceVersion", m.resource_version);
  put(o, "generation", m.generation);
  put(o, "creationTimestamp", m.creation_timestamp);
  // Optional fields are emitted whenever set, even to the zero value (Go pointers).
  if (m.deletion_timestamp) o.emplace("deletionTimestamp", format_time(*m.deletion_timestamp));
  if (m.deletion_grace_period_seconds) {
    o.emplace("deletionGracePeriodSeconds", *m.deletion_grace_period_seconds);
  }
  put(o, "labels", m.labels);
  put(o, "annotations", m.annotations);
  if (!m.owner_references.empty()) {
    json::array refs;
    for (const auto& r : m.owner_references) {
      json::object j;
      j.emplace("apiVersion", r.api_version);
      j.emplace("kind", r.kind);
      j.emplace("name", r.name);
      j.emplace("uid", r.uid);
      if (r.controller) j.emplace("controller", *r.controller);
      if (r.block_owner_deletion) j.emplace("blockOwnerDeletion", *r.block_owner_deletion);
      refs.emplace_back(std::move(j));
    }
    o.emplace("ownerReferences", std::move(refs));
  }
  put(o, "finalizers", m.finalizers);
  return o;
}

namespace {

// "metadata", "spec" and "status" are always present, as the original's JSON tags have it.
template <class T>
json::object encode_kind(const T& obj) {
  json::object o = type_meta(T::kKind);
  put_common(o, obj.metadata, obj.extended_metadata);
  const KindDesc<T>& desc = describe<T>();
  o.emplace("spec", encode_struct(*desc.spec_desc, obj.spec));
  if constexpr (requires { obj.status; }) {
    o.emplace("status", encode_struct(*desc.status_desc, obj.status));
  }
  return o;
}

}  // namespace

template <KindStruct T>
json::object to_json(const T& obj) {
  return encode_kind(obj);
}

json::object to_json(const AnyObject& obj) {
  return std::visit([](const auto& x) { return to_json(x); }, obj);
}

std::string encode(const ObjectMeta& m) { return json::serialize(to_json(m)); }
template <KindStruct T>
std::string encode(const T& obj) {
  return json::serialize(to_json(obj));
}
std::string encode(const AnyObject& obj) { return json::serialize(to_json(obj)); }

// Instantiates every template above for every kind.
namespace {
template <std::size_t... I>
constexpr auto kInstances = std::make_tuple(
    std::make_tuple(&from_json<std::variant_alternative_t<I, AnyObject>>...,
                    &decode<std::variant_alternative_t<I, AnyObject>>...,
                    static_cast<json::object (*)(const std::variant_alternative_t<I, AnyObject>&)>(
                        &to_json<std::variant_alternative_t<I, AnyObject>>)...,
                    static_cast<std::string (*)(const std::variant_alternative_t<I, AnyObject>&)>(
                        &encode<std::variant_alternative_t<I, AnyObject>>)...));
template <std::size_t... I>
[[maybe_unused]] const auto& instances(std::index_sequence<I...>) {
  return kInstances<I...>;
}
[[maybe_unused]] const auto& kAll =
    instances(std::make_index_sequence<std::variant_size_v<AnyObject>>());
}  // namespace

json::object status_json(const Error& error, std::string_view name, std::string_view group,
                         std::string_view kind) {
  json::object o;
  o.emplace("kind", "Status");
  o.emplace("apiVersion", "v1");
  o.emplace("metadata", json::object{});
  o.emplace("status", "Failure");
  o.emplace("message", error.message);
  o.emplace("reason", error.reason());
  json::object details;
  if (!name.empty()) details.emplace("name", name);
  if (!group.empty()) details.emplace("group", group);
  if (!kind.empty()) details.emplace("kind", kind);
  if (!error.causes.empty()) {
    json::array causes;
    for (const auto& c : error.causes) {
      json::object j;
      put(j, "reason", c.reason);
      put(j, "message", c.message);
      put(j, "field", c.field);
      causes.emplace_back(std::move(j));
    }
    details.emplace("causes", std::move(causes));
  }
  if (!details.empty()) o.emplace("details", std::move(details));
  o.emplace("code", error.http_status());
  return o;
}

Error error_from_status(const json::value& body, int http_status) {
  Error e;
  const json::object* o = body.if_object();
  if (!o) {
    e.code = errc_from_status({}, http_status);
    e.message = "HTTP " + std::to_string(http_status) + ": " + json::serialize(body).substr(0, 256);
    return e;
  }
  e.code = errc_from_status(string_member(*o, "reason"), http_status);
  e.message = string_member(*o, "message");
  if (e.message.empty()) e.message = "HTTP " + std::to_string(http_status);
  const json::value* details = o->if_contains("details");
  const json::value* causes =
      details && details->is_object() ? details->get_object().if_contains("causes") : nullptr;
  if (causes && causes->is_array()) {
    for (const auto& c : causes->get_array()) {
      if (const json::object* co = c.if_object()) {
        e.causes.push_back(FieldCause{string_member(*co, "reason"), string_member(*co, "message"),
                                      string_member(*co, "field")});
      }
    }
  }
  return e;
}

}  // namespace kos::api
