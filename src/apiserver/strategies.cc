// The Strategies of the KOS kinds (typed, through src/api) and of core/v1 Events
// (schemaless apart from metadata and the fields kubectl selects on).
#include <algorithm>
#include <cctype>

#include "api/describe.h"
#include "api/names.h"
#include "api/validation.h"
#include "apiserver/resource.h"

namespace kos::apiserver {
namespace json = boost::json;
using std::chrono::system_clock;

std::string age(system_clock::time_point created, system_clock::time_point now) {
  auto s = std::chrono::duration_cast<std::chrono::seconds>(now - created).count();
  if (s < 0) s = 0;
  if (s < 120) return std::to_string(s) + "s";
  long m = s / 60, h = m / 60, d = h / 24;
  if (m < 10) return std::to_string(m) + "m" + (s % 60 ? std::to_string(s % 60) + "s" : "");
  if (h < 3) return std::to_string(m) + "m";
  if (h < 8) return std::to_string(h) + "h" + (m % 60 ? std::to_string(m % 60) + "m" : "");
  if (d < 2) return std::to_string(h) + "h";
  if (d < 8) return std::to_string(d) + "d" + (h % 24 ? std::to_string(h % 24) + "h" : "");
  if (d < 365 * 2) return std::to_string(d) + "d";
  return std::to_string(d / 365) + "y";
}

Result<api::ObjectMeta> read_meta(const json::object& obj) {
  const json::value* m = obj.if_contains("metadata");
  if (!m) return api::ObjectMeta{};
  return api::from_json<api::ObjectMeta>(*m);
}

void write_meta(json::object& obj, const api::ObjectMeta& meta) {
  obj["metadata"] = api::to_json(meta);
}

const json::value* find_path(const json::object& obj, std::string_view path) {
  const json::object* cur = &obj;
  while (true) {
    auto dot = path.find('.');
    std::string_view part = path.substr(0, dot);
    const json::value* v = cur->if_contains(json::string_view(part.data(), part.size()));
    if (!v || dot == std::string_view::npos) return v;
    cur = v->if_object();
    if (!cur) return nullptr;
    path.remove_prefix(dot + 1);
  }
}

namespace {

json::value cell_string(std::string_view s) { return json::string(s); }

// ---- KOS kinds ------------------------------------------------------------------------

template <class T>
class KosStrategy final : public Strategy {
 public:
  KosStrategy() {
    const auto& k = api::kind_info(T::kKind);
    info_.group = std::string(api::kGroup);
    info_.version = std::string(api::kVersion);
    info_.kind = std::string(k.name);
    info_.plural = std::string(k.plural);
    info_.singular = std::string(k.singular);
    info_.short_names = {std::string(k.short_name)};
    for (auto c : api::kCategories) info_.categories.emplace_back(c);
    info_.has_status = k.has_status;
    const api::KindDesc<T>& d = api::describe<T>();
    for (auto f : d.indexed_fields) info_.indexed_fields.emplace_back(f);
    info_.cluster_unique_names = d.cluster_unique_names;
  }

  const ResourceInfo& info() const override { return info_; }

  Result<json::object> canonicalize(const json::value& in,
                                    const api::DecodeOptions& opts) const override {
    auto obj = api::from_json<T>(in, opts);
    if (!obj) return fail(obj.error());
    return api::to_json(*obj);
  }

  Result<void> validate(const json::object& obj) const override {
    auto t = typed(obj);
    if (!t) return fail(t.error());
    return api::validate(api::AnyObject(std::move(*t)));
  }

  Result<void> validate_update(const json::object& old_obj,
                               const json::object& new_obj) const override {
    auto o = typed(old_obj);
    if (!o) return fail(o.error());
    auto n = typed(new_obj);
    if (!n) return fail(n.error());
    return api::validate_update(api::AnyObject(std::move(*o)), api::AnyObject(std::move(*n)));
  }

  std::vector<std::string_view> changed_sections(const json::object* old_obj,
                                                 const json::object& new_obj) const override {
    auto n = typed(new_obj);
    if (!n) return {};
    std::optional<T> o;
    if (old_obj) {
      if (auto r = typed(*old_obj)) o = std::move(*r);
    }
    const api::KindDesc<T>& d = api::describe<T>();
    std::vector<std::string_view> changed;
    api::struct_sections(*d.spec_desc, o ? &o->spec : nullptr, n->spec, api::section::kSpec,
                         changed);
    if constexpr (requires { n->status; }) {
      api::struct_sections(*d.status_desc, o ? &o->status : nullptr, n->status,
                           api::section::kStatus, changed);
    }
    // A new object's spec is a write of the spec, even when it is empty.
    if (!o) api::describe_detail::add_section(changed, api::section::kSpec);
    std::vector<std::string_view> out;
    for (auto s : d.sections) {
      if (std::ranges::find(changed, s) != changed.end()) out.push_back(s);
    }
    return out;
  }

