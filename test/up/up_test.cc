// `kos up` as a user runs it (the README's first command, with a data dir and port of the
// test's own and two nodes): the examples get ready, their pings come out as expected, and
// Ctrl-C leaves no namespace, link or process behind. A kos up killed with -9 leaves its
// namespaces; a new kos up refuses to start on them and points to `kos down`, which
// removes them; a kos up on the same data dir then converges the kept objects again.
// Needs root (network namespaces); under CI nothing skips.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "api/types.h"
#include "client/rest_client.h"
#include "common/subprocess.h"
#include "test/support/process.h"
#include "test/support/skip.h"

namespace kos::uptest {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// Network namespaces whose name starts with `prefix`.
std::vector<std::string> namespaces_with(const std::string& prefix) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/var/run/netns", ec))
    if (e.path().filename().string().starts_with(prefix)) out.push_back(e.path().filename().string());
  return out;
}

// Processes whose command line mentions `needle`.
std::vector<std::string> processes_with(const std::string& needle) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    std::string pid = e.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos || pid == std::to_string(getpid())) continue;
    std::ifstream in(e.path() / "cmdline");
    std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (auto& c : cmd)
      if (c == '\0') c = ' ';
    if (cmd.find(needle) != std::string::npos) out.push_back(pid + ": " + cmd);
  }
  return out;
}

std::string links_in_host_with(const std::string& prefix) {
  auto r = run_command({"ip", "-o", "link", "show"});
  if (!r) return r.error().message;
  std::string out;
  std::istringstream in(r->out);
  for (std::string line; std::getline(in, line);)
    if (line.find(prefix) != std::string::npos) out += line + "\n";
  return out;
}

class UpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) {
      KOS_SKIP_UNLESS_CI() << "kos up with the linux fabric needs root";
    }
    port_ = kos::testing::free_loopback_port();
  }
  void TearDown() override {
    up_.reset();  // SIGKILL if still running: its children die with it
    // Whatever a failed test left: kos down removes it (and must leave nothing).
    (void)kos::testing::run({KOS_BINARY, "down", "--data-dir", data_dir()});
  }
  std::string data_dir() const { return (dir_.path() / "data").string(); }
  std::vector<std::string> up_argv(bool examples, const std::string& fabric = "linux") const {
    std::vector<std::string> a = {KOS_BINARY, "up", "--nodes", "2", "--data-dir", data_dir(), "--listen",
                                  "127.0.0.1:" + std::to_string(port_), "--fabric", fabric};
    if (examples) a.push_back("--examples");
    return a;
  }
  // Reads kos up's stdout until a line matches `re` (kept in lines_), up to `timeout`.
  std::optional<std::string> read_until(const std::string& re, std::chrono::seconds timeout) {
    const std::regex pattern(re);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      auto line = up_->read_line(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
      if (!line) return std::nullopt;
      lines_.push_back(*line);
      if (std::regex_search(*line, pattern)) return *line;
    }
    return std::nullopt;
  }
  std::string output() const {
    std::string s;
    for (const auto& l : lines_) s += l + "\n";
    return s;
  }
  // The namespace prefix, from "making 2 node namespaces kosXXXXXX-n0..".
  std::string prefix() const {
    static const std::regex re("node namespaces (kos[0-9a-f]{6})-n0");
    std::smatch m;
    for (const auto& l : lines_)
      if (std::regex_search(l, m, re)) return m[1];
    return {};
  }
  // The attachment as the API has it.
  std::optional<api::NetworkAttachment> attachment(const std::string& ns, const std::string& name) {
    auto c = client::RestClient::from_kubeconfig(data_dir() + "/kubeconfig");
    if (!c) return std::nullopt;
    auto na = (*c)->get<api::NetworkAttachment>(ns, name);
    if (!na) return std::nullopt;
    return *na;
  }
  bool ping(const std::string& from_netns, const std::string& to) {
    auto r = run_command({"ip", "netns", "exec", from_netns, "ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", to});
    return r && r->exit_status == 0;
  }
  // Checks the examples as a user would, independently of kos up's own table: every
  // attachment ready, a1 reaches a2 across the nodes, a1 does not reach b's third address.
  void check_examples() {
    std::map<std::string, api::NetworkAttachment> na;
    for (auto [ns, name] : {std::pair{"ns1", "na1"}, {"tenant-a", "a1"}, {"tenant-a", "a2"}, {"tenant-b", "b1"},
                            {"tenant-b", "b2"}, {"tenant-b", "b3"}}) {
      auto a = attachment(ns, name);
      ASSERT_TRUE(a.has_value()) << ns << "/" << name;
      EXPECT_FALSE(a->status.ipv4.empty()) << name;
      EXPECT_FALSE(a->status.ifc_name.empty()) << name;
      ASSERT_TRUE(a->status.post_create_exec_report.has_value()) << name;
      EXPECT_EQ(a->status.post_create_exec_report->exit_status, 0) << name << ": " << a->status.post_create_exec_report->std_err;
      na[name] = *a;
    }
    const std::string p = prefix();
    ASSERT_FALSE(p.empty()) << output();
    EXPECT_TRUE(ping(p + "-n0-g-a1", na["a2"].status.ipv4)) << "a1 -> a2 " << na["a2"].status.ipv4;
    EXPECT_TRUE(ping(p + "-n0-g-b1", na["b3"].status.ipv4)) << "b1 -> b3 " << na["b3"].status.ipv4;
    std::string b_only;
    for (auto* b : {&na["b1"], &na["b2"], &na["b3"]})
      if (b->status.ipv4 != na["a1"].status.ipv4 && b->status.ipv4 != na["a2"].status.ipv4) b_only = b->status.ipv4;
    ASSERT_FALSE(b_only.empty());
    EXPECT_FALSE(ping(p + "-n0-g-a1", b_only)) << "tenant-a reached tenant-b's " << b_only;
  }
  // Nothing of this kos up remains: no namespace, no host link, no process.
  void expect_nothing_left(const std::string& p) {
    EXPECT_EQ(namespaces_with(p + "-"), std::vector<std::string>{});
    EXPECT_EQ(links_in_host_with(p), "");
    EXPECT_EQ(processes_with(data_dir()), std::vector<std::string>{});
  }

  void examples_ping_and_ctrl_c_leaves_nothing(const std::string& fabric);

  kos::testing::TempDir dir_{"kos-up-test"};
  int port_ = 0;
  std::unique_ptr<kos::testing::ChildProcess> up_;
  std::vector<std::string> lines_;
};

TEST_F(UpTest, ExamplesPingAsExpectedAndCtrlCLeavesNothing) { examples_ping_and_ctrl_c_leaves_nothing("linux"); }

// The same on Open vSwitch: each node's own ovsdb-server and ovs-vswitchd in its namespace
// (their processes end with kos up: processes_with(data dir) covers them).
TEST_F(UpTest, OnOpenVSwitchExamplesPingAsExpectedAndCtrlCLeavesNothing) {
  examples_ping_and_ctrl_c_leaves_nothing("ovs");
  EXPECT_NE(output().find("on the Open vSwitch fabric"), std::string::npos) << output();
}

void UpTest::examples_ping_and_ctrl_c_leaves_nothing(const std::string& fabric) {
  up_ = std::make_unique<kos::testing::ChildProcess>(up_argv(true, fabric));
  auto summary = read_until("ping checks as expected|not ready|exited|stopped", 180s);
  ASSERT_TRUE(summary.has_value()) << output();
  EXPECT_TRUE(std::regex_search(*summary, std::regex("examples: (\\d+) of \\1 ping checks as expected$"))) << output();
  EXPECT_NE(output().find("no reply  no reply  ok"), std::string::npos) << "no cross-tenant check: " << output();
  check_examples();
  const std::string p = prefix();
  EXPECT_FALSE(namespaces_with(p + "-").empty());

  const auto t0 = std::chrono::steady_clock::now();
  up_->signal(SIGINT);
  auto status = up_->wait(10s);
  ASSERT_TRUE(status.has_value()) << "kos up still running 10 s after SIGINT";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << output();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  while (auto line = up_->read_line(100ms)) lines_.push_back(*line);
  EXPECT_NE(output().find("up            | stopped: every process ended"), std::string::npos) << output();
  expect_nothing_left(p);
}

