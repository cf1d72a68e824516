// The long-running components run under SCHED_BATCH (`kos --scheduling`, default batch):
// a thread that wakes does not preempt the one running on its CPU, which takes about a
// third of the context switches out of the system under load (bench/scale --cpu). Every
// thread of a running `kos apiserver` has the policy; `--scheduling normal` keeps Linux's
// default, and so does KOS_SCHEDULING=normal in the environment (which is how kos up
// passes the choice to its components); an unknown policy is refused.
#include <sched.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "test/integration/harness.h"

namespace kos::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// The scheduling policy of each thread of `pid` (field 41 of /proc/PID/task/TID/stat),
// by thread id.
std::map<std::string, int> thread_policies(pid_t pid) {
  std::map<std::string, int> out;
  std::error_code ec;
  for (const auto& t : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream in(t.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto paren = stat.rfind(')');
    if (paren == std::string::npos) continue;  // the thread ended meanwhile
    std::istringstream fields(stat.substr(paren + 2));
    std::vector<std::string> f;
    for (std::string x; fields >> x;) f.push_back(x);
    if (f.size() > 38) out[t.path().filename()] = std::stoi(f[38]);  // fields from 3 on
  }
  return out;
}

// `kos [global_flags] apiserver` on the embedded store, serving (its kubeconfig written).
std::unique_ptr<ChildProcess> start_apiserver(const TempDir& dir, std::vector<std::string> global_flags) {
  std::vector<std::string> argv = {KOS_BINARY};
  argv.insert(argv.end(), global_flags.begin(), global_flags.end());
  argv.insert(argv.end(), {"apiserver", "--listen", "127.0.0.1:0", "--data-dir",
                           (dir.path() / "data").string(), "--write-kubeconfig",
                           (dir.path() / "kubeconfig").string()});
  auto p = std::make_unique<ChildProcess>(argv, /*capture_stdout=*/false);
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!fs::exists(dir.path() / "kubeconfig")) {
    if (!p->running()) ADD_FAILURE() << "kos apiserver exited while starting";
    if (!p->running() || std::chrono::steady_clock::now() >= deadline) return nullptr;
    std::this_thread::sleep_for(10ms);  // polling for a file, bounded by the deadline
  }
  return p;
}

TEST(Scheduling, EveryThreadOfAComponentRunsUnderSchedBatchByDefault) {
  TempDir dir("kos-sched");
  auto server = start_apiserver(dir, {});
  ASSERT_TRUE(server) << "the server did not start within 30 s";
  auto policies = thread_policies(server->pid());
  ASSERT_GT(policies.size(), 4u) << "expected the server's I/O, worker and cache threads";
  for (const auto& [tid, policy] : policies)
    EXPECT_EQ(policy, SCHED_BATCH) << "thread " << tid << " of kos apiserver";
}

TEST(Scheduling, NormalKeepsLinuxDefaultPolicy) {
  TempDir dir("kos-sched");
  auto server = start_apiserver(dir, {"--scheduling", "normal"});
  ASSERT_TRUE(server) << "the server did not start within 30 s";
  auto policies = thread_policies(server->pid());
  ASSERT_GT(policies.size(), 4u);
  for (const auto& [tid, policy] : policies)
    EXPECT_EQ(policy, SCHED_OTHER) << "thread " << tid << " of kos apiserver";
}

// kos up's components are started by it with this environment: they make its choice.
TEST(Scheduling, TheEnvironmentChoosesWhenTheFlagIsNotGiven) {
  TempDir dir("kos-sched");
  setenv("KOS_SCHEDULING", "normal", 1);
  auto server = start_apiserver(dir, {});
  unsetenv("KOS_SCHEDULING");
  ASSERT_TRUE(server) << "the server did not start within 30 s";
  auto policies = thread_policies(server->pid());
  ASSERT_GT(policies.size(), 4u);
  for (const auto& [tid, policy] : policies)
    EXPECT_EQ(policy, SCHED_OTHER) << "thread " << tid << " of kos apiserver";
}

TEST(Scheduling, AnUnknownPolicyIsRefusedWithAMessage) {
  auto r = run({KOS_BINARY, "--scheduling", "fifo", "version"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--scheduling"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace kos::testing
