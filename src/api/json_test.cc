#include "api/json.h"

#include <random>

#include <gtest/gtest.h>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace kos::api {
namespace {

using namespace std::chrono;
namespace json = boost::json;

Time t(std::string_view s) { return *parse_time(s); }
MicroTime mt(std::string_view s) { return *parse_micro_time(s); }

ObjectMeta full_meta() {
  ObjectMeta m;
  m.name = "obj-1";
  m.generate_name = "obj-";
  m.namespace_ = "ns1";
  m.uid = "0b3e5c1a-0000-4000-8000-000000000001";
  m.resource_version = "42";
  m.generation = 3;
  m.creation_timestamp = t("2024-05-06T07:08:09Z");
  m.deletion_timestamp = t("2024-05-06T07:08:10Z");
  m.deletion_grace_period_seconds = 0;  // set-to-zero survives, unlike absent
  m.labels = {{"app", "web"}, {"example.com/tier", ""}};
  m.annotations = {{"note", "a \"quoted\" \\ value\n"}};
  m.owner_references = {
      {"network.example.com/v1alpha1", "NetworkAttachment", "na1", "u-1", true, false},
      {"v1", "Thing", "t", "u-2", std::nullopt, std::nullopt}};
  m.finalizers = {"example.com/f1", "orphan"};
  return m;
}

Subnet full_subnet() {
  Subnet s;
  s.metadata = full_meta();
  s.extended_metadata.set_write(section::kSpec, mt("2024-05-06T07:08:09.123456Z"));
  s.extended_metadata.set_write(section::kStatus, mt("2024-05-06T07:08:09.654321Z"));
  s.spec = {"10.1.2.0/24", 4242};
  s.status = {true, {"e1", "e2"}};
  return s;
}

NetworkAttachment full_na() {
  NetworkAttachment na;
  na.metadata = full_meta();
  na.extended_metadata.set_write(section::kImpl, mt("2024-05-06T07:08:09.000001Z"));
  na.spec = {"node-1", "sn1", {"/bin/ping", "-c", "1", "${ipv4}"}, {"/bin/true"}};
  NetworkAttachmentStatus& st = na.status;
  st.errors = {{"ipam trouble"}, {"host trouble", "more"}};
  st.address_contention = true;
  st.lock_uid = "lock-uid";
  st.address_vni = 4242;
  st.ipv4 = "10.1.2.3";
  st.mac_address = "0e:01:02:03:10:92";
  st.ifc_name = "kos0e0102031092";
  st.host_ip = "192.168.0.7";
  st.post_create_exec_report =
      ExecReport{{"/bin/ping", "-c", "1"},          -1,    mt("2024-05-06T07:08:09.100000Z"),
                 mt("2024-05-06T07:08:10.200000Z"), "out", "err"};
  na.spec.security_groups = {"web", "ssh"};
  st.security_groups_in_force = {{"web", "17"}, {"ssh", ""}};
  return na;
}

IPLock full_lock() {
  IPLock l;
  l.metadata = full_meta();
  l.extended_metadata.set_write(section::kSpec, mt("2024-05-06T07:08:09.000000Z"));
  l.spec.subnet_name = "sn1";
  return l;
}

template <class T>
void expect_round_trip(const T& x) {
  const std::string text = encode(x);
  auto back = decode<T>(text, {.strict = true});
  ASSERT_TRUE(back.has_value()) << back.error().to_string() << "\n" << text;
  EXPECT_EQ(*back, x) << text;
  EXPECT_EQ(encode(*back), text);
}

SecurityGroup full_group() {
  SecurityGroup g;
  g.metadata = full_meta();
  g.spec.ingress = {{"tcp", {"22", "8000-8080"}, {{"", "clients"}, {"10.0.0.0/8", ""}}},
                    {"icmp", {}, {{"0.0.0.0/0", ""}}}};
  g.spec.egress = {{"any", {}, {{"", "servers"}}}};
  return g;
}

TEST(JsonRoundTrip, SecurityGroup) {
  expect_round_trip(full_group());
  expect_round_trip(SecurityGroup{});
  const std::string text = encode(full_group());
  EXPECT_NE(text.find(R"("ingress":[{"protocol":"tcp","ports":["22","8000-8080"],"from":[{"securityGroup":"clients"},{"cidr":"10.0.0.0/8"}]})"),
            std::string::npos)
      << text;
  // A list of objects that is not one gets a precise error.
  auto bad = decode<SecurityGroup>(R"({"spec":{"ingress":[{"protocol":"tcp","from":"x"}]}})", {.strict = true});
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message.find("spec.ingress[0].from"), std::string::npos) << bad.error().message;
}

