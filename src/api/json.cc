#include "api/json.h"

#include <charconv>
#include <cmath>
#include <concepts>
#include <limits>
#include <utility>

#include <boost/json/parser.hpp>
#include <boost/json/serialize.hpp>

namespace kos::api {
namespace json = boost::json;
namespace {

constexpr std::size_t kMaxProblems = 32;

std::string_view sv(json::string_view s) { return {s.data(), s.size()}; }

std::string_view type_name(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null: return "null";
    case json::kind::bool_: return "boolean";
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_: return "number";
    case json::kind::string: return "string";
    case json::kind::array: return "array";
    case json::kind::object: return "object";
  }
  return "value";
}

std::string child(std::string_view path, std::string_view key) {
  return path.empty() ? std::string(key) : std::string(path) + "." + std::string(key);
}

std::string element(std::string_view path, std::string_view key_or_index) {
  return std::string(path) + "[" + std::string(key_or_index) + "]";
}

std::string quote(std::string_view s) {
  constexpr std::size_t kMax = 64;
  return "\"" + std::string(s.substr(0, kMax)) + (s.size() > kMax ? "...\"" : "\"");
}

std::string format_double(double d) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, d);
  return std::string(buf, r.ptr);
}

template <class I>
constexpr std::string_view int_type_name() {
  if constexpr (std::is_same_v<I, std::uint32_t>) return "uint32";
  else if constexpr (std::is_same_v<I, std::int32_t>) return "int32";
  else return "int64";
}

// Collects every problem of one decode, with full field paths.
class Decoder {
 public:
  explicit Decoder(const DecodeOptions& options) : options_(options) {}

  void problem(const std::string& path, std::string message,
               std::string reason = "FieldValueTypeInvalid") {
    if (causes_.size() == kMaxProblems) {
      ++dropped_;
      return;
    }
    causes_.push_back(FieldCause{std::move(reason), std::move(message), path});
  }

  void unknown(const std::string& path) {
    if (options_.strict) {
      problem(path, "unknown field", "FieldValueUnknown");
    } else if (options_.warnings) {
      if (warned_ < kMaxProblems) options_.warnings->push_back("unknown field \"" + path + "\"");
      if (warned_++ == kMaxProblems) options_.warnings->push_back("more unknown fields omitted");
    }
  }

  void type_error(const json::value& v, const std::string& path, std::string_view want) {
    problem(path, "expected " + std::string(want) + ", got " + std::string(type_name(v)));
  }

  // Null reads as empty without complaint, as in Go.
  const json::object* object(const json::value& v, const std::string& path) {
    if (!v.is_object() && !v.is_null()) type_error(v, path, "object");
    return v.if_object();
  }
  const json::array* array(const json::value& v, const std::string& path) {
    if (!v.is_array() && !v.is_null()) type_error(v, path, "array");
    return v.if_array();
  }

  void read(const json::value& v, const std::string& path, std::string& out) {
    if (const auto* s = v.if_string()) {
      out.assign(s->data(), s->size());
    } else if (!v.is_null()) {
      type_error(v, path, "string");
    }
  }

  void read(const json::value& v, const std::string& path, bool& out) {
    if (const auto* b = v.if_bool()) {
      out = *b;
    } else if (!v.is_null()) {
      type_error(v, path, "boolean");
    }
  }

  template <std::integral I>
  void read(const json::value& v, const std::string& path, I& out) {
    constexpr std::string_view want = std::is_signed_v<I> ? "integer" : "unsigned integer";
    auto out_of_range = [&](const std::string& shown) {
      problem(path, "value " + shown + " is out of range for " + std::string(int_type_name<I>()),
              "FieldValueInvalid");
    };
    if (const auto* i = v.if_int64()) {
      if (std::in_range<I>(*i)) out = static_cast<I>(*i);
      else out_of_range(std::to_string(*i));
    } else if (const auto* u = v.if_uint64()) {
      if (std::in_range<I>(*u)) out = static_cast<I>(*u);
      else out_of_range(std::to_string(*u));
    } else if (const auto* d = v.if_double()) {
      // JSON has one number type, so 1.0 is the integer 1. The bounds are exact powers
      // of two, so the comparisons are exact.
      constexpr double lo = static_cast<double>(std::numeric_limits<I>::min());
      const double hi = std::ldexp(1.0, std::numeric_limits<I>::digits);
      if (std::isfinite(*d) && std::trunc(*d) != *d) {
        problem(path, "expected " + std::string(want) + ", got " + format_double(*d));
      } else if (*d >= lo && *d < hi) {
        out = static_cast<I>(*d);
      } else {
        out_of_range(format_double(*d));
      }
    } else if (!v.is_null()) {
      type_error(v, path, want);
    }
  }

