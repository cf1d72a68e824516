// Label and field selectors, with Kubernetes' syntax and matching rules, and the
// per-kind fields a field selector may name.
#pragma once

#include <concepts>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "api/types.h"
#include "common/error.h"

namespace kos::api {

struct LabelRequirement {
  enum class Op { kEquals, kNotEquals, kIn, kNotIn, kExists, kDoesNotExist };
  std::string key;
  Op op = Op::kExists;
  std::vector<std::string> values;  // one for kEquals/kNotEquals, >= 1 for kIn/kNotIn
  bool operator==(const LabelRequirement&) const = default;
};

// `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, joined by ',' (AND);
// whitespace between tokens is ignored. Keys must be valid label keys, values valid
// label values. The empty selector matches everything. As in Kubernetes, `k!=v` and
// `k notin (...)` also match objects without label k.
class LabelSelector {
 public:
  // kBadRequest with the position and the problem on malformed input.
  static Result<LabelSelector> parse(std::string_view text);

  bool matches(const std::map<std::string, std::string>& labels) const;
  bool empty() const { return requirements_.empty(); }
  const std::vector<LabelRequirement>& requirements() const { return requirements_; }
  std::string to_string() const;  // canonical text; parse(to_string()) is equivalent
  bool operator==(const LabelSelector&) const = default;

 private:
  std::vector<LabelRequirement> requirements_;
};

// The value of a selectable list field (spec.securityGroups): each element preceded by
// kListMark, which no element contains (they are names). On such a field `f=v` selects
// the objects whose list holds v, `f!=v` those whose list does not; an empty list is "".
inline constexpr char kListMark = '\x1f';

// Whether a field's value `have` (a list as above, or a plain value) is, or holds, `want`.
inline bool field_value_is(std::string_view have, std::string_view want) {
  if (have.empty() || have.front() != kListMark) return have == want;
  while (!have.empty()) {
    have.remove_prefix(1);
    const auto end = have.find(kListMark);
    if (have.substr(0, end) == want) return true;
    if (end == std::string_view::npos) break;
    have.remove_prefix(end);
  }
  return false;
}

// Calls f(element) for each element of a list value, or f(have) for a plain value.
template <class F>
void for_each_field_value(std::string_view have, F&& f) {
  if (have.empty() || have.front() != kListMark) {
    f(have);
    return;
  }
  while (!have.empty()) {
    have.remove_prefix(1);
    const auto end = have.find(kListMark);
    f(have.substr(0, end));
    if (end == std::string_view::npos) break;
    have.remove_prefix(end);
  }
}

struct FieldRequirement {
  std::string field;
  bool equals = true;  // false for !=
  std::string value;
  bool operator==(const FieldRequirement&) const = default;
};

// `f=v`, `f==v`, `f!=v`, joined by ',' (AND). Values may be empty (`status.ipv4!=`
// selects objects with an address) and escape `\`, `,`, `=` and `!` with a backslash,
// as Kubernetes' fields.EscapeValue does. Whitespace around fields and values is
// ignored. Which fields exist depends on the kind: see check_fields().
class FieldSelector {
 public:
  static Result<FieldSelector> parse(std::string_view text);  // kBadRequest on error

  // get(field) gives the object's value of field; a field without a value counts as "".
  template <std::invocable<std::string_view> Getter>
  bool matches(Getter&& get) const {
    for (const auto& r : requirements_) {
      const std::optional<std::string> v = get(std::string_view(r.field));
      if (field_value_is(v.value_or(std::string()), r.value) != r.equals) return false;
    }
    return true;
  }
  bool matches(const AnyObject& obj) const;

  // The value the selector requires `field` to equal exactly (from `field=v` or
  // `field==v`), for indexing watchers; nullopt if it does not pin that field. With two
  // different required values the selector matches nothing; this returns the first.
  std::optional<std::string> exact_value(std::string_view field) const;

  bool empty() const { return requirements_.empty(); }
  const std::vector<FieldRequirement>& requirements() const { return requirements_; }
  std::string to_string() const;  // canonical text, values escaped
  bool operator==(const FieldSelector&) const = default;

 private:
  std::vector<FieldRequirement> requirements_;
};

// The fields a field selector may name for a kind: metadata.name, metadata.namespace
// and the fields its description (describe.h) marks selectable.
std::span<const std::string_view> selectable_fields(Kind kind);

// kBadRequest "field label not supported: spec.foo" for the first unsupported field.
Result<void> check_fields(const FieldSelector& selector, Kind kind);

// The value of a selectable field of obj (numbers in decimal); nullopt if the kind has
// no such selectable field. T is a kind's struct (explicitly instantiated for each).
template <class T>
std::optional<std::string> field_value(const T& obj, std::string_view field);
std::optional<std::string> field_value(const AnyObject& obj, std::string_view field);

}  // namespace kos::api
