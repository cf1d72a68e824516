#include "api/selectors.h"

#include <algorithm>
#include <array>
#include <cctype>

#include "api/describe.h"
#include "api/names.h"

namespace kos::api {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

std::string excerpt(std::string_view s) {
  constexpr std::size_t kMax = 100;
  return std::string(s.substr(0, kMax)) + (s.size() > kMax ? "..." : "");
}

// Recursive descent over the label selector grammar:
//   selector    := "" | requirement ("," requirement)*
//   requirement := "!" key | key | key ("=" | "==" | "!=") value
//                | key ("in" | "notin") "(" value ("," value)* ")"
class LabelParser {
 public:
  explicit LabelParser(std::string_view text) : text_(text) {}

  Result<std::vector<LabelRequirement>> parse() {
    std::vector<LabelRequirement> out;
    if (peek().kind == Tok::kEnd) return out;
    for (;;) {
      auto r = requirement();
      if (!r) return fail(std::move(r.error()));
      out.push_back(std::move(*r));
      const Token t = next();
      if (t.kind == Tok::kEnd) return out;
      if (t.kind != Tok::kComma) return error(t, "expected ',' or the end");
    }
  }

 private:
  enum class Tok { kEnd, kIdent, kComma, kOpen, kClose, kEq, kDoubleEq, kNotEq, kBang };
  struct Token {
    Tok kind;
    std::string_view text;
    std::size_t pos;
  };

  Token scan(std::size_t& pos) const {
    while (pos < text_.size() && is_space(text_[pos])) ++pos;
    const std::size_t start = pos;
    if (pos == text_.size()) return {Tok::kEnd, {}, start};
    auto two = [&](Tok kind) {
      pos += 2;
      return Token{kind, text_.substr(start, 2), start};
    };
    auto one = [&](Tok kind) {
      pos += 1;
      return Token{kind, text_.substr(start, 1), start};
    };
    const bool eq_follows = pos + 1 < text_.size() && text_[pos + 1] == '=';
    switch (text_[pos]) {
      case ',': return one(Tok::kComma);
      case '(': return one(Tok::kOpen);
      case ')': return one(Tok::kClose);
      case '=': return eq_follows ? two(Tok::kDoubleEq) : one(Tok::kEq);
      case '!': return eq_follows ? two(Tok::kNotEq) : one(Tok::kBang);
    }
    while (pos < text_.size() && !is_space(text_[pos]) &&
           std::string_view(",()=!").find(text_[pos]) == std::string_view::npos) {
      ++pos;
    }
    return {Tok::kIdent, text_.substr(start, pos - start), start};
  }
  Token peek() const {
    std::size_t pos = pos_;
    return scan(pos);
  }
  Token next() { return scan(pos_); }

  std::unexpected<Error> error(const Token& at, std::string_view what) const {
    const std::string found = at.kind == Tok::kEnd ? "the end" : "\"" + excerpt(at.text) + "\"";
    return fail(Errc::kBadRequest, "invalid label selector \"" + excerpt(text_) +
                                       "\": at position " + std::to_string(at.pos) + ": " +
                                       std::string(what) + ", found " + found);
  }

  Result<std::string> key(const Token& t) const {
    if (t.kind != Tok::kIdent) return error(t, "expected a label key");
    if (auto e = qualified_name_error(t.text)) return error(t, "invalid label key: " + *e);
    return std::string(t.text);
  }

  // A value may be empty (`k=`), so a comma, ')' or the end right here means "".
  Result<std::string> value() {
    const Token t = peek();
    if (t.kind == Tok::kComma || t.kind == Tok::kClose || t.kind == Tok::kEnd) return "";
    if (t.kind != Tok::kIdent) return error(t, "expected a label value");
    next();
    if (auto e = label_value_error(t.text)) return error(t, "invalid label value: " + *e);
    return std::string(t.text);
  }

