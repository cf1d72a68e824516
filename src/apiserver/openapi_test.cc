#include "apiserver/openapi.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>
#include <boost/json.hpp>

#include "api/json.h"
#include "api/names.h"
#include "api/types.h"
#include "openapiv2/OpenAPIv2.pb.h"

namespace kos::apiserver {
namespace {

namespace json = boost::json;
namespace pb = ::openapi::v2;

constexpr std::string_view kKos = "com.example.network.v1alpha1.";
constexpr std::string_view kMeta = "io.k8s.apimachinery.pkg.apis.meta.v1.";
constexpr std::string_view kGvk = "x-kubernetes-group-version-kind";

std::string kos(std::string_view name) { return std::string(kKos) + std::string(name); }
std::string meta(std::string_view name) { return std::string(kMeta) + std::string(name); }

// Every field kos-api.md (and the Kubernetes metadata KOS keeps) defines, per kind, as a
// dotted path of JSON names. Lists are entered transparently: "metadata.ownerReferences.uid".
const std::map<std::string, std::vector<std::string>>& expected_fields() {
  static const std::map<std::string, std::vector<std::string>> fields = [] {
    const std::vector<std::string> common = {
        "apiVersion",
        "kind",
        "metadata",
        "metadata.name",
        "metadata.generateName",
        "metadata.namespace",
        "metadata.uid",
        "metadata.resourceVersion",
        "metadata.generation",
        "metadata.creationTimestamp",
        "metadata.deletionTimestamp",
        "metadata.deletionGracePeriodSeconds",
        "metadata.labels",
        "metadata.annotations",
        "metadata.ownerReferences",
        "metadata.ownerReferences.apiVersion",
        "metadata.ownerReferences.kind",
        "metadata.ownerReferences.name",
        "metadata.ownerReferences.uid",
        "metadata.ownerReferences.controller",
        "metadata.ownerReferences.blockOwnerDeletion",
        "metadata.finalizers",
        "extendedMetadata",
        "extendedMetadata.writes",
        "extendedMetadata.writes.section",
        "extendedMetadata.writes.serverTime",
        "spec",
    };
    std::map<std::string, std::vector<std::string>> m;
    m["Subnet"] = common;
    for (const char* f : {"spec.vni", "spec.ipv4", "status", "status.validated", "status.errors"}) {
      m["Subnet"].push_back(f);
    }
    m["NetworkAttachment"] = common;
    for (const char* f : {"spec.node",
                          "spec.subnet",
                          "spec.postCreateExec",
                          "spec.postDeleteExec",
                          "status",
                          "status.errors",
                          "status.errors.ipam",
                          "status.errors.host",
                          "status.addressContention",
                          "status.lockUID",
                          "status.addressVNI",
                          "status.ipv4",
                          "status.macAddress",
                          "status.ifcName",
                          "status.hostIP",
                          "status.postCreateExecReport",
                          "status.postCreateExecReport.command",
                          "status.postCreateExecReport.exitStatus",
                          "status.postCreateExecReport.startTime",
                          "status.postCreateExecReport.stopTime",
                          "status.postCreateExecReport.stdOut",
                          "status.postCreateExecReport.stdErr"}) {
      m["NetworkAttachment"].push_back(f);
    }
    m["IPLock"] = common;
    m["IPLock"].push_back("spec.subnetName");
    return m;
  }();
  return fields;
}

std::vector<std::string> split(std::string_view path) {
  std::vector<std::string> out;
  while (true) {
    const std::size_t dot = path.find('.');
    out.emplace_back(path.substr(0, dot));
    if (dot == std::string_view::npos) return out;
    path.remove_prefix(dot + 1);
  }
}

// ---- OpenAPI v2 ----

class V2 : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(doc_.ParseFromString(openapi_v2_protobuf()));
    for (const auto& d : doc_.definitions().additional_properties()) defs_[d.name()] = &d.value();
  }

  const pb::Schema* definition(const std::string& name) const {
    auto it = defs_.find(name);
    return it == defs_.end() ? nullptr : it->second;
  }