TEST(JsonRoundTrip, FullObjects) {
  expect_round_trip(full_subnet());
  expect_round_trip(full_na());
  expect_round_trip(full_lock());
  expect_round_trip(full_meta());
}

TEST(JsonRoundTrip, EmptyObjects) {
  expect_round_trip(Subnet{});
  expect_round_trip(NetworkAttachment{});
  expect_round_trip(IPLock{});
  expect_round_trip(ObjectMeta{});
  NetworkAttachment na;
  na.status.post_create_exec_report = ExecReport{};  // present but empty is not absent
  expect_round_trip(na);
}

TEST(JsonRoundTrip, AnyObject) {
  const AnyObject objs[] = {full_subnet(), full_na(), full_lock()};
  for (const auto& o : objs) {
    auto back = decode_object(kind_of(o), encode(o));
    ASSERT_TRUE(back.has_value()) << back.error().message;
    EXPECT_EQ(*back, o);
    EXPECT_EQ(json::serialize(to_json(o)), encode(o));
  }
}

TEST(JsonCanonical, ReproducesCanonicalText) {
  const std::string_view docs[] = {
      R"({"kind":"Subnet","apiVersion":"network.example.com/v1alpha1","metadata":{},)"
      R"("spec":{"ipv4":"","vni":0},"status":{}})",
      R"({"kind":"Subnet","apiVersion":"network.example.com/v1alpha1","metadata":{"name":"s1",)"
      R"("namespace":"ns","uid":"u","resourceVersion":"7","generation":1,)"
      R"("creationTimestamp":"2024-01-02T03:04:05Z","labels":{"a":"b"}},)"
      R"("extendedMetadata":{"writes":[{"section":"spec",)"
      R"("serverTime":"2024-01-02T03:04:05.000001Z"}]},)"
      R"("spec":{"ipv4":"10.0.0.0/24","vni":5},"status":{"validated":true}})",
      R"({"kind":"NetworkAttachment","apiVersion":"network.example.com/v1alpha1",)"
      R"("metadata":{"name":"na1","namespace":"ns"},"spec":{"node":"n1","subnet":"s1",)"
      R"("postCreateExec":["/bin/true"]},"status":{"errors":{"host":["h"]},"lockUID":"l",)"
      R"("addressVNI":5,"ipv4":"10.0.0.2","postCreateExecReport":{"command":[],"exitStatus":0,)"
      R"("stopTime":"2024-01-02T03:04:05.500000Z","stdOut":"","stdErr":""}}})",
      R"({"kind":"IPLock","apiVersion":"network.example.com/v1alpha1","metadata":{"name":)"
      R"("v1-5-10-0-0-2","namespace":"ns","ownerReferences":[{)"
      R"("apiVersion":"network.example.com/v1alpha1",)"
      R"("kind":"NetworkAttachment","name":"na1","uid":"u","controller":true}]},)"
      R"("spec":{"subnetName":"s1"}})",
  };
  for (auto doc : docs) {
    auto v = parse_json(doc);
    ASSERT_TRUE(v.has_value()) << doc;
    const Kind kind = *kind_from_name(v->at("kind").as_string().c_str());
    auto obj = object_from_json(kind, *v, {.strict = true});
    ASSERT_TRUE(obj.has_value()) << obj.error().message;
    EXPECT_EQ(encode(*obj), doc);
  }
}

