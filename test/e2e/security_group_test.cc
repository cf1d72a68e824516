// Security groups end to end (seed 003's SFTP case) on a simulated 2-node cluster
// (test/e2e/cluster.h), with the shipped example applied by kubectl:
// examples/security-groups/sftp.yaml puts `server` (node-0) in sftp-servers, which takes
// 22/tcp and 443/tcp from sftp-clients; client-a (node-0) and client-b (node-1) are in
// sftp-clients, which may send anything; `outsider` (node-1) is in no group. The agents
// enforce it with nftables on the nodes' bridges; `kos check` runs the example's checks.
// Needs root; every namespace and process goes when the test ends.
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "test/e2e/cluster.h"
#include "test/support/process.h"
#include "test/support/skip.h"

namespace kos::e2e {
namespace {

using namespace std::chrono_literals;
using ctltest::poll_until;
using kos::testing::run;

constexpr const char* kNs = "tenant-sg";
const std::string kExamples = KOS_EXAMPLES_DIR;

// A TCP server on 22, 23 and 443 in `ns` that greets every connection and closes it.
std::unique_ptr<kos::testing::ChildProcess> greeter(const std::string& ns) {
  const char* script = R"(
import socket, threading
def serve(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    while True:
        c, _ = s.accept()
        c.sendall(b"hello\n")
        c.close()
for p in (22, 23, 443, 8080):
    threading.Thread(target=serve, args=(p,), daemon=True).start()
print("listening", flush=True)
threading.Event().wait()
)";
  auto p = std::make_unique<kos::testing::ChildProcess>(
      std::vector<std::string>{"ip", "netns", "exec", ns, "python3", "-c", script});
  if (!p->read_line(10s)) return nullptr;
  return p;
}

// What a TCP client in `ns` gets from `ip`:`port` within `timeout`: the greeting ("hello"),
// or how it failed ("timeout", "refused", ...). The greeting proves the reply direction.
std::string greet(const std::string& ns, const std::string& ip, int port, double timeout = 1.0) {
  const std::string script =
      "import socket,sys\n"
      "try:\n"
      "  s=socket.create_connection(('" + ip + "'," + std::to_string(port) + "),timeout=" + std::to_string(timeout) + ")\n"
      "  print(s.recv(16).decode().strip())\n"
      "except socket.timeout: print('timeout')\n"
      "except ConnectionRefusedError: print('refused')\n"
      "except OSError as e: print('error', e)\n";
  auto r = run({"ip", "netns", "exec", ns, "python3", "-c", script});
  auto out = r.out;
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

TEST(SecurityGroupNodes, SftpServerTakesSshAndHttpsFromItsClientsOnly) {
  if (geteuid() != 0) KOS_SKIP_UNLESS_CI() << "needs root (network namespaces)";
  if (run({"python3", "-c", "pass"}).exit_code != 0) KOS_SKIP_UNLESS_CI() << "python3 is missing";
  Cluster::Options o;
  o.nodes = 2;
  Cluster cluster(o);
  if (auto e = cluster.start(); !e.empty()) FAIL() << e << "\n" << cluster.logs();
  auto c = cluster.client();
  const std::string admin = cluster.server().credential("admin").string();
  auto apply = run({"kubectl", "--kubeconfig", admin, "apply", "-f", kExamples + "/security-groups/sftp.yaml"});
  ASSERT_EQ(apply.exit_code, 0) << apply.out << apply.err;

  // Every attachment ready, with its groups in force at their current versions.
  std::map<std::string, api::NetworkAttachment> na;
  auto in_force = [&](const api::NetworkAttachment& a) {
    if (a.status.security_groups_in_force.size() != a.spec.security_groups.size()) return false;
    for (const auto& g : a.status.security_groups_in_force) {
      auto sg = c->get<api::SecurityGroup>(kNs, g.name);
      if (!sg || sg->metadata.resource_version != g.resource_version) return false;
    }
    return true;
  };
  ASSERT_TRUE(poll_until([&] {
    auto l = c->list<api::NetworkAttachment>(kNs);
    if (!l || l->size() != 4) return false;
    na.clear();
    for (const auto& a : *l) {
      if (a.status.ifc_name.empty() || !a.status.post_create_exec_report || !in_force(a)) return false;
      na[a.metadata.name] = a;
    }
    return true;
  }, 60s)) << cluster.logs();
  for (const auto& [name, a] : na)
    ASSERT_EQ(a.status.post_create_exec_report->exit_status, 0) << name << ": " << a.status.post_create_exec_report->std_err;
  auto guest = [&](const std::string& name) { return cluster.node_ns(cluster.node_index(na[name].spec.node)) + "-g-" + name; };
  const std::string server = guest("server"), client_a = guest("client-a"), client_b = guest("client-b"),
                    outsider = guest("outsider");
  const std::string server_ip = na["server"].status.ipv4, client_b_ip = na["client-b"].status.ipv4,
                    outsider_ip = na["outsider"].status.ipv4;
  auto srv = greeter(server);
  ASSERT_TRUE(srv) << "the server's listener did not start";
  auto cli = greeter(client_b);
  ASSERT_TRUE(cli) << "client-b's listener did not start";

  // From both clients (same node, other node): 22 and 443 connect and the greeting comes
  // back (the server accepts nothing but replies to these: stateful); 23 and ping do not.
  for (const auto& from : {client_a, client_b}) {
    EXPECT_EQ(greet(from, server_ip, 22), "hello") << from;
    EXPECT_EQ(greet(from, server_ip, 443), "hello") << from;
    EXPECT_EQ(greet(from, server_ip, 23), "timeout") << from;
    EXPECT_FALSE(ping(from, server_ip)) << from;
  }
  // A guest in no group gets nothing from the server; the server opens nothing.
  EXPECT_EQ(greet(outsider, server_ip, 22), "timeout");
  EXPECT_EQ(greet(server, client_b_ip, 8080), "timeout");
  // Clients accept only replies; a guest in no group accepts anything.
  EXPECT_EQ(greet(outsider, client_b_ip, 8080), "timeout");
  EXPECT_TRUE(ping(client_b, outsider_ip, 2));

  // client-b leaves sftp-clients: the server refuses it within a second of the write.
  auto leave = [&](std::vector<std::string> groups) {
    auto a = c->get<api::NetworkAttachment>(kNs, "client-b");
    EXPECT_TRUE(a.has_value());
    if (!a) return;
    a->spec.security_groups = std::move(groups);
    EXPECT_TRUE(c->update(*a).has_value());
  };
  // Measured from the write to the first attempt (a new connection each) that gets the
  // other answer: to its connect, taken as its end for a greeting and its end less the
  // 200 ms it waited for a refusal. The attempts run back to back (~50 ms each to start).
  auto until = [&](bool want_greeting) {
    const auto t0 = std::chrono::steady_clock::now();
    for (;;) {
      const bool greeted = greet(client_b, server_ip, 22, 0.2) == "hello";
      const auto end = std::chrono::steady_clock::now();
      if (greeted == want_greeting)
        return std::chrono::duration_cast<std::chrono::milliseconds>(end - t0 - (greeted ? 0ms : 200ms));
      if (end - t0 > 5s) return std::chrono::milliseconds(-1);
    }
  };
  leave({});
  const auto blocked_after = until(false);
  EXPECT_GE(blocked_after.count(), 0) << "client-b was never blocked";
  EXPECT_LT(blocked_after, 1000ms) << "removing client-b from sftp-clients blocked it after " << blocked_after.count() << " ms";
  std::printf("security groups: client removed from its group -> its connection refused %lld ms after the write\n",
              static_cast<long long>(blocked_after.count()));
  // ...and joining again lets it in.
  leave({"sftp-clients"});
  const auto allowed_after = until(true);
  EXPECT_GE(allowed_after.count(), 0) << "client-b was never allowed again";
  std::printf("security groups: client added back -> its connection accepted %lld ms after the write\n",
              static_cast<long long>(allowed_after.count()));

  // kos check on the example passes...
  std::vector<std::string> check = {kos::ctltest::kKos, "check", "-f", kExamples + "/security-groups/sftp-check.yaml",
                                    "--kubeconfig", admin};
  for (int i = 0; i < cluster.nodes(); ++i)
    check.insert(check.end(), {"--agent-socket", cluster.node_name(i) + "=" + cluster.cni_socket(i)});
  ASSERT_TRUE(poll_until([&] { return in_force(*c->get<api::NetworkAttachment>(kNs, "client-b")); }, 10s));
  auto ok = run(check);
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
  std::printf("%s", ok.out.c_str());
  // ...and fails, with a table that says which, when an expectation is wrong.
  const auto wrong = std::filesystem::temp_directory_path() / ("kos-sg-check-" + std::to_string(getpid()) + ".yaml");
  {
    std::ifstream in(kExamples + "/security-groups/sftp-check.yaml");
    std::stringstream s;
    s << in.rdbuf();
    std::string text = s.str();
    const auto at = text.find("port: 23\n  expect: deny");
    ASSERT_NE(at, std::string::npos);
    text.replace(at, std::string("port: 23\n  expect: deny").size(), "port: 23\n  expect: allow");
    std::ofstream(wrong) << text;
  }
  auto bad_check = check;
  bad_check[3] = wrong.string();
  auto bad = run(bad_check);
  std::filesystem::remove(wrong);
  EXPECT_EQ(bad.exit_code, 1) << bad.out << bad.err;
  EXPECT_NE(bad.out.find("FAIL"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("23/tcp"), std::string::npos) << bad.out;
  std::printf("%s", bad.out.c_str());

  // Deleting everything leaves no KOS device on any node.
  auto del = run({"kubectl", "--kubeconfig", admin, "delete", "-f", kExamples + "/security-groups/sftp.yaml", "--wait=false"});
  EXPECT_EQ(del.exit_code, 0) << del.err;
  EXPECT_TRUE(poll_until([&] {
    for (int i = 0; i < cluster.nodes(); ++i)
      if (!(cluster.kernel_state(i) == NodeKernelState{})) return false;
    return true;
  }, 30s));
  if (HasFailure()) std::cerr << cluster.logs();
}

}  // namespace
}  // namespace kos::e2e