  // Follows $ref and array items to the schema that has the properties.
  const pb::Schema* deref(const pb::Schema* s) const {
    for (int hops = 0; s && hops < 8; ++hops) {
      if (!s->_ref().empty()) {
        constexpr std::string_view kPrefix = "#/definitions/";
        if (!s->_ref().starts_with(kPrefix)) return nullptr;
        s = definition(s->_ref().substr(kPrefix.size()));
      } else if (s->type().value_size() == 1 && s->type().value(0) == "array") {
        if (s->items().schema_size() != 1) return nullptr;
        s = &s->items().schema(0);
      } else {
        return s;
      }
    }
    return nullptr;
  }

  static const pb::Schema* property(const pb::Schema* s, const std::string& name) {
    if (!s) return nullptr;
    for (const auto& p : s->properties().additional_properties()) {
      if (p.name() == name) return &p.value();
    }
    return nullptr;
  }

  // The schema of a dotted field path below a definition (not dereferenced).
  const pb::Schema* field(const std::string& def, std::string_view path) const {
    const pb::Schema* s = definition(def);
    for (const std::string& part : split(path)) s = property(deref(s), part);
    return s;
  }

  static std::string extension(const google::protobuf::RepeatedPtrField<pb::NamedAny>& ext,
                               std::string_view name) {
    for (const auto& e : ext) {
      if (e.name() == name) return e.value().yaml();
    }
    return {};
  }

  pb::Document doc_;
  std::map<std::string, const pb::Schema*> defs_;
};

TEST_F(V2, IsSwagger2WithInfo) {
  EXPECT_EQ(doc_.swagger(), "2.0");
  EXPECT_EQ(doc_.info().title(), "KOS");
  EXPECT_FALSE(doc_.info().version().empty());
}

TEST_F(V2, BuiltOnceAndStable) {
  EXPECT_EQ(&openapi_v2_protobuf(), &openapi_v2_protobuf());
  pb::Document again;
  ASSERT_TRUE(again.ParseFromString(openapi_v2_protobuf()));
  EXPECT_EQ(again.SerializeAsString(), openapi_v2_protobuf());
}

TEST_F(V2, HasTheStandardAndKosDefinitions) {
  for (const std::string& name :
       {meta("ObjectMeta"), meta("OwnerReference"), meta("ListMeta"), meta("Time"),
        meta("MicroTime"), kos("Subnet"), kos("SubnetList"), kos("SubnetSpec"), kos("SubnetStatus"),
        kos("NetworkAttachment"), kos("NetworkAttachmentList"), kos("NetworkAttachmentSpec"),
        kos("NetworkAttachmentStatus"), kos("IPLock"), kos("IPLockList"), kos("IPLockSpec"),
        kos("ExecReport"), kos("ExtendedObjectMeta")}) {
    EXPECT_NE(definition(name), nullptr) << name;
  }
  const pb::Schema* time = definition(meta("Time"));
  ASSERT_NE(time, nullptr);
  ASSERT_EQ(time->type().value_size(), 1);
  EXPECT_EQ(time->type().value(0), "string");
  EXPECT_EQ(time->format(), "date-time");
}

TEST_F(V2, KindsCarryTheGroupVersionKindExtensionAsYaml) {
  for (const api::KindInfo& k : api::all_kinds()) {
    for (const std::string& kind : {std::string(k.name), std::string(k.name) + "List"}) {
      const pb::Schema* s = definition(kos(kind));
      ASSERT_NE(s, nullptr) << kind;
      EXPECT_EQ(extension(s->vendor_extension(), kGvk),
                "- group: network.example.com\n  kind: " + kind + "\n  version: v1alpha1\n");
    }
  }
  // Only kinds have it: kubectl maps a GVK to the one definition carrying it.
  int with_gvk = 0;
  for (const auto& [name, s] : defs_) with_gvk += !extension(s->vendor_extension(), kGvk).empty();
  EXPECT_EQ(with_gvk, 10);  // five kinds and their lists
}

TEST_F(V2, EveryFieldOfEveryKindIsDocumented) {
  for (const auto& [kind, fields] : expected_fields()) {
    for (const std::string& f : fields) {
      const pb::Schema* s = field(kos(kind), f);
      ASSERT_NE(s, nullptr) << kind << "." << f;
      EXPECT_FALSE(s->description().empty()) << kind << "." << f;
    }
  }
  EXPECT_EQ(field(kos("IPLock"), "status"), nullptr);
}

