// kos check's logic without a cluster: the file parser's answers to good and bad files, and
// the runner, table and exit status against a fake Cluster.
#include "check/check.h"

#include "api/names.h"

#include <mutex>

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace kos::check {
namespace {

using namespace std::chrono_literals;

constexpr char kGood[] = R"(# kos check: connectivity expectations
namespace: demo
timeout: 500ms
checks:
- name: sftp over ssh
  from: client
  to: server
  protocol: tcp
  port: 22
  expect: allow
- name: telnet
  from: client
  to: server
  protocol: tcp
  port: 23
  expect: deny
  timeout: 2s
- from: other/probe
  to: 10.1.0.9
  protocol: icmp
  expect: deny
- from: client
  to: "other/dns"
  protocol: udp
  port: "53"
  expect: allow
)";

TEST(CheckFile, AGoodFileParses) {
  auto f = parse_check_file(kGood, "good.yaml");
  ASSERT_TRUE(f) << f.error().message;
  EXPECT_EQ(f->ns, "demo");
  EXPECT_EQ(f->timeout, 500ms);
  ASSERT_EQ(f->checks.size(), 4u);
  const Check& a = f->checks[0];
  EXPECT_EQ(a.name, "sftp over ssh");
  EXPECT_EQ(a.from, (Ref{"demo", "client"}));
  EXPECT_EQ(a.to, "server");
  ASSERT_TRUE(a.to_ref);
  EXPECT_EQ(*a.to_ref, (Ref{"demo", "server"}));
  EXPECT_EQ(a.protocol, Protocol::kTcp);
  EXPECT_EQ(a.port, 22);
  EXPECT_TRUE(a.expect_allow);
  EXPECT_EQ(a.timeout, 500ms) << "the file's";
  EXPECT_EQ(a.line, 5);
  EXPECT_FALSE(f->checks[1].expect_allow);
  EXPECT_EQ(f->checks[1].timeout, 2s) << "its own";
  const Check& c = f->checks[2];
  EXPECT_EQ(c.from, (Ref{"other", "probe"}));
  EXPECT_FALSE(c.to_ref);
  EXPECT_EQ(c.to_ip, 0x0a010009u);
  EXPECT_EQ(c.protocol, Protocol::kIcmp);
  EXPECT_EQ(c.port, 0);
  EXPECT_EQ(*f->checks[3].to_ref, (Ref{"other", "dns"}));
  EXPECT_EQ(f->checks[3].port, 53);

  auto over = parse_check_file(kGood, "good.yaml", "prod");
  ASSERT_TRUE(over);
  EXPECT_EQ(over->checks[0].from, (Ref{"prod", "client"})) << "--namespace replaces the file's";
  EXPECT_EQ(over->checks[2].from, (Ref{"other", "probe"}));
}

TEST(CheckFile, JsonParsesToo) {
  auto f = parse_check_file(
      R"({"checks": [{"from": "a", "to": "b", "protocol": "tcp", "port": 80, "expect": "allow"}]})", "c.json");
  ASSERT_TRUE(f) << f.error().message;
  EXPECT_EQ(f->ns, "default");
  EXPECT_EQ(f->timeout, 1s);
  ASSERT_EQ(f->checks.size(), 1u);
  EXPECT_EQ(f->checks[0].from, (Ref{"default", "a"}));
  EXPECT_EQ(f->checks[0].port, 80);
}

// The problems of a bad file, one per line.
std::vector<std::string> problems(const std::string& text) {
  auto f = parse_check_file(text, "x.yaml");
  if (f) return {};
  std::vector<std::string> out;
  std::string m = f.error().message;
  for (size_t at = 0; at <= m.size();) {
    auto nl = m.find('\n', at);
    if (nl == std::string::npos) nl = m.size();
    out.push_back(m.substr(at, nl - at));
    at = nl + 1;
  }
  EXPECT_EQ(f.error().code, Errc::kInvalid);
  EXPECT_EQ(f.error().causes.size(), out.size());
  return out;
}

using Lines = std::vector<std::string>;

TEST(CheckFile, BadChecksAreReportedWithTheirPathsAndLines) {
  EXPECT_EQ(problems(R"(checks:
- from: a
  to: b
  protocol: tcp
  expect: allow
- from: a
  to: b
  protocol: icmp
  port: 7
  expect: allow
- from: a
  to: b
  protocol: udp
  port: 70000
  expect: maybe
- from: a
  to: b
  protocol: sctp
  port: 1
  expect: deny
  colour: red
)"),
            (Lines{
                "x.yaml:2: checks[0].port: required for tcp",
                "x.yaml:9: checks[1].port: icmp takes no port",
                "x.yaml:14: checks[2].port: '70000': a port number 1..65535",
                "x.yaml:15: checks[2].expect: 'maybe': allow or deny",
                "x.yaml:21: checks[3].colour: unknown key (known: name, from, to, protocol, port, expect, timeout)",
                "x.yaml:18: checks[3].protocol: 'sctp': tcp, udp or icmp",
            }));
  EXPECT_EQ(problems(R"(checks:
- to: b
  protocol: tcp
  port: 0
- from: Not_A_Name
  to: 10.0.0.300
  protocol: tcp
  port: http
  expect: allow
  timeout: 20s
- from: a/b/c
  to: [x]
  protocol: icmp
  expect: allow
  timeout: soon
- just a string
)"),
            (Lines{
                "x.yaml:2: checks[0].from: required",
                "x.yaml:4: checks[0].port: '0': a port number 1..65535",
                "x.yaml:2: checks[0].expect: required",
                "x.yaml:5: checks[1].from: 'Not_A_Name': " + *api::dns1123_subdomain_error("Not_A_Name"),
                "x.yaml:6: checks[1].to: '10.0.0.300' is not an IPv4 address",
                "x.yaml:8: checks[1].port: 'http': a port number 1..65535",
                "x.yaml:10: checks[1].timeout: '20s' is outside 100ms..10s",
                "x.yaml:11: checks[2].from: 'a/b/c': a NetworkAttachment is NAME or NAMESPACE/NAME",
                "x.yaml:12: checks[2].to: a NetworkAttachment (NAME or NAMESPACE/NAME) or an IPv4 address expected",
                "x.yaml:15: checks[2].timeout: 'soon' is not a duration (e.g. 250ms, 1.5s, 2m; units us, ms, s, m, h)",
                "x.yaml:16: checks[3]: a mapping expected (name, from, to, protocol, port, expect, timeout)",
            }));
}

TEST(CheckFile, BadFilesAreReported) {
  EXPECT_EQ(problems(""), (Lines{"x.yaml: the file is empty (it needs a list of checks)"}));
  EXPECT_EQ(problems("checks: [\n"), (Lines{"x.yaml:2: not YAML or JSON: end of sequence flow not found"}));
  EXPECT_EQ(problems("- a\n- b\n"), (Lines{"x.yaml:1: a mapping expected (namespace, timeout, checks)"}));
  EXPECT_EQ(problems("namespace: demo\n"), (Lines{"x.yaml:1: checks: required: the list of checks"}));
  EXPECT_EQ(problems("checks: []\n"), (Lines{"x.yaml:1: checks: empty: nothing to check"}));
  EXPECT_EQ(problems("checks: {a: 1}\n"), (Lines{"x.yaml:1: checks: a list expected"}));
  EXPECT_EQ(problems("namespace: Demo\ntimeout: 5ms\nkind: Check\nchecks: []\n"),
            (Lines{"x.yaml:3: kind: unknown key (known: namespace, timeout, checks)",
                   "x.yaml:1: namespace: 'Demo': " + *api::dns1123_label_error("Demo"),
                   "x.yaml:2: timeout: '5ms' is outside 100ms..10s", "x.yaml:4: checks: empty: nothing to check"}));
  EXPECT_EQ(problems("checks: []\n---\nchecks: []\n"), (Lines{"x.yaml:3: one document expected, not 2"}));
  auto f = parse_check_file("checks:\n- {from: a, to: b, protocol: tcp, port: 1, expect: allow}\n  \n", "x.yaml");
  ASSERT_FALSE(parse_check_file("checks:\n- {from: a, from: b, to: c, protocol: icmp, expect: deny}\n", "x.yaml"))
      << "a key given twice";
  EXPECT_TRUE(f) << f.error().message;
}

// ---------------------------------------------------------------------------------------

api::NetworkAttachment attachment(const std::string& ns, const std::string& name, const std::string& node,
                                  const std::string& ip, bool implemented = true) {
  api::NetworkAttachment na;
  na.metadata.namespace_ = ns;
  na.metadata.name = name;
  na.metadata.uid = "uid-" + name;
  na.spec.node = node;
  na.status.ipv4 = ip;
  if (implemented) na.status.host_ip = "192.168.0.1";
  return na;
}

// Attachments from a map; probes answered by a function, recorded.
class FakeCluster : public Cluster {
 public:
  std::map<Ref, api::NetworkAttachment> objects;
  std::function<Result<ProbeAnswer>(const ProbeRequest&)> answer;
  std::vector<ProbeRequest> probes;
  std::map<Ref, int> reads;

  Result<api::NetworkAttachment> attachment(const Ref& ref) override {
    ++reads[ref];
    auto it = objects.find(ref);
    if (it == objects.end()) return fail(Errc::kNotFound, "not found");
    return it->second;
  }
  Result<ProbeAnswer> probe(const ProbeRequest& req) override {
    {
      std::lock_guard lk(mu_);
      probes.push_back(req);
    }
    return answer(req);
  }

 private:
  std::mutex mu_;
};

class RunChecksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (auto na : {attachment("demo", "client", "node-0", "10.1.0.2"), attachment("demo", "server", "node-1", "10.1.0.3")})
      cluster_.objects[Ref{na.metadata.namespace_, na.metadata.name}] = na;
    // The network: port 22 open, everything else to the server dropped; 10.1.0.9 answers.
    cluster_.answer = [](const ProbeRequest& q) -> Result<ProbeAnswer> {
      if (q.target == 0x0a010003 && q.port == 22) return ProbeAnswer{true, "connected in 0.3 ms", "eth0 in /var/run/netns/g"};
      if (q.target == 0x0a010009) return ProbeAnswer{true, "echo reply in 0.1 ms"};
      return ProbeAnswer{false, "no answer in " + std::to_string(q.timeout.count()) + " ms"};
    };
  }
  Report run(const std::string& text, int parallel = 4) {
    auto f = parse_check_file(text, "t.yaml");
    EXPECT_TRUE(f) << f.error().message;
    return f ? run_checks(*f, cluster_, parallel) : Report{};
  }
  FakeCluster cluster_;
};