  template <class Clock, class Duration>
  void read(const json::value& v, const std::string& path,
            std::chrono::time_point<Clock, Duration>& out) {
    const auto* s = v.if_string();
    if (!s) {
      if (!v.is_null()) type_error(v, path, "RFC 3339 time string");
      return;
    }
    auto t = [&] {
      if constexpr (std::is_same_v<Duration, std::chrono::seconds>) return parse_time(sv(*s));
      else return parse_micro_time(sv(*s));
    }();
    if (t) out = *t;
    else problem(path, "expected RFC 3339 time, got " + quote(sv(*s)), "FieldValueInvalid");
  }

  template <class T>
  void read(const json::value& v, const std::string& path, std::optional<T>& out) {
    if (v.is_null()) {
      out.reset();
      return;
    }
    out.emplace();
    read(v, path, *out);
  }

  void read(const json::value& v, const std::string& path, std::vector<std::string>& out);
  void read(const json::value& v, const std::string& path,
            std::map<std::string, std::string>& out) {
    if (const json::object* o = object(v, path)) {
      for (const auto& [key, val] : *o) {
        read(val, element(path, sv(key)), out[std::string(sv(key))]);
      }
    }
  }

  // kind and apiVersion: optional, but when present must say what the caller expects.
  void expect(const json::value& v, const std::string& path, std::string_view want) {
    std::string got;
    read(v, path, got);
    if (!got.empty() && got != want) {
      problem(path, "expected " + quote(want) + ", got " + quote(got), "FieldValueInvalid");
    }
  }

  template <class T>
  Result<T> finish(T value) {
    if (causes_.empty()) return value;
    std::string message;
    for (const auto& c : causes_) {
      if (!message.empty()) message += "; ";
      if (c.reason == "FieldValueUnknown") message += "unknown field \"" + c.field + "\"";
      else message += c.field.empty() ? c.message : c.field + ": " + c.message;
    }
    if (dropped_ > 0) message += "; and " + std::to_string(dropped_) + " more problems";
    return fail(Error{Errc::kBadRequest, std::move(message), std::move(causes_)});
  }

 private:
  const DecodeOptions& options_;
  std::vector<FieldCause> causes_;
  std::size_t dropped_ = 0;
  std::size_t warned_ = 0;
};

template <class T, class ReadOne>
void read_list(Decoder& d, const json::value& v, const std::string& path, std::vector<T>& out,
               ReadOne read_one) {
  out.clear();
  if (const json::array* a = d.array(v, path)) {
    out.resize(a->size());
    for (std::size_t i = 0; i < a->size(); ++i) {
      read_one((*a)[i], element(path, std::to_string(i)), out[i]);
    }
  }
}

void Decoder::read(const json::value& v, const std::string& path, std::vector<std::string>& out) {
  read_list(*this, v, path, out,
            [this](const json::value& e, const std::string& p, std::string& s) { read(e, p, s); });
}

// Calls field(key, value, path) for each member of the object at v; null is empty.
template <class Field>
void for_each_field(Decoder& d, const json::value& v, const std::string& path, Field field) {
  if (const json::object* o = d.object(v, path)) {
    for (const auto& [key, val] : *o) field(sv(key), val, child(path, sv(key)));
  }
}

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

void read_struct(Decoder& d, const json::value& v, const std::string& path, SubnetSpec& s) {
  for_each_field(d, v, path, [&](std::string_view k, const json::value& val, const std::string& p) {
    if (k == "ipv4") d.read(val, p, s.ipv4);
    else if (k == "vni") d.read(val, p, s.vni);
    else d.unknown(p);
  });
}

void read_struct(Decoder& d, const json::value& v, const std::string& path, SubnetStatus& s) {
  for_each_field(d, v, path, [&](std::string_view k, const json::value& val, const std::string& p) {
    if (k == "validated") d.read(val, p, s.validated);
    else if (k == "errors") d.read(val, p, s.errors);
    else d.unknown(p);
  });
}