TEST_F(V2, TypesAndRangesFollowTheApi) {
  const pb::Schema* vni = field(kos("Subnet"), "spec.vni");
  ASSERT_NE(vni, nullptr);
  EXPECT_EQ(vni->type().value(0), "integer");
  EXPECT_EQ(vni->minimum(), 1);
  EXPECT_EQ(vni->maximum(), api::kMaxVni);
  EXPECT_NE(vni->description().find("Immutable"), std::string::npos);
  EXPECT_NE(vni->description().find("2097151"), std::string::npos);

  const pb::Schema* exec = field(kos("NetworkAttachment"), "spec.postCreateExec");
  ASSERT_NE(exec, nullptr);
  EXPECT_EQ(exec->type().value(0), "array");
  ASSERT_EQ(exec->items().schema_size(), 1);
  EXPECT_EQ(exec->items().schema(0).type().value(0), "string");
  EXPECT_NE(field(kos("NetworkAttachment"), "spec.postDeleteExec")->description().find("Mutable"),
            std::string::npos);

  const pb::Schema* labels = field(kos("Subnet"), "metadata.labels");
  ASSERT_NE(labels, nullptr);
  EXPECT_EQ(labels->type().value(0), "object");
  EXPECT_EQ(labels->additional_properties().schema().type().value(0), "string");

  EXPECT_EQ(field(kos("NetworkAttachment"), "status.postCreateExecReport.startTime")->_ref(),
            "#/definitions/" + meta("MicroTime"));
  EXPECT_EQ(field(kos("Subnet"), "metadata.creationTimestamp")->_ref(),
            "#/definitions/" + meta("Time"));
  EXPECT_EQ(field(kos("NetworkAttachment"), "status.postCreateExecReport.exitStatus")->format(),
            "int32");

  const auto& req = definition(kos("SubnetSpec"))->required();
  EXPECT_EQ(std::set<std::string>(req.begin(), req.end()), (std::set<std::string>{"ipv4", "vni"}));
}

// kubectl (kube-openapi's proto parser) rejects a document whose references dangle, whose
// arrays lack exactly one item schema, or whose types are unknown.
TEST_F(V2, EverySchemaIsWellFormed) {
  std::vector<std::pair<std::string, const pb::Schema*>> todo;
  for (const auto& [name, s] : defs_) todo.emplace_back(name, s);
  while (!todo.empty()) {
    auto [path, s] = todo.back();
    todo.pop_back();
    if (!s->_ref().empty()) {
      EXPECT_NE(deref(s), nullptr) << path << " -> " << s->_ref();
      continue;
    }
    ASSERT_EQ(s->type().value_size(), 1) << path;
    const std::string& t = s->type().value(0);
    EXPECT_TRUE(
        std::set<std::string>({"object", "array", "string", "integer", "boolean"}).contains(t))
        << path << ": " << t;
    if (t == "array") {
      ASSERT_EQ(s->items().schema_size(), 1) << path;
      todo.emplace_back(path + "[]", &s->items().schema(0));
    }
    if (t == "object" && !s->has_properties()) {
      ASSERT_TRUE(s->additional_properties().has_schema()) << path;
      todo.emplace_back(path + "{}", &s->additional_properties().schema());
    }
    for (const auto& p : s->properties().additional_properties()) {
      // Item and map-value schemas need no description of their own; properties do.
      EXPECT_FALSE(p.value().description().empty()) << path << "." << p.name();
      todo.emplace_back(path + "." + p.name(), &p.value());
    }
    for (const std::string& r : s->required()) {
      EXPECT_NE(property(s, r), nullptr) << path << " requires unknown " << r;
    }
  }
}

