// The API server compacts its store's history: `--compaction-interval`, checked on a real
// etcd with etcdctl (independently of KOS's own store code), and its command line.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "test/integration/harness.h"

namespace kos::testing {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

constexpr char kKubectl[] = "/usr/bin/kubectl";

RunResult etcdctl(const std::string& endpoint, std::vector<std::string> args) {
  std::vector<std::string> argv = {"etcdctl", "--endpoints=" + endpoint};
  argv.insert(argv.end(), args.begin(), args.end());
  RunOptions o;
  o.env = {{"ETCDCTL_API", "3"}};
  o.timeout = 20s;
  return run(argv, o);
}

// etcd's current revision (from `etcdctl endpoint status`), or -1.
int64_t etcd_revision(const std::string& endpoint) {
  auto r = etcdctl(endpoint, {"endpoint", "status", "-w", "json"});
  if (r.exit_code != 0) return -1;
  auto v = parse_json(r.out);
  if (!v.is_array() || v.as_array().empty()) return -1;
  return int_at(v.as_array()[0], "Status.header.revision");
}

TEST(Compaction, EtcdHistoryBelowTheCompactionPointIsGone) {
  ApiServerProcess server(Backend::kEtcd, {"--compaction-interval", "5s"});
  ASSERT_EQ(server.start(), "");
  Kubectl kubectl(kKubectl, server.kubeconfig(), server.dir() / "home");
  const std::string ep = server.etcd()->endpoint();

  auto r = kubectl({"apply", "-f", testdata("seed.yaml").string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  for (int i = 0; i < 10; ++i) {
    r = kubectl({"label", "subnet", "s1", "-n", "ns1", "--overwrite", "round=" + std::to_string(i)});
    ASSERT_EQ(r.exit_code, 0) << describe(r);
  }
  const int64_t written = etcd_revision(ep);
  ASSERT_GT(written, 10);
  // Before any compaction, etcd still has the state at an early revision.
  r = etcdctl(ep, {"get", "--prefix", "/registry/", "--rev=" + std::to_string(written - 5)});
  ASSERT_EQ(r.exit_code, 0) << describe(r);

  // Within three intervals (one to record the revision after the writes, one to compact to
  // it, and slack), a read below `written` is refused as compacted.
  RunResult last;
  bool compacted = eventually(
      [&] {
        last = etcdctl(ep, {"get", "--prefix", "/registry/", "--rev=" + std::to_string(written - 1)});
        return last.exit_code != 0 && last.err.find("compacted") != std::string::npos;
      },
      20s);
  EXPECT_TRUE(compacted) << "etcd still serves revision " << written - 1 << ": "
                         << describe(last);
  // The latest state is untouched, and the API still serves it.
  r = kubectl({"get", "subnet", "s1", "-n", "ns1", "-o", "jsonpath={.metadata.labels.round}"});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "9");
}

TEST(Compaction, BadIntervalIsRefusedWithTheFlagNamed) {
  for (const char* bad : {"5x", "-1s", "soon"}) {
    auto r = run({KOS_BINARY, "apiserver", "--listen", "127.0.0.1:0", "--data-dir", "/nonexistent/x",
                  "--compaction-interval", bad});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << describe(r);
    EXPECT_THAT(r.err, HasSubstr("--compaction-interval")) << bad;
  }
}

TEST(Compaction, OldMinutesFlagStillWorks) {
  ApiServerProcess server(Backend::kSqlite, {"--compaction-interval-minutes", "1"});
  ASSERT_EQ(server.start(), "");
  Kubectl kubectl(kKubectl, server.kubeconfig(), server.dir() / "home");
  auto r = kubectl({"apply", "-f", testdata("seed.yaml").string()});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
}

}  // namespace
}  // namespace kos::testing