  Fields fields(const json::object& obj) const override {
    Fields out;
    auto t = typed(obj);
    if (!t) return out;
    for (auto f : api::selectable_fields(T::kKind)) {
      if (auto v = api::field_value(*t, f)) out.emplace_back(f, std::move(*v));
    }
    return out;
  }

  Result<void> check_field_selector(const api::FieldSelector& sel) const override {
    return api::check_fields(sel, T::kKind);
  }

  std::span<const TableColumn> columns() const override {
    static const std::vector<TableColumn> cols = make_columns();
    return cols;
  }

  json::array cells(const json::object& obj, system_clock::time_point now) const override {
    json::array row;
    auto t = typed(obj);
    if (!t) return row;
    const auto& m = t->metadata;
    row.push_back(cell_string(m.name));
    for (const auto& c : api::describe<T>().columns) row.push_back(c.cell(*t));
    row.push_back(cell_string(age(m.creation_timestamp, now)));
    return row;
  }

 private:
  static Result<T> typed(const json::object& obj) { return api::from_json<T>(obj); }

  static std::vector<TableColumn> make_columns() {
    std::vector<TableColumn> c{{"Name", "string", "name", "Name of the object", 0}};
    for (const auto& col : api::describe<T>().columns) {
      c.push_back({col.name, col.type, "", col.description, col.priority});
    }
    c.push_back({"Age", "string", "", "Time since creation", 0});
    return c;
  }

  ResourceInfo info_;
};

// ---- schemaless kinds (core/v1 Event, coordination.k8s.io/v1 Lease) ---------------------

// A kind whose body KOS does not model: metadata is decoded and checked, the rest is kept
// as sent; a fixed list of string fields is selectable.
class SchemalessStrategy : public Strategy {
 public:
  SchemalessStrategy(ResourceInfo info, std::vector<std::string_view> fields,
                     std::vector<std::string_view> required)
      : info_(std::move(info)), fields_(std::move(fields)), required_(std::move(required)) {}
  const ResourceInfo& info() const override { return info_; }

  Result<json::object> canonicalize(const json::value& in,
                                    const api::DecodeOptions& opts) const override {
    const json::object* o = in.if_object();
    if (!o) return fail(Errc::kBadRequest, "a " + info_.kind + " must be a JSON object");
    const std::string api_version = info_.api_version();
    if (auto* k = o->if_contains("kind"); k && (!k->is_string() || k->get_string() != info_.kind))
      return fail(Errc::kBadRequest, "kind: expected \"" + info_.kind + "\"");
    if (auto* a = o->if_contains("apiVersion");
        a && (!a->is_string() || a->get_string() != api_version))
      return fail(Errc::kBadRequest, "apiVersion: expected \"" + api_version + "\"");
    const json::value* m = o->if_contains("metadata");
    auto meta = api::from_json<api::ObjectMeta>(m ? *m : json::value(json::object()), opts);
    if (!meta) return fail(meta.error());
    json::object canon;
    canon["kind"] = info_.kind;
    canon["apiVersion"] = api_version;
    canon["metadata"] = api::to_json(*meta);
    for (const auto& kv : *o)
      if (kv.key() != "kind" && kv.key() != "apiVersion" && kv.key() != "metadata")
        canon[kv.key()] = kv.value();
    return canon;
  }

  Result<void> validate(const json::object& obj) const override {
    std::vector<FieldCause> causes;
    auto meta = read_meta(obj);
    if (!meta) return fail(meta.error());
    if (meta->name.empty())
      causes.push_back({"FieldValueRequired", "Required value", "metadata.name"});
    else if (auto why = api::dns1123_subdomain_error(meta->name))
      causes.push_back({"FieldValueInvalid", *why, "metadata.name"});
    for (auto f : required_)
      if (!find_path(obj, f)) causes.push_back({"FieldValueRequired", "Required value", std::string(f)});
    if (causes.empty()) return {};
    std::string msg = info_.kind + " \"" + meta->name + "\" is invalid:";
    for (const auto& c : causes) msg += " " + c.field + ": " + c.message + ";";
    msg.pop_back();
    return fail(Error{Errc::kInvalid, std::move(msg), std::move(causes)});
  }

  Result<void> validate_update(const json::object& old_obj,
                               const json::object& new_obj) const override {
    auto o = read_meta(old_obj);
    auto n = read_meta(new_obj);
    if (o && n && o->uid != n->uid)
      return fail(Error{Errc::kInvalid, info_.kind + " \"" + n->name + "\" is invalid: metadata.uid: field is immutable",
                        {{"FieldValueInvalid", "field is immutable", "metadata.uid"}}});
    return validate(new_obj);
  }

