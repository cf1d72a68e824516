// The long-running components run under SCHED_BATCH (`kos --scheduling`, default batch):
// a thread that wakes does not preempt the one running on its CPU, which takes about a
// third of the context switches out of the system under load (bench/scale --cpu). Every
// thread of a running `kos apiserver` has the policy; `--scheduling normal` keeps Linux's
// default, and so does KOS_SCHEDULING=normal in the environment (which is how kos up
// passes the choice to its components); an unknown policy is refused.
#include <sched.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "test/integration/harness.h"

namespace kos::testing {
namespace {

namespace fs = std::filesystem;

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

// Starts `kos [global_flags] apiserver` on the embedded store and checks that every one of
// its threads has `policy`.
void expect_every_thread_under(int policy, std::vector<std::string> global_flags) {
  ApiServerProcess server(Backend::kSqlite, {}, std::move(global_flags));
  ASSERT_EQ(server.start(), "");
  auto policies = thread_policies(server.server_pid());
  ASSERT_GT(policies.size(), 4u) << "expected the server's I/O, worker and cache threads";
  for (const auto& [tid, policy_of_thread] : policies)
    EXPECT_EQ(policy_of_thread, policy) << "thread " << tid << " of kos apiserver";
}

TEST(Scheduling, EveryThreadOfAComponentRunsUnderSchedBatchByDefault) {
  expect_every_thread_under(SCHED_BATCH, {});
}

TEST(Scheduling, NormalKeepsLinuxDefaultPolicy) {
  expect_every_thread_under(SCHED_OTHER, {"--scheduling", "normal"});
}

// kos up's components are started by it with this environment: they make its choice.
TEST(Scheduling, TheEnvironmentChoosesWhenTheFlagIsNotGiven) {
  setenv("KOS_SCHEDULING", "normal", 1);
  expect_every_thread_under(SCHED_OTHER, {});
  unsetenv("KOS_SCHEDULING");
}

TEST(Scheduling, AnUnknownPolicyIsRefusedWithAMessage) {
  auto r = run({KOS_BINARY, "--scheduling", "fifo", "version"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--scheduling"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace kos::testing