TEST(JsonDecode, AcceptsKubernetesLeniencies) {
  // Missing kind/apiVersion, nulls everywhere, integral floats, server-owned fields.
  auto s = decode<Subnet>(
      R"({"metadata":{"name":"s","creationTimestamp":null,"labels":{"a":null},"selfLink":"/x",)"
      R"("managedFields":[{"manager":"kubectl"}],"deletionTimestamp":null},)"
      R"("extendedMetadata":null,"spec":{"ipv4":"10.0.0.0/8","vni":5.0},"status":null})",
      {.strict = true});
  ASSERT_TRUE(s.has_value()) << s.error().message;
  EXPECT_EQ(s->metadata.name, "s");
  EXPECT_EQ(s->metadata.labels.at("a"), "");
  EXPECT_EQ(s->metadata.creation_timestamp, Time{});
  EXPECT_EQ(s->metadata.deletion_timestamp, std::nullopt);
  EXPECT_EQ(s->spec.vni, 5u);

  auto na = decode<NetworkAttachment>(R"({"spec":{"postCreateExec":["a",null]},
      "status":{"postCreateExecReport":null,"errors":null}})");
  ASSERT_TRUE(na.has_value()) << na.error().message;
  EXPECT_EQ(na->spec.post_create_exec, (std::vector<std::string>{"a", ""}));
  EXPECT_FALSE(na->status.post_create_exec_report.has_value());

  // Offsets and fractions are accepted and normalised to UTC and the field's precision.
  auto m = decode<ObjectMeta>(R"({"creationTimestamp":"2024-01-02T04:04:05.9+01:00"})");
  ASSERT_TRUE(m.has_value()) << m.error().message;
  EXPECT_EQ(encode(*m), R"({"creationTimestamp":"2024-01-02T03:04:05Z"})");

  // Of duplicate keys, the last wins.
  auto d = decode<IPLock>(R"({"spec":{"subnetName":"a","subnetName":"b"}})");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->spec.subnet_name, "b");
}

TEST(JsonDecode, MalformedJsonNamesTheBytePosition) {
  struct Row {
    std::string text;
    std::string_view message;
  };
  const Row rows[] = {
      {"", "malformed JSON at byte 0"},
      {"   ", "malformed JSON at byte 3"},
      {"{", "malformed JSON at byte 1"},
      {R"({"spec":})", "malformed JSON at byte 8"},
      {R"({"spec" {}})", "malformed JSON at byte 8"},
      {R"({"spec":{}} x)", "malformed JSON at byte 12"},
      {R"({"spec":{}}{})", "malformed JSON at byte 11"},
      {R"({"a":1,})", "malformed JSON at byte 7"},
      {R"({'a':1})", "malformed JSON at byte 1"},
      {R"({"a":01})", "malformed JSON at byte"},
      {R"({"a":NaN})", "malformed JSON at byte 5"},
      {R"({"a":nul})", "malformed JSON at byte"},
      {"{\"a\":\"\xff\"}", "malformed JSON at byte"},  // invalid UTF-8
      {"{\"a\":\"x\ny\"}", "malformed JSON at byte"},  // raw control character
      {R"({"a":"\uZZZZ"})", "malformed JSON at byte"},
      {std::string("{\"a\":1}\0", 8), "malformed JSON at byte 7"},
      {std::string(100, '[') + std::string(100, ']'), "malformed JSON at byte 32"},
      {std::string(100000, '{'), "malformed JSON at byte"},
      {"/* c */ {}", "malformed JSON at byte 0"},
  };
  for (const auto& r : rows) {
    auto s = decode<Subnet>(r.text);
    ASSERT_FALSE(s.has_value()) << "accepted: " << r.text.substr(0, 40);
    EXPECT_EQ(s.error().code, Errc::kBadRequest);
    EXPECT_NE(s.error().message.find(r.message), std::string::npos)
        << r.text.substr(0, 40) << " -> " << s.error().message;
  }
}

struct BadRow {
  std::string_view doc;
  std::string_view message;  // the whole Error message
  std::string_view field;    // the first cause's field
};

void expect_rejected(Kind kind, const BadRow& r, const DecodeOptions& options = {}) {
  auto obj = decode_object(kind, r.doc, options);
  ASSERT_FALSE(obj.has_value()) << "accepted: " << r.doc;
  EXPECT_EQ(obj.error().code, Errc::kBadRequest) << r.doc;
  EXPECT_EQ(obj.error().message, r.message) << r.doc;
  ASSERT_FALSE(obj.error().causes.empty()) << r.doc;
  EXPECT_EQ(obj.error().causes[0].field, r.field) << r.doc;
}