TEST_F(RunChecksTest, AllAsExpectedExitsZero) {
  auto r = run(R"(namespace: demo
checks:
- {name: sftp over ssh, from: client, to: server, protocol: tcp, port: 22, expect: allow}
- {name: telnet, from: client, to: server, protocol: tcp, port: 23, expect: deny}
- {from: client, to: 10.1.0.9, protocol: icmp, expect: allow}
)");
  EXPECT_EQ(r.exit_code(), 0);
  EXPECT_EQ(format_table(r),
            "CHECK          FROM    TO                 PROBE   EXPECT  GOT    RESULT\n"
            "sftp over ssh  client  server (10.1.0.3)  22/tcp  allow   allow  ok\n"
            "telnet         client  server (10.1.0.3)  23/tcp  deny    deny   ok\n"
            "#3             client  10.1.0.9           icmp    allow   allow  ok\n"
            "3 checks: 3 ok, 0 failed\n");
  ASSERT_EQ(cluster_.probes.size(), 3u);
  std::ranges::sort(cluster_.probes, {}, [](const ProbeRequest& q) { return q.port; });
  const ProbeRequest& q = cluster_.probes[1];
  EXPECT_EQ(q.node, "node-0") << "the agent of from's node";
  EXPECT_EQ(q.from, (Ref{"demo", "client"}));
  EXPECT_EQ(q.from_uid, "uid-client");
  EXPECT_EQ(q.target, 0x0a010003u);
  EXPECT_EQ(q.port, 22);
  EXPECT_EQ(q.timeout, 1s);
  EXPECT_EQ(cluster_.reads.at(Ref{"demo", "client"}), 1) << "each attachment read once";
  EXPECT_EQ(cluster_.reads.at(Ref{"demo", "server"}), 1);
}