// The README's kos-cni walkthrough: a "container" (a namespace of this test) attached to
// tenant-a on node-1 through kos-cni and node-1's socket reaches a1 on node-0; DEL removes it.
TEST_F(UpTest, AContainerAttachesThroughKosCniToAnExampleNetwork) {
  up_ = std::make_unique<kos::testing::ChildProcess>(up_argv(true));
  ASSERT_TRUE(read_until("ping checks as expected|not ready|exited|stopped", 180s).has_value()) << output();
  const std::string ctr = "kos-up-test-ctr-" + std::to_string(getpid());
  ASSERT_TRUE(run_command({"ip", "netns", "add", ctr}));
  struct Cleanup {
    std::string ns;
    ~Cleanup() { (void)run_command({"ip", "netns", "del", ns}); }
  } cleanup{ctr};
  const std::string socket = data_dir() + "/agents/node-1.cni.sock";
  EXPECT_NE(output().find("CNI socket " + socket), std::string::npos) << "kos up names the socket: " << output();
  const std::string conf = R"({"cniVersion":"1.0.0","name":"tenant-a","type":"kos-cni","namespace":"tenant-a",)"
                           R"("subnet":"net","agentSocket":")" + socket + R"("})";
  auto cni = [&](const std::string& command) {
    kos::testing::RunOptions o;
    o.env = {{"CNI_COMMAND", command}, {"CNI_CONTAINERID", "ctr1"}, {"CNI_IFNAME", "eth0"},
             {"CNI_NETNS", "/var/run/netns/" + ctr}, {"CNI_PATH", "/usr/lib/cni"}};
    o.stdin_data = conf;
    return kos::testing::run({KOS_CNI_PLUGIN}, o);
  };
  auto add = cni("ADD");
  ASSERT_EQ(add.exit_code, 0) << add.out << add.err;
  EXPECT_NE(add.out.find("\"sandbox\":\"/var/run/netns/" + ctr + "\""), std::string::npos) << add.out;
  auto a1 = attachment("tenant-a", "a1");
  ASSERT_TRUE(a1.has_value());
  EXPECT_TRUE(ping(ctr, a1->status.ipv4)) << "container on node-1 -> a1 on node-0 " << a1->status.ipv4;
  auto del = cni("DEL");
  EXPECT_EQ(del.exit_code, 0) << del.out << del.err;
  auto c = client::RestClient::from_kubeconfig(data_dir() + "/kubeconfig");
  ASSERT_TRUE(c);
  auto left = (*c)->list<api::NetworkAttachment>("tenant-a", {.label_selector = "cni.network.example.com/plugin=kos-cni"});
  ASSERT_TRUE(left);
  EXPECT_TRUE(left->empty());
}

