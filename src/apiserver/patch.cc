#include "apiserver/patch.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <expected>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>

namespace kos::apiserver {
namespace json = boost::json;
namespace {

std::string_view sv(json::string_view s) { return {s.data(), s.size()}; }

// ---- Merge patch (RFC 7386 section 2) ----

Result<json::value> merge(json::value target, const json::value& patch, std::size_t depth) {
  const json::object* p = patch.if_object();
  if (!p) return patch;
  if (depth > kMaxPointerDepth) {
    return fail(Errc::kBadRequest, "merge patch is nested deeper than 64 levels");
  }
  if (!target.is_object()) target = json::object();
  json::object& out = target.get_object();
  for (const auto& [key, value] : *p) {
    if (value.is_null()) {
      out.stable_erase(key);
      continue;
    }
    json::value& slot = out[key];
    auto merged = merge(std::move(slot), value, depth + 1);
    if (!merged) return merged;
    slot = std::move(*merged);
  }
  return target;
}

// ---- JSON Pointer (RFC 6901) ----

struct Pointer {
  std::string text;
  std::vector<std::string> tokens;
};

// The error message (without the operation prefix) on failure.
std::expected<Pointer, std::string> parse_pointer(std::string_view text) {
  Pointer p{std::string(text), {}};
  if (text.empty()) return p;
  if (text.front() != '/') {
    return std::unexpected("pointer \"" + p.text + "\" must start with \"/\"");
  }
  std::string token;
  for (std::size_t i = 1; i <= text.size(); ++i) {
    if (i == text.size() || text[i] == '/') {
      if (p.tokens.size() == kMaxPointerDepth) {
        return std::unexpected("pointer has more than 64 segments");
      }
      p.tokens.push_back(std::move(token));
      token.clear();
    } else if (text[i] != '~') {
      token += text[i];
    } else if (i + 1 < text.size() && (text[i + 1] == '0' || text[i + 1] == '1')) {
      token += text[++i] == '0' ? '~' : '/';
    } else {
      return std::unexpected("pointer \"" + p.text + "\" has a \"~\" not followed by 0 or 1");
    }
  }
  return p;
}

std::unexpected<Error> not_found(const Pointer& p) {
  return fail(Errc::kInvalid, "path not found: " + p.text);
}

// The index `token` names in an array of `size` elements; `size` itself (also spelled
// "-") only when `end_ok`.
Result<std::size_t> array_index(std::string_view token, std::size_t size, bool end_ok,
                                const Pointer& p) {
  if (token == "-") {
    if (end_ok) return size;
    return fail(Errc::kInvalid, "array index out of range at " + p.text);
  }
  std::size_t i = 0;
  auto [end, ec] = std::from_chars(token.data(), token.data() + token.size(), i);
  if (token.empty() || (token[0] == '0' && token.size() > 1) ||
      end != token.data() + token.size() || ec == std::errc::invalid_argument) {
    return fail(Errc::kInvalid, "invalid array index at " + p.text);
  }
  if (ec == std::errc::result_out_of_range || i > size || (i == size && !end_ok)) {
    return fail(Errc::kInvalid, "array index out of range at " + p.text);
  }
  return i;
}

// The value at the first `n` tokens of `p`.
Result<json::value*> locate(json::value& doc, const Pointer& p, std::size_t n) {
  json::value* v = &doc;
  for (std::size_t k = 0; k < n; ++k) {
    const std::string& token = p.tokens[k];
    if (json::object* o = v->if_object()) {
      v = o->if_contains(token);
      if (!v) return not_found(p);
    } else if (json::array* a = v->if_array()) {
      auto i = array_index(token, a->size(), false, p);
      if (!i) return std::unexpected(std::move(i.error()));
      v = &(*a)[*i];
    } else {
      return not_found(p);
    }
  }
  return v;
}

Result<void> add(json::value& doc, const Pointer& p, json::value value) {
  if (p.tokens.empty()) {
    doc = std::move(value);
    return {};
  }
  auto parent = locate(doc, p, p.tokens.size() - 1);
  if (!parent) return std::unexpected(std::move(parent.error()));
  const std::string& last = p.tokens.back();
  if (json::object* o = (*parent)->if_object()) {
    (*o)[last] = std::move(value);
  } else if (json::array* a = (*parent)->if_array()) {
    auto i = array_index(last, a->size(), true, p);
    if (!i) return std::unexpected(std::move(i.error()));
    a->insert(a->begin() + static_cast<std::ptrdiff_t>(*i), std::move(value));
  } else {
    return not_found(p);
  }
  return {};
}

Result<json::value> remove(json::value& doc, const Pointer& p) {
  if (p.tokens.empty()) return fail(Errc::kInvalid, "cannot remove the document root");
  auto parent = locate(doc, p, p.tokens.size() - 1);
  if (!parent) return std::unexpected(std::move(parent.error()));
  const std::string& last = p.tokens.back();
  json::value out;
  if (json::object* o = (*parent)->if_object()) {
    auto it = o->find(last);
    if (it == o->end()) return not_found(p);
    out = std::move(it->value());
    o->stable_erase(it);
  } else if (json::array* a = (*parent)->if_array()) {
    auto i = array_index(last, a->size(), false, p);
    if (!i) return std::unexpected(std::move(i.error()));
    out = std::move((*a)[*i]);
    a->erase(a->begin() + static_cast<std::ptrdiff_t>(*i));
  } else {
    return not_found(p);
  }
  return out;
}

// Numbers equal by value, whatever their representation (RFC 6902 section 4.6).
bool number_equal(const json::value& a, const json::value& b) {
  if (!a.is_double() && !b.is_double()) return a == b;
  if (a.is_double() && b.is_double()) return a.get_double() == b.get_double();
  const double d = a.is_double() ? a.get_double() : b.get_double();
  const json::value& n = a.is_double() ? b : a;
  if (d != std::trunc(d) || d < -0x1p63 || d >= 0x1p64) return false;  // also NaN, inf
  if (d < 0) return n.is_int64() && n.get_int64() == static_cast<std::int64_t>(d);
  return n == json::value(static_cast<std::uint64_t>(d));
}

bool json_equal(const json::value& a, const json::value& b) {
  if (a.is_number() && b.is_number()) return number_equal(a, b);
  if (const json::array* x = a.if_array()) {
    const json::array* y = b.if_array();
    if (!y || x->size() != y->size()) return false;
    for (std::size_t i = 0; i < x->size(); ++i) {
      if (!json_equal((*x)[i], (*y)[i])) return false;
    }
    return true;
  }
  if (const json::object* x = a.if_object()) {
    const json::object* y = b.if_object();
    if (!y || x->size() != y->size()) return false;
    for (const auto& [key, value] : *x) {
      const json::value* other = y->if_contains(key);
      if (!other || !json_equal(value, *other)) return false;
    }
    return true;
  }
  return a == b;
}

// ---- JSON Patch (RFC 6902) ----

enum class OpKind { kAdd, kRemove, kReplace, kMove, kCopy, kTest };

struct Op {
  OpKind kind;
  Pointer path;
  Pointer from;                         // move, copy
  const json::value* value = nullptr;  // add, replace, test
};

std::unexpected<Error> bad(std::size_t index, std::string_view message) {
  return fail(Errc::kBadRequest,
              "json patch operation " + std::to_string(index) + ": " + std::string(message));
}

Result<Pointer> pointer_member(const json::object& o, std::string_view name, std::size_t index) {
  const json::value* v = o.if_contains(name);
  if (!v) return bad(index, "missing \"" + std::string(name) + "\"");
  const json::string* s = v->if_string();
  if (!s) return bad(index, "\"" + std::string(name) + "\" must be a string");
  auto p = parse_pointer(sv(*s));
  if (!p) return bad(index, "\"" + std::string(name) + "\": " + p.error());
  return std::move(*p);
}

Result<Op> parse_op(const json::value& v, std::size_t index) {
  const json::object* o = v.if_object();
  if (!o) return bad(index, "not an object");
  const json::value* op = o->if_contains("op");
  if (!op) return bad(index, "missing \"op\"");
  const json::string* name = op->if_string();
  if (!name) return bad(index, "\"op\" must be a string");
  static constexpr std::pair<std::string_view, OpKind> kOps[] = {
      {"add", OpKind::kAdd},   {"remove", OpKind::kRemove}, {"replace", OpKind::kReplace},
      {"move", OpKind::kMove}, {"copy", OpKind::kCopy},     {"test", OpKind::kTest}};
  const auto* found = std::find_if(std::begin(kOps), std::end(kOps),
                                   [&](const auto& e) { return e.first == sv(*name); });
  if (found == std::end(kOps)) return bad(index, "unknown op \"" + std::string(sv(*name)) + "\"");
  Op out{found->second, {}, {}, nullptr};
  auto path = pointer_member(*o, "path", index);
  if (!path) return std::unexpected(std::move(path.error()));
  out.path = std::move(*path);
  if (out.kind == OpKind::kMove || out.kind == OpKind::kCopy) {
    auto from = pointer_member(*o, "from", index);
    if (!from) return std::unexpected(std::move(from.error()));
    out.from = std::move(*from);
  }
  if (out.kind == OpKind::kAdd || out.kind == OpKind::kReplace || out.kind == OpKind::kTest) {
    out.value = o->if_contains("value");
    if (!out.value) return bad(index, "missing \"value\"");
  }
  return out;
}

Result<void> apply_op(json::value& doc, const Op& op) {
  switch (op.kind) {
    case OpKind::kAdd: return add(doc, op.path, *op.value);
    case OpKind::kRemove: {
      auto removed = remove(doc, op.path);
      if (!removed) return std::unexpected(std::move(removed.error()));
      return {};
    }
    case OpKind::kReplace: {
      auto v = locate(doc, op.path, op.path.tokens.size());
      if (!v) return std::unexpected(std::move(v.error()));
      **v = *op.value;
      return {};
    }
    case OpKind::kMove: {
      const auto& f = op.from.tokens;
      const auto& t = op.path.tokens;
      if (f.size() < t.size() && std::equal(f.begin(), f.end(), t.begin())) {
        return fail(Errc::kInvalid, "cannot move \"" + op.from.text +
                                        "\" into its own child \"" + op.path.text + "\"");
      }
      if (f == t) {  // a no-op, but the location must exist
        auto v = locate(doc, op.from, f.size());
        if (!v) return std::unexpected(std::move(v.error()));
        return {};
      }
      auto removed = remove(doc, op.from);
      if (!removed) return std::unexpected(std::move(removed.error()));
      return add(doc, op.path, std::move(*removed));
    }
    case OpKind::kCopy: {
      auto v = locate(doc, op.from, op.from.tokens.size());
      if (!v) return std::unexpected(std::move(v.error()));
      return add(doc, op.path, **v);  // copied before add() can move it
    }
    case OpKind::kTest: {
      auto v = locate(doc, op.path, op.path.tokens.size());
      if (!v) return std::unexpected(std::move(v.error()));
      if (!json_equal(**v, *op.value)) {
        return fail(Errc::kInvalid, "test failed at " + op.path.text);
      }
      return {};
    }
  }
  return fail(Errc::kInternal, "unknown json patch operation");
}

char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

}  // namespace

Result<json::value> apply_merge_patch(const json::value& target, const json::value& patch) {
  return merge(target, patch, 0);
}

Result<json::value> apply_json_patch(const json::value& target, const json::value& patch) {
  const json::array* ops = patch.if_array();
  if (!ops) return fail(Errc::kBadRequest, "json patch must be an array of operations");
  if (ops->size() > kMaxPatchOperations) {
    return fail(Errc::kBadRequest, "json patch has " + std::to_string(ops->size()) +
                                       " operations, more than 10000");
  }
  // Validate the whole document first: a malformed patch is rejected as such even when an
  // earlier operation would not apply.
  std::vector<Op> parsed;
  parsed.reserve(ops->size());
  for (std::size_t i = 0; i < ops->size(); ++i) {
    auto op = parse_op((*ops)[i], i);
    if (!op) return std::unexpected(std::move(op.error()));
    parsed.push_back(std::move(*op));
  }
  json::value doc = target;
  for (std::size_t i = 0; i < parsed.size(); ++i) {
    if (auto r = apply_op(doc, parsed[i]); !r) {
      r.error().message = "json patch operation " + std::to_string(i) + ": " + r.error().message;
      return std::unexpected(std::move(r.error()));
    }
  }
  return doc;
}

std::optional<PatchType> patch_type_from_content_type(std::string_view content_type) {
  std::string_view t = content_type.substr(0, content_type.find(';'));
  while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
  while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
  static constexpr std::pair<std::string_view, PatchType> kTypes[] = {
      {"application/merge-patch+json", PatchType::kMerge},
      {"application/json-patch+json", PatchType::kJson},
      {"application/strategic-merge-patch+json", PatchType::kStrategicMerge},
      {"application/apply-patch+yaml", PatchType::kApply}};
  for (const auto& [name, type] : kTypes) {
    if (name.size() == t.size() &&
        std::equal(name.begin(), name.end(), t.begin(),
                   [](char a, char b) { return a == ascii_lower(b); })) {
      return type;
    }
  }
  return std::nullopt;
}

}  // namespace kos::apiserver