TEST_F(V2, PathsDeclarePatchForEachKind) {
  std::set<std::string> kinds_with_patch;
  for (const auto& np : doc_.paths().path()) {
    EXPECT_TRUE(np.name().starts_with("/apis/network.example.com/v1alpha1/")) << np.name();
    const pb::PathItem& item = np.value();
    for (const pb::Operation* op :
         {&item.get(), &item.put(), &item.post(), &item.delete_(), &item.patch()}) {
      if (op->operation_id().empty()) continue;
      EXPECT_FALSE(extension(op->vendor_extension(), "x-kubernetes-action").empty());
      EXPECT_TRUE(
          extension(op->vendor_extension(), kGvk).starts_with("group: network.example.com\n"))
          << op->operation_id();
    }
    if (!item.has_patch()) continue;
    const pb::Operation& patch = item.patch();
    const std::string gvk = extension(patch.vendor_extension(), kGvk);
    const std::size_t at = gvk.find("kind: ");
    ASSERT_NE(at, std::string::npos);
    kinds_with_patch.insert(gvk.substr(at + 6, gvk.find('\n', at) - at - 6));
    // No strategic merge patch: kubectl apply must send a JSON merge patch.
    EXPECT_TRUE(std::ranges::find(patch.consumes(), "application/merge-patch+json") !=
                patch.consumes().end());
    EXPECT_TRUE(std::ranges::find(patch.consumes(), "application/strategic-merge-patch+json") ==
                patch.consumes().end());
    bool field_validation = false;
    for (const auto& p : patch.parameters()) {
      const auto& q = p.parameter().non_body_parameter().query_parameter_sub_schema();
      field_validation |= q.name() == "fieldValidation" && q.in() == "query";
    }
    EXPECT_TRUE(field_validation) << np.name();
    bool path_params = false;
    for (const auto& p : item.parameters()) {
      path_params |=
          p.parameter().non_body_parameter().path_parameter_sub_schema().name() == "name";
    }
    EXPECT_TRUE(path_params) << np.name();
  }
  EXPECT_EQ(kinds_with_patch, (std::set<std::string>{"Subnet", "NetworkAttachment", "IPLock", "Vpc", "SecurityGroup"}));
}

// ---- OpenAPI v3 ----

json::value parse(const std::string& text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  EXPECT_FALSE(ec) << ec.message();
  return v;
}

class V3 : public ::testing::Test {
 protected:
  void SetUp() override {
    doc_ = parse(openapi_v3_group());
    ASSERT_TRUE(doc_.is_object());
    schemas_ = doc_.at_pointer("/components/schemas").if_object();
    ASSERT_NE(schemas_, nullptr);
  }

  const json::object* definition(std::string_view name) const {
    const json::value* v = schemas_->if_contains(name);
    return v ? v->if_object() : nullptr;
  }

  // Follows $ref, a single-element allOf and array items.
  const json::object* deref(const json::object* s) const {
    for (int hops = 0; s && hops < 8; ++hops) {
      if (const json::value* ref = s->if_contains("$ref")) {
        constexpr std::string_view kPrefix = "#/components/schemas/";
        const std::string r(ref->as_string());
        if (!r.starts_with(kPrefix)) return nullptr;
        s = definition(std::string_view(r).substr(kPrefix.size()));
      } else if (const json::value* all = s->if_contains("allOf")) {
        if (all->as_array().size() != 1) return nullptr;
        s = all->as_array()[0].if_object();
      } else if (s->contains("items")) {
        s = s->at("items").if_object();
      } else {
        return s;
      }
    }
    return nullptr;
  }

  const json::object* field(std::string_view def, std::string_view path) const {
    const json::object* s = definition(def);
    for (const std::string& part : split(path)) {
      s = deref(s);
      if (!s) return nullptr;
      const json::value* props = s->if_contains("properties");
      const json::value* p = props ? props->as_object().if_contains(part) : nullptr;
      s = p ? p->if_object() : nullptr;
    }
    return s;
  }

  json::value doc_;
  const json::object* schemas_ = nullptr;
};

TEST_F(V3, IndexPointsAtTheGroupDocumentByHash) {
  const json::value index = parse(openapi_v3_index());
  boost::system::error_code ec;
  const json::value* url =
      index.find_pointer("/paths/apis~1network.example.com~1v1alpha1/serverRelativeURL", ec);
  ASSERT_NE(url, nullptr) << openapi_v3_index();
  EXPECT_EQ(url->as_string(),
            "/openapi/v3/apis/network.example.com/v1alpha1?hash=" + openapi_v3_hash());
  EXPECT_TRUE(std::string_view(url->as_string()).starts_with(kOpenApiV3GroupPath));
  EXPECT_EQ(index.at("paths").as_object().size(), 1u);
}

TEST_F(V3, HashIsStableHex) {
  const std::string& h = openapi_v3_hash();
  EXPECT_EQ(h.size(), 16u);
  EXPECT_EQ(h.find_first_not_of("0123456789ABCDEF"), std::string::npos) << h;
  EXPECT_EQ(&h, &openapi_v3_hash());
  EXPECT_EQ(&openapi_v3_group(), &openapi_v3_group());
}