TEST_F(RunChecksTest, AMismatchFailsWithExitOne) {
  auto r = run(R"(namespace: demo
checks:
- {name: sftp over ssh, from: client, to: server, protocol: tcp, port: 22, expect: allow}
- {name: telnet, from: client, to: server, protocol: tcp, port: 22, expect: deny}
- {name: web, from: client, to: server, protocol: tcp, port: 443, expect: allow}
)", 1);
  EXPECT_EQ(r.exit_code(), 1);
  EXPECT_EQ(format_table(r),
            "CHECK          FROM    TO                 PROBE    EXPECT  GOT    RESULT\n"
            "sftp over ssh  client  server (10.1.0.3)  22/tcp   allow   allow  ok\n"
            "telnet         client  server (10.1.0.3)  22/tcp   deny    allow  FAIL!   (connected in 0.3 ms)\n"
            "web            client  server (10.1.0.3)  443/tcp  allow   deny   FAIL!   (no answer in 1000 ms)\n"
            "3 checks: 1 ok, 2 failed\n");
  auto j = report_json(r).as_object();
  EXPECT_EQ(j.at("failed").as_int64(), 2);
  EXPECT_EQ(j.at("exitCode").as_int64(), 1);
  const auto& c = j.at("checks").as_array().at(1).as_object();
  EXPECT_EQ(c.at("name").as_string(), "telnet");
  EXPECT_EQ(c.at("from").as_string(), "demo/client");
  EXPECT_EQ(c.at("to").as_string(), "demo/server");
  EXPECT_EQ(c.at("target").as_string(), "10.1.0.3");
  EXPECT_EQ(c.at("port").as_int64(), 22);
  EXPECT_EQ(c.at("expect").as_string(), "deny");
  EXPECT_EQ(c.at("got").as_string(), "allow");
  EXPECT_EQ(c.at("result").as_string(), "failed");
  EXPECT_EQ(c.at("detail").as_string(), "connected in 0.3 ms");
  EXPECT_EQ(c.at("node").as_string(), "node-0");
  EXPECT_EQ(c.at("guest").as_string(), "eth0 in /var/run/netns/g");
  EXPECT_FALSE(j.at("checks").as_array().at(2).as_object().contains("guest"));
}