TEST(JsonDecode, WrongTypesNameTheFullPath) {
  const BadRow subnet_rows[] = {
      {"[]", "expected object, got array", ""},
      {"null", "expected object, got null", ""},
      {"5", "expected object, got number", ""},
      {R"({"spec":{"vni":"5"}})", "spec.vni: expected unsigned integer, got string", "spec.vni"},
      {R"({"spec":{"vni":-1}})", "spec.vni: value -1 is out of range for uint32", "spec.vni"},
      {R"({"spec":{"vni":1.5}})", "spec.vni: expected unsigned integer, got 1.5", "spec.vni"},
      {R"({"spec":{"vni":-0.5}})", "spec.vni: expected unsigned integer, got -0.5", "spec.vni"},
      {R"({"spec":{"vni":4294967296}})", "spec.vni: value 4294967296 is out of range for uint32",
       "spec.vni"},
      {R"({"spec":{"vni":18446744073709551615}})",
       "spec.vni: value 18446744073709551615 is out of range for uint32", "spec.vni"},
      {R"({"spec":{"vni":99999999999999999999999}})",
       "spec.vni: value 1e+23 is out of range for uint32", "spec.vni"},
      {R"({"spec":{"vni":1e400}})", "spec.vni: value inf is out of range for uint32", "spec.vni"},
      {R"({"spec":{"vni":-1e400}})", "spec.vni: value -inf is out of range for uint32", "spec.vni"},
      {R"({"spec":{"vni":4294967296.0}})", "spec.vni: value 4294967296 is out of range for uint32",
       "spec.vni"},
      {R"({"spec":{"vni":true}})", "spec.vni: expected unsigned integer, got boolean", "spec.vni"},
      {R"({"spec":{"vni":[5]}})", "spec.vni: expected unsigned integer, got array", "spec.vni"},
      {R"({"spec":{"ipv4":5}})", "spec.ipv4: expected string, got number", "spec.ipv4"},
      {R"({"spec":"x"})", "spec: expected object, got string", "spec"},
      {R"({"status":{"validated":"true"}})", "status.validated: expected boolean, got string",
       "status.validated"},
      {R"({"status":{"errors":"e"}})", "status.errors: expected array, got string",
       "status.errors"},
      {R"({"status":{"errors":["a",{}]}})", "status.errors[1]: expected string, got object",
       "status.errors[1]"},
      {R"({"kind":"IPLock"})", R"(kind: expected "Subnet", got "IPLock")", "kind"},
      {R"({"kind":5})", "kind: expected string, got number", "kind"},
      {R"({"apiVersion":"v1"})", R"(apiVersion: expected "network.example.com/v1alpha1", got "v1")",
       "apiVersion"},
      {R"({"metadata":[]})", "metadata: expected object, got array", "metadata"},
      {R"({"metadata":{"labels":{"app":5}}})", "metadata.labels[app]: expected string, got number",
       "metadata.labels[app]"},
      {R"({"metadata":{"labels":["app"]}})", "metadata.labels: expected object, got array",
       "metadata.labels"},
      {R"({"metadata":{"annotations":{"a.b/c":true}}})",
       "metadata.annotations[a.b/c]: expected string, got boolean", "metadata.annotations[a.b/c]"},
      {R"({"metadata":{"name":7}})", "metadata.name: expected string, got number", "metadata.name"},
      {R"({"metadata":{"generation":"1"}})", "metadata.generation: expected integer, got string",
       "metadata.generation"},
      {R"({"metadata":{"generation":1.5}})", "metadata.generation: expected integer, got 1.5",
       "metadata.generation"},
      {R"({"metadata":{"generation":9223372036854775808}})",
       "metadata.generation: value 9223372036854775808 is out of range for int64",
       "metadata.generation"},
      {R"({"metadata":{"generation":9.3e18}})",
       "metadata.generation: value 9.3e+18 is out of range for int64", "metadata.generation"},
      {R"({"metadata":{"deletionGracePeriodSeconds":"30"}})",
       "metadata.deletionGracePeriodSeconds: expected integer, got string",
       "metadata.deletionGracePeriodSeconds"},
      {R"({"metadata":{"creationTimestamp":"yesterday"}})",
       R"(metadata.creationTimestamp: expected RFC 3339 time, got "yesterday")",
       "metadata.creationTimestamp"},
      {R"({"metadata":{"creationTimestamp":1700000000}})",
       "metadata.creationTimestamp: expected RFC 3339 time string, got number",
       "metadata.creationTimestamp"},
      {R"({"metadata":{"deletionTimestamp":"2024-02-30T00:00:00Z"}})",
       R"(metadata.deletionTimestamp: expected RFC 3339 time, got "2024-02-30T00:00:00Z")",
       "metadata.deletionTimestamp"},
      {R"({"metadata":{"finalizers":"f"}})", "metadata.finalizers: expected array, got string",
       "metadata.finalizers"},
      {R"({"metadata":{"ownerReferences":[{"controller":"yes"}]}})",
       "metadata.ownerReferences[0].controller: expected boolean, got string",
       "metadata.ownerReferences[0].controller"},
      {R"({"metadata":{"ownerReferences":[{},5]}})",
       "metadata.ownerReferences[1]: expected object, got number", "metadata.ownerReferences[1]"},
      {R"({"extendedMetadata":{"writes":[{"section":"spec","serverTime":5}]}})",
       "extendedMetadata.writes[0].serverTime: expected RFC 3339 time string, got number",
       "extendedMetadata.writes[0].serverTime"},
      {R"({"extendedMetadata":{"writes":{}}})",
       "extendedMetadata.writes: expected array, got object", "extendedMetadata.writes"},
  };
  for (const auto& r : subnet_rows) expect_rejected(Kind::kSubnet, r);

  const BadRow na_rows[] = {
      {R"({"spec":{"postCreateExec":["a","b",3]}})",
       "spec.postCreateExec[2]: expected string, got number", "spec.postCreateExec[2]"},
      {R"({"spec":{"postDeleteExec":"rm -rf /"}})",
       "spec.postDeleteExec: expected array, got string", "spec.postDeleteExec"},
      {R"({"spec":{"node":["n"]}})", "spec.node: expected string, got array", "spec.node"},
      {R"({"status":{"addressVNI":-5}})", "status.addressVNI: value -5 is out of range for uint32",
       "status.addressVNI"},
      {R"({"status":{"addressContention":1}})",
       "status.addressContention: expected boolean, got number", "status.addressContention"},
      {R"({"status":{"errors":{"ipam":"x"}}})", "status.errors.ipam: expected array, got string",
       "status.errors.ipam"},
      {R"({"status":{"errors":[]}})", "status.errors: expected object, got array", "status.errors"},
      {R"({"status":{"postCreateExecReport":{"exitStatus":2147483648}}})",
       "status.postCreateExecReport.exitStatus: value 2147483648 is out of range for int32",
       "status.postCreateExecReport.exitStatus"},
      {R"({"status":{"postCreateExecReport":{"exitStatus":-2147483649}}})",
       "status.postCreateExecReport.exitStatus: value -2147483649 is out of range for int32",
       "status.postCreateExecReport.exitStatus"},
      {R"({"status":{"postCreateExecReport":{"startTime":"2024-01-02T03:04:05"}}})",
       R"(status.postCreateExecReport.startTime: expected RFC 3339 time, )"
       R"(got "2024-01-02T03:04:05")",
       "status.postCreateExecReport.startTime"},
      {R"({"status":{"postCreateExecReport":[]}})",
       "status.postCreateExecReport: expected object, got array", "status.postCreateExecReport"},
      {R"({"kind":"Subnet"})", R"(kind: expected "NetworkAttachment", got "Subnet")", "kind"},
  };
  for (const auto& r : na_rows) expect_rejected(Kind::kNetworkAttachment, r);

  const BadRow lock_rows[] = {
      {R"({"spec":{"subnetName":false}})", "spec.subnetName: expected string, got boolean",
       "spec.subnetName"},
      {R"({"status":{}})", R"(unknown field "status")", "status"},  // IPLock has no status
  };
  for (const auto& r : lock_rows) expect_rejected(Kind::kIPLock, r, {.strict = true});
}