TEST_F(V3, IsOpenApi3WithInfo) {
  EXPECT_EQ(doc_.at("openapi").as_string(), "3.0.0");
  EXPECT_EQ(doc_.at_pointer("/info/title").as_string(), "KOS");
}

TEST_F(V3, SchemasAreTheV2Definitions) {
  pb::Document v2;
  ASSERT_TRUE(v2.ParseFromString(openapi_v2_protobuf()));
  std::vector<std::string> v2_names, v3_names;
  for (const auto& d : v2.definitions().additional_properties()) v2_names.push_back(d.name());
  for (const auto& [name, s] : *schemas_) v3_names.emplace_back(name);
  EXPECT_EQ(v2_names, v3_names);
}

TEST_F(V3, KindsCarryTheGroupVersionKindExtensionAsArray) {
  int with_gvk = 0;
  for (const auto& [name, s] : *schemas_) with_gvk += s.as_object().contains(kGvk);
  EXPECT_EQ(with_gvk, 10);  // five kinds and their lists
  for (const api::KindInfo& k : api::all_kinds()) {
    for (const std::string& kind : {std::string(k.name), std::string(k.name) + "List"}) {
      const json::object* s = definition(kos(kind));
      ASSERT_NE(s, nullptr) << kind;
      EXPECT_EQ(s->at(kGvk),
                (json::array{json::object{
                    {"group", "network.example.com"}, {"kind", kind}, {"version", "v1alpha1"}}}));
    }
  }
}

TEST_F(V3, EveryFieldOfEveryKindIsDocumented) {
  for (const auto& [kind, fields] : expected_fields()) {
    for (const std::string& f : fields) {
      const json::object* s = field(kos(kind), f);
      ASSERT_NE(s, nullptr) << kind << "." << f;
      const json::value* d = s->if_contains("description");
      EXPECT_TRUE(d && !d->as_string().empty()) << kind << "." << f;
    }
  }
  const json::object* vni = field(kos("Subnet"), "spec.vni");
  EXPECT_EQ(vni->at("type").as_string(), "integer");
  EXPECT_EQ(vni->at("minimum").to_number<std::int64_t>(), 1);
  EXPECT_EQ(vni->at("maximum").to_number<std::int64_t>(), api::kMaxVni);
  const json::object* start =
      deref(field(kos("NetworkAttachment"), "status.postCreateExecReport.startTime"));
  ASSERT_NE(start, nullptr);
  EXPECT_EQ(start->at("format").as_string(), "date-time");
}

// What the JSON codec writes must be what the schema describes: every key of a fully
// populated object resolves to a schema, with a matching JSON type.
TEST_F(V3, DescribesEveryKeyTheCodecWrites) {
  api::NetworkAttachment na;
  na.metadata = {.name = "a",
                 .generate_name = "a-",
                 .namespace_ = "ns",
                 .uid = "u",
                 .resource_version = "7",
                 .generation = 2,
                 .creation_timestamp = api::Time(std::chrono::seconds(1700000000)),
                 .deletion_timestamp = api::Time(std::chrono::seconds(1700000001)),
                 .deletion_grace_period_seconds = 0,
                 .labels = {{"k", "v"}},
                 .annotations = {{"k", "v"}},
                 .owner_references = {{"v1", "K", "n", "u", true, false}},
                 .finalizers = {"f"}};
  na.extended_metadata.set_write("spec", api::MicroTime(std::chrono::microseconds(1)));
  na.spec = {"node", "subnet", {"ip", "link"}, {"true"}};
  na.status = {{{"e"}, {"h"}},
               true,
               "lock",
               5,
               "10.0.0.2",
               "02:00:00:00:00:01",
               "kos020000000001",
               "192.168.1.1",
               api::ExecReport{{"ip"},
                               -1,
                               api::MicroTime(std::chrono::microseconds(2)),
                               api::MicroTime(std::chrono::microseconds(3)),
                               "o",
                               "e"}};
  api::Subnet subnet;
  subnet.metadata = na.metadata;
  subnet.spec = {"10.0.0.0/24", 5};
  subnet.status = {true, {"x"}};
  api::IPLock lock;
  lock.metadata = na.metadata;
  lock.spec.subnet_name = "s";

  const auto json_type = [](const json::value& v) -> std::string {
    if (v.is_string()) return "string";
    if (v.is_bool()) return "boolean";
    if (v.is_number()) return "integer";
    if (v.is_array()) return "array";
    return "object";
  };
  for (const api::AnyObject& obj :
       {api::AnyObject(na), api::AnyObject(subnet), api::AnyObject(lock)}) {
    const std::string kind(api::kind_info(api::kind_of(obj)).name);
    std::vector<std::pair<std::string, json::value>> todo;
    for (const auto& [k, v] : api::to_json(obj)) todo.emplace_back(std::string(k), v);
    int checked = 0;
    while (!todo.empty()) {
      auto [path, value] = todo.back();
      todo.pop_back();
      const json::object* s = field(kos(kind), path);
      ASSERT_NE(s, nullptr) << kind << "." << path;
      const json::object* d = deref(s);
      ASSERT_NE(d, nullptr) << kind << "." << path;
      // Lists: deref went to the item schema; check the items.
      const bool list = value.is_array();
      const json::value* type = (list ? s : d)->if_contains("type");
      ASSERT_NE(type, nullptr) << kind << "." << path;
      EXPECT_EQ(type->as_string(), json_type(value)) << kind << "." << path;
      ++checked;
      if (list) {
        for (const auto& e : value.as_array()) {
          if (e.is_object()) {
            for (const auto& [k, v] : e.as_object())
              todo.emplace_back(path + "." + std::string(k), v);
          }
        }
      } else if (value.is_object() && d->contains("properties")) {
        for (const auto& [k, v] : value.as_object())
          todo.emplace_back(path + "." + std::string(k), v);
      }
    }
    EXPECT_GT(checked, 20) << kind;
  }
}

