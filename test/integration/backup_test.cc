// `kos store backup` of a running server's embedded store and `kos store restore` into a
// stopped data dir: a server started on the restored store serves the same objects at the
// same resourceVersions, and nothing written after the backup. Checked with kubectl.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "test/integration/harness.h"

namespace kos::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kKubectl[] = "/usr/bin/kubectl";

// name -> resourceVersion of every Subnet and NetworkAttachment, in all namespaces.
std::map<std::string, std::string> objects(const Kubectl& kubectl) {
  std::map<std::string, std::string> out;
  auto r = kubectl({"get", "subnets,networkattachments", "-A", "-o", "json"});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  auto v = parse_json(r.out);
  if (const auto* items = at(v, "items"); items && items->is_array())
    for (const auto& it : items->as_array())
      out[str_at(it, "kind") + " " + str_at(it, "metadata.namespace") + "/" + str_at(it, "metadata.name")] =
          str_at(it, "metadata.resourceVersion");
  return out;
}

TEST(Backup, ARestoredStoreServesTheSameObjectsAtTheSameResourceVersions) {
  ApiServerProcess live(Backend::kSqlite);
  ASSERT_EQ(live.start(), "");
  Kubectl kubectl(kKubectl, live.kubeconfig(), live.dir() / "home");
  ASSERT_EQ(kubectl({"apply", "-f", testdata("seed.yaml").string()}).exit_code, 0);
  for (int i = 0; i < 20; ++i) {
    auto r = kubectl({"create", "-f", write_file(live.dir() / ("s" + std::to_string(i) + ".yaml"),
                                                 "apiVersion: network.example.com/v1alpha1\nkind: Subnet\n"
                                                 "metadata: {namespace: bk, name: s" + std::to_string(i) + "}\n"
                                                 "spec: {vni: " + std::to_string(100 + i) + ", ipv4: 10." +
                                                     std::to_string(i) + ".0.0/16}\n")
                                          .string()});
    ASSERT_EQ(r.exit_code, 0) << describe(r);
  }
  const auto before = objects(kubectl);
  ASSERT_GE(before.size(), 21u);

  // While the server runs.
  const auto file = live.dir() / "backup.db";
  const std::string store = live.store_url();
  auto b = run({KOS_BINARY, "store", "backup", file.string(), "--store", store});
  ASSERT_EQ(b.exit_code, 0) << describe(b);
  EXPECT_THAT(b.out, HasSubstr("backed up "));
  auto again = run({KOS_BINARY, "store", "backup", file.string(), "--store", store});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_THAT(again.err, HasSubstr("exists; give a new file"));
  // Written after the backup: not in it.
  ASSERT_EQ(kubectl({"delete", "subnet", "s0", "-n", "bk"}).exit_code, 0);
  ASSERT_EQ(kubectl({"label", "subnet", "s1", "-n", "bk", "after=backup"}).exit_code, 0);
  // Not into the store of a running server.
  auto busy = run({KOS_BINARY, "store", "restore", file.string(), "--store", store, "--force"});
  EXPECT_EQ(busy.exit_code, 1);
  EXPECT_THAT(busy.err, HasSubstr("is in use"));

  // Into a stopped data dir, then a server on it.
  ApiServerProcess restored(Backend::kSqlite);
  auto r = run({KOS_BINARY, "store", "restore", file.string(), "--store", restored.store_url()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  auto twice = run({KOS_BINARY, "store", "restore", file.string(), "--store", restored.store_url()});
  EXPECT_EQ(twice.exit_code, 1);
  EXPECT_THAT(twice.err, HasSubstr("--force replaces it"));
  ASSERT_EQ(restored.start(), "");
  Kubectl kubectl2(kKubectl, restored.kubeconfig(), restored.dir() / "home");
  EXPECT_EQ(objects(kubectl2), before);
  // It goes on from there: a write gets a resourceVersion above every restored one.
  ASSERT_EQ(kubectl2({"label", "subnet", "s2", "-n", "bk", "restored=yes"}).exit_code, 0);
  auto w = kubectl2({"get", "subnet", "s2", "-n", "bk", "-o", "jsonpath={.metadata.resourceVersion}"});
  ASSERT_EQ(w.exit_code, 0) << describe(w);
  for (const auto& [name, rv] : before) EXPECT_GT(std::stoll(w.out), std::stoll(rv)) << name;
}

TEST(Backup, EtcdStoresPointToEtcdctl) {
  auto r = run({KOS_BINARY, "store", "backup", "/tmp/x.db", "--store", "etcd:http://127.0.0.1:1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("etcdctl --endpoints http://127.0.0.1:1 snapshot save FILE"));
}

TEST(Backup, NotAStoreIsRefused) {
  TempDir dir("kos-backup");
  auto junk = write_file(dir.path() / "junk.db", "not sqlite at all, just text\n");
  auto r = run({KOS_BINARY, "store", "restore", junk.string(), "--data-dir", (dir.path() / "d").string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("is not an SQLite database"));
}

}  // namespace
}  // namespace kos::testing