void read_struct(Decoder& d, const json::value& v, const std::string& path,
                 NetworkAttachmentSpec& s) {
  for_each_field(d, v, path, [&](std::string_view k, const json::value& val, const std::string& p) {
    if (k == "node") d.read(val, p, s.node);
    else if (k == "subnet") d.read(val, p, s.subnet);
    else if (k == "postCreateExec") d.read(val, p, s.post_create_exec);
    else if (k == "postDeleteExec") d.read(val, p, s.post_delete_exec);
    else d.unknown(p);
  });
}

void read_struct(Decoder& d, const json::value& v, const std::string& path, ExecReport& r) {
  for_each_field(d, v, path, [&](std::string_view k, const json::value& val, const std::string& p) {
    if (k == "command") d.read(val, p, r.command);
    else if (k == "exitStatus") d.read(val, p, r.exit_status);
    else if (k == "startTime") d.read(val, p, r.start_time);
    else if (k == "stopTime") d.read(val, p, r.stop_time);
    else if (k == "stdOut") d.read(val, p, r.std_out);
    else if (k == "stdErr") d.read(val, p, r.std_err);
    else d.unknown(p);
  });
}

void read_struct(Decoder& d, const json::value& v, const std::string& path,
                 NetworkAttachmentStatus& s) {
  for_each_field(d, v, path, [&](std::string_view k, const json::value& val, const std::string& p) {
    if (k == "errors") {
      for_each_field(d, val, p,
                     [&](std::string_view ek, const json::value& ev, const std::string& ep) {
                       if (ek == "ipam") d.read(ev, ep, s.errors.ipam);
                       else if (ek == "host") d.read(ev, ep, s.errors.host);
                       else d.unknown(ep);
                     });
    } else if (k == "addressContention") d.read(val, p, s.address_contention);
    else if (k == "lockUID") d.read(val, p, s.lock_uid);
    else if (k == "addressVNI") d.read(val, p, s.address_vni);
    else if (k == "ipv4") d.read(val, p, s.ipv4);
    else if (k == "macAddress") d.read(val, p, s.mac_address);
    else if (k == "ifcName") d.read(val, p, s.ifc_name);
    else if (k == "hostIP") d.read(val, p, s.host_ip);
    else if (k == "postCreateExecReport") {
      if (val.is_null()) {
        s.post_create_exec_report.reset();
      } else {
        read_struct(d, val, p, s.post_create_exec_report.emplace());
      }
    } else d.unknown(p);
  });
}