TEST(JsonDecode, ReportsAllProblemsAtOnceUpToALimit) {
  auto s = decode<Subnet>(R"({"spec":{"vni":"x","ipv4":1},"metadata":{"name":2}})");
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().message,
            "spec.vni: expected unsigned integer, got string; spec.ipv4: expected string, got "
            "number; metadata.name: expected string, got number");
  ASSERT_EQ(s.error().causes.size(), 3u);
  EXPECT_EQ(s.error().causes[1],
            (FieldCause{"FieldValueTypeInvalid", "expected string, got number", "spec.ipv4"}));

  std::string many = R"({"metadata":{"labels":{)";
  for (int i = 0; i < 100; ++i) many += (i ? "," : "") + ("\"k" + std::to_string(i) + "\":0");
  many += "}}}";
  auto m = decode<Subnet>(many);
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().causes.size(), 32u);
  EXPECT_TRUE(m.error().message.ends_with("; and 68 more problems")) << m.error().message;
}

TEST(JsonDecode, UnknownFieldsStrictFailsOtherwiseWarns) {
  const std::string_view doc =
      R"({"spec":{"vnii":5,"vni":5},"metadata":{"ownerReferences":[{"foo":1}]},"bogus":{},)"
      R"("status":{"postCreateExecReport":{"addNetnsStrace":""}}})";
  auto strict = decode<NetworkAttachment>(doc, {.strict = true});
  ASSERT_FALSE(strict.has_value());
  EXPECT_EQ(strict.error().code, Errc::kBadRequest);
  EXPECT_EQ(strict.error().message,
            R"(unknown field "spec.vnii"; unknown field "spec.vni"; )"
            R"(unknown field "metadata.ownerReferences[0].foo"; unknown field "bogus"; )"
            R"(unknown field "status.postCreateExecReport.addNetnsStrace")");
  EXPECT_EQ(strict.error().causes[0],
            (FieldCause{"FieldValueUnknown", "unknown field", "spec.vnii"}));

  std::vector<std::string> warnings;
  auto lenient =
      decode<Subnet>(R"({"spec":{"vnii":5,"vni":6},"extra":[1]})", {.warnings = &warnings});
  ASSERT_TRUE(lenient.has_value());
  EXPECT_EQ(lenient->spec.vni, 6u);
  EXPECT_EQ(warnings,
            (std::vector<std::string>{R"(unknown field "spec.vnii")", R"(unknown field "extra")"}));

  // Ignored without a warnings sink; bounded with one.
  EXPECT_TRUE(decode<Subnet>(R"({"x":1})").has_value());
  std::string many = "{";
  for (int i = 0; i < 50; ++i) many += (i ? "," : "") + ("\"x" + std::to_string(i) + "\":0");
  many += "}";
  warnings.clear();
  ASSERT_TRUE(decode<Subnet>(many, {.warnings = &warnings}).has_value());
  EXPECT_EQ(warnings.size(), 33u);
  EXPECT_EQ(warnings.back(), "more unknown fields omitted");
}