  Result<LabelRequirement> requirement() {
    using Op = LabelRequirement::Op;
    Token t = next();
    const bool negated = t.kind == Tok::kBang;
    if (negated) t = next();
    auto k = key(t);
    if (!k) return fail(std::move(k.error()));
    LabelRequirement r{std::move(*k), negated ? Op::kDoesNotExist : Op::kExists, {}};
    const Token op = peek();
    if (negated || op.kind == Tok::kEnd || op.kind == Tok::kComma) return r;
    next();
    if (op.kind == Tok::kEq || op.kind == Tok::kDoubleEq || op.kind == Tok::kNotEq) {
      r.op = op.kind == Tok::kNotEq ? Op::kNotEquals : Op::kEquals;
      auto v = value();
      if (!v) return fail(std::move(v.error()));
      r.values.push_back(std::move(*v));
      return r;
    }
    if (op.kind != Tok::kIdent || (op.text != "in" && op.text != "notin")) {
      return error(op, "expected an operator (=, ==, !=, in, notin)");
    }
    r.op = op.text == "in" ? Op::kIn : Op::kNotIn;
    if (const Token open = next(); open.kind != Tok::kOpen) return error(open, "expected '('");
    if (const Token t2 = peek(); t2.kind == Tok::kClose) return error(t2, "expected a value");
    for (;;) {
      auto v = value();
      if (!v) return fail(std::move(v.error()));
      r.values.push_back(std::move(*v));
      const Token sep = next();
      if (sep.kind == Tok::kClose) return r;
      if (sep.kind != Tok::kComma) return error(sep, "expected ',' or ')'");
    }
  }

  std::string_view text_;
  std::size_t pos_ = 0;
};

std::string field_error(std::string_view text, std::string_view what) {
  return "invalid field selector \"" + excerpt(text) + "\": " + std::string(what);
}

// Kubernetes' fields.UnescapeValue: `\` escapes `\`, `,`, `=` and `!`; those must not
// appear unescaped.
Result<std::string> unescape_value(std::string_view text, std::string_view v) {
  std::string out;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const char c = v[i];
    if (c == '\\') {
      if (i + 1 == v.size() || std::string_view("\\,=!").find(v[i + 1]) == std::string_view::npos) {
        return fail(Errc::kBadRequest,
                    field_error(text, "invalid escape sequence in value \"" + excerpt(v) + "\""));
      }
      out += v[++i];
    } else if (c == '=' || c == '!') {
      return fail(Errc::kBadRequest,
                  field_error(text, "unescaped '" + std::string(1, c) + "' in value \"" +
                                        excerpt(v) + "\"; write it as \\" + std::string(1, c)));
    } else {
      out += c;
    }
  }
  return out;
}

std::string escape_value(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == ',' || c == '=' || c == '!') out += '\\';
    out += c;
  }
  return out;
}

std::optional<std::string> meta_field(const ObjectMeta& m, std::string_view field) {
  if (field == "metadata.name") return m.name;
  if (field == "metadata.namespace") return m.namespace_;
  return std::nullopt;
}

// Views of each kind's selectable fields (describe.h), built once.
template <std::size_t... I>
const std::array<std::vector<std::string_view>, sizeof...(I)>& selectable_views(
    std::index_sequence<I...>) {
  static const std::array<std::vector<std::string_view>, sizeof...(I)> views{[] {
    const auto& names = describe(static_cast<Kind>(I)).selectable;
    return std::vector<std::string_view>(names.begin(), names.end());
  }()...};
  return views;
}

}  // namespace

Result<LabelSelector> LabelSelector::parse(std::string_view text) {
  auto reqs = LabelParser(text).parse();
  if (!reqs) return fail(std::move(reqs.error()));
  LabelSelector s;
  s.requirements_ = std::move(*reqs);
  return s;
}

bool LabelSelector::matches(const std::map<std::string, std::string>& labels) const {
  using Op = LabelRequirement::Op;
  return std::ranges::all_of(requirements_, [&](const LabelRequirement& r) {
    const auto it = labels.find(r.key);
    const bool has = it != labels.end();
    const bool in = has && std::ranges::find(r.values, it->second) != r.values.end();
    switch (r.op) {
      case Op::kEquals:
      case Op::kIn: return in;
      case Op::kNotEquals:
      case Op::kNotIn: return !in;
      case Op::kExists: return has;
      case Op::kDoesNotExist: return !has;
    }
    return false;
  });
}