void read_struct(Decoder& d, const json::value& v, const std::string& path, IPLockSpec& s) {
  for_each_field(d, v, path, [&](std::string_view k, const json::value& val, const std::string& p) {
    if (k == "subnetName") d.read(val, p, s.subnet_name);
    else d.unknown(p);
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
    else if (k == "spec") read_struct(d, val, p, obj.spec);
    else if constexpr (requires(Obj o) { o.status; }) {
      if (k == "status") read_struct(d, val, p, obj.status);
      else d.unknown(p);
    } else {
      d.unknown(p);
    }
  }
  return d.finish(std::move(obj));
}

// ---- encoding ----

json::array to_array(const std::vector<std::string>& v) {
  json::array a;
  a.reserve(v.size());
  for (const auto& s : v) a.emplace_back(s);
  return a;
}

void put(json::object& o, std::string_view k, const std::string& s) {
  if (!s.empty()) o.emplace(k, s);
}
void put(json::object& o, std::string_view k, const std::vector<std::string>& v) {
  if (!v.empty()) o.emplace(k, to_array(v));
}
void put(json::object& o, std::string_view k, const std::map<std::string, std::string>& m) {
  if (m.empty()) return;
  json::object j;
  for (const auto& [key, val] : m) j.emplace(key, val);
  o.emplace(k, std::move(j));
}
void put(json::object& o, std::string_view k, bool b) {
  if (b) o.emplace(k, true);
}
void put(json::object& o, std::string_view k, Time t) {
  if (t != Time{}) o.emplace(k, format_time(t));
}
void put(json::object& o, std::string_view k, MicroTime t) {
  if (t != MicroTime{}) o.emplace(k, format_micro_time(t));
}
void put(json::object& o, std::string_view k, std::int64_t i) {
  if (i != 0) o.emplace(k, i);
}
void put(json::object& o, std::string_view k, std::uint32_t i) {
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
template Result<Subnet> from_json(const json::value&, const DecodeOptions&);
template Result<NetworkAttachment> from_json(const json::value&, const DecodeOptions&);
template Result<IPLock> from_json(const json::value&, const DecodeOptions&);
template Result<ObjectMeta> decode(std::string_view, const DecodeOptions&);
template Result<Subnet> decode(std::string_view, const DecodeOptions&);
template Result<NetworkAttachment> decode(std::string_view, const DecodeOptions&);
template Result<IPLock> decode(std::string_view, const DecodeOptions&);

Result<AnyObject> object_from_json(Kind kind, const json::value& v, const DecodeOptions& options) {
  auto wrap = [](auto r) -> Result<AnyObject> {
    if (!r) return fail(std::move(r.error()));
    return AnyObject(std::move(*r));
  };
  switch (kind) {
    case Kind::kSubnet: return wrap(from_json<Subnet>(v, options));
    case Kind::kNetworkAttachment: return wrap(from_json<NetworkAttachment>(v, options));
    case Kind::kIPLock: return wrap(from_json<IPLock>(v, options));
  }
  return fail(Errc::kInternal, "unknown kind");
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

json::object to_json(const Subnet& s) {
  json::object o = type_meta(Subnet::kKind);
  put_common(o, s.metadata, s.extended_metadata);
  json::object spec;
  spec.emplace("ipv4", s.spec.ipv4);
  spec.emplace("vni", s.spec.vni);
  o.emplace("spec", std::move(spec));
  json::object status;
  put(status, "validated", s.status.validated);
  put(status, "errors", s.status.errors);
  o.emplace("status", std::move(status));
  return o;
}

json::object to_json(const NetworkAttachment& na) {
  json::object o = type_meta(NetworkAttachment::kKind);
  put_common(o, na.metadata, na.extended_metadata);
  json::object spec;
  spec.emplace("node", na.spec.node);
  spec.emplace("subnet", na.spec.subnet);
  put(spec, "postCreateExec", na.spec.post_create_exec);
  put(spec, "postDeleteExec", na.spec.post_delete_exec);
  o.emplace("spec", std::move(spec));

  const NetworkAttachmentStatus& st = na.status;
  json::object status;
  json::object errors;
  put(errors, "ipam", st.errors.ipam);
  put(errors, "host", st.errors.host);
  if (!errors.empty()) status.emplace("errors", std::move(errors));
  put(status, "addressContention", st.address_contention);
  put(status, "lockUID", st.lock_uid);
  put(status, "addressVNI", st.address_vni);
  put(status, "ipv4", st.ipv4);
  put(status, "macAddress", st.mac_address);
  put(status, "ifcName", st.ifc_name);
  put(status, "hostIP", st.host_ip);
  if (const auto& r = st.post_create_exec_report) {
    json::object report;
    report.emplace("command", to_array(r->command));
    report.emplace("exitStatus", r->exit_status);
    put(report, "startTime", r->start_time);
    put(report, "stopTime", r->stop_time);
    report.emplace("stdOut", r->std_out);
    report.emplace("stdErr", r->std_err);
    status.emplace("postCreateExecReport", std::move(report));
  }
  o.emplace("status", std::move(status));
  return o;
}

json::object to_json(const IPLock& l) {
  json::object o = type_meta(IPLock::kKind);
  put_common(o, l.metadata, l.extended_metadata);
  json::object spec;
  spec.emplace("subnetName", l.spec.subnet_name);
  o.emplace("spec", std::move(spec));
  return o;
}

json::object to_json(const AnyObject& obj) {
  return std::visit([](const auto& x) { return to_json(x); }, obj);
}

std::string encode(const ObjectMeta& m) { return json::serialize(to_json(m)); }
std::string encode(const Subnet& s) { return json::serialize(to_json(s)); }
std::string encode(const NetworkAttachment& na) { return json::serialize(to_json(na)); }
std::string encode(const IPLock& l) { return json::serialize(to_json(l)); }
std::string encode(const AnyObject& obj) { return json::serialize(to_json(obj)); }

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
