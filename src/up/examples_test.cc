// The examples of kos up: YAML to JSON, the examples/ files themselves, and the ping plan.
#include "up/examples.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>

namespace kos::up {
namespace {

namespace json = boost::json;

TEST(YamlDocuments, ScalarsFollowTheCoreSchemaAndQuotedOnesStayStrings) {
  auto docs = yaml_documents(R"(a: 1
b: "1"
c: true
d: 'true'
e: ~
f: 1.5
g: hello
h: [x, "${y}", 3]
---
---
k: {m: -2}
)",
                             "t.yaml");
  ASSERT_TRUE(docs.has_value()) << docs.error().message;
  ASSERT_EQ(docs->size(), 2u);
  EXPECT_EQ((*docs)[0], json::parse(R"({"a":1,"b":"1","c":true,"d":"true","e":null,"f":1.5,"g":"hello","h":["x","${y}",3]})"));
  EXPECT_EQ((*docs)[1], json::parse(R"({"k":{"m":-2}})"));
}

TEST(YamlDocuments, BadYamlNamesTheFileAndLine) {
  auto docs = yaml_documents("a: 1\nb: [unclosed\n", "bad.yaml");
  ASSERT_FALSE(docs.has_value());
  EXPECT_NE(docs.error().message.find("bad.yaml: line "), std::string::npos) << docs.error().message;
}

TEST(LoadExamples, TheShippedExamplesLoad) {
  auto objs = load_examples(std::filesystem::path(KOS_SOURCE_DIR) / "examples");
  ASSERT_TRUE(objs.has_value()) << objs.error().message;
  int subnets = 0, attachments = 0;
  bool seed = false;
  for (const auto& o : *objs) {
    if (o.kind == api::Kind::kSubnet) ++subnets;
    if (o.kind == api::Kind::kNetworkAttachment) ++attachments;
    if (o.kind == api::Kind::kSubnet && o.ns == "ns1" && o.name == "s1") {
      auto s = api::from_json<api::Subnet>(o.json);
      ASSERT_TRUE(s.has_value()) << s.error().message;
      EXPECT_EQ(s->spec.vni, 1u);
      EXPECT_EQ(s->spec.ipv4, "192.168.10.0/24");
      seed = true;
    }
    if (o.kind == api::Kind::kNetworkAttachment) {
      auto na = api::from_json<api::NetworkAttachment>(o.json);
      ASSERT_TRUE(na.has_value()) << o.name << ": " << na.error().message;
      EXPECT_FALSE(na->spec.post_create_exec.empty()) << o.name;
    }
  }
  EXPECT_TRUE(seed);
  EXPECT_EQ(subnets, 3);
  EXPECT_EQ(attachments, 6);
}

TEST(LoadExamples, AnObjectOfAnotherKindIsRefused) {
  auto dir = std::filesystem::temp_directory_path() / ("kos-examples-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  {
    std::ofstream(dir / "x.yaml") << "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n";
  }
  auto objs = load_examples(dir);
  std::filesystem::remove_all(dir);
  ASSERT_FALSE(objs.has_value());
  EXPECT_NE(objs.error().message.find("kind Subnet or NetworkAttachment expected, not v1 Pod"), std::string::npos)
      << objs.error().message;
}

api::NetworkAttachment ready_na(const std::string& ns, const std::string& name, const std::string& node, uint32_t vni,
                                const std::string& ip) {
  api::NetworkAttachment na;
  na.metadata.namespace_ = ns;
  na.metadata.name = name;
  na.spec.node = node;
  na.status.address_vni = vni;
  na.status.ipv4 = ip;
  api::ExecReport rep;
  rep.command = {"/usr/lib/kos/kos-guest-netns", "add", "kosv" + name, ip + "/24", "g-" + name};
  na.status.post_create_exec_report = rep;
  return na;
}

// Within a VNI: from the first guest to each on another node. Across: to an address the
// source's network does not have (the two share a CIDR, so .1 and .2 exist in both).
TEST(PlanPings, AcrossNodesWithinAVniAndToAnAddressOnlyTheOtherTenantHas) {
  std::vector<api::NetworkAttachment> ready = {
      ready_na("tenant-a", "a1", "node-0", 101, "10.10.0.1"), ready_na("tenant-a", "a2", "node-1", 101, "10.10.0.2"),
      ready_na("tenant-b", "b1", "node-0", 102, "10.10.0.1"), ready_na("tenant-b", "b2", "node-1", 102, "10.10.0.2"),
      ready_na("tenant-b", "b3", "node-1", 102, "10.10.0.3")};
  auto checks = plan_pings(ready);
  std::vector<std::string> got;
  for (const auto& c : checks)
    got.push_back(c.from + "@" + c.from_netns + " -> " + c.to + " " + c.to_ip + (c.expect_reply ? " reply" : " none"));
  EXPECT_EQ(got, (std::vector<std::string>{
                     "tenant-a/a1@g-a1 -> tenant-a/a2 10.10.0.2 reply",
                     "tenant-b/b1@g-b1 -> tenant-b/b2 10.10.0.2 reply",
                     "tenant-b/b1@g-b1 -> tenant-b/b3 10.10.0.3 reply",
                     "tenant-a/a1@g-a1 -> tenant-b/b3 10.10.0.3 none",
                 }));
}

}  // namespace
}  // namespace kos::up