TEST_F(RunChecksTest, ChecksThatCannotRunAreErrorsAndTheOthersGoOn) {
  cluster_.objects[Ref{"demo", "pending"}] = attachment("demo", "pending", "node-0", "");
  cluster_.objects[Ref{"demo", "starting"}] = attachment("demo", "starting", "node-2", "10.1.0.7", false);
  auto broken = attachment("demo", "broken", "node-3", "10.1.0.8", false);
  broken.status.errors.host = {"postCreateExec failed"};
  cluster_.objects[Ref{"demo", "broken"}] = broken;
  cluster_.objects[Ref{"demo", "far"}] = attachment("demo", "far", "node-9", "10.1.0.4");
  auto answer = cluster_.answer;
  cluster_.answer = [answer](const ProbeRequest& q) -> Result<ProbeAnswer> {
    if (q.node == "node-9") return fail(Errc::kUnavailable, "node node-9: cannot connect to the KOS agent at /x: No such file");
    return answer(q);
  };
  auto r = run(R"(namespace: demo
checks:
- {name: a, from: ghost, to: server, protocol: tcp, port: 22, expect: allow}
- {name: b, from: pending, to: server, protocol: tcp, port: 22, expect: allow}
- {name: c, from: starting, to: server, protocol: tcp, port: 22, expect: allow}
- {name: d, from: client, to: broken, protocol: tcp, port: 22, expect: deny}
- {name: e, from: far, to: server, protocol: tcp, port: 22, expect: allow}
- {name: f, from: client, to: other/x, protocol: udp, port: 53, expect: deny}
- {name: g, from: client, to: server, protocol: tcp, port: 23, expect: allow}
- {name: h, from: client, to: server, protocol: tcp, port: 22, expect: allow}
)");
  EXPECT_EQ(r.exit_code(), 2) << "a check that could not run outweighs a failure";
  std::vector<std::string> details;
  for (const auto& o : r.outcomes) details.push_back(o.detail);
  EXPECT_EQ(details, (std::vector<std::string>{
                         "from: NetworkAttachment demo/ghost does not exist",
                         "from: NetworkAttachment demo/pending has no address yet (status.ipv4; is the IPAM controller running?)",
                         "from: NetworkAttachment demo/starting is not implemented on node node-2 yet (status.hostIP unset; "
                         "is its agent running?)",
                         "to: NetworkAttachment demo/broken is not implemented: node node-3 says: postCreateExec failed",
                         "node node-9: cannot connect to the KOS agent at /x: No such file",
                         "to: NetworkAttachment other/x does not exist",
                         "no answer in 1000 ms",
                         "connected in 0.3 ms",
                     }));
  EXPECT_EQ(r.count(Outcome::State::kError), 6);
  EXPECT_EQ(r.count(Outcome::State::kFailed), 1);
  EXPECT_EQ(r.count(Outcome::State::kOk), 1);
  const std::string table = format_table(r);
  EXPECT_NE(table.find("d      client    broken (10.1.0.8)  22/tcp  deny    -      ERROR   (to: NetworkAttachment demo/broken"),
            std::string::npos)
      << table;
  EXPECT_TRUE(table.ends_with("8 checks: 1 ok, 1 failed, 6 errors\n")) << table;
  EXPECT_EQ(cluster_.probes.size(), 3u) << "only the checks that could run were probed";
}

TEST(AgentSockets, FlagsThenTheUpDirThenTheDefault) {
  AgentSockets s;
  EXPECT_EQ(s.for_node("node-0"), "/var/lib/kos/agent/cni.sock");
  s.up_dir = "/tmp/kos-data";
  EXPECT_EQ(s.for_node("node-0"), "/tmp/kos-data/agents/node-0.cni.sock");
  ASSERT_TRUE(s.add_flag("/run/kos/a.sock"));
  EXPECT_EQ(s.for_node("node-0"), "/run/kos/a.sock");
  ASSERT_TRUE(s.add_flag("node-1=/run/kos/b=c.sock"));
  EXPECT_EQ(s.for_node("node-1"), "/run/kos/b=c.sock");
  EXPECT_EQ(s.for_node("node-0"), "/run/kos/a.sock");
  EXPECT_FALSE(s.add_flag("node-1=/elsewhere"));
  EXPECT_FALSE(s.add_flag("/again.sock"));
  EXPECT_FALSE(s.add_flag("Node_1=/x"));
  EXPECT_FALSE(s.add_flag("node-2="));
  EXPECT_FALSE(s.add_flag(""));
}

}  // namespace
}  // namespace kos::check
