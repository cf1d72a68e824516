// Runs python_client_test.py (the official Kubernetes Python client, Debian's
// python3-kubernetes, with /usr/bin/python3) against a real `kos apiserver`, on both storage
// backends.
//
// For the 410 checks the server's watch window must start after some revision: the driver
// writes an object, (on etcd) compacts etcd at that revision with etcdctl, and restarts the
// server, whose watch cache then starts at the current revision. A watch from
// resourceVersion 1 is then older than the window: 410 Expired, as Kubernetes answers for a
// compacted revision. A second run, on a server with a 3-event window, checks the window
// moving past a resourceVersion.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <iostream>

#include "test/support/skip.h"
#include "test/integration/harness.h"

namespace kos::testing {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

constexpr char kPython[] = "/usr/bin/python3";

class PythonClientTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    if (access(kPython, X_OK) != 0) KOS_SKIP_UNLESS_CI() << kPython << " is missing";
    auto probe = run({kPython, "-c", "import kubernetes"});
    if (probe.exit_code != 0)
      KOS_SKIP_UNLESS_CI() << "the kubernetes module is not importable from " << kPython
                   << " (Debian package python3-kubernetes, installed by "
                      "scripts/install-deps.sh):\n"
                   << probe.err;
  }

  // Runs the Python tests against `server`; `args` are added to the command line.
  void run_python(ApiServerProcess& server, std::vector<std::string> args) {
    std::vector<std::string> argv = {kPython, KOS_PYTHON_TEST, "--kubeconfig",
                                     server.kubeconfig().string()};
    argv.insert(argv.end(), args.begin(), args.end());
    RunOptions opts;
    opts.timeout = 300s;
    opts.env = {{"PYTHONDONTWRITEBYTECODE", "1"}, {"HOME", (server.dir() / "home").string()}};
    auto py = run(argv, opts);
    // unittest reports on stderr: show it, with the known bugs (expected failures).
    std::cout << py.err << std::flush;
    EXPECT_EQ(py.exit_code, 0) << describe(py);
    EXPECT_THAT(py.err, HasSubstr("\nOK"));
  }
};

TEST_P(PythonClientTest, CustomObjectsApi) {
  ApiServerProcess server(GetParam());
  auto err = server.start();
  ASSERT_TRUE(err.empty()) << err;
  Kubectl kubectl("/usr/bin/kubectl", server.kubeconfig(), server.dir() / "home");

  // A write before the server (re)starts, so the watch window starts after revision 1.
  RunOptions in;
  in.stdin_data =
      "apiVersion: network.example.com/v1alpha1\nkind: Subnet\nmetadata:\n  name: seed\n"
      "  namespace: py-seed\nspec:\n  vni: 99\n  ipv4: 10.99.0.0/16\n";
  auto r = kubectl({"create", "-f", "-"}, in);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  r = kubectl({"get", "sn", "seed", "-n", "py-seed", "-o", "jsonpath={.metadata.resourceVersion}"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const std::string seed_rv = r.out;
  ASSERT_GT(std::stoll(seed_rv), 1) << "the seed write must be after revision 1";
  std::vector<std::string> args = {"--expired-rv", "1"};
  if (auto* etcd = server.etcd()) {
    auto c = run({"etcdctl", "--endpoints=" + etcd->endpoint(), "compact", seed_rv},
                 RunOptions{{{"ETCDCTL_API", "3"}}, "", 30s});
    ASSERT_EQ(c.exit_code, 0) << describe(c);
    EXPECT_THAT(c.out, HasSubstr("compacted revision " + seed_rv));
    args.insert(args.end(), {"--etcd-endpoint", etcd->endpoint()});
  }
  err = server.restart();
  ASSERT_TRUE(err.empty()) << err;
  run_python(server, args);
}

// The watch window (kos apiserver --watch-cache-history) moving past a resourceVersion.
TEST_P(PythonClientTest, WatchOlderThanTheWindowIsGone) {
  ApiServerProcess server(GetParam(), {"--watch-cache-history", "3"});
  auto err = server.start();
  ASSERT_TRUE(err.empty()) << err;
  run_python(server, {"--expired-rv", "1", "--watch-window", "3", "-k", "WindowTest"});
}

INSTANTIATE_TEST_SUITE_P(Backends, PythonClientTest,
                         ::testing::Values(Backend::kSqlite, Backend::kEtcd),
                         [](const auto& info) { return backend_name(info.param); });

}  // namespace
}  // namespace kos::testing