TEST_F(V3, PathsDeclarePatchWithFieldValidationAndNoStrategicMerge) {
  const json::object& paths = doc_.at("paths").as_object();
  std::set<std::string> kinds_with_patch;
  for (const auto& [path, item] : paths) {
    EXPECT_TRUE(std::string_view(path).starts_with("/apis/network.example.com/v1alpha1/")) << path;
    const json::value* patch = item.as_object().if_contains("patch");
    if (!patch) continue;
    const json::object& gvk = patch->at(kGvk).as_object();
    EXPECT_EQ(gvk.at("group").as_string(), "network.example.com");
    EXPECT_EQ(gvk.at("version").as_string(), "v1alpha1");
    kinds_with_patch.insert(std::string(gvk.at("kind").as_string()));
    EXPECT_EQ(patch->at("x-kubernetes-action").as_string(), "patch");
    const json::object& content = patch->at_pointer("/requestBody/content").as_object();
    EXPECT_TRUE(content.contains("application/merge-patch+json")) << path;
    EXPECT_FALSE(content.contains("application/strategic-merge-patch+json")) << path;
    bool field_validation = false;
    for (const auto& p : patch->at("parameters").as_array()) {
      field_validation |= p.at("name") == "fieldValidation" && p.at("in") == "query";
    }
    EXPECT_TRUE(field_validation) << path;
  }
  EXPECT_EQ(kinds_with_patch, (std::set<std::string>{"Subnet", "NetworkAttachment", "IPLock", "Vpc", "SecurityGroup"}));
  EXPECT_TRUE(
      paths.contains("/apis/network.example.com/v1alpha1/namespaces/{namespace}/networkattachments/"
                     "{name}/status"));
  EXPECT_FALSE(paths.contains(
      "/apis/network.example.com/v1alpha1/namespaces/{namespace}/iplocks/{name}/status"));
}

TEST_F(V3, EveryReferenceResolves) {
  std::vector<const json::value*> todo = {&doc_};
  int refs = 0;
  while (!todo.empty()) {
    const json::value* v = todo.back();
    todo.pop_back();
    if (const json::object* o = v->if_object()) {
      if (const json::value* r = o->if_contains("$ref")) {
        ++refs;
        const std::string ref(r->as_string());
        ASSERT_TRUE(ref.starts_with("#/components/schemas/")) << ref;
        EXPECT_NE(definition(std::string_view(ref).substr(21)), nullptr) << ref;
      }
      for (const auto& [k, c] : *o) todo.push_back(&c);
    } else if (const json::array* a = v->if_array()) {
      for (const auto& c : *a) todo.push_back(&c);
    }
  }
  EXPECT_GT(refs, 30);
}


}  // namespace
}  // namespace kos::apiserver
