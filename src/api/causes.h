// Field errors as Kubernetes reports them (FieldCause: reason, field path, message),
// collected over one validation. Used by validation.cc and the kind descriptions.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "api/types.h"
#include "common/error.h"

namespace kos::api {

// Where a field is ("status" + "ipv4"), spelled out only when a cause names it: validation
// walks every field of every write, and most writes are valid.
struct FieldPath {
  std::string_view prefix, name;
  std::string str() const {
    if (prefix.empty()) return std::string(name);
    std::string out;
    out.reserve(prefix.size() + 1 + name.size());
    out.append(prefix).append(".").append(name);
    return out;
  }
  operator std::string() const { return str(); }
};

// A value as Kubernetes shows it after "Invalid value: ": strings quoted and escaped.
inline std::string show(std::string_view s) {
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

inline std::string show(const std::vector<std::string>& v) {
  std::string out = "[";
  for (const auto& s : v) out += (out.size() > 1 ? "," : "") + show(s);
  return out + "]";
}

// The part of a parse error after the quoted input (cidr.h/names.h messages have the
// form `invalid X "input": detail`), since "Invalid value: ..." already shows the input.
inline std::string detail_of(const Error& e) {
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
  void duplicate(std::string field, const std::string& shown) {
    add("FieldValueDuplicate", std::move(field), "Duplicate value: " + shown);
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

}  // namespace kos::api
