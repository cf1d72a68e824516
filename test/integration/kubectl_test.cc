// kubectl v1.32 (/usr/bin/kubectl), unmodified, against a real `kos apiserver` on a port
// chosen at run time: every test runs once on the embedded store and once on etcd.
//
// The assertions are what Kubernetes answers (exit codes and the exact messages kubectl
// prints for the server's Status).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <regex>

#include "test/integration/harness.h"

namespace kos::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::UnorderedElementsAre;

constexpr char kKubectl[] = "/usr/bin/kubectl";
constexpr auto kWatchLineTimeout = 20s;

class KubectlTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ApiServerProcess>(GetParam());
    auto err = server_->start();
    ASSERT_TRUE(err.empty()) << err;
    kubectl_ = std::make_unique<Kubectl>(kKubectl, server_->kubeconfig(), server_->dir() / "home");
  }
  void TearDown() override {
    kubectl_.reset();
    server_.reset();
  }

  const Kubectl& kubectl() const { return *kubectl_; }
  fs::path file(const std::string& name, const std::string& content) const {
    return write_file(server_->dir() / name, content);
  }
  // The object as JSON (`kubectl get -o json`); null (and a failure) if the get fails.
  boost::json::value get_json(const std::string& resource, const std::string& name,
                              const std::string& ns = "ns1") const {
    auto r = kubectl()({"get", resource, name, "-n", ns, "-o", "json"});
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    if (r.exit_code != 0) return nullptr;
    return parse_json(r.out);
  }
  // Applies the seed's Subnet s1 and NetworkAttachment na1 (namespace ns1).
  void apply_seed() const {
    auto r = kubectl()({"apply", "-f", testdata("seed.yaml").string()});
    ASSERT_EQ(r.exit_code, 0) << describe(r);
  }
  // An editor for `kubectl edit`: a shell script that runs `sed -i EXPR` on the file.
  std::string sed_editor(const std::string& name, const std::string& sed_expr) const {
    auto path = file(name, "#!/bin/sh\nexec sed -i -e '" + sed_expr + "' \"$1\"\n");
    fs::permissions(path, fs::perms::owner_all);
    return path.string();
  }

  // The server's count of open watch streams on a resource (its /metrics), or -1.
  int open_watches(const std::string& resource) const {
    auto r = kubectl()({"get", "--raw", "/metrics"});
    if (r.exit_code != 0) return -1;
    std::smatch m;
    std::regex line("\\nkos_apiserver_open_watches\\{resource=\"" + resource + "\"\\} (\\d+)\\n");
    return std::regex_search(r.out, m, line) ? std::stoi(m[1]) : -1;
  }

  std::unique_ptr<ApiServerProcess> server_;
  std::unique_ptr<Kubectl> kubectl_;
};

std::string subnet_yaml(const std::string& name, const std::string& ns, int64_t vni,
                        const std::string& cidr, const std::string& extra_metadata = "") {
  return "apiVersion: network.example.com/v1alpha1\nkind: Subnet\nmetadata:\n  name: " + name +
         "\n  namespace: " + ns + "\n" + extra_metadata + "spec:\n  vni: " + std::to_string(vni) +
         "\n  ipv4: " + cidr + "\n";
}

std::string na_yaml(const std::string& name, const std::string& ns, const std::string& subnet,
                    const std::string& node) {
  return "apiVersion: network.example.com/v1alpha1\nkind: NetworkAttachment\nmetadata:\n  name: " +
         name + "\n  namespace: " + ns + "\nspec:\n  subnet: " + subnet + "\n  node: " + node + "\n";
}

// The names in `kubectl get -o name` output.
std::vector<std::string> names(const RunResult& r) { return words(r.out); }

// ---- apply and get --------------------------------------------------------------------