TEST_F(UpTest, KilledUpIsCleanedByDownAndARestartConverges) {
  up_ = std::make_unique<kos::testing::ChildProcess>(up_argv(true));
  ASSERT_TRUE(read_until("all \\d+ attachments are ready", 180s).has_value()) << output();
  const std::string p = prefix();
  up_->signal(SIGKILL);
  ASSERT_TRUE(up_->wait(5s).has_value());
  // Its children die with it; its namespaces stay.
  for (int i = 0; i < 100 && !processes_with(data_dir()).empty(); ++i) std::this_thread::sleep_for(50ms);
  EXPECT_EQ(processes_with(data_dir()), std::vector<std::string>{});
  EXPECT_FALSE(namespaces_with(p + "-").empty());

  auto again = kos::testing::run(up_argv(false));
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("did not stop cleanly. Remove them with: kos down --data-dir " + data_dir()), std::string::npos)
      << again.err;

  auto down = kos::testing::run({KOS_BINARY, "down", "--data-dir", data_dir()});
  EXPECT_EQ(down.exit_code, 0) << down.err;
  EXPECT_NE(down.out.find("removed"), std::string::npos) << down.out;
  expect_nothing_left(p);
  auto twice = kos::testing::run({KOS_BINARY, "down", "--data-dir", data_dir()});
  EXPECT_EQ(twice.exit_code, 0);
  EXPECT_NE(twice.out.find("nothing of a kos up"), std::string::npos) << twice.out;

  // The same data dir again: the objects are kept and the new nodes converge to them.
  lines_.clear();
  up_ = std::make_unique<kos::testing::ChildProcess>(up_argv(true));
  auto summary = read_until("ping checks as expected|not ready|exited|stopped", 180s);
  ASSERT_TRUE(summary.has_value()) << output();
  EXPECT_NE(output().find("examples: 0 objects created, 9 were there already"), std::string::npos) << output();
  EXPECT_TRUE(std::regex_search(*summary, std::regex("examples: (\\d+) of \\1 ping checks as expected$"))) << output();
  check_examples();
  up_->signal(SIGTERM);
  ASSERT_TRUE(up_->wait(10s).has_value());
  expect_nothing_left(p);
}

// Bad input: one clear line on stderr, exit 1, nothing started.
TEST_F(UpTest, BadInputGetsOneClearLine) {
  auto expect_refusal = [&](std::vector<std::string> args, const std::string& says) {
    std::vector<std::string> argv = {KOS_BINARY, "up", "--data-dir", data_dir()};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = kos::testing::run(argv);
    EXPECT_EQ(r.exit_code, 1) << says;
    EXPECT_NE(r.err.find(says), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  };
  expect_refusal({"--nodes", "0"}, "--nodes 0: between 1 and 64");
  expect_refusal({"--nodes", "65"}, "--nodes 65: between 1 and 64");
  expect_refusal({"--fabric", "vpp"}, "--fabric vpp: linux, ovs or fake");
  expect_refusal({"--examples", "--nodes", "1"}, "use --nodes 2 or more");
  {
    auto r = kos::testing::run({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", KOS_BINARY, "up",
                                "--data-dir", (dir_.path() / "nobody").string()});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("needs root: run it as root (sudo), or use --fabric fake"), std::string::npos) << r.err;
  }
  // The port in use, and the data dir in use: a fake-fabric kos up holds both.
  up_ = std::make_unique<kos::testing::ChildProcess>(std::vector<std::string>{
      KOS_BINARY, "up", "--fabric", "fake", "--nodes", "1", "--data-dir", data_dir(), "--listen",
      "127.0.0.1:" + std::to_string(port_)});
  ASSERT_TRUE(read_until("KOS is up", 60s).has_value()) << output();
  expect_refusal({"--fabric", "fake", "--listen", "127.0.0.1:" + std::to_string(port_)}, "is in use by another kos up (pid ");
  {
    auto r = kos::testing::run({KOS_BINARY, "up", "--fabric", "fake", "--data-dir", (dir_.path() / "other").string(),
                                "--listen", "127.0.0.1:" + std::to_string(port_)});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("the address is in use"), std::string::npos) << r.err;
  }
  auto down = kos::testing::run({KOS_BINARY, "down", "--data-dir", data_dir()});
  EXPECT_EQ(down.exit_code, 1);
  EXPECT_NE(down.err.find("is still running on"), std::string::npos) << down.err;
  up_->signal(SIGINT);
  ASSERT_TRUE(up_->wait(10s).has_value());
}

}  // namespace
}  // namespace kos::uptest
