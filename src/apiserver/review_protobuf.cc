#include "apiserver/review_protobuf.h"

#include <functional>
#include <optional>

#include <boost/json/object.hpp>

namespace kos::apiserver {
namespace json = boost::json;
namespace {

// A protobuf message's fields, read one at a time.
class Reader {
 public:
  explicit Reader(std::string_view b) : b_(b) {}
  bool done() const { return pos_ >= b_.size(); }
  // The next field: its number and, for length-delimited fields, its bytes (other wire
  // types are skipped). Errors: kBadRequest.
  Result<std::pair<uint32_t, std::optional<std::string_view>>> next() {
    auto key = varint();
    if (!key) return fail(key.error());
    const uint32_t field = static_cast<uint32_t>(*key >> 3);
    switch (*key & 7) {
      case 0:
        if (auto v = varint(); !v) return fail(v.error());
        return std::pair{field, std::optional<std::string_view>{}};
      case 1: return skip(8, field);
      case 5: return skip(4, field);
      case 2: {
        auto n = varint();
        if (!n) return fail(n.error());
        if (*n > b_.size() - pos_) return fail(Errc::kBadRequest, "protobuf: truncated field");
        auto s = b_.substr(pos_, static_cast<size_t>(*n));
        pos_ += static_cast<size_t>(*n);
        return std::pair{field, std::optional<std::string_view>{s}};
      }
    }
    return fail(Errc::kBadRequest, "protobuf: unsupported wire type");
  }

 private:
  Result<uint64_t> varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= b_.size()) return fail(Errc::kBadRequest, "protobuf: truncated varint");
      const auto c = static_cast<unsigned char>(b_[pos_++]);
      v |= static_cast<uint64_t>(c & 0x7f) << shift;
      if (!(c & 0x80)) return v;
    }
    return fail(Errc::kBadRequest, "protobuf: varint too long");
  }
  Result<std::pair<uint32_t, std::optional<std::string_view>>> skip(size_t n, uint32_t field) {
    if (n > b_.size() - pos_) return fail(Errc::kBadRequest, "protobuf: truncated field");
    pos_ += n;
    return std::pair{field, std::optional<std::string_view>{}};
  }
  std::string_view b_;
  size_t pos_ = 0;
};

// The string fields of a message, by number, into a JSON object by name.
Result<json::object> strings(std::string_view msg, std::initializer_list<std::pair<uint32_t, const char*>> names,
                             std::initializer_list<std::pair<uint32_t, std::function<Result<void>(std::string_view, json::object&)>>> nested = {}) {
  json::object o;
  Reader r(msg);
  while (!r.done()) {
    auto f = r.next();
    if (!f) return fail(f.error());
    if (!f->second) continue;
    for (const auto& [n, name] : names)
      if (n == f->first) o[name] = json::string(*f->second);
    for (const auto& [n, fn] : nested)
      if (n == f->first)
        if (auto x = fn(*f->second, o); !x) return fail(x.error());
  }
  return o;
}

}  // namespace

Result<json::value> decode_review_protobuf(std::string_view body) {
  if (body.size() < 4 || body.substr(0, 4) != std::string_view("k8s\0", 4))
    return fail(Errc::kBadRequest, "protobuf: not a Kubernetes protobuf envelope");
  // runtime.Unknown: 1 typeMeta {1 apiVersion, 2 kind}, 2 raw.
  Reader env(body.substr(4));
  std::string api_version, kind;
  std::string_view raw;
  while (!env.done()) {
    auto f = env.next();
    if (!f) return fail(f.error());
    if (!f->second) continue;
    if (f->first == 1) {
      auto tm = strings(*f->second, {{1, "apiVersion"}, {2, "kind"}});
      if (!tm) return fail(tm.error());
      if (auto* v = tm->if_contains("apiVersion")) api_version = std::string(v->get_string());
      if (auto* v = tm->if_contains("kind")) kind = std::string(v->get_string());
    } else if (f->first == 2) {
      raw = *f->second;
    }
  }
  json::object out;
  out["apiVersion"] = api_version;
  out["kind"] = kind;
  if (kind == "SelfSubjectReview") return out;
  if (kind != "SelfSubjectAccessReview")
    return fail(Errc::kUnsupported, "protobuf bodies are supported only for SelfSubjectReview and "
                                    "SelfSubjectAccessReview: send application/json");
  // SelfSubjectAccessReview: 2 spec {1 resourceAttributes, 2 nonResourceAttributes}.
  // ResourceAttributes: 1 namespace, 2 verb, 3 group, 4 version, 5 resource, 6 subresource,
  // 7 name, 8 fieldSelector {1 rawSelector}. NonResourceAttributes: 1 path, 2 verb.
  auto resource_attributes = [](std::string_view m, json::object& spec) -> Result<void> {
    auto a = strings(m, {{1, "namespace"}, {2, "verb"}, {3, "group"}, {4, "version"}, {5, "resource"},
                         {6, "subresource"}, {7, "name"}},
                     {{8, [](std::string_view fs, json::object& o) -> Result<void> {
                         auto s = strings(fs, {{1, "rawSelector"}});
                         if (!s) return fail(s.error());
                         o["fieldSelector"] = std::move(*s);
                         return {};
                       }}});
    if (!a) return fail(a.error());
    spec["resourceAttributes"] = std::move(*a);
    return {};
  };
  auto non_resource_attributes = [](std::string_view m, json::object& spec) -> Result<void> {
    auto a = strings(m, {{1, "path"}, {2, "verb"}});
    if (!a) return fail(a.error());
    spec["nonResourceAttributes"] = std::move(*a);
    return {};
  };
  auto top = strings(raw, {}, {{2, [&](std::string_view spec_msg, json::object& o) -> Result<void> {
                                  auto spec = strings(spec_msg, {}, {{1, resource_attributes}, {2, non_resource_attributes}});
                                  if (!spec) return fail(spec.error());
                                  o["spec"] = std::move(*spec);
                                  return {};
                                }}});
  if (!top) return fail(top.error());
  if (auto* s = top->if_contains("spec")) out["spec"] = *s;
  return out;
}

}  // namespace kos::apiserver