TEST(JsonDecode, ObjectMetaOnItsOwnUsesRelativePaths) {
  auto m = decode<ObjectMeta>(R"({"labels":{"a":1},"nme":"x"})", {.strict = true});
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().message, R"(labels[a]: expected string, got number; unknown field "nme")");
  auto ok = decode<ObjectMeta>(R"({"name":"x","namespace":"y"})");
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->name, "x");
  EXPECT_EQ(ok->namespace_, "y");
}

TEST(JsonDecode, HugeValidDocumentDoesNotCrash) {
  std::string doc = R"({"spec":{"postCreateExec":[)";
  for (int i = 0; i < 100000; ++i) doc += (i ? "," : "") + std::string("\"arg\"");
  doc += "]}}";
  auto na = decode<NetworkAttachment>(doc);
  ASSERT_TRUE(na.has_value());
  EXPECT_EQ(na->spec.post_create_exec.size(), 100000u);
}

TEST(JsonDecode, SurvivesMutatedInput) {
  // Random edits of a full document, biased towards JSON's own characters: every result
  // is a clean success (that round-trips) or a kBadRequest, never a crash.
  constexpr std::string_view kChars = "{}[]\",:0123456789-+.eE \\ntf";
  const std::string base = encode(full_na());
  std::mt19937 rng(1);
  int ok = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string doc = base;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const std::size_t at = rng() % doc.size();
      switch (rng() % 3) {
        case 0: doc[at] = kChars[rng() % kChars.size()]; break;
        case 1: doc.erase(at, 1 + rng() % 8); break;
        default: doc.insert(at, 1, kChars[rng() % kChars.size()]); break;
      }
      if (doc.empty()) doc = "{";
    }
    for (const auto& k : all_kinds()) {
      for (bool strict : {false, true}) {
        auto obj = decode_object(k.kind, doc, {.strict = strict});
        if (!obj) {
          ASSERT_EQ(obj.error().code, Errc::kBadRequest) << doc;
          continue;
        }
        ++ok;
        auto again = decode_object(k.kind, encode(*obj));
        ASSERT_TRUE(again.has_value()) << doc;
        EXPECT_EQ(*again, *obj) << doc;
      }
    }
  }
  EXPECT_GT(ok, 100);  // the mutations leave some documents valid
}