TEST_P(KubectlTest, ApplySeedThenGetAsTableYamlJson) {
  auto r = kubectl()({"apply", "-f", testdata("seed.yaml").string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out,
            "subnet.network.example.com/s1 created\n"
            "networkattachment.network.example.com/na1 created\n");

  // Table: the server's columns. The file's status.validated=true is dropped on create
  // (status is the status subresource's).
  r = kubectl()({"get", "subnets", "-n", "ns1"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  Table t = parse_table(r.out);
  EXPECT_THAT(t.headers, ElementsAre("NAME", "VNI", "CIDR", "VALIDATED", "AGE")) << r.out;
  ASSERT_EQ(t.rows.size(), 1u) << r.out;
  EXPECT_EQ(t.rows[0].at("NAME"), "s1");
  EXPECT_EQ(t.rows[0].at("VNI"), "1");
  EXPECT_EQ(t.rows[0].at("CIDR"), "192.168.10.0/24");
  EXPECT_EQ(t.rows[0].at("VALIDATED"), "false");
  EXPECT_TRUE(std::regex_match(t.rows[0].at("AGE"), std::regex(R"(\d+s)"))) << r.out;

  r = kubectl()({"get", "na", "-n", "ns1"});  // short name
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  t = parse_table(r.out);
  EXPECT_THAT(t.headers,
              ElementsAre("NAME", "SUBNET", "NODE", "IPV4", "MAC", "HOSTIP", "IFC", "AGE"));
  ASSERT_EQ(t.rows.size(), 1u) << r.out;
  EXPECT_EQ(t.rows[0].at("NAME"), "na1");
  EXPECT_EQ(t.rows[0].at("SUBNET"), "s1");
  EXPECT_EQ(t.rows[0].at("NODE"), "node1");
  EXPECT_EQ(t.rows[0].at("IPV4"), "");

  r = kubectl()({"get", "sn", "-n", "ns1", "-o", "wide"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(parse_table(r.out).headers,
              ElementsAre("NAME", "VNI", "CIDR", "VPC", "GATEWAY", "VALIDATED", "ERRORS", "AGE"));

  // YAML.
  r = kubectl()({"get", "subnet", "s1", "-n", "ns1", "-o", "yaml"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  for (const char* line : {"apiVersion: network.example.com/v1alpha1\n", "kind: Subnet\n",
                           "\n  name: s1\n", "\n  namespace: ns1\n", "\n  generation: 1\n",
                           "\nspec:\n  ipv4: 192.168.10.0/24\n  vni: 1\n"})
    EXPECT_THAT(r.out, HasSubstr(line));
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(\n  resourceVersion: "\d+"\n)"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(\n  uid: [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\n)")))
      << r.out;
  EXPECT_TRUE(std::regex_search(
      r.out, std::regex(R"(\n  creationTimestamp: "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"\n)")))
      << r.out;
  EXPECT_THAT(r.out, Not(HasSubstr("validated: true")));

  // JSON, one object and a list.
  auto na = get_json("networkattachment", "na1");
  EXPECT_EQ(str_at(na, "apiVersion"), "network.example.com/v1alpha1");
  EXPECT_EQ(str_at(na, "kind"), "NetworkAttachment");
  EXPECT_EQ(str_at(na, "metadata.name"), "na1");
  EXPECT_EQ(str_at(na, "metadata.namespace"), "ns1");
  EXPECT_EQ(str_at(na, "metadata.uid").size(), 36u);
  EXPECT_TRUE(std::regex_match(str_at(na, "metadata.resourceVersion"), std::regex(R"([1-9]\d*)")));
  ASSERT_NE(at(na, "metadata.generation"), nullptr);
  EXPECT_EQ(int_at(na, "metadata.generation"), 1);
  EXPECT_EQ(str_at(na, "spec.subnet"), "s1");
  EXPECT_EQ(str_at(na, "spec.node"), "node1");
  EXPECT_EQ(json_at(na, "status"), boost::json::object()) << "status: {} after create";
  // The server stamps the time of the spec write.
  const auto* writes = at(na, "extendedMetadata.writes");
  ASSERT_TRUE(writes && writes->is_array() && writes->get_array().size() == 1) << na;
  EXPECT_EQ(str_at(writes->get_array()[0], "section"), "spec");

  r = kubectl()({"get", "sn", "-n", "ns1", "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  auto list = parse_json(r.out);
  EXPECT_EQ(str_at(list, "kind"), "List");
  ASSERT_TRUE(at(list, "items") && at(list, "items")->is_array()) << r.out;
  ASSERT_EQ(at(list, "items")->get_array().size(), 1u);
  EXPECT_EQ(str_at(at(list, "items")->get_array()[0], "metadata.name"), "s1");

  r = kubectl()({"get", "sn,na", "-n", "ns1", "-o", "name"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "subnet.network.example.com/s1\nnetworkattachment.network.example.com/na1\n");

  r = kubectl()({"get", "sn", "s1", "-n", "ns1", "-o", "jsonpath={.spec.vni}/{.spec.ipv4}"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "1/192.168.10.0/24");

  r = kubectl()({"describe", "sn", "s1", "-n", "ns1"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(Name:\s+s1\n)"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(Namespace:\s+ns1\n)"))) << r.out;
  EXPECT_THAT(r.out, HasSubstr("Events:"));

  // Nothing in the kubeconfig's namespace ("default").
  r = kubectl()({"get", "sn"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "");
  EXPECT_THAT(r.err, HasSubstr("No resources found in default namespace."));
}

TEST_P(KubectlTest, SeedNetworkAttachmentWithLegacyStatusFieldsFailsStrictValidation) {
  // kubectl 1.32 asks for fieldValidation=Strict: unknown fields are an error...
  auto r = kubectl()({"create", "-f", testdata("seed_legacy_na.yaml").string()});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr("Error from server (BadRequest)"));
  EXPECT_THAT(r.err, HasSubstr("unknown field \"status.guestIP\""));
  EXPECT_THAT(r.err, HasSubstr("unknown field \"status.guestMAC\""));
  EXPECT_THAT(r.err, Not(HasSubstr("addressVNI")));
  EXPECT_THAT(names(kubectl()({"get", "na", "-n", "ns1", "-o", "name"})), IsEmpty());

  // ... and without client validation the object is created, its status dropped.
  r = kubectl()({"create", "--validate=false", "-f", testdata("seed_legacy_na.yaml").string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "networkattachment.network.example.com/na1 created\n");
  auto na = get_json("na", "na1");
  EXPECT_EQ(json_at(na, "status"), boost::json::object()) << na;
}

TEST_P(KubectlTest, GetAllNamespacesWithLabelAndFieldSelectors) {
  auto objs = file("objs.yaml", subnet_yaml("s1", "ns1", 1, "192.168.10.0/24") + "---\n" +
                                    subnet_yaml("s2", "ns2", 2, "10.2.0.0/16") + "---\n" +
                                    na_yaml("na1", "ns1", "s1", "node1") + "---\n" +
                                    na_yaml("na2", "ns2", "s2", "node2"));
  auto r = kubectl()({"apply", "-f", objs.string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  r = kubectl()({"label", "sn", "s1", "-n", "ns1", "env=prod"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "subnet.network.example.com/s1 labeled\n");
  r = kubectl()({"label", "sn", "s2", "-n", "ns2", "env=dev"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);

  r = kubectl()({"get", "sn", "-A"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  Table t = parse_table(r.out);
  EXPECT_THAT(t.headers, ElementsAre("NAMESPACE", "NAME", "VNI", "CIDR", "VALIDATED", "AGE"));
  EXPECT_THAT(t.column("NAMESPACE"), ElementsAre("ns1", "ns2"));
  EXPECT_THAT(t.column("NAME"), ElementsAre("s1", "s2"));
  EXPECT_THAT(t.column("CIDR"), ElementsAre("192.168.10.0/24", "10.2.0.0/16"));

  r = kubectl()({"get", "na", "--all-namespaces"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  t = parse_table(r.out);
  EXPECT_THAT(t.column("NAMESPACE"), ElementsAre("ns1", "ns2"));
  EXPECT_THAT(t.column("NODE"), ElementsAre("node1", "node2"));

  auto get_names = [&](std::vector<std::string> args) {
    std::vector<std::string> argv{"get", "sn", "-A", "-o", "name"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto res = kubectl()(argv);
    EXPECT_EQ(res.exit_code, 0) << describe(res);
    return names(res);
  };
  const std::string s1 = "subnet.network.example.com/s1", s2 = "subnet.network.example.com/s2";
  EXPECT_THAT(get_names({"-l", "env=prod"}), ElementsAre(s1));
  EXPECT_THAT(get_names({"-l", "env==dev"}), ElementsAre(s2));
  EXPECT_THAT(get_names({"-l", "env!=prod"}), ElementsAre(s2));
  EXPECT_THAT(get_names({"-l", "env in (prod,dev)"}), ElementsAre(s1, s2));
  EXPECT_THAT(get_names({"-l", "env notin (prod)"}), ElementsAre(s2));
  EXPECT_THAT(get_names({"-l", "env"}), ElementsAre(s1, s2));
  EXPECT_THAT(get_names({"-l", "!env"}), IsEmpty());
  EXPECT_THAT(get_names({"-l", "env=prod,tier=gold"}), IsEmpty());
  EXPECT_THAT(get_names({"--field-selector", "spec.vni=2"}), ElementsAre(s2));
  EXPECT_THAT(get_names({"--field-selector", "spec.vni!=2"}), ElementsAre(s1));
  EXPECT_THAT(get_names({"--field-selector", "metadata.namespace=ns1"}), ElementsAre(s1));
  EXPECT_THAT(get_names({"--field-selector", "metadata.name=s2"}), ElementsAre(s2));
  EXPECT_THAT(get_names({"--field-selector", "spec.vni=3"}), IsEmpty());
  EXPECT_THAT(get_names({"-l", "env", "--field-selector", "spec.vni=1"}), ElementsAre(s1));

  r = kubectl()({"get", "na", "-A", "--field-selector", "spec.node=node2"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  t = parse_table(r.out);
  ASSERT_EQ(t.rows.size(), 1u) << r.out;
  EXPECT_EQ(t.rows[0].at("NAMESPACE"), "ns2");
  EXPECT_EQ(t.rows[0].at("NAME"), "na2");
  r = kubectl()({"get", "na", "-A", "-o", "name", "--field-selector",
                 "spec.subnet=s1,spec.node==node1"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(names(r), ElementsAre("networkattachment.network.example.com/na1"));

  r = kubectl()({"get", "sn", "-A", "--field-selector", "spec.vni=3"});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(r.err, HasSubstr("No resources found"));

  // A field the kind does not declare.
  r = kubectl()({"get", "na", "-A", "--field-selector", "spec.bogus=1"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr("Error from server (BadRequest)"));
  EXPECT_THAT(r.err, HasSubstr("field label not supported: spec.bogus"));

  // The category "kos" holds all three kinds.
  r = kubectl()({"get", "kos", "-A", "-o", "name"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(names(r), UnorderedElementsAre(s1, s2, "networkattachment.network.example.com/na1",
                                             "networkattachment.network.example.com/na2"));
}

// ---- edit, apply, patch, label, annotate ------------------------------------------------

TEST_P(KubectlTest, EditThenApplyAgain) {
  apply_seed();
  // A mutable field through `kubectl edit`, the editor being a sed script.
  auto editor = sed_editor("add-post-delete.sh",
                           R"(s|^  node: node1$|  node: node1\n  postDeleteExec:\n  - /bin/true|)");
  auto r = kubectl().with_env({{"KUBE_EDITOR", editor}}, {"edit", "na", "na1", "-n", "ns1"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "networkattachment.network.example.com/na1 edited\n");
  auto na = get_json("na", "na1");
  ASSERT_NE(at(na, "spec.postDeleteExec"), nullptr) << na;
  EXPECT_EQ(json_at(na, "spec.postDeleteExec"), boost::json::array({"/bin/true"}));
  EXPECT_EQ(int_at(na, "metadata.generation"), 2);

  // An editor that changes nothing.
  r = kubectl().with_env({{"KUBE_EDITOR", "true"}}, {"edit", "na", "na1", "-n", "ns1"});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(r.out + r.err, HasSubstr("Edit cancelled, no changes made."));

  // Apply again, changed: a label on the Subnet; the NA's postDeleteExec replaced (the
  // file's list wins over the edited one).
  std::string seed = subnet_yaml("s1", "ns1", 1, "192.168.10.0/24", "  labels:\n    team: blue\n") +
                     "---\n" + na_yaml("na1", "ns1", "s1", "node1") +
                     "  postDeleteExec: [/bin/echo, bye]\n";
  auto v2 = file("seed-v2.yaml", seed);
  r = kubectl()({"apply", "-f", v2.string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out,
            "subnet.network.example.com/s1 configured\n"
            "networkattachment.network.example.com/na1 configured\n");
  auto sn = get_json("sn", "s1");
  EXPECT_EQ(str_at(sn, "metadata.labels.team"), "blue");
  EXPECT_EQ(int_at(sn, "metadata.generation"), 1) << "labels are metadata";
  na = get_json("na", "na1");
  EXPECT_EQ(json_at(na, "spec.postDeleteExec"), boost::json::array({"/bin/echo", "bye"}));
  EXPECT_EQ(int_at(na, "metadata.generation"), 3);
  const std::string rv = str_at(na, "metadata.resourceVersion");

  // The same file again: nothing to do, no write.
  r = kubectl()({"apply", "-f", v2.string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out,
            "subnet.network.example.com/s1 unchanged\n"
            "networkattachment.network.example.com/na1 unchanged\n");
  EXPECT_EQ(str_at(get_json("na", "na1"), "metadata.resourceVersion"), rv);

  // The original seed again: apply removes what the previous apply set and the file lacks.
  r = kubectl()({"apply", "-f", testdata("seed.yaml").string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(at(get_json("na", "na1"), "spec.postDeleteExec"), nullptr);
  EXPECT_EQ(at(get_json("sn", "s1"), "metadata.labels.team"), nullptr);
}

TEST_P(KubectlTest, PatchJson) {
  apply_seed();
  auto r = kubectl()({"patch", "na", "na1", "-n", "ns1", "--type=json", "-p",
                      R"([{"op":"add","path":"/metadata/labels","value":{"tier":"gold"}},)"
                      R"( {"op":"add","path":"/spec/postDeleteExec","value":["/bin/echo","bye"]}])"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "networkattachment.network.example.com/na1 patched\n");
  auto na = get_json("na", "na1");
  EXPECT_EQ(str_at(na, "metadata.labels.tier"), "gold");
  EXPECT_EQ(json_at(na, "spec.postDeleteExec"), boost::json::array({"/bin/echo", "bye"}));
  EXPECT_EQ(int_at(na, "metadata.generation"), 2);

  r = kubectl()({"patch", "na", "na1", "-n", "ns1", "--type=json", "-p",
                 R"([{"op":"replace","path":"/spec/postDeleteExec/1","value":"ciao"},)"
                 R"( {"op":"test","path":"/spec/node","value":"node1"}])"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(json_at(get_json("na", "na1"), "spec.postDeleteExec"), boost::json::array({"/bin/echo", "ciao"}));

  r = kubectl()({"patch", "na", "na1", "-n", "ns1", "--type=json", "-p",
                 R"([{"op":"remove","path":"/spec/postDeleteExec"}])"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  na = get_json("na", "na1");
  EXPECT_EQ(at(na, "spec.postDeleteExec"), nullptr);
  EXPECT_EQ(int_at(na, "metadata.generation"), 4);

  // A merge patch too.
  r = kubectl()({"patch", "sn", "s1", "-n", "ns1", "--type=merge", "-p",
                 R"({"metadata":{"annotations":{"note":"merged"}}})"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(str_at(get_json("sn", "s1"), "metadata.annotations.note"), "merged");

  // The status subresource: only there can status change.
  r = kubectl()({"patch", "sn", "s1", "-n", "ns1", "--subresource=status", "--type=merge", "-p",
                 R"({"status":{"validated":true}})"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  auto sn = get_json("sn", "s1");
  ASSERT_NE(at(sn, "status.validated"), nullptr) << sn;
  EXPECT_EQ(json_at(sn, "status.validated"), true);
  r = kubectl()({"patch", "sn", "s1", "-n", "ns1", "--type=merge", "-p",
                 R"({"status":{"validated":false}})"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(json_at(get_json("sn", "s1"), "status.validated"), true)
      << "the main resource ignores status";

  // Patching an object that does not exist (in the kubeconfig's namespace).
  r = kubectl()({"patch", "sn", "nope", "--type=json", "-p",
                 R"([{"op":"add","path":"/metadata/labels","value":{"a":"b"}}])"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr(R"(Error from server (NotFound): subnets.network.example.com "nope" not found)"));
}

TEST_P(KubectlTest, LabelAndAnnotate) {
  apply_seed();
  auto r = kubectl()({"label", "sn", "s1", "-n", "ns1", "env=prod", "tier=gold"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "subnet.network.example.com/s1 labeled\n");
  r = kubectl()({"label", "sn", "s1", "-n", "ns1", "env=dev"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr("'env' already has a value (prod), and --overwrite is false"));
  r = kubectl()({"label", "sn", "s1", "-n", "ns1", "--overwrite", "env=dev"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  r = kubectl()({"label", "sn", "s1", "-n", "ns1", "tier-"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "subnet.network.example.com/s1 unlabeled\n");
  auto sn = get_json("sn", "s1");
  ASSERT_NE(at(sn, "metadata.labels"), nullptr) << sn;
  EXPECT_EQ(json_at(sn, "metadata.labels"), boost::json::object({{"env", "dev"}}));

  r = kubectl()({"annotate", "na", "na1", "-n", "ns1", "owner=alice", "purpose=kos test"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "networkattachment.network.example.com/na1 annotated\n");
  auto na = get_json("na", "na1");
  EXPECT_EQ(str_at(na, "metadata.annotations.owner"), "alice");
  EXPECT_EQ(str_at(na, "metadata.annotations.purpose"), "kos test");
  r = kubectl()({"annotate", "na", "na1", "-n", "ns1", "owner-"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  na = get_json("na", "na1");
  EXPECT_EQ(at(na, "metadata.annotations.owner"), nullptr);
  EXPECT_EQ(str_at(na, "metadata.annotations.purpose"), "kos test");
  // Metadata changes do not bump the generation.
  EXPECT_EQ(int_at(na, "metadata.generation"), 1);
  EXPECT_EQ(int_at(sn, "metadata.generation"), 1);

  // Many objects at once, by selector.
  r = kubectl()({"label", "sn,na", "--all", "-n", "ns1", "batch=7"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  r = kubectl()({"get", "kos", "-n", "ns1", "-l", "batch=7", "-o", "name"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(names(r), UnorderedElementsAre("subnet.network.example.com/s1",
                                             "networkattachment.network.example.com/na1"));

}

// ---- discovery --------------------------------------------------------------------------

TEST_P(KubectlTest, ApiResourcesAndExplain) {
  auto r = kubectl()({"api-resources", "--api-group=network.example.com"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  Table t = parse_table(r.out);
  EXPECT_THAT(t.headers, ElementsAre("NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"));
  ASSERT_EQ(t.rows.size(), 5u) << r.out;
  const std::map<std::string, std::pair<std::string, std::string>> want = {
      {"iplocks", {"ipl", "IPLock"}},
      {"networkattachments", {"na", "NetworkAttachment"}},
      {"securitygroups", {"sg", "SecurityGroup"}},
      {"subnets", {"sn", "Subnet"}},
      {"vpcs", {"vpc", "Vpc"}}};
  for (const auto& [plural, sk] : want) {
    const auto* row = t.find("NAME", plural);
    ASSERT_NE(row, nullptr) << plural << " missing:\n" << r.out;
    EXPECT_EQ(row->at("SHORTNAMES"), sk.first);
    EXPECT_EQ(row->at("APIVERSION"), "network.example.com/v1alpha1");
    EXPECT_EQ(row->at("NAMESPACED"), "true");
    EXPECT_EQ(row->at("KIND"), sk.second);
  }

  r = kubectl()({"api-resources", "--api-group=network.example.com", "-o", "wide"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  t = parse_table(r.out);
  const auto* subnets = t.find("NAME", "subnets");
  ASSERT_NE(subnets, nullptr) << r.out;
  EXPECT_EQ(subnets->at("VERBS"), "create,delete,deletecollection,get,list,patch,update,watch");
  EXPECT_EQ(subnets->at("CATEGORIES"), "kos,all");

  r = kubectl()({"api-resources"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const auto* events = parse_table(r.out).find("NAME", "events");
  ASSERT_NE(events, nullptr) << r.out;
  EXPECT_EQ(events->at("SHORTNAMES"), "ev");
  EXPECT_EQ(events->at("APIVERSION"), "v1");
  EXPECT_EQ(events->at("KIND"), "Event");

  r = kubectl()({"api-versions"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(r.out, HasSubstr("network.example.com/v1alpha1\n"));

  r = kubectl()({"explain", "subnets"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(KIND:\s+Subnet\n)"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(GROUP:\s+network\.example\.com\n)"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(VERSION:\s+v1alpha1\n)"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(\n  spec\t<\w+>\n)"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(\n  status\t<\w+>\n)"))) << r.out;

  r = kubectl()({"explain", "subnet.spec"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(r.out, HasSubstr("vni\t<integer> -required-"));
  EXPECT_THAT(r.out, HasSubstr("ipv4\t<string> -required-"));
  EXPECT_THAT(r.out, HasSubstr("2097151"));

  r = kubectl()({"explain", "na.spec.node"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(FIELD:\s+node <string>)"))) << r.out;
  EXPECT_THAT(r.out, HasSubstr("Immutable"));

  r = kubectl()({"explain", "networkattachments.status"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  for (const char* f : {"ipv4\t<string>", "macAddress\t<string>", "hostIP\t<string>",
                        "ifcName\t<string>", "addressVNI\t<integer>", "lockUID\t<string>"})
    EXPECT_THAT(r.out, HasSubstr(f));

  r = kubectl()({"explain", "ipl.spec.subnetName"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(FIELD:\s+subnetName <string>)"))) << r.out;

  r = kubectl()({"explain", "sn.spec.nope"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr("field \"nope\" does not exist"));
}

// ---- VPCs -----------------------------------------------------------------------------

TEST_P(KubectlTest, VpcsGetExplainAndSelectTheirSubnets) {
  const std::string doc =
      "apiVersion: network.example.com/v1alpha1\nkind: Vpc\nmetadata:\n  name: a\n  namespace: ns1\n"
      "spec:\n  vni: 100\n  cidrBlocks: [10.0.0.0/8]\n---\n" +
      subnet_yaml("a1", "ns1", 101, "10.1.0.0/24") + "  vpc: a\n---\n" +
      subnet_yaml("a2", "ns1", 102, "10.2.0.0/24") + "  vpc: a\n---\n" + subnet_yaml("iso", "ns1", 103, "10.3.0.0/24");
  auto r = kubectl()({"apply", "-f", file("vpc.yaml", doc).string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(r.out, HasSubstr("vpc.network.example.com/a created"));

  r = kubectl()({"get", "vpc", "-n", "ns1"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  Table t = parse_table(r.out);
  EXPECT_THAT(t.headers, ElementsAre("NAME", "VNI", "CIDRS", "SUBNETS", "VALIDATED", "AGE")) << r.out;
  ASSERT_EQ(t.rows.size(), 1u) << r.out;
  EXPECT_EQ(t.rows[0].at("VNI"), "100");
  EXPECT_EQ(t.rows[0].at("CIDRS"), "10.0.0.0/8");

  r = kubectl()({"get", "subnets", "-n", "ns1", "--field-selector", "spec.vpc=a", "-o", "name"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(names(r), ElementsAre("subnet.network.example.com/a1", "subnet.network.example.com/a2"));
  r = kubectl()({"get", "vpcs", "-A", "--field-selector", "spec.vni=100", "-o", "name"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(names(r), ElementsAre("vpc.network.example.com/a"));

  r = kubectl()({"explain", "vpc.spec"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(r.out, HasSubstr("vni\t<integer> -required-"));
  EXPECT_THAT(r.out, HasSubstr("cidrBlocks\t<[]string>"));
  r = kubectl()({"explain", "subnet.spec.vpc"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(r.out, HasSubstr("gateway"));
  r = kubectl()({"explain", "na.status.routingVNI"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);

  // spec.vpc and spec.vni are immutable; a VPC subnet needs a /29 or larger.
  r = kubectl()({"patch", "subnet", "a1", "-n", "ns1", "--type", "merge", "-p", R"({"spec":{"vpc":"b"}})"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("spec.vpc: Invalid value: \"b\": field is immutable"));
  r = kubectl()({"patch", "vpc", "a", "-n", "ns1", "--type", "merge", "-p", R"({"spec":{"vni":200}})"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("spec.vni: Invalid value: 200: field is immutable"));
  r = kubectl()({"apply", "-f", file("tiny.yaml", subnet_yaml("tiny", "ns1", 104, "10.4.0.0/30") + "  vpc: a\n").string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("a subnet of a VPC needs room for a gateway: a /29 or larger"));
}

TEST_P(KubectlTest, SecurityGroupsGetExplainAndSelectTheirMembers) {
  const std::string doc =
      "apiVersion: network.example.com/v1alpha1\nkind: SecurityGroup\nmetadata:\n  name: web\n  namespace: ns1\n"
      "spec:\n  ingress:\n  - protocol: tcp\n    ports: [\"80\", \"8000-8080\"]\n    from:\n    - securityGroup: lb\n"
      "    - cidr: 10.9.0.0/16\n  egress:\n  - protocol: any\n    to:\n    - cidr: 0.0.0.0/0\n---\n" +
      subnet_yaml("s", "ns1", 301, "10.30.0.0/24") + "---\n" + na_yaml("w1", "ns1", "s", "n1") +
      "  securityGroups: [web, ssh]\n---\n" + na_yaml("w2", "ns1", "s", "n1") + "  securityGroups: [ssh]\n---\n" +
      na_yaml("w3", "ns1", "s", "n1");
  auto r = kubectl()({"apply", "-f", file("sg.yaml", doc).string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(r.out, HasSubstr("securitygroup.network.example.com/web created"));

  r = kubectl()({"get", "sg", "-n", "ns1"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  Table t = parse_table(r.out);
  EXPECT_THAT(t.headers, ElementsAre("NAME", "INGRESS", "EGRESS", "AGE")) << r.out;
  ASSERT_EQ(t.rows.size(), 1u) << r.out;
  EXPECT_EQ(t.rows[0].at("INGRESS"), "1");
  EXPECT_EQ(t.rows[0].at("EGRESS"), "1");

  // The members of a group: a list field selects the attachments whose list holds it.
  r = kubectl()({"get", "na", "-n", "ns1", "--field-selector", "spec.securityGroups=ssh", "-o", "name"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(names(r), ElementsAre("networkattachment.network.example.com/w1", "networkattachment.network.example.com/w2"));
  r = kubectl()({"get", "na", "-n", "ns1", "--field-selector", "spec.securityGroups!=ssh", "-o", "name"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(names(r), ElementsAre("networkattachment.network.example.com/w3"));

  r = kubectl()({"explain", "securitygroup.spec.ingress"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(r.out, HasSubstr("protocol\t<string> -required-"));
  EXPECT_THAT(r.out, HasSubstr("from\t<[]SecurityGroupPeer> -required-"));
  r = kubectl()({"explain", "na.status.securityGroupsInForce"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(r.out, HasSubstr("resourceVersion"));

  // Field-precise errors; the groups of a live attachment may change.
  r = kubectl()({"patch", "sg", "web", "-n", "ns1", "--type", "json", "-p",
                 R"([{"op":"replace","path":"/spec/ingress/0/ports/1","value":"8080-8000"}])"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("spec.ingress[0].ports[1]: Invalid value: \"8080-8000\""));
  r = kubectl()({"patch", "sg", "web", "-n", "ns1", "--type", "json", "-p",
                 R"([{"op":"replace","path":"/spec/egress/0/protocol","value":"icmp"},{"op":"add","path":"/spec/egress/0/ports","value":["1"]}])"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("spec.egress[0].ports: Invalid value"));
  EXPECT_THAT(r.err, HasSubstr("only tcp and udp rules have ports"));
  r = kubectl()({"patch", "na", "w3", "-n", "ns1", "--type", "merge", "-p", R"({"spec":{"securityGroups":["web"]}})"});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  r = kubectl()({"patch", "na", "w3", "-n", "ns1", "--type", "merge", "-p", R"({"spec":{"securityGroups":["web","web"]}})"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("spec.securityGroups[1]: Duplicate value: \"web\""));
}

// ---- watch ----------------------------------------------------------------------------

// A `kubectl get -w --output-watch-events` process; reads its table lines as word lists.
class WatchProcess {
 public:
  explicit WatchProcess(std::vector<std::string> argv) : proc_(std::move(argv)) {}
  // The next line's words; empty (and a failure) if none comes in time.
  std::vector<std::string> next() {
    auto line = proc_.read_line(kWatchLineTimeout);
    if (!line) {
      ADD_FAILURE() << "no watch output within " << kWatchLineTimeout.count() << " s";
      return {};
    }
    seen_ += *line + "\n";
    return words(*line);
  }
  // Event type and object name of the next line: {"ADDED", "s1"}; the columns after the
  // EVENT column are given by `name_column`.
  std::pair<std::string, std::string> next_event(size_t name_column = 1) {
    auto w = next();
    if (w.size() <= name_column) return {};
    return {w[0], w[name_column]};
  }
  const std::string& seen() const { return seen_; }
  ChildProcess& process() { return proc_; }

 private:
  ChildProcess proc_;
  std::string seen_;
};

using Event = std::pair<std::string, std::string>;

TEST_P(KubectlTest, GetWatchSeesAddedModifiedDeleted) {
  apply_seed();
  auto r = kubectl()({"label", "sn", "s1", "-n", "ns1", "tier=gold"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);

  // Each watch prints the current state first (its list), then the changes after the list's
  // resourceVersion: waiting for that first line is enough to know no change is missed.
  WatchProcess all(kubectl().argv({"get", "sn", "-n", "ns1", "-w", "--output-watch-events"}));
  EXPECT_THAT(all.next(), ElementsAre("EVENT", "NAME", "VNI", "CIDR", "VALIDATED", "AGE"));
  auto first = all.next();
  ASSERT_GE(first.size(), 5u) << all.seen();
  EXPECT_THAT(std::vector<std::string>(first.begin(), first.begin() + 5),
              ElementsAre("ADDED", "s1", "1", "192.168.10.0/24", "false"));
  // One object by name.
  WatchProcess one(kubectl().argv({"get", "sn", "s1", "-n", "ns1", "-w", "--output-watch-events"}));
  one.next();  // header
  EXPECT_EQ(one.next_event(), Event("ADDED", "s1")) << one.seen();
  // A label selector, all namespaces.
  WatchProcess gold(kubectl().argv({"get", "sn", "-A", "-l", "tier=gold", "-w", "--output-watch-events"}));
  EXPECT_THAT(gold.next(), ElementsAre("EVENT", "NAMESPACE", "NAME", "VNI", "CIDR", "VALIDATED", "AGE"));
  EXPECT_EQ(gold.next_event(2), Event("ADDED", "s1")) << gold.seen();
  // `get NAME -w` prints the object it GETs, then watches from resourceVersion "0" and
  // skips that watch's first (synthetic) ADDED: a change made before its watch starts
  // would not be printed. So wait until the server has all three watches open.
  ASSERT_TRUE(eventually([&] { return open_watches("subnets") == 3; }))
      << "the server does not report 3 open subnet watches";

  auto s9 = file("s9.yaml", subnet_yaml("s9", "ns1", 9, "10.9.0.0/16"));
  for (std::vector<std::string> cmd : {
           std::vector<std::string>{"create", "-f", s9.string()},
           {"label", "sn", "s9", "-n", "ns1", "tier=gold"},
           {"label", "sn", "s1", "-n", "ns1", "tier=silver", "--overwrite"},
           {"label", "sn", "s9", "-n", "ns1", "tier=silver", "--overwrite"},
           {"delete", "sn", "s9", "-n", "ns1"},
           {"delete", "sn", "s1", "-n", "ns1"},
           {"create", "-f", file("s10.yaml", subnet_yaml("s10", "ns1", 10, "10.10.0.0/16",
                                                         "  labels:\n    tier: gold\n")).string()}}) {
    r = kubectl()(cmd);
    ASSERT_EQ(r.exit_code, 0) << describe(r);
  }

  // Every change, in order, none missed, none repeated.
  EXPECT_EQ(all.next_event(), Event("ADDED", "s9")) << all.seen();
  EXPECT_EQ(all.next_event(), Event("MODIFIED", "s9")) << all.seen();
  EXPECT_EQ(all.next_event(), Event("MODIFIED", "s1")) << all.seen();
  EXPECT_EQ(all.next_event(), Event("MODIFIED", "s9")) << all.seen();
  EXPECT_EQ(all.next_event(), Event("DELETED", "s9")) << all.seen();
  EXPECT_EQ(all.next_event(), Event("DELETED", "s1")) << all.seen();
  EXPECT_EQ(all.next_event(), Event("ADDED", "s10")) << all.seen();

  EXPECT_EQ(one.next_event(), Event("MODIFIED", "s1")) << one.seen();
  EXPECT_EQ(one.next_event(), Event("DELETED", "s1")) << one.seen();

  // Objects enter the selection (ADDED) and leave it (DELETED) as their labels change;
  // changes outside it are not sent.
  EXPECT_EQ(gold.next_event(2), Event("ADDED", "s9")) << gold.seen();
  EXPECT_EQ(gold.next_event(2), Event("DELETED", "s1")) << gold.seen();
  EXPECT_EQ(gold.next_event(2), Event("DELETED", "s9")) << gold.seen();
  EXPECT_EQ(gold.next_event(2), Event("ADDED", "s10")) << gold.seen();
}

TEST_P(KubectlTest, GetWatchNetworkAttachmentsByFieldSelector) {
  apply_seed();
  auto r = kubectl()({"create", "-f", file("na0.yaml", na_yaml("na0", "ns1", "s1", "node2")).string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  WatchProcess node2(kubectl().argv({"get", "na", "-A", "--field-selector", "spec.node=node2",
                                     "-w", "--output-watch-events"}));
  node2.next();  // header
  EXPECT_EQ(node2.next_event(2), Event("ADDED", "na0")) << node2.seen();

  auto objs = file("nas.yaml", na_yaml("na2", "ns1", "s1", "node2") + "---\n" +
                                   na_yaml("na3", "ns1", "s1", "node3") + "---\n" +
                                   na_yaml("na4", "ns2", "s1", "node2"));
  r = kubectl()({"create", "-f", objs.string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  r = kubectl()({"label", "na", "--all", "-A", "x=y"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  r = kubectl()({"delete", "-f", objs.string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(node2.next_event(2), Event("ADDED", "na2")) << node2.seen();
  EXPECT_EQ(node2.next_event(2), Event("ADDED", "na4")) << node2.seen();
  // `label --all -A` goes through the list in key order: ns1/na0, ns1/na1, ns1/na2, ...
  EXPECT_EQ(node2.next_event(2), Event("MODIFIED", "na0")) << node2.seen();
  EXPECT_EQ(node2.next_event(2), Event("MODIFIED", "na2")) << node2.seen();
  EXPECT_EQ(node2.next_event(2), Event("MODIFIED", "na4")) << node2.seen();
  EXPECT_EQ(node2.next_event(2), Event("DELETED", "na2")) << node2.seen();
  EXPECT_EQ(node2.next_event(2), Event("DELETED", "na4")) << node2.seen();
}

// ---- delete ---------------------------------------------------------------------------

TEST_P(KubectlTest, DeleteReturnsOnceTheObjectIsGone) {
  apply_seed();
  // A finalizer holds the object: delete marks it and waits.
  auto r = kubectl()({"create", "-f",
                      file("fin.yaml", subnet_yaml("fin", "ns1", 10, "10.10.0.0/16",
                                                   "  finalizers: [example.com/hold]\n"))
                          .string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  ChildProcess del(kubectl().argv({"delete", "sn", "fin", "-n", "ns1", "--timeout=100s"}));
  std::string deletion_timestamp;
  ASSERT_TRUE(eventually([&] {
    deletion_timestamp = str_at(get_json("sn", "fin"), "metadata.deletionTimestamp");
    return !deletion_timestamp.empty();
  })) << "delete did not mark the object";
  EXPECT_TRUE(std::regex_match(deletion_timestamp,
                               std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")));
  EXPECT_TRUE(del.running()) << "kubectl delete returned while the object still exists";
  // Still listed, still readable.
  r = kubectl()({"get", "sn", "-n", "ns1", "-o", "name"});
  EXPECT_THAT(names(r), ElementsAre("subnet.network.example.com/fin", "subnet.network.example.com/s1"));

  r = kubectl()({"patch", "sn", "fin", "-n", "ns1", "--type=json", "-p",
                 R"([{"op":"remove","path":"/metadata/finalizers"}])"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  auto status = del.wait(60s);
  ASSERT_TRUE(status.has_value()) << "kubectl delete did not return after the finalizer went";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "wait status " << *status;
  EXPECT_EQ(del.read_line(5s).value_or(""), R"(subnet.network.example.com "fin" deleted)");
  r = kubectl()({"get", "sn", "-n", "ns1", "-o", "name"});
  EXPECT_THAT(names(r), ElementsAre("subnet.network.example.com/s1"));

  // Without finalizers: gone when delete returns.
  r = kubectl()({"delete", "-f", testdata("seed.yaml").string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out,
            "subnet.network.example.com \"s1\" deleted\n"
            "networkattachment.network.example.com \"na1\" deleted\n");
  r = kubectl()({"get", "sn,na", "-n", "ns1", "-o", "name"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "");

  r = kubectl()({"delete", "sn", "s1", "-n", "ns1"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr(R"(Error from server (NotFound): subnets.network.example.com "s1" not found)"));
  r = kubectl()({"delete", "sn", "s1", "-n", "ns1", "--ignore-not-found"});
  EXPECT_EQ(r.exit_code, 0) << describe(r);

  // By label selector.
  ASSERT_EQ(kubectl()({"apply", "-f", testdata("seed.yaml").string()}).exit_code, 0);
  ASSERT_EQ(kubectl()({"label", "sn,na", "--all", "-n", "ns1", "doomed=yes"}).exit_code, 0);
  r = kubectl()({"delete", "sn,na", "-n", "ns1", "-l", "doomed=yes"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(r.out, HasSubstr("subnet.network.example.com \"s1\" deleted"));
  EXPECT_THAT(r.out, HasSubstr("networkattachment.network.example.com \"na1\" deleted"));
  EXPECT_EQ(kubectl()({"get", "kos", "-A", "-o", "name"}).out, "");
}

TEST_P(KubectlTest, GetMissingObjectSaysNotFound) {
  // The kubeconfig's namespace is "default", for which kubectl does not ask about the namespace.
  auto r = kubectl()({"get", "sn", "nope"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr(R"(Error from server (NotFound): subnets.network.example.com "nope" not found)"));

  // In any other namespace kubectl 1.32 first GETs /api/v1/namespaces/NS to tell a missing
  // namespace from a missing object; Kubernetes answers with the Namespace (KOS namespaces
  // exist implicitly), so kubectl reports the object as not found.
  {
              auto res = kubectl()({"get", "sn", "nope", "-n", "ns1"});
              EXPECT_EQ(res.exit_code, 1) << describe(res);
              EXPECT_THAT(res.err, HasSubstr(R"(Error from server (NotFound): subnets.network.example.com "nope" not found)"));
              EXPECT_THAT(res.err, Not(HasSubstr("namespaces")));
            }
}

TEST_P(KubectlTest, SpeaksHttp2WithTheServer) {
  // Go's HTTP/2 client logs its frames with this GODEBUG setting: kubectl negotiated h2
  // (ALPN) and read the server's answers as HTTP/2 frames.
  apply_seed();
  auto r = kubectl().with_env({{"GODEBUG", "http2debug=1"}}, {"get", "sn", "-n", "ns1", "-o", "name"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "subnet.network.example.com/s1\n");
  EXPECT_THAT(r.err, HasSubstr("http2: Transport creating client conn"));
  EXPECT_THAT(r.err, HasSubstr("http2: Transport received SETTINGS len=12, settings: MAX_CONCURRENT_STREAMS=1000"));
  EXPECT_THAT(r.err, HasSubstr("http2: Transport received DATA flags=END_STREAM"));
}

// ---- error paths ----------------------------------------------------------------------

TEST_P(KubectlTest, DuplicateCreateIsAlreadyExists) {
  const auto seed = testdata("seed.yaml").string();
  auto r = kubectl()({"create", "-f", seed});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out,
            "subnet.network.example.com/s1 created\n"
            "networkattachment.network.example.com/na1 created\n");
  const std::string uid = str_at(get_json("sn", "s1"), "metadata.uid");

  r = kubectl()({"create", "-f", seed});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_EQ(r.out, "");
  EXPECT_THAT(r.err, HasSubstr("Error from server (AlreadyExists): error when creating \"" + seed +
                               "\": subnets.network.example.com \"s1\" already exists"));
  EXPECT_THAT(r.err, HasSubstr("Error from server (AlreadyExists): error when creating \"" + seed +
                               "\": networkattachments.network.example.com \"na1\" already exists"));
  EXPECT_EQ(str_at(get_json("sn", "s1"), "metadata.uid"), uid) << "the first object stays";

  // Also through stdin, one object.
  RunOptions in;
  in.stdin_data = na_yaml("na1", "ns1", "s1", "node7");
  r = kubectl()({"create", "-f", "-"}, in);
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr("networkattachments.network.example.com \"na1\" already exists"));
  EXPECT_EQ(str_at(get_json("na", "na1"), "spec.node"), "node1");
}

TEST_P(KubectlTest, StaleReplaceIsConflict) {
  apply_seed();
  auto r = kubectl()({"get", "sn", "s1", "-n", "ns1", "-o", "yaml"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  auto old_copy = file("old.yaml", r.out);
  auto fresh = file("fresh.yaml", r.out);
  r = kubectl()({"label", "sn", "s1", "-n", "ns1", "env=prod"});  // a newer version
  ASSERT_EQ(r.exit_code, 0) << describe(r);

  r = kubectl()({"replace", "-f", old_copy.string()});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr("Error from server (Conflict): error when replacing \"" +
                               old_copy.string() +
                               "\": Operation cannot be fulfilled on subnets.network.example.com "
                               "\"s1\": the object has been modified; please apply your changes "
                               "to the latest version and try again"));
  EXPECT_EQ(str_at(get_json("sn", "s1"), "metadata.labels.env"), "prod") << "the stale write lost";

  // With the current version it goes through.
  r = kubectl()({"get", "sn", "s1", "-n", "ns1", "-o", "yaml"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  std::string current = std::regex_replace(r.out, std::regex("env: prod"), "env: staging");
  r = kubectl()({"replace", "-f", write_file(fresh, current).string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "subnet.network.example.com/s1 replaced\n");
  EXPECT_EQ(str_at(get_json("sn", "s1"), "metadata.labels.env"), "staging");

}

TEST_P(KubectlTest, InvalidVniIsRejected) {
  for (int64_t vni : {0LL, 2097152LL, 4294967295LL}) {
    SCOPED_TRACE("vni " + std::to_string(vni));
    auto f = file("bad.yaml", subnet_yaml("bad", "ns1", vni, "10.1.0.0/16"));
    auto r = kubectl()({"create", "-f", f.string()});
    EXPECT_EQ(r.exit_code, 1) << describe(r);
    EXPECT_THAT(r.err, HasSubstr("spec.vni: Invalid value: " + std::to_string(vni) +
                                 ": must be in the range 1..2097151"));
    {
      EXPECT_THAT(r.err, HasSubstr("The Subnet \"bad\" is invalid: spec.vni: Invalid value: " +
                                   std::to_string(vni) + ": must be in the range 1..2097151"));
    }
  }
  EXPECT_EQ(kubectl()({"get", "sn", "-A", "-o", "name"}).out, "");

  // Not a number.
  RunOptions in;
  in.stdin_data = std::regex_replace(subnet_yaml("str", "ns1", 1, "10.2.0.0/16"),
                                     std::regex("vni: 1"), "vni: one");
  auto r = kubectl()({"create", "-f", "-"}, in);
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr("spec.vni"));

  // The bounds themselves are valid.
  for (auto [name, vni, cidr] : {std::tuple{"lo", 1, "10.3.0.0/16"}, {"hi", 2097151, "10.4.0.0/16"}}) {
    r = kubectl()({"create", "-f", file("ok.yaml", subnet_yaml(name, "ns1", vni, cidr)).string()});
    EXPECT_EQ(r.exit_code, 0) << describe(r);
  }

  // Outside the private ranges.
  r = kubectl()({"create", "-f", file("pub.yaml", subnet_yaml("pub", "ns1", 5, "8.8.8.0/24")).string()});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr("spec.ipv4: Invalid value: \"8.8.8.0/24\": must be inside "
                               "10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"));
}

TEST_P(KubectlTest, OverlappingSubnetIsRejected) {
  apply_seed();  // s1: VNI 1, 192.168.10.0/24, ns1
  auto r = kubectl()({"create", "-f",
                      file("s2.yaml", subnet_yaml("s2", "ns1", 1, "192.168.10.128/25")).string()});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr("spec.ipv4: Invalid value: \"192.168.10.128/25\": CIDR overlaps "
                               "with Subnet ns1/s1 (192.168.10.0/24) on VNI 1"));
  {
    EXPECT_THAT(r.err, HasSubstr("The Subnet \"s2\" is invalid: spec.ipv4"));
  }
  // A supernet overlaps too.
  r = kubectl()({"create", "-f", file("s3.yaml", subnet_yaml("s3", "ns1", 1, "192.168.0.0/16")).string()});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr("CIDR overlaps with Subnet ns1/s1 (192.168.10.0/24) on VNI 1"));

  // The same VNI in another namespace.
  r = kubectl()({"create", "-f", file("s4.yaml", subnet_yaml("s4", "ns2", 1, "192.168.20.0/24")).string()});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr("VNI 1 is already used by Subnet ns1/s1 in another namespace"));
  {
    EXPECT_THAT(r.err, HasSubstr("spec.vni: Invalid value: 1: VNI 1 is already used"));
  }
  EXPECT_THAT(names(kubectl()({"get", "sn", "-A", "-o", "name"})),
              ElementsAre("subnet.network.example.com/s1"));

  // Adjacent ranges on the VNI, and the same range on another VNI, are fine.
  r = kubectl()({"create", "-f", file("ok1.yaml", subnet_yaml("s5", "ns1", 1, "192.168.11.0/24")).string()});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  r = kubectl()({"create", "-f", file("ok2.yaml", subnet_yaml("s6", "ns2", 2, "192.168.10.0/24")).string()});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
}

TEST_P(KubectlTest, ChangingAnImmutableFieldIsRejected) {
  apply_seed();
  auto before_sn = get_json("sn", "s1");
  auto before_na = get_json("na", "na1");

  // patch
  auto r = kubectl()({"patch", "sn", "s1", "-n", "ns1", "--type=json", "-p",
                      R"([{"op":"replace","path":"/spec/vni","value":7}])"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr("spec.vni: Invalid value: 7: field is immutable"));
  {
    EXPECT_THAT(r.err, HasSubstr("The Subnet \"s1\" is invalid: spec.vni: Invalid value: 7: field is immutable"));
  }

  // apply
  auto changed = file("changed.yaml", subnet_yaml("s1", "ns1", 1, "192.168.11.0/24"));
  r = kubectl()({"apply", "-f", changed.string()});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr("spec.ipv4: Invalid value: \"192.168.11.0/24\": field is immutable"));

  // replace
  r = kubectl()({"get", "na", "na1", "-n", "ns1", "-o", "yaml"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  auto moved = file("moved.yaml", std::regex_replace(r.out, std::regex("node: node1"), "node: node2"));
  r = kubectl()({"replace", "-f", moved.string()});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr("spec.node: Invalid value: \"node2\": field is immutable"));

  // edit: kubectl reopens the editor with the error; the editor changes nothing more, so
  // kubectl gives up.
  auto editor = sed_editor("move-subnet.sh", "s|^  subnet: s1$|  subnet: s2|");
  r = kubectl().with_env({{"KUBE_EDITOR", editor}}, {"edit", "na", "na1", "-n", "ns1"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr("error: networkattachments.network.example.com \"na1\" is invalid"));
  EXPECT_THAT(r.err, HasSubstr("Edit cancelled, no valid changes were saved."));

  // A merge patch changing two immutable fields: both causes.
  r = kubectl()({"patch", "na", "na1", "-n", "ns1", "--type=merge", "-p",
                 R"({"spec":{"node":"n9","postCreateExec":["/bin/true"]}})"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr("spec.node: Invalid value: \"n9\": field is immutable"));
  EXPECT_THAT(r.err, HasSubstr("spec.postCreateExec"));

  // Nothing changed.
  auto after_sn = get_json("sn", "s1");
  auto after_na = get_json("na", "na1");
  EXPECT_EQ(str_at(after_sn, "metadata.resourceVersion"), str_at(before_sn, "metadata.resourceVersion"));
  EXPECT_EQ(str_at(after_na, "metadata.resourceVersion"), str_at(before_na, "metadata.resourceVersion"));
  EXPECT_EQ(str_at(after_na, "spec.node"), "node1");
  EXPECT_EQ(str_at(after_na, "spec.subnet"), "s1");
  EXPECT_EQ(str_at(after_sn, "spec.ipv4"), "192.168.10.0/24");
}

INSTANTIATE_TEST_SUITE_P(Backends, KubectlTest, ::testing::Values(Backend::kSqlite, Backend::kEtcd),
                         [](const auto& info) { return backend_name(info.param); });

}  // namespace
}  // namespace kos::testing
