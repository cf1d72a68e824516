// kubectl v1.20 (Debian's kubernetes-client, unpacked by scripts/install-deps.sh into
// /opt/kos-test/kubectl-1.20) against a real `kos apiserver`, on both storage backends: the
// old client finds the API through discovery and /openapi/v2 (protobuf) and must create,
// apply, get and delete. Skipped when that kubectl is absent.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <regex>

#include "test/support/skip.h"
#include "test/integration/harness.h"

namespace kos::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kKubectl120[] = "/opt/kos-test/kubectl-1.20/usr/bin/kubectl";

class Kubectl120Test : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    if (access(kKubectl120, X_OK) != 0)
      KOS_SKIP_UNLESS_CI() << kKubectl120 << " is missing: run scripts/install-deps.sh, which unpacks "
                   << "Debian's kubernetes-client (kubectl 1.20) there";
    server_ = std::make_unique<ApiServerProcess>(GetParam());
    auto err = server_->start();
    ASSERT_TRUE(err.empty()) << err;
    kubectl_ = std::make_unique<Kubectl>(kKubectl120, server_->kubeconfig(), server_->dir() / "home");
  }

  const Kubectl& kubectl() const { return *kubectl_; }
  fs::path file(const std::string& name, const std::string& content) const {
    return write_file(server_->dir() / name, content);
  }

  std::unique_ptr<ApiServerProcess> server_;
  std::unique_ptr<Kubectl> kubectl_;
};

TEST_P(Kubectl120Test, Version) {
  auto r = kubectl()({"version", "--short"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(r.out, HasSubstr("Client Version: v1.20."));
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(\nServer Version: v1\.\d+\.\d+)"))) << r.out;
}

TEST_P(Kubectl120Test, CreateApplyGetDelete) {
  const auto seed = testdata("seed.yaml").string();
  auto r = kubectl()({"create", "-f", seed});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out,
            "subnet.network.example.com/s1 created\n"
            "networkattachment.network.example.com/na1 created\n");

  r = kubectl()({"create", "-f", seed});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr("Error from server (AlreadyExists): error when creating \"" + seed +
                               "\": subnets.network.example.com \"s1\" already exists"));

  // get: table, -A, -l, yaml, json.
  r = kubectl()({"get", "sn", "-n", "ns1"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  Table t = parse_table(r.out);
  EXPECT_THAT(t.headers, ElementsAre("NAME", "VNI", "CIDR", "VALIDATED", "AGE"));
  ASSERT_EQ(t.rows.size(), 1u) << r.out;
  EXPECT_EQ(t.rows[0].at("NAME"), "s1");
  EXPECT_EQ(t.rows[0].at("CIDR"), "192.168.10.0/24");
  r = kubectl()({"get", "na", "-A"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  t = parse_table(r.out);
  ASSERT_EQ(t.rows.size(), 1u) << r.out;
  EXPECT_EQ(t.rows[0].at("NAMESPACE"), "ns1");
  EXPECT_EQ(t.rows[0].at("NAME"), "na1");
  EXPECT_EQ(t.rows[0].at("NODE"), "node1");
  r = kubectl()({"get", "networkattachment", "na1", "-n", "ns1", "-o", "yaml"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(r.out, HasSubstr("kind: NetworkAttachment\n"));
  EXPECT_THAT(r.out, HasSubstr("\nspec:\n  node: node1\n  subnet: s1\n"));
  r = kubectl()({"get", "subnets", "s1", "-n", "ns1", "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  auto sn = parse_json(r.out);
  EXPECT_EQ(str_at(sn, "metadata.name"), "s1");
  ASSERT_NE(at(sn, "spec.vni"), nullptr);
  EXPECT_EQ(int_at(sn, "spec.vni"), 1);

  // apply: on an object made by create (kubectl adds its annotation, with a warning), then
  // a change, then nothing to do.
  const std::string v2 =
      "apiVersion: network.example.com/v1alpha1\nkind: Subnet\nmetadata:\n  name: s1\n"
      "  namespace: ns1\n  labels:\n    team: blue\nspec:\n  vni: 1\n  ipv4: 192.168.10.0/24\n";
  auto v2_path = file("s1-v2.yaml", v2).string();
  r = kubectl()({"apply", "-f", v2_path});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "subnet.network.example.com/s1 configured\n");
  r = kubectl()({"get", "sn", "-A", "-l", "team=blue", "-o", "name"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "subnet.network.example.com/s1\n");
  r = kubectl()({"apply", "-f", v2_path});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "subnet.network.example.com/s1 unchanged\n");

  // apply of a new object creates it; of an immutable change fails.
  auto s2 = file("s2.yaml",
                 "apiVersion: network.example.com/v1alpha1\nkind: Subnet\nmetadata:\n  name: s2\n"
                 "  namespace: ns1\nspec:\n  vni: 2\n  ipv4: 10.2.0.0/16\n");
  r = kubectl()({"apply", "-f", s2.string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "subnet.network.example.com/s2 created\n");
  r = kubectl()({"apply", "-f", file("s2b.yaml", std::regex_replace(
                                                     "apiVersion: network.example.com/v1alpha1\n"
                                                     "kind: Subnet\nmetadata:\n  name: s2\n"
                                                     "  namespace: ns1\nspec:\n  vni: 2\n"
                                                     "  ipv4: 10.2.0.0/16\n",
                                                     std::regex("vni: 2"), "vni: 3"))
                                        .string()});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr("spec.vni: Invalid value: 3: field is immutable"));

  // An invalid object.
  r = kubectl()({"create", "-f", file("bad.yaml",
                                      "apiVersion: network.example.com/v1alpha1\nkind: Subnet\n"
                                      "metadata:\n  name: bad\n  namespace: ns1\nspec:\n"
                                      "  vni: 0\n  ipv4: 10.9.0.0/16\n")
                                     .string()});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr("spec.vni: Invalid value: 0: must be in the range 1..2097151"));

  // explain works from /openapi/v2.
  r = kubectl()({"explain", "subnet.spec.vni"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(FIELD:\s+vni <integer>)"))) << r.out;

  // delete waits until the objects are gone.
  r = kubectl()({"delete", "-f", seed});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out,
            "subnet.network.example.com \"s1\" deleted\n"
            "networkattachment.network.example.com \"na1\" deleted\n");
  r = kubectl()({"delete", "sn", "s2", "-n", "ns1"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  r = kubectl()({"get", "sn,na", "-A", "-o", "name"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "");
  r = kubectl()({"delete", "sn", "s1", "-n", "ns1"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_THAT(r.err, HasSubstr(R"(Error from server (NotFound): subnets.network.example.com "s1" not found)"));
}

INSTANTIATE_TEST_SUITE_P(Backends, Kubectl120Test,
                         ::testing::Values(Backend::kSqlite, Backend::kEtcd),
                         [](const auto& info) { return backend_name(info.param); });

}  // namespace
}  // namespace kos::testing