  Fields fields(const json::object& obj) const override {
    Fields out;
    for (auto f : fields_) {
      const json::value* v = find_path(obj, f);
      if (!v) out.emplace_back(f, std::string());
      else if (v->is_string()) out.emplace_back(f, std::string(v->get_string()));
    }
    return out;
  }

  Result<void> check_field_selector(const api::FieldSelector& sel) const override {
    for (const auto& r : sel.requirements())
      if (std::find(fields_.begin(), fields_.end(), r.field) == fields_.end())
        return fail(Errc::kBadRequest, "field label not supported: " + r.field);
    return {};
  }

 protected:
  static std::string str(const json::object& obj, std::string_view path) {
    const json::value* v = find_path(obj, path);
    return v && v->is_string() ? std::string(v->get_string()) : std::string();
  }

 private:
  ResourceInfo info_;
  std::vector<std::string_view> fields_;
  std::vector<std::string_view> required_;
};

ResourceInfo schemaless_info(std::string group, std::string version, std::string kind,
                             std::string plural, std::vector<std::string> short_names) {
  ResourceInfo i;
  i.group = std::move(group);
  i.version = std::move(version);
  i.singular = plural.substr(0, plural.size() - 1);
  i.kind = std::move(kind);
  i.plural = std::move(plural);
  i.short_names = std::move(short_names);
  return i;
}

class EventStrategy final : public SchemalessStrategy {
 public:
  EventStrategy()
      : SchemalessStrategy(schemaless_info("", "v1", "Event", "events", {"ev"}),
                           {"metadata.name", "metadata.namespace", "involvedObject.kind",
                            "involvedObject.name", "involvedObject.namespace", "involvedObject.uid",
                            "involvedObject.apiVersion", "involvedObject.resourceVersion",
                            "involvedObject.fieldPath", "reason", "reportingComponent", "type"},
                           {"involvedObject"}) {}

  std::span<const TableColumn> columns() const override {
    static const std::vector<TableColumn> cols{
        {"Last Seen", "string", "", "Time of the last occurrence", 0},
        {"Type", "string", "", "Normal or Warning", 0},
        {"Reason", "string", "", "Short machine-readable reason", 0},
        {"Object", "string", "", "The object the event is about", 0},
        {"Message", "string", "", "What happened", 0},
        {"Name", "string", "name", "Name of the event", 1},
    };
    return cols;
  }

  json::array cells(const json::object& obj, system_clock::time_point now) const override {
    std::string last = str(obj, "lastTimestamp");
    if (last.empty()) last = str(obj, "eventTime");
    std::string seen = "<unknown>";
    if (auto t = api::parse_micro_time(last)) seen = age(*t, now);
    std::string kind = str(obj, "involvedObject.kind");
    for (auto& c : kind) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    json::array row;
    row.push_back(cell_string(seen));
    row.push_back(cell_string(str(obj, "type")));
    row.push_back(cell_string(str(obj, "reason")));
    row.push_back(cell_string(kind + "/" + str(obj, "involvedObject.name")));
    row.push_back(cell_string(str(obj, "message")));
    row.push_back(cell_string(str(obj, "metadata.name")));
    return row;
  }
};

class LeaseStrategy final : public SchemalessStrategy {
 public:
  LeaseStrategy()
      : SchemalessStrategy(schemaless_info("coordination.k8s.io", "v1", "Lease", "leases", {}),
                           {"metadata.name", "metadata.namespace", "spec.holderIdentity"}, {}) {}

  std::span<const TableColumn> columns() const override {
    static const std::vector<TableColumn> cols{
        {"Name", "string", "name", "Name of the lease", 0},
        {"Holder", "string", "", "Current holder", 0},
        {"Age", "string", "", "Time since creation", 0},
    };
    return cols;
  }

  json::array cells(const json::object& obj, system_clock::time_point now) const override {
    json::array row;
    row.push_back(cell_string(str(obj, "metadata.name")));
    row.push_back(cell_string(str(obj, "spec.holderIdentity")));
    auto created = api::parse_time(str(obj, "metadata.creationTimestamp"));
    row.push_back(cell_string(created ? age(*created, now) : "<unknown>"));
    return row;
  }
};

}  // namespace

std::unique_ptr<Strategy> make_kos_strategy(api::Kind kind) {
  return std::visit(
      [](const auto& zero) -> std::unique_ptr<Strategy> {
        return std::make_unique<KosStrategy<std::decay_t<decltype(zero)>>>();
      },
      api::make_object(kind));
}

std::unique_ptr<Strategy> make_event_strategy() { return std::make_unique<EventStrategy>(); }
std::unique_ptr<Strategy> make_lease_strategy() { return std::make_unique<LeaseStrategy>(); }

}  // namespace kos::apiserver
