// The JSON decoder's working parts, shared by the codec (json.cc) and the kind
// descriptions (describe.h, kinds/). Internal to src/api: other code uses json.h.
#pragma once

#include <charconv>
#include <chrono>
#include <cmath>
#include <concepts>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/json/value.hpp>

#include "api/json.h"
#include "api/types.h"

namespace kos::api::detail {
namespace json = boost::json;

constexpr std::size_t kMaxProblems = 32;

inline std::string_view sv(json::string_view s) { return {s.data(), s.size()}; }

inline std::string_view type_name(const json::value& v) {
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

inline std::string child(std::string_view path, std::string_view key) {
  return path.empty() ? std::string(key) : std::string(path) + "." + std::string(key);
}

inline std::string element(std::string_view path, std::string_view key_or_index) {
  return std::string(path) + "[" + std::string(key_or_index) + "]";
}

inline std::string quote(std::string_view s) {
  constexpr std::size_t kMax = 64;
  return "\"" + std::string(s.substr(0, kMax)) + (s.size() > kMax ? "...\"" : "\"");
}

inline std::string format_double(double d) {
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

inline void Decoder::read(const json::value& v, const std::string& path, std::vector<std::string>& out) {
  read_list(*this, v, path, out,
            [this](const json::value& e, const std::string& p, std::string& s) { read(e, p, s); });
}

// Calls field(key, value, path) for each member of the object at v; null is empty.
template <class OnField>
void for_each_field(Decoder& d, const json::value& v, const std::string& path, OnField field) {
  if (const json::object* o = d.object(v, path)) {
    for (const auto& [key, val] : *o) field(sv(key), val, child(path, sv(key)));
  }
}

}  // namespace kos::api::detail
