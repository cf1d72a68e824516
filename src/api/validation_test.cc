#include "api/validation.h"

#include <functional>

#include <gtest/gtest.h>

#include "api/names.h"

namespace kos::api {
namespace {

ObjectMeta meta_named(std::string name) {
  ObjectMeta m;
  m.name = std::move(name);
  m.namespace_ = "ns1";
  m.uid = "uid-1";
  return m;
}

Subnet good_subnet() {
  Subnet s;
  s.metadata = meta_named("s1");
  s.spec = {"10.1.2.0/24", 5};
  return s;
}

NetworkAttachment good_na() {
  NetworkAttachment na;
  na.metadata = meta_named("na1");
  na.spec = {"node-1.example.com", "s1", {"/bin/true"}, {}};
  return na;
}

IPLock good_lock() {
  IPLock l;
  l.metadata = meta_named("v1-5-10-1-2-3");
  l.spec.subnet_name = "s1";
  return l;
}

template <class T>
struct Row {
  std::string_view what;
  std::function<void(T&)> mutate;
  std::string field;
  std::string reason;
  std::string message;  // a substring of the cause's message
};

template <class T>
void expect_rows(const T& base, const std::vector<Row<T>>& rows) {
  for (const auto& r : rows) {
    T obj = base;
    r.mutate(obj);
    auto v = validate(AnyObject(obj));
    ASSERT_FALSE(v.has_value()) << "accepted: " << r.what;
    EXPECT_EQ(v.error().code, Errc::kInvalid) << r.what;
    ASSERT_EQ(v.error().causes.size(), 1u) << r.what << ": " << v.error().message;
    const FieldCause& c = v.error().causes[0];
    EXPECT_EQ(c.field, r.field) << r.what;
    EXPECT_EQ(c.reason, r.reason) << r.what;
    EXPECT_NE(c.message.find(r.message), std::string::npos) << r.what << ": " << c.message;
  }
}

constexpr auto kRequired = "FieldValueRequired";
constexpr auto kInvalid = "FieldValueInvalid";

TEST(Validation, GoodObjectsPass) {
  EXPECT_TRUE(validate_subnet(good_subnet()).has_value());
  EXPECT_TRUE(validate_network_attachment(good_na()).has_value());
  EXPECT_TRUE(validate_iplock(good_lock()).has_value());
  Subnet edge = good_subnet();
  edge.spec = {"192.168.0.0/16", kMaxVni};
  EXPECT_TRUE(validate_subnet(edge).has_value());
  edge.spec = {"172.31.255.255/32", 1};
  EXPECT_TRUE(validate_subnet(edge).has_value());
}

TEST(Validation, MessageHasKubernetesForm) {
  Subnet s = good_subnet();
  s.spec.vni = 0;
  auto v = validate_subnet(s);
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().message,
            "Subnet.network.example.com \"s1\" is invalid: spec.vni: Invalid value: 0: must be "
            "in the range 1..2097151");
  s.spec.ipv4 = "";
  v = validate_subnet(s);
  ASSERT_FALSE(v.has_value());
  // Causes come in the order of the fields in JSON.
  EXPECT_EQ(v.error().message,
            "Subnet.network.example.com \"s1\" is invalid: [spec.ipv4: Required value, "
            "spec.vni: Invalid value: 0: must be in the range 1..2097151]");
  EXPECT_EQ(v.error().causes[0], (FieldCause{kRequired, "Required value", "spec.ipv4"}));
}

TEST(Validation, SubnetRules) {
  using R = Row<Subnet>;
  expect_rows<Subnet>(
      good_subnet(),
      {
          R{"vni 0", [](Subnet& s) { s.spec.vni = 0; }, "spec.vni", kInvalid, "1..2097151"},
          R{"vni 2^21", [](Subnet& s) { s.spec.vni = kMaxVni + 1; }, "spec.vni", kInvalid,
            "Invalid value: 2097152"},
          R{"vni max", [](Subnet& s) { s.spec.vni = 0xffffffff; }, "spec.vni", kInvalid,
            "1..2097151"},
          R{"no ipv4", [](Subnet& s) { s.spec.ipv4 = ""; }, "spec.ipv4", kRequired,
            "Required value"},
          R{"not cidr", [](Subnet& s) { s.spec.ipv4 = "10.1.2.0"; }, "spec.ipv4", kInvalid,
            "Invalid value: \"10.1.2.0\": want the form a.b.c.d/n"},
          R{"host bits", [](Subnet& s) { s.spec.ipv4 = "10.1.2.3/24"; }, "spec.ipv4", kInvalid,
            "host bits are set; the network is 10.1.2.0/24"},
          R{"prefix 33", [](Subnet& s) { s.spec.ipv4 = "10.1.2.0/33"; }, "spec.ipv4", kInvalid,
            "prefix length"},
          R{"bad octet", [](Subnet& s) { s.spec.ipv4 = "10.1.256.0/24"; }, "spec.ipv4", kInvalid,
            "want four decimal octets"},
          R{"public", [](Subnet& s) { s.spec.ipv4 = "8.8.8.0/24"; }, "spec.ipv4", kInvalid,
            "must be inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"},
          R{"too wide", [](Subnet& s) { s.spec.ipv4 = "10.0.0.0/7"; }, "spec.ipv4", kInvalid,
            "must be inside"},
          R{"172.32", [](Subnet& s) { s.spec.ipv4 = "172.32.0.0/16"; }, "spec.ipv4", kInvalid,
            "must be inside"},
          R{"192.168/15", [](Subnet& s) { s.spec.ipv4 = "192.168.0.0/15"; }, "spec.ipv4", kInvalid,
            "must be inside"},
      });
}

TEST(Validation, MetadataRules) {
  using R = Row<Subnet>;
  const std::string long_name(254, 'a');
  expect_rows<Subnet>(
      good_subnet(),
      {
          R{"no name", [](Subnet& s) { s.metadata.name = ""; }, "metadata.name", kRequired,
            "name or generateName is required"},
          R{"upper name", [](Subnet& s) { s.metadata.name = "S1"; }, "metadata.name", kInvalid,
            "RFC 1123 subdomain"},
          R{"underscore", [](Subnet& s) { s.metadata.name = "s_1"; }, "metadata.name", kInvalid,
            "Invalid value: \"s_1\""},
          R{"long name", [&](Subnet& s) { s.metadata.name = long_name; }, "metadata.name", kInvalid,
            "no more than 253"},
          R{"bad generateName", [](Subnet& s) { s.metadata.generate_name = "Web-"; },
            "metadata.generateName", kInvalid, "RFC 1123"},
          R{"no namespace", [](Subnet& s) { s.metadata.namespace_ = ""; }, "metadata.namespace",
            kRequired, "Required value"},
          R{"dotted namespace", [](Subnet& s) { s.metadata.namespace_ = "a.b"; },
            "metadata.namespace", kInvalid, "RFC 1123 label"},
          R{"long namespace", [](Subnet& s) { s.metadata.namespace_ = std::string(64, 'n'); },
            "metadata.namespace", kInvalid, "no more than 63"},
          R{"negative generation", [](Subnet& s) { s.metadata.generation = -1; },
            "metadata.generation", kInvalid, "greater than or equal to 0"},
          R{"label key", [](Subnet& s) { s.metadata.labels["-app"] = "x"; }, "metadata.labels",
            kInvalid, "Invalid value: \"-app\": name part"},
          R{"label key slashes", [](Subnet& s) { s.metadata.labels["a/b/c"] = "x"; },
            "metadata.labels", kInvalid, "at most one '/'"},
          R{"label key prefix", [](Subnet& s) { s.metadata.labels["Ex.com/a"] = "x"; },
            "metadata.labels", kInvalid, "prefix part"},
          R{"label value", [](Subnet& s) { s.metadata.labels["app"] = "a b"; },
            "metadata.labels[app]", kInvalid, "Invalid value: \"a b\""},
          R{"long label value", [](Subnet& s) { s.metadata.labels["app"] = std::string(64, 'v'); },
            "metadata.labels[app]", kInvalid, "no more than 63"},
          R{"annotation key", [](Subnet& s) { s.metadata.annotations["a b"] = ""; },
            "metadata.annotations", kInvalid, "name part"},
          R{"annotations too big",
            [](Subnet& s) { s.metadata.annotations["big"] = std::string(256 * 1024, 'x'); },
            "metadata.annotations", "FieldValueTooLong", "at most 262144 bytes"},
          R{"finalizer",
            [](Subnet& s) {
              s.metadata.finalizers = {"ok", "not ok"};
            },
            "metadata.finalizers[1]", kInvalid, "name part"},
          R{"owner without uid",
            [](Subnet& s) {
              s.metadata.owner_references = {{"v1", "K", "n", "", {}, {}}};
            },
            "metadata.ownerReferences[0].uid", kRequired, "Required value"},
          R{"two controllers",
            [](Subnet& s) {
              s.metadata.owner_references = {{"v1", "K", "a", "u1", true, {}},
                                             {"v1", "K", "b", "u2", true, {}}};
            },
            "metadata.ownerReferences", kInvalid, "only one reference can have controller"},
          R{"control char in name", [](Subnet& s) { s.metadata.name = "a\nb"; }, "metadata.name",
            kInvalid, "Invalid value: \"a\\x0ab\""},
      });
  // Accepted: mixed-case annotation keys, generateName ending in '-', uppercase labels.
  Subnet s = good_subnet();
  s.metadata.annotations["Example.com/Note"] = "any text at all";
  s.metadata.generate_name = "web-";
  s.metadata.labels["App"] = "Web_1";
  s.metadata.labels["empty"] = "";
  s.metadata.finalizers = {"example.com/cleanup"};
  s.metadata.owner_references = {{"v1", "K", "a", "u1", true, true},
                                 {"v1", "K", "b", "u2", false, {}}};
  EXPECT_TRUE(validate_subnet(s).has_value()) << validate_subnet(s).error().message;
}

TEST(Validation, NetworkAttachmentRules) {
  using R = Row<NetworkAttachment>;
  expect_rows<NetworkAttachment>(
      good_na(),
      {
          R{"no node", [](auto& na) { na.spec.node = ""; }, "spec.node", kRequired, "Required"},
          R{"bad node", [](auto& na) { na.spec.node = "Node_1"; }, "spec.node", kInvalid,
            "RFC 1123 subdomain"},
          R{"no subnet", [](auto& na) { na.spec.subnet = ""; }, "spec.subnet", kRequired,
            "Required"},
          R{"bad subnet", [](auto& na) { na.spec.subnet = "s/1"; }, "spec.subnet", kInvalid,
            "Invalid value: \"s/1\""},
          R{"empty program",
            [](auto& na) {
              na.spec.post_create_exec = {"", "x"};
            },
            "spec.postCreateExec[0]", kRequired, "the program to run"},
          R{"empty delete program", [](auto& na) { na.spec.post_delete_exec = {""}; },
            "spec.postDeleteExec[0]", kRequired, "the program to run"},
          R{"bad status ipv4", [](auto& na) { na.status.ipv4 = "10.0.0.256"; }, "status.ipv4",
            kInvalid, "want four decimal octets"},
          R{"bad status vni", [](auto& na) { na.status.address_vni = kMaxVni + 1; },
            "status.addressVNI", kInvalid, "0..2097151"},
          R{"bad mac", [](auto& na) { na.status.mac_address = "zz"; }, "status.macAddress",
            kInvalid, "xx:xx:xx:xx:xx:xx"},
      });
  NetworkAttachment na = good_na();
  na.status.ipv4 = "10.1.2.3";
  na.status.address_vni = 5;
  na.status.mac_address = "0e:01:02:03:00:05";
  na.status.host_ip = "fe80::1";  // not checked: nodes may be IPv6
  EXPECT_TRUE(validate_network_attachment(na).has_value());
}

SecurityGroup good_group() {
  SecurityGroup g;
  g.metadata = meta_named("sftp-servers");
  g.spec.ingress = {{"tcp", {"22", "443"}, {{"", "sftp-clients"}, {"10.9.0.0/16", ""}}}};
  g.spec.egress = {{"any", {}, {{"0.0.0.0/0", ""}}}};
  return g;
}

TEST(Validation, SecurityGroupRules) {
  EXPECT_TRUE(validate(AnyObject(good_group())).has_value());
  using R = Row<SecurityGroup>;
  expect_rows<SecurityGroup>(
      good_group(),
      {
          R{"no protocol", [](auto& g) { g.spec.ingress[0].protocol = ""; },
            "spec.ingress[0].protocol", kRequired, "Required"},
          R{"bad protocol", [](auto& g) { g.spec.egress[0].protocol = "sctp"; },
            "spec.egress[0].protocol", kInvalid, "must be tcp, udp, icmp or any"},
          R{"bad port", [](auto& g) { g.spec.ingress[0].ports[1] = "70000"; },
            "spec.ingress[0].ports[1]", kInvalid, "1 <= N <= M <= 65535"},
          R{"reversed range", [](auto& g) { g.spec.ingress[0].ports[0] = "30-20"; },
            "spec.ingress[0].ports[0]", kInvalid, "N-M"},
          R{"ports on icmp", [](auto& g) { g.spec.ingress[0].protocol = "icmp"; },
            "spec.ingress[0].ports", kInvalid, "only tcp and udp rules have ports"},
          R{"no peers", [](auto& g) { g.spec.egress[0].to.clear(); }, "spec.egress[0].to",
            kRequired, "Required"},
          R{"peer with both", [](auto& g) { g.spec.ingress[0].from[0].cidr = "10.0.0.0/8"; },
            "spec.ingress[0].from[0]", kInvalid, "exactly one of cidr and securityGroup"},
          R{"peer with neither", [](auto& g) { g.spec.ingress[0].from[1].cidr = ""; },
            "spec.ingress[0].from[1]", kInvalid, "exactly one of cidr and securityGroup"},
          R{"bad cidr", [](auto& g) { g.spec.ingress[0].from[1].cidr = "10.9.0.1/16"; },
            "spec.ingress[0].from[1].cidr", kInvalid, "10.9.0.0/16"},
          R{"bad group name", [](auto& g) { g.spec.ingress[0].from[0].security_group = "A_b"; },
            "spec.ingress[0].from[0].securityGroup", kInvalid, "RFC 1123"},
      });
}

TEST(Validation, AttachmentSecurityGroups) {
  using R = Row<NetworkAttachment>;
  expect_rows<NetworkAttachment>(
      good_na(),
      {
          R{"bad name", [](auto& na) { na.spec.security_groups = {"ok", "Not_OK"}; },
            "spec.securityGroups[1]", kInvalid, "RFC 1123"},
          R{"repeat", [](auto& na) { na.spec.security_groups = {"a", "b", "a"}; },
            "spec.securityGroups[2]", "FieldValueDuplicate", "Duplicate value: \"a\""},
          R{"too many",
            [](auto& na) {
              for (int i = 0; i < 17; ++i) na.spec.security_groups.push_back("g" + std::to_string(i));
            },
            "spec.securityGroups", kInvalid, "at most 16"},
      });
  // Mutable: a live attachment changes its groups.
  NetworkAttachment a = good_na(), b = good_na();
  b.spec.security_groups = {"web"};
  EXPECT_TRUE(validate_update(AnyObject(a), AnyObject(b)).has_value());
}

TEST(Validation, IPLockRules) {
  using R = Row<IPLock>;
  expect_rows<IPLock>(
      good_lock(), {
                       R{"plain name", [](auto& l) { l.metadata.name = "lock1"; }, "metadata.name",
                         kInvalid, "Invalid value: \"lock1\": want v1-<vni>-<a>-<b>-<c>-<d>"},
                       R{"vni 0", [](auto& l) { l.metadata.name = "v1-0-10-1-2-3"; },
                         "metadata.name", kInvalid, "want v1-"},
                       R{"leading zero", [](auto& l) { l.metadata.name = "v1-5-10-01-2-3"; },
                         "metadata.name", kInvalid, "want v1-"},
                       R{"no subnet", [](auto& l) { l.spec.subnet_name = ""; }, "spec.subnetName",
                         kRequired, "Required"},
                       R{"bad subnet", [](auto& l) { l.spec.subnet_name = "S"; }, "spec.subnetName",
                         kInvalid, "RFC 1123"},
                   });
}

TEST(Validation, ImmutableFieldsOnUpdate) {
  struct UpdateRow {
    std::string_view what;
    AnyObject old_obj;
    std::function<void(AnyObject&)> mutate;
    std::string field;
  };
  auto sn = [](auto f) { return [f](AnyObject& o) { f(std::get<Subnet>(o)); }; };
  auto na = [](auto f) { return [f](AnyObject& o) { f(std::get<NetworkAttachment>(o)); }; };
  auto ipl = [](auto f) { return [f](AnyObject& o) { f(std::get<IPLock>(o)); }; };
  const UpdateRow rows[] = {
      {"vni", good_subnet(), sn([](Subnet& s) { s.spec.vni = 6; }), "spec.vni"},
      {"ipv4", good_subnet(), sn([](Subnet& s) { s.spec.ipv4 = "10.1.3.0/24"; }), "spec.ipv4"},
      {"name", good_subnet(), sn([](Subnet& s) { s.metadata.name = "s2"; }), "metadata.name"},
      {"namespace", good_subnet(), sn([](Subnet& s) { s.metadata.namespace_ = "ns2"; }),
       "metadata.namespace"},
      {"uid", good_subnet(), sn([](Subnet& s) { s.metadata.uid = "uid-2"; }), "metadata.uid"},
      {"uid dropped", good_subnet(), sn([](Subnet& s) { s.metadata.uid = ""; }), "metadata.uid"},
      {"node", good_na(), na([](NetworkAttachment& n) { n.spec.node = "node-2"; }), "spec.node"},
      {"subnet", good_na(), na([](NetworkAttachment& n) { n.spec.subnet = "s2"; }), "spec.subnet"},
      {"postCreateExec", good_na(),
       na([](NetworkAttachment& n) { n.spec.post_create_exec.push_back("x"); }),
       "spec.postCreateExec"},
      {"subnetName", good_lock(), ipl([](IPLock& l) { l.spec.subnet_name = "s2"; }),
       "spec.subnetName"},
  };
  for (const auto& r : rows) {
    AnyObject updated = r.old_obj;
    r.mutate(updated);
    auto v = validate_update(r.old_obj, updated);
    ASSERT_FALSE(v.has_value()) << "accepted: " << r.what;
    EXPECT_EQ(v.error().code, Errc::kInvalid);
    ASSERT_EQ(v.error().causes.size(), 1u) << r.what << ": " << v.error().message;
    EXPECT_EQ(v.error().causes[0].field, r.field) << r.what;
    EXPECT_EQ(v.error().causes[0].reason, kInvalid) << r.what;
    EXPECT_NE(v.error().causes[0].message.find("field is immutable"), std::string::npos);
  }
}

TEST(Validation, MutableFieldsMayChange) {
  Subnet s2 = good_subnet();
  s2.metadata.labels["x"] = "y";
  s2.metadata.resource_version = "9";
  s2.status = {true, {}};
  EXPECT_TRUE(validate_subnet_update(good_subnet(), s2).has_value());

  NetworkAttachment n2 = good_na();
  n2.spec.post_delete_exec = {"/bin/echo", "bye"};
  n2.status.ipv4 = "10.1.2.9";
  EXPECT_TRUE(validate_network_attachment_update(good_na(), n2).has_value());

  IPLock l2 = good_lock();
  l2.metadata.finalizers = {"example.com/f"};
  EXPECT_TRUE(validate_iplock_update(good_lock(), l2).has_value());
}

TEST(Validation, UpdateAlsoValidatesTheNewObject) {
  Subnet bad = good_subnet();
  bad.metadata.labels["-"] = "x";
  auto v = validate_subnet_update(good_subnet(), bad);
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().causes.at(0).field, "metadata.labels");
}

TEST(Validation, UpdateAcrossKindsIsACallerBug) {
  auto v = validate_update(AnyObject(good_subnet()), AnyObject(good_lock()));
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code, Errc::kInternal);
}

}  // namespace
}  // namespace kos::api