TEST(StatusJson, MatchesKubernetesShape) {
  const Error invalid{Errc::kInvalid,
                      "Subnet.network.example.com \"s1\" is invalid: spec.vni: bad",
                      {{"FieldValueInvalid", "Invalid value: 0: bad", "spec.vni"},
                       {"FieldValueRequired", "Required value", ""}}};
  EXPECT_EQ(json::serialize(status_json(invalid, "s1", kGroup, "subnets")),
            R"({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",)"
            R"("message":"Subnet.network.example.com \"s1\" is invalid: spec.vni: bad",)"
            R"("reason":"Invalid","details":{"name":"s1","group":"network.example.com",)"
            R"("kind":"subnets","causes":[{"reason":"FieldValueInvalid",)"
            R"("message":"Invalid value: 0: bad","field":"spec.vni"},)"
            R"({"reason":"FieldValueRequired","message":"Required value"}]},"code":422})");
  EXPECT_EQ(json::serialize(status_json(Error{Errc::kNotFound, "gone", {}})),
            R"({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",)"
            R"("message":"gone","reason":"NotFound","code":404})");
}

TEST(StatusJson, ErrorFromStatusInvertsStatusJson) {
  const Error errors[] = {
      {Errc::kInvalid, "bad", {{"FieldValueInvalid", "Invalid value: 0: bad", "spec.vni"}}},
      {Errc::kNotFound, "nope", {}},
      {Errc::kAlreadyExists, "dup", {}},
      {Errc::kConflict, "the object has been modified", {}},
      {Errc::kCompacted, "too old resource version", {}},
      {Errc::kBadRequest, "malformed", {}},
      {Errc::kUnavailable, "later", {}},
      {Errc::kTimeout, "slow", {}},
      {Errc::kUnsupported, "media", {}},
      {Errc::kInternal, "oops", {}},
  };
  for (const auto& e : errors) {
    const Error back = error_from_status(status_json(e, "n"), e.http_status());
    EXPECT_EQ(back.code, e.code) << e.message;
    EXPECT_EQ(back.message, e.message);
    EXPECT_EQ(back.causes, e.causes);
  }
  struct Row {
    std::string_view body;
    int status;
    Errc code;
    std::string_view message;
  };
  const Row rows[] = {
      {R"({"kind":"Status","reason":"Forbidden","message":"no"})", 403, Errc::kForbidden, "no"},
      {R"({"kind":"Status","reason":"Unauthorized","message":"who"})", 401, Errc::kUnauthorized, "who"},
      {R"({"kind":"Status","reason":"TooManyRequests"})", 429, Errc::kUnavailable, "HTTP 429"},
      {R"({"kind":"Status","reason":"Gone","message":"old"})", 410, Errc::kCompacted, "old"},
      {R"("plain text")", 502, Errc::kInternal, R"(HTTP 502: "plain text")"},
      {R"({"message":5,"details":{"causes":[5,{"field":1}]}})", 404, Errc::kNotFound, "HTTP 404"},
  };
  for (const auto& r : rows) {
    const Error e = error_from_status(*parse_json(r.body), r.status);
    EXPECT_EQ(e.code, r.code) << r.body;
    EXPECT_EQ(e.message, r.message) << r.body;
  }
}

// The scratch parse must leave its nodes in its arena: a value of the default storage
// means every node was copied out again (one malloc each), the cost it exists to avoid.
TEST(ScratchJson, ParsesIntoItsArenaAndReportsMalformedInput) {
  const std::string text = encode(NetworkAttachment{[] {
    NetworkAttachment a;
    a.metadata.name = "a";
    a.metadata.labels = {{"app", "web"}};
    a.spec.node = "n7";
    return a;
  }()});
  for (int i = 0; i < 3; ++i) {  // the thread's parser is reused
    ScratchJson scratch;
    auto v = scratch.parse(text);
    ASSERT_TRUE(v.has_value()) << v.error().message;
    EXPECT_NE((*v)->storage().get(), boost::json::storage_ptr().get());
    EXPECT_EQ(&scratch.value(), *v);
    EXPECT_EQ(boost::json::serialize(**v), text);
    auto typed = decode<NetworkAttachment>(text);
    ASSERT_TRUE(typed.has_value());
    EXPECT_EQ(typed->spec.node, "n7");
  }
  ScratchJson bad;
  auto e = bad.parse(R"({"a":)");
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().code, Errc::kBadRequest);
  EXPECT_NE(e.error().message.find("malformed JSON"), std::string::npos);
  ScratchJson after;  // a failed parse leaves the thread's parser usable
  EXPECT_TRUE(after.parse("[1,2]").has_value());
}

}  // namespace
}  // namespace kos::api