std::string LabelSelector::to_string() const {
  using Op = LabelRequirement::Op;
  std::string out;
  for (const auto& r : requirements_) {
    if (!out.empty()) out += ',';
    std::string set;
    for (size_t i = 0; i < r.values.size(); ++i) set += (i == 0 ? "" : ",") + r.values[i];
    switch (r.op) {
      case Op::kEquals: out += r.key + "=" + set; break;
      case Op::kNotEquals: out += r.key + "!=" + set; break;
      case Op::kIn: out += r.key + " in (" + set + ")"; break;
      case Op::kNotIn: out += r.key + " notin (" + set + ")"; break;
      case Op::kExists: out += r.key; break;
      case Op::kDoesNotExist: out += "!" + r.key; break;
    }
  }
  return out;
}

Result<FieldSelector> FieldSelector::parse(std::string_view text) {
  // Split at unescaped commas; escapes stay in place for unescape_value.
  std::vector<std::string_view> terms;
  std::size_t start = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\') {
      ++i;
    } else if (text[i] == ',') {
      terms.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  terms.push_back(text.substr(start));
  FieldSelector s;
  for (std::string_view term : terms) {
    term = trim(term);
    if (term.empty()) continue;  // as Kubernetes: "a=b," is "a=b"
    std::size_t op = 0, op_len = 0;
    for (; op < term.size(); ++op) {
      if (term.substr(op).starts_with("!=") || term.substr(op).starts_with("==")) op_len = 2;
      else if (term[op] == '=') op_len = 1;
      if (op_len > 0) break;
    }
    if (op_len == 0) {
      return fail(Errc::kBadRequest,
                  field_error(text, "term \"" + excerpt(term) +
                                        "\" is not field=value, field==value or field!=value"));
    }
    const std::string_view field = trim(term.substr(0, op));
    if (field.empty()) {
      return fail(Errc::kBadRequest,
                  field_error(text, "term \"" + excerpt(term) + "\" has no field"));
    }
    // Field paths are dotted identifiers; anything else (a stray '!', a space) would
    // make the term ambiguous.
    if (!std::ranges::all_of(field, [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
        })) {
      return fail(Errc::kBadRequest,
                  field_error(text, "invalid field name \"" + excerpt(field) + "\""));
    }
    auto value = unescape_value(text, trim(term.substr(op + op_len)));
    if (!value) return fail(std::move(value.error()));
    s.requirements_.push_back(
        FieldRequirement{std::string(field), term[op] != '!', std::move(*value)});
  }
  return s;
}

bool FieldSelector::matches(const AnyObject& obj) const {
  return matches([&](std::string_view field) { return field_value(obj, field); });
}

std::optional<std::string> FieldSelector::exact_value(std::string_view field) const {
  for (const auto& r : requirements_) {
    if (r.equals && r.field == field) return r.value;
  }
  return std::nullopt;
}

std::string FieldSelector::to_string() const {
  std::string out;
  for (const auto& r : requirements_) {
    if (!out.empty()) out += ',';
    out += r.field + (r.equals ? "=" : "!=") + escape_value(r.value);
  }
  return out;
}

std::span<const std::string_view> selectable_fields(Kind kind) {
  return selectable_views(std::make_index_sequence<std::variant_size_v<AnyObject>>())
      .at(static_cast<std::size_t>(kind));
}

Result<void> check_fields(const FieldSelector& selector, Kind kind) {
  const auto fields = selectable_fields(kind);
  for (const auto& r : selector.requirements()) {
    if (std::ranges::find(fields, r.field) == fields.end()) {
      return fail(Errc::kBadRequest, "field label not supported: " + excerpt(r.field));
    }
  }
  return {};
}

template <class T>
std::optional<std::string> field_value(const T& obj, std::string_view field) {
  if (auto v = meta_field(obj.metadata, field)) return v;
  return described_field_value(obj, field);
}

// Instantiates field_value<T> for every kind, which other files call.
std::optional<std::string> field_value(const AnyObject& obj, std::string_view field) {
  return std::visit([&](const auto& x) { return field_value(x, field); }, obj);
}

}  // namespace kos::api
