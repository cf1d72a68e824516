#include "apiserver/openapi.h"

#include <cstdint>
#include <cstdio>
#include <iterator>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include "api/describe.h"
#include "api/names.h"
#include "api/types.h"
#include "openapiv2/OpenAPIv2.pb.h"

namespace kos::apiserver {
namespace {

namespace json = boost::json;
namespace pb = ::openapi::v2;

constexpr std::string_view kMetaPrefix = "io.k8s.apimachinery.pkg.apis.meta.v1.";
// The group reversed, as Kubernetes names the definitions of custom resources.
constexpr std::string_view kKosPrefix = "com.example.network.v1alpha1.";
constexpr std::string_view kGvkExtension = "x-kubernetes-group-version-kind";
constexpr std::string_view kActionExtension = "x-kubernetes-action";
constexpr std::string_view kJson = "application/json";

std::string meta_def(std::string_view name) { return std::string(kMetaPrefix) + std::string(name); }
std::string kos_def(std::string_view name) { return std::string(kKosPrefix) + std::string(name); }
std::string str(std::string_view s) { return std::string(s); }

// ---- The schema table: one source of truth for OpenAPI v2 and v3 ----

struct Property;

struct Schema {
  enum class Type { kObject, kString, kInteger, kBoolean, kArray, kMap, kRef };
  Type type = Type::kObject;
  std::string description;
  std::string format;                // kString, kInteger
  std::string ref;                   // kRef: the name of a definition
  std::vector<Property> properties;  // kObject, in JSON encoding order
  std::vector<std::string> required;
  std::vector<Schema> element;  // kArray: the item schema; kMap: the value schema (one)
  std::optional<std::int64_t> minimum;
  std::optional<std::int64_t> maximum;
  std::string gvk_kind;  // top-level kinds: x-kubernetes-group-version-kind
};

struct Property {
  std::string name;
  Schema schema;
};

struct Definition {
  std::string name;
  Schema schema;
};

Schema string_schema(std::string description, std::string format = {}) {
  Schema s;
  s.type = Schema::Type::kString;
  s.description = std::move(description);
  s.format = std::move(format);
  return s;
}

Schema bool_schema(std::string description) {
  Schema s;
  s.type = Schema::Type::kBoolean;
  s.description = std::move(description);
  return s;
}

Schema int_schema(std::string format, std::string description,
                  std::optional<std::int64_t> minimum = {},
                  std::optional<std::int64_t> maximum = {}) {
  Schema s;
  s.type = Schema::Type::kInteger;
  s.format = std::move(format);
  s.description = std::move(description);
  s.minimum = minimum;
  s.maximum = maximum;
  return s;
}

Schema ref_schema(std::string definition, std::string description) {
  Schema s;
  s.type = Schema::Type::kRef;
  s.ref = std::move(definition);
  s.description = std::move(description);
  return s;
}

Schema array_schema(Schema item, std::string description) {
  Schema s;
  s.type = Schema::Type::kArray;
  s.description = std::move(description);
  s.element.push_back(std::move(item));
  return s;
}

Schema string_list(std::string description) {
  return array_schema(string_schema({}), std::move(description));
}

Schema string_map(std::string description) {
  Schema s;
  s.type = Schema::Type::kMap;
  s.description = std::move(description);
  s.element.push_back(string_schema({}));
  return s;
}

Schema object_schema(std::string description, std::vector<Property> properties,
                     std::vector<std::string> required = {}) {
  Schema s;
  s.type = Schema::Type::kObject;
  s.description = std::move(description);
  s.properties = std::move(properties);
  s.required = std::move(required);
  return s;
}

// The schema of one described field (api/describe.h).
Schema field_schema(const api::FieldInfo& f) {
  switch (f.type) {
    case api::FieldType::kString: return string_schema(f.description, str(f.format));
    case api::FieldType::kInteger:
      return int_schema(str(f.format), f.description, f.minimum, f.maximum);
    case api::FieldType::kBoolean: return bool_schema(f.description);
    case api::FieldType::kStringList: return string_list(f.description);
    case api::FieldType::kTime: return ref_schema(meta_def("MicroTime"), f.description);
    case api::FieldType::kObject: return ref_schema(kos_def(f.nested->name), f.description);
    case api::FieldType::kObjectList:
      return array_schema(ref_schema(kos_def(f.nested->name), {}), f.description);
  }
  return string_schema(f.description);
}

// The definition of a described struct, after those of the structs nested in it.
void add_struct(const api::StructInfo& s, std::vector<Definition>& defs) {
  std::vector<Property> props;
  std::vector<std::string> required;
  for (const api::FieldInfo* f : s.fields) {
    if (f->nested) add_struct(*f->nested, defs);
    props.push_back({str(f->name), field_schema(*f)});
    if (f->required) required.push_back(str(f->name));
  }
  const std::string name = kos_def(s.name);
  for (const auto& d : defs) {
    if (d.name == name) return;
  }
  defs.push_back({name, object_schema(s.description, std::move(props), std::move(required))});
}

std::vector<Definition> meta_definitions() {
  std::vector<Definition> defs;
  defs.push_back(
      {meta_def("Time"), string_schema("A point in time in RFC 3339 form, UTC, whole seconds, e.g. "
                                       "\"2024-01-02T15:04:05Z\".",
                                       "date-time")});
  defs.push_back({meta_def("MicroTime"),
                  string_schema("A point in time in RFC 3339 form, UTC, with microseconds, "
                                "e.g. \"2024-01-02T15:04:05.000123Z\".",
                                "date-time")});
  defs.push_back(
      {meta_def("OwnerReference"),
       object_schema(
           "A reference to an object this object depends on (its owner). The owner must be "
           "in the same namespace.",
           {
               {"apiVersion", string_schema("API version of the owner, e.g. "
                                            "\"network.example.com/v1alpha1\".")},
               {"kind", string_schema("Kind of the owner, e.g. \"NetworkAttachment\".")},
               {"name", string_schema("Name of the owner.")},
               {"uid", string_schema("UID of the owner. A dependent whose owner UID no longer "
                                     "exists is garbage-collected, even when an object "
                                     "with the owner's name exists again.")},
               {"controller", bool_schema("True if the owner is the managing controller of "
                                          "this object. At most one owner may be the "
                                          "controller.")},
               {"blockOwnerDeletion",
                bool_schema("If true, foreground deletion of the owner waits until this "
                            "dependent is removed.")},
           },
           {"apiVersion", "kind", "name", "uid"})});
  defs.push_back(
      {meta_def("ObjectMeta"),
       object_schema(
           "Metadata that every persisted object has: name, namespace, identity, version "
           "and the labels, annotations, owners and finalizers clients attach.",
           {
               {"name", string_schema("Name of the object, unique among the objects of its "
                                      "kind in its namespace (a DNS-1123 subdomain). Required "
                                      "on create unless generateName is set. Immutable.")},
               {"generateName",
                string_schema("A prefix from which the server generates a unique name on "
                              "create, when name is empty.")},
               {"namespace", string_schema("The namespace of the object. All KOS kinds are "
                                           "namespaced. Immutable.")},
               {"uid", string_schema("Unique identifier the server assigns on create. Two "
                                     "objects created with the same name at different times "
                                     "have different UIDs. Read-only.")},
               {"resourceVersion",
                string_schema("Opaque version of the object, changed by every write (the "
                              "store revision of its last change). An update must carry the "
                              "current value, else it fails with Conflict; watches resume "
                              "from it. Read-only; clients must not interpret it.")},
               {"generation", int_schema("int64",
                                         "Sequence number of the desired state: 1 "
                                         "on create, incremented by every change "
                                         "outside metadata and status. Read-only.")},
               {"creationTimestamp", ref_schema(meta_def("Time"),
                                                "When the server created the object. "
                                                "Read-only.")},
               {"deletionTimestamp",
                ref_schema(meta_def("Time"),
                           "When deletion was requested. Set while finalizers keep a deleted "
                           "object; the object goes away when the finalizers list is empty. "
                           "Read-only.")},
               {"deletionGracePeriodSeconds",
                int_schema("int64",
                           "Seconds allowed for graceful termination before the "
                           "object is removed; set only once deletion was "
                           "requested. Read-only.")},
               {"labels", string_map("String keys and values to organize and select objects "
                                     "(label selectors: kubectl get -l key=value).")},
               {"annotations", string_map("String keys and values for arbitrary "
                                          "non-identifying data, at most 256 KiB in total.")},
               {"ownerReferences",
                array_schema(ref_schema(meta_def("OwnerReference"), {}),
                             "Objects this object depends on. When all of its owners are "
                             "gone the object is garbage-collected. At most one entry may "
                             "have controller=true.")},
               {"finalizers",
                string_list("Cleanup steps that must finish before a deleted object is "
                            "removed; while the list is not empty the object stays, with "
                            "deletionTimestamp set. \"foregroundDeletion\" and \"orphan\" "
                            "are set by the server for those propagation policies.")},
           })});
  defs.push_back(
      {meta_def("ListMeta"),
       object_schema(
           "Metadata of a list response.",
           {
               {"resourceVersion",
                string_schema("The store revision the list was read at; a watch started "
                              "from it sees every later change. Opaque to clients.")},
               {"continue", string_schema("Opaque token to fetch the next page of the same "
                                          "query (continue=...), present when limit cut the "
                                          "list short.")},
               {"remainingItemCount",
                int_schema("int64",
                           "How many items the list has beyond this page, when "
                           "known.")},
           })});
  return defs;
}

std::vector<Definition> kos_definitions() {
  std::vector<Definition> defs;
  defs.push_back(
      {kos_def("ObjectWrite"),
       object_schema("When the server last stored a change to one section of an object.",
                     {
                         {"section", string_schema("Name of the section: \"spec\", "
                                                   "\"status\", \"status.address\", "
                                                   "\"status.impl\" or "
                                                   "\"status.execReport\".")},
                         {"serverTime", ref_schema(meta_def("MicroTime"),
                                                   "When the server stored the latest change "
                                                   "to the section.")},
                     })});
  defs.push_back(
      {kos_def("ExtendedObjectMeta"),
       object_schema(
           "Server-written record of when each section of the object last changed, to "
           "measure the latency between stages (created, addressed, implemented). Written "
           "only by the server.",
           {
               {"writes",
                array_schema(ref_schema(kos_def("ObjectWrite"), {}),
                             "One entry per section that has been written, newest first. "
                             "Sections: NetworkAttachment spec, status.address (by IPAM), "
                             "status.impl and status.execReport (by the connection agent); "
                             "Subnet spec and status; IPLock spec.")},
           })});

  // The spec and status of every kind, from its description.
  for (const auto& k : api::all_kinds()) {
    const api::KindDescBase& d = api::describe(k.kind);
    add_struct(*d.spec, defs);
    if (d.status) add_struct(*d.status, defs);
  }

  // The kinds and their lists.
  const std::string status_note =
      " Written by the KOS controllers through the status subresource (.../status); "
      "ignored on create and on updates of the main resource.";
  for (const auto& k : api::all_kinds()) {
    const api::KindDescBase& doc = api::describe(k.kind);
    const std::string name(k.name);
    std::vector<Property> props = {
        {"apiVersion",
         string_schema("The versioned schema of this representation of the object: \"" +
                       str(api::kApiVersion) + "\".")},
        {"kind", string_schema("The kind of the object: \"" + name + "\".")},
        {"metadata", ref_schema(meta_def("ObjectMeta"),
                                "Standard object metadata: name, namespace, labels, owners, "
                                "...")},
        {"extendedMetadata", ref_schema(kos_def("ExtendedObjectMeta"),
                                        "Server-written times of the last change of each "
                                        "section of the object, for latency measurement.")},
        {"spec", ref_schema(kos_def(doc.spec->name), doc.spec_description)},
    };
    if (doc.status) {
      props.push_back({"status", ref_schema(kos_def(doc.status->name),
                                            doc.status_description + status_note)});
    }
    Definition kind{kos_def(name), object_schema(doc.description, std::move(props))};
    kind.schema.gvk_kind = name;
    defs.push_back(std::move(kind));

    Definition list{
        kos_def(name + "List"),
        object_schema("A list of " + name + " objects.",
                      {
                          {"apiVersion", string_schema("The versioned schema of this "
                                                       "representation of the list: \"" +
                                                       str(api::kApiVersion) + "\".")},
                          {"kind", string_schema("The kind of the list: \"" + name + "List\".")},
                          {"metadata", ref_schema(meta_def("ListMeta"),
                                                  "Standard list metadata: resourceVersion "
                                                  "and the continue token.")},
                          {"items", array_schema(ref_schema(kos_def(name), {}),
                                                 "The " + str(k.plural) + ".")},
                      },
                      {"items"})};
    list.schema.gvk_kind = name + "List";
    defs.push_back(std::move(list));
  }
  return defs;
}

std::vector<Definition> all_definitions() {
  std::vector<Definition> defs = meta_definitions();
  for (auto& d : kos_definitions()) defs.push_back(std::move(d));
  return defs;
}

// ---- The resource paths ----

struct Param {
  std::string name;
  std::string in;    // "path" or "query"
  std::string type;  // "string", "integer" or "boolean"
  std::string description;
};

enum class Body { kNone, kObject, kPatch };

struct Operation {
  std::string method;  // "get", "put", "post", "delete", "patch"
  std::string action;  // x-kubernetes-action
  std::string id;
  std::string description;
  std::vector<Param> query;
  Body body = Body::kNone;
  std::string body_ref;      // Body::kObject: the definition sent
  std::string response_ref;  // 200 (and 201) response definition; empty: none
  bool created = false;      // also answers 201 Created
  std::vector<std::string> consumes;
  std::vector<std::string> produces;
  std::string kind;  // x-kubernetes-group-version-kind
};

struct PathDef {
  std::string path;
  std::vector<Param> params;  // path parameters of every operation
  std::vector<Operation> operations;
};

// The request bodies PATCH accepts. Strategic merge patch is deliberately absent: kubectl
// then computes `apply` as a JSON merge patch (RFC 7386), as it does for custom resources.
constexpr std::string_view kPatchTypes[] = {
    "application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"};

std::string upper_first(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

// "NetworkExampleComV1alpha1", as in Kubernetes operation ids.
std::string group_version_id() {
  std::string out;
  std::string_view g = api::kGroup;
  while (!g.empty()) {
    const std::size_t dot = g.find('.');
    out += upper_first(str(g.substr(0, dot)));
    g = dot == std::string_view::npos ? std::string_view{} : g.substr(dot + 1);
  }
  return out + upper_first(str(api::kVersion));
}

// "networkExampleCom_v1alpha1"
std::string tag() {
  std::string id = group_version_id();
  id[0] = static_cast<char>(id[0] - 'A' + 'a');
  return id.substr(0, id.size() - api::kVersion.size()) + "_" + str(api::kVersion);
}

// "metadata.name, metadata.namespace; Subnet spec.vni; ...", from the descriptions.
std::string selectable_doc() {
  std::string out = "metadata.name, metadata.namespace";
  for (const auto& k : api::all_kinds()) {
    std::string fields;
    for (const auto& f : api::describe(k.kind).selectable) {
      if (f.starts_with("metadata.")) continue;
      fields += (fields.empty() ? "" : ", ") + f;
    }
    if (!fields.empty()) out += "; " + str(k.name) + " " + fields;
  }
  return out + ".";
}

std::vector<Param> list_params() {
  return {
      {"labelSelector", "query", "string",
       "Restrict the list to objects whose labels match: k=v, k!=v, k in (a,b), k notin "
       "(a,b), k, !k; a comma means AND."},
      {"fieldSelector", "query", "string",
       "Restrict the list to objects whose fields match: field=value, field==value, "
       "field!=value; a comma means AND. Fields: " + selectable_doc()},
      {"limit", "query", "integer",
       "Return at most this many items, with a continue token for the rest."},
      {"continue", "query", "string", "The continue token of the previous page."},
      {"resourceVersion", "query", "string",
       "Unset: the most recent state; \"0\": any state (may be cached); N: not older than N. "
       "For a watch: the version to start after."},
      {"resourceVersionMatch", "query", "string",
       "How resourceVersion applies to a list: Exact or NotOlderThan."},
      {"watch", "query", "boolean",
       "Stream the changes (ADDED, MODIFIED, DELETED) instead of returning a list."},
      {"allowWatchBookmarks", "query", "boolean",
       "Let a watch send periodic BOOKMARK events carrying only a resourceVersion."},
      {"sendInitialEvents", "query", "boolean",
       "With watch, allowWatchBookmarks and resourceVersionMatch=NotOlderThan: first send "
       "the state (not older than resourceVersion) as ADDED events, then a BOOKMARK annotated "
       "k8s.io/initial-events-end, then the changes."},
      {"timeoutSeconds", "query", "integer", "Close the watch after this many seconds."},
  };
}

std::vector<Param> write_params() {
  return {
      {"fieldManager", "query", "string", "Name of the actor making the change."},
      {"fieldValidation", "query", "string",
       "What the server does with unknown or duplicate fields in the request body: Ignore "
       "(drop them), Warn (drop them and answer with a Warning header) or Strict (reject "
       "the request)."},
  };
}

std::vector<PathDef> all_paths() {
  const std::string gv = group_version_id();
  const std::string base = "/apis/" + str(api::kApiVersion);
  const Param ns{"namespace", "path", "string",
                 "object name and auth scope, such as for teams and projects"};
  std::vector<PathDef> paths;
  for (const api::KindInfo& k : api::all_kinds()) {
    const std::string kind(k.name);
    const std::string plural(k.plural);
    const std::string def = kos_def(kind);
    const std::string list_def = kos_def(kind + "List");
    const Param name{"name", "path", "string", "name of the " + kind};
    auto op = [&](std::string method, std::string action, std::string id, std::string description) {
      Operation o;
      o.method = std::move(method);
      o.action = std::move(action);
      o.id = std::move(id);
      o.description = std::move(description);
      o.kind = kind;
      o.produces = {str(kJson)};
      return o;
    };
    auto list = [&](std::string id, std::string description) {
      Operation o = op("get", "list", std::move(id), std::move(description));
      o.query = list_params();
      o.response_ref = list_def;
      o.produces.push_back("application/json;stream=watch");
      return o;
    };
    auto write = [&](std::string method, std::string id, std::string description) {
      const bool patch = method == "patch";
      Operation o = op(method, method, std::move(id), std::move(description));
      o.query = write_params();
      o.response_ref = def;
      if (patch) {
        o.body = Body::kPatch;
        o.consumes.assign(std::begin(kPatchTypes), std::end(kPatchTypes));
      } else {
        o.body = Body::kObject;
        o.body_ref = def;
        o.consumes = {str(kJson)};
        o.created = true;
      }
      return o;
    };
    auto read = [&](std::string id, std::string description) {
      Operation o = op("get", "get", std::move(id), std::move(description));
      o.response_ref = def;
      return o;
    };

    paths.push_back({base + "/" + plural,
                     {},
                     {list("list" + gv + kind + "ForAllNamespaces",
                           "list or watch objects of kind " + kind + " in all namespaces")}});
    paths.push_back(
        {base + "/namespaces/{namespace}/" + plural,
         {ns},
         {list("list" + gv + "Namespaced" + kind, "list or watch objects of kind " + kind),
          write("post", "create" + gv + "Namespaced" + kind, "create a " + kind)}});
    Operation del = op("delete", "delete", "delete" + gv + "Namespaced" + kind, "delete a " + kind);
    paths.push_back(
        {base + "/namespaces/{namespace}/" + plural + "/{name}",
         {name, ns},
         {read("read" + gv + "Namespaced" + kind, "read the specified " + kind),
          write("put", "replace" + gv + "Namespaced" + kind, "replace the specified " + kind),
          write("patch", "patch" + gv + "Namespaced" + kind,
                "partially update the specified " + kind),
          std::move(del)}});
    if (k.has_status) {
      paths.push_back({base + "/namespaces/{namespace}/" + plural + "/{name}/status",
                       {name, ns},
                       {read("read" + gv + "Namespaced" + kind + "Status",
                             "read status of the specified " + kind),
                        write("put", "replace" + gv + "Namespaced" + kind + "Status",
                              "replace status of the specified " + kind),
                        write("patch", "patch" + gv + "Namespaced" + kind + "Status",
                              "partially update status of the specified " + kind)}});
    }
  }
  return paths;
}

// The GVK as a YAML mapping, or as a list of that one mapping.
std::string gvk_yaml(std::string_view kind, bool as_list) {
  const std::string first = as_list ? "- " : "";
  const std::string rest = as_list ? "  " : "";
  return first + "group: " + str(api::kGroup) + "\n" + rest + "kind: " + str(kind) + "\n" + rest +
         "version: " + str(api::kVersion) + "\n";
}

json::object gvk_json(std::string_view kind) {
  json::object o;
  o.emplace("group", api::kGroup);
  o.emplace("kind", kind);
  o.emplace("version", api::kVersion);
  return o;
}

// ---- OpenAPI v2 (gnostic protobuf) ----

// Vendor extensions travel as YAML text, as gnostic's compiler and kube-apiserver put them.
template <class Repeated>
void add_extension(Repeated* extensions, std::string_view name, std::string yaml) {
  pb::NamedAny* e = extensions->Add();
  e->set_name(str(name));
  e->mutable_value()->set_yaml(std::move(yaml));
}

void to_v2(const Schema& s, pb::Schema& out) {
  if (!s.description.empty()) out.set_description(s.description);
  switch (s.type) {
    case Schema::Type::kRef: out.set__ref("#/definitions/" + s.ref); break;
    case Schema::Type::kObject:
      out.mutable_type()->add_value("object");
      for (const Property& p : s.properties) {
        pb::NamedSchema* ns = out.mutable_properties()->add_additional_properties();
        ns->set_name(p.name);
        to_v2(p.schema, *ns->mutable_value());
      }
      for (const std::string& r : s.required) out.add_required(r);
      break;
    case Schema::Type::kMap:
      out.mutable_type()->add_value("object");
      to_v2(s.element.front(), *out.mutable_additional_properties()->mutable_schema());
      break;
    case Schema::Type::kArray:
      out.mutable_type()->add_value("array");
      to_v2(s.element.front(), *out.mutable_items()->add_schema());
      break;
    case Schema::Type::kString: out.mutable_type()->add_value("string"); break;
    case Schema::Type::kInteger: out.mutable_type()->add_value("integer"); break;
    case Schema::Type::kBoolean: out.mutable_type()->add_value("boolean"); break;
  }
  if (!s.format.empty()) out.set_format(s.format);
  // proto3 cannot tell 0 from unset; a minimum of 0 is what an unsigned field implies.
  if (s.minimum) out.set_minimum(static_cast<double>(*s.minimum));
  if (s.maximum) out.set_maximum(static_cast<double>(*s.maximum));
  if (!s.gvk_kind.empty()) {
    add_extension(out.mutable_vendor_extension(), kGvkExtension, gvk_yaml(s.gvk_kind, true));
  }
}

pb::Schema ref_v2(const std::string& definition) {
  pb::Schema s;
  s.set__ref("#/definitions/" + definition);
  return s;
}

void param_v2(const Param& p, pb::ParametersItem& out) {
  pb::NonBodyParameter* nb = out.mutable_parameter()->mutable_non_body_parameter();
  if (p.in == "path") {
    pb::PathParameterSubSchema* q = nb->mutable_path_parameter_sub_schema();
    q->set_name(p.name);
    q->set_in(p.in);
    q->set_required(true);
    q->set_type(p.type);
    q->set_description(p.description);
    q->set_unique_items(true);
  } else {
    pb::QueryParameterSubSchema* q = nb->mutable_query_parameter_sub_schema();
    q->set_name(p.name);
    q->set_in(p.in);
    q->set_type(p.type);
    q->set_description(p.description);
    q->set_unique_items(true);
  }
}

void add_response_v2(pb::Responses& rs, std::string code, std::string description,
                     const std::string& definition) {
  pb::NamedResponseValue* r = rs.add_response_code();
  r->set_name(std::move(code));
  pb::Response* resp = r->mutable_value()->mutable_response();
  resp->set_description(std::move(description));
  if (!definition.empty()) *resp->mutable_schema()->mutable_schema() = ref_v2(definition);
}

void operation_v2(const Operation& o, pb::Operation& out) {
  out.add_tags(tag());
  out.set_description(o.description);
  out.set_operation_id(o.id);
  for (const auto& c : o.consumes) out.add_consumes(c);
  for (const auto& p : o.produces) out.add_produces(p);
  out.add_schemes("https");
  if (o.body != Body::kNone) {
    pb::BodyParameter* b = out.add_parameters()->mutable_parameter()->mutable_body_parameter();
    b->set_name("body");
    b->set_in("body");
    b->set_required(true);
    if (o.body == Body::kObject) {
      *b->mutable_schema() = ref_v2(o.body_ref);
    } else {
      b->mutable_schema()->mutable_type()->add_value("object");
      b->mutable_schema()->set_description("A patch of one of the types in consumes.");
    }
  }
  for (const Param& p : o.query) param_v2(p, *out.add_parameters());
  pb::Responses* rs = out.mutable_responses();
  add_response_v2(*rs, "200", "OK", o.response_ref);
  if (o.created) add_response_v2(*rs, "201", "Created", o.response_ref);
  add_response_v2(*rs, "401", "Unauthorized", {});
  add_extension(out.mutable_vendor_extension(), kActionExtension, o.action + "\n");
  add_extension(out.mutable_vendor_extension(), kGvkExtension, gvk_yaml(o.kind, false));
}

pb::Operation* slot_v2(pb::PathItem& item, const std::string& method) {
  if (method == "get") return item.mutable_get();
  if (method == "put") return item.mutable_put();
  if (method == "post") return item.mutable_post();
  if (method == "delete") return item.mutable_delete_();
  return item.mutable_patch();
}

std::string build_v2() {
  pb::Document doc;
  doc.set_swagger("2.0");
  doc.mutable_info()->set_title("KOS");
  doc.mutable_info()->set_version(str(api::kVersion));
  for (const PathDef& p : all_paths()) {
    pb::NamedPathItem* np = doc.mutable_paths()->add_path();
    np->set_name(p.path);
    pb::PathItem* item = np->mutable_value();
    for (const Param& param : p.params) param_v2(param, *item->add_parameters());
    for (const Operation& o : p.operations) operation_v2(o, *slot_v2(*item, o.method));
  }
  for (const Definition& d : all_definitions()) {
    pb::NamedSchema* ns = doc.mutable_definitions()->add_additional_properties();
    ns->set_name(d.name);
    to_v2(d.schema, *ns->mutable_value());
  }
  std::string out;
  doc.SerializeToString(&out);
  return out;
}

// ---- OpenAPI v3 (JSON) ----

json::object ref_v3(const std::string& definition) {
  json::object o;
  o.emplace("$ref", "#/components/schemas/" + definition);
  return o;
}

json::object to_v3(const Schema& s) {
  json::object o;
  if (s.type == Schema::Type::kRef) {
    // OpenAPI 3.0 ignores the siblings of $ref, so a described reference is an allOf of
    // one, as kube-apiserver writes it.
    if (s.description.empty()) return ref_v3(s.ref);
    o.emplace("description", s.description);
    o.emplace("allOf", json::array{ref_v3(s.ref)});
    return o;
  }
  if (!s.description.empty()) o.emplace("description", s.description);
  switch (s.type) {
    case Schema::Type::kRef: break;
    case Schema::Type::kObject: {
      o.emplace("type", "object");
      json::object props;
      for (const Property& p : s.properties) props.emplace(p.name, to_v3(p.schema));
      o.emplace("properties", std::move(props));
      if (!s.required.empty()) {
        json::array req;
        for (const std::string& r : s.required) req.emplace_back(r);
        o.emplace("required", std::move(req));
      }
      break;
    }
    case Schema::Type::kMap:
      o.emplace("type", "object");
      o.emplace("additionalProperties", to_v3(s.element.front()));
      break;
    case Schema::Type::kArray:
      o.emplace("type", "array");
      o.emplace("items", to_v3(s.element.front()));
      break;
    case Schema::Type::kString: o.emplace("type", "string"); break;
    case Schema::Type::kInteger: o.emplace("type", "integer"); break;
    case Schema::Type::kBoolean: o.emplace("type", "boolean"); break;
  }
  if (!s.format.empty()) o.emplace("format", s.format);
  if (s.minimum) o.emplace("minimum", *s.minimum);
  if (s.maximum) o.emplace("maximum", *s.maximum);
  if (!s.gvk_kind.empty()) o.emplace(kGvkExtension, json::array{gvk_json(s.gvk_kind)});
  return o;
}

json::object param_v3(const Param& p) {
  json::object o;
  o.emplace("name", p.name);
  o.emplace("in", p.in);
  o.emplace("description", p.description);
  if (p.in == "path") o.emplace("required", true);
  json::object schema;
  schema.emplace("type", p.type);
  schema.emplace("uniqueItems", true);
  o.emplace("schema", std::move(schema));
  return o;
}

json::object content_v3(const std::vector<std::string>& types, const json::object& schema) {
  json::object content;
  for (const auto& t : types) {
    json::object media;
    media.emplace("schema", schema);
    content.emplace(t, std::move(media));
  }
  return content;
}

json::object response_v3(std::string description, const Operation& o) {
  json::object r;
  r.emplace("description", std::move(description));
  if (!o.response_ref.empty()) r.emplace("content", content_v3(o.produces, ref_v3(o.response_ref)));
  return r;
}

json::object operation_v3(const Operation& o) {
  json::object out;
  out.emplace("tags", json::array{json::string(tag())});
  out.emplace("description", o.description);
  out.emplace("operationId", o.id);
  if (!o.query.empty()) {
    json::array params;
    for (const Param& p : o.query) params.emplace_back(param_v3(p));
    out.emplace("parameters", std::move(params));
  }
  if (o.body != Body::kNone) {
    json::object schema;
    if (o.body == Body::kObject) {
      schema = ref_v3(o.body_ref);
    } else {
      schema.emplace("type", "object");
      schema.emplace("description", "A patch of one of the types of this content.");
    }
    json::object body;
    body.emplace("content", content_v3(o.consumes, schema));
    body.emplace("required", true);
    out.emplace("requestBody", std::move(body));
  }
  json::object responses;
  responses.emplace("200", response_v3("OK", o));
  if (o.created) responses.emplace("201", response_v3("Created", o));
  json::object unauthorized;
  unauthorized.emplace("description", "Unauthorized");
  responses.emplace("401", std::move(unauthorized));
  out.emplace("responses", std::move(responses));
  out.emplace(kActionExtension, o.action);
  out.emplace(kGvkExtension, gvk_json(o.kind));
  return out;
}

std::string build_v3() {
  json::object doc;
  doc.emplace("openapi", "3.0.0");
  json::object info;
  info.emplace("title", "KOS");
  info.emplace("version", api::kVersion);
  doc.emplace("info", std::move(info));
  json::object paths;
  for (const PathDef& p : all_paths()) {
    json::object item;
    if (!p.params.empty()) {
      json::array params;
      for (const Param& param : p.params) params.emplace_back(param_v3(param));
      item.emplace("parameters", std::move(params));
    }
    for (const Operation& o : p.operations) item.emplace(o.method, operation_v3(o));
    paths.emplace(p.path, std::move(item));
  }
  doc.emplace("paths", std::move(paths));
  json::object schemas;
  for (const Definition& d : all_definitions()) schemas.emplace(d.name, to_v3(d.schema));
  json::object components;
  components.emplace("schemas", std::move(schemas));
  doc.emplace("components", std::move(components));
  return json::serialize(doc);
}

// 64-bit FNV-1a: a content fingerprint for cache validation, not a security measure.
std::string fingerprint(std::string_view data) {
  std::uint64_t h = 14695981039346656037ULL;
  for (unsigned char c : data) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llX", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace

const std::string& openapi_v2_protobuf() {
  static const std::string doc = build_v2();
  return doc;
}

const std::string& openapi_v3_group() {
  static const std::string doc = build_v3();
  return doc;
}

const std::string& openapi_v3_hash() {
  static const std::string hash = fingerprint(openapi_v3_group());
  return hash;
}

const std::string& openapi_v3_index() {
  static const std::string index = [] {
    json::object entry;
    entry.emplace("serverRelativeURL", str(kOpenApiV3GroupPath) + "?hash=" + openapi_v3_hash());
    json::object paths;
    paths.emplace("apis/" + str(api::kApiVersion), std::move(entry));
    json::object doc;
    doc.emplace("paths", std::move(paths));
    return json::serialize(doc);
  }();
  return index;
}

}  // namespace kos::apiserver
