// kos-cni's translation of CNI invocations into local API requests and of answers into
// Results and CNI errors, against a recording fake agent (no socket, no root).
#include "cni/plugin.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

namespace kos::cni {
namespace {
namespace json = boost::json;

struct FakeAgent {
  std::vector<Request> seen;
  std::string socket;
  Result<Response> answer = Response{};
  AgentCall fn() {
    return [this](const std::string& s, const Request& r, std::chrono::milliseconds) {
      socket = s;
      seen.push_back(r);
      return answer;
    };
  }
};

const char* kConf = R"({"cniVersion":"1.0.0","name":"tenant-a","type":"kos-cni","namespace":"ns1","subnet":"s1",
                        "agentSocket":"/run/test/cni.sock"})";

Invocation inv(const std::string& command, std::string conf = kConf, std::map<std::string, std::string> extra = {}) {
  Invocation i;
  i.env = {{"CNI_COMMAND", command}, {"CNI_CONTAINERID", "c0ffee"}, {"CNI_IFNAME", "eth0"},
           {"CNI_NETNS", "/proc/self/ns/net"}, {"CNI_PATH", "/usr/lib/cni"}};
  for (auto& [k, v] : extra) {
    if (v == "<unset>") i.env.erase(k);
    else i.env[k] = v;
  }
  i.stdin_data = std::move(conf);
  return i;
}

json::object out_json(const Outcome& o) { return json::parse(o.stdout_data).as_object(); }
int64_t code_of(const Outcome& o) {
  EXPECT_NE(o.exit_code, 0) << o.stdout_data;
  return out_json(o).at("code").as_int64();
}

std::string with(const std::string& k, const std::string& v) {
  auto o = json::parse(kConf).as_object();
  if (v == "<unset>") o.erase(k);
  else o[k] = json::parse(v);
  return json::serialize(o);
}

TEST(CniPlugin, VersionListsTheThreeVersions) {
  FakeAgent a;
  auto o = run(inv("VERSION", ""), a.fn());
  ASSERT_EQ(o.exit_code, 0);
  auto j = out_json(o);
  EXPECT_EQ(j.at("supportedVersions"), json::parse(R"(["0.4.0","1.0.0","1.1.0"])"));
  EXPECT_TRUE(a.seen.empty());
}

TEST(CniPlugin, AddSendsTheRequestAndPrintsTheResult) {
  FakeAgent a;
  Response r;
  r.attachment = "ns1/cni-0123456789abcdef";
  r.ifname = "eth0";
  r.mac = "0a:00:0a:0a:00:65";
  r.sandbox = "/proc/self/ns/net";
  r.address = "10.10.0.2/24";
  r.gateway = "10.10.0.1";
  r.routes = {"10.10.0.0/24"};
  a.answer = r;
  auto o = run(inv("ADD", kConf, {{"CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;FOO=bar"}}),
               a.fn());
  ASSERT_EQ(o.exit_code, 0) << o.stdout_data;
  ASSERT_EQ(a.seen.size(), 1u);
  const Request& q = a.seen[0];
  EXPECT_EQ(a.socket, "/run/test/cni.sock");
  EXPECT_EQ(q.op, "add");
  EXPECT_EQ(q.container_id, "c0ffee");
  EXPECT_EQ(q.ifname, "eth0");
  EXPECT_EQ(q.network, "tenant-a");
  EXPECT_EQ(q.ns, "ns1");
  EXPECT_EQ(q.subnet, "s1");
  EXPECT_EQ(q.timeout_ms, 30000);
  EXPECT_EQ(q.args, (std::map<std::string, std::string>{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "web"}}));
  EXPECT_EQ(out_json(o), json::parse(R"({"cniVersion":"1.0.0",
      "interfaces":[{"name":"eth0","mac":"0a:00:0a:0a:00:65","sandbox":"/proc/self/ns/net"}],
      "ips":[{"address":"10.10.0.2/24","interface":0,"gateway":"10.10.0.1"}],
      "routes":[{"dst":"10.10.0.0/24"}],"dns":{}})"));

  // 0.4.0 Results carry the IP version.
  auto o4 = run(inv("ADD", with("cniVersion", "\"0.4.0\"")), a.fn());
  ASSERT_EQ(o4.exit_code, 0) << o4.stdout_data;
  EXPECT_EQ(out_json(o4).at("ips").as_array()[0].as_object().at("version"), "4");
  EXPECT_EQ(out_json(o4).at("cniVersion"), "0.4.0");
}

TEST(CniPlugin, CniArgsOverrideNamespaceAndSubnet) {
  FakeAgent a;
  ASSERT_EQ(run(inv("ADD", kConf, {{"CNI_ARGS", "KOS_NAMESPACE=ns2;KOS_SUBNET=s2"}}), a.fn()).exit_code, 0);
  EXPECT_EQ(a.seen.at(0).ns, "ns2");
  EXPECT_EQ(a.seen.at(0).subnet, "s2");
}

TEST(CniPlugin, BadConfigsAndEnvironmentsGetTheirCodes) {
  FakeAgent a;
  EXPECT_EQ(code_of(run(inv("ADD", "{not json"), a.fn())), kDecodeFailure);
  EXPECT_EQ(code_of(run(inv("ADD", "[1]"), a.fn())), kDecodeFailure);
  EXPECT_EQ(code_of(run(inv("ADD", with("cniVersion", "\"0.3.1\"")), a.fn())), kIncompatibleVersion);
  EXPECT_EQ(code_of(run(inv("ADD", with("cniVersion", "<unset>")), a.fn())), kInvalidConfig);
  EXPECT_EQ(code_of(run(inv("ADD", with("type", "\"../../bin/sh\"")), a.fn())), kInvalidConfig);
  EXPECT_EQ(code_of(run(inv("ADD", with("name", "\"\"")), a.fn())), kInvalidConfig);
  EXPECT_EQ(code_of(run(inv("ADD", with("namespace", "<unset>")), a.fn())), kInvalidConfig);
  EXPECT_EQ(code_of(run(inv("ADD", with("subnet", "7")), a.fn())), kInvalidConfig);
  EXPECT_EQ(code_of(run(inv("ADD", with("agentSocket", "\"relative.sock\"")), a.fn())), kInvalidConfig);
  EXPECT_EQ(code_of(run(inv("ADD", with("timeoutSeconds", "0")), a.fn())), kInvalidConfig);
  EXPECT_EQ(code_of(run(inv("ADD", with("timeoutSeconds", "\"5\"")), a.fn())), kInvalidConfig);
  EXPECT_EQ(code_of(run(inv("ADD", with("runtimeConfig", R"({"ips":["10.0.0.5/24"]})")), a.fn())), kUnsupportedField);
  EXPECT_EQ(code_of(run(inv("", kConf), a.fn())), kInvalidEnvironment);
  EXPECT_EQ(code_of(run(inv("SPIN", kConf), a.fn())), kInvalidEnvironment);
  EXPECT_EQ(code_of(run(inv("ADD", kConf, {{"CNI_CONTAINERID", "<unset>"}}), a.fn())), kInvalidEnvironment);
  EXPECT_EQ(code_of(run(inv("ADD", kConf, {{"CNI_IFNAME", "<unset>"}}), a.fn())), kInvalidEnvironment);
  EXPECT_EQ(code_of(run(inv("ADD", kConf, {{"CNI_NETNS", "<unset>"}}), a.fn())), kInvalidEnvironment);
  EXPECT_EQ(code_of(run(inv("ADD", kConf, {{"CNI_ARGS", "nokey"}}), a.fn())), kInvalidEnvironment);
  EXPECT_EQ(code_of(run(inv("ADD", kConf, {{"CNI_ARGS", "IP=10.0.0.9"}}), a.fn())), kUnsupportedField);
  EXPECT_EQ(code_of(run(inv("ADD", kConf, {{"CNI_ARGS", "FOO=bar"}}), a.fn())), kUnsupportedField);
  EXPECT_EQ(code_of(run(inv("STATUS"), a.fn())), kIncompatibleVersion);  // a 1.1 verb on a 1.0.0 config
  EXPECT_EQ(code_of(run(inv("CHECK"), a.fn())), kInvalidConfig);         // no prevResult
  EXPECT_TRUE(a.seen.empty()) << "nothing reaches the agent from a bad invocation";
  // The error JSON a runtime reads.
  auto o = run(inv("ADD", with("cniVersion", "\"9.9.9\"")), a.fn());
  auto j = out_json(o);
  EXPECT_TRUE(j.contains("cniVersion"));
  EXPECT_NE(std::string(j.at("msg").as_string()).find("0.4.0, 1.0.0 and 1.1.0"), std::string::npos);
}

TEST(CniPlugin, AgentFailuresBecomeCniErrors) {
  FakeAgent a;
  a.answer = fail(Errc::kUnavailable, "cannot connect to the KOS agent");
  EXPECT_EQ(code_of(run(inv("ADD"), a.fn())), kAgentUnreachable);
  EXPECT_EQ(code_of(run(inv("STATUS", with("cniVersion", "\"1.1.0\"")), a.fn())), kNotAvailable);
  a.answer = fail(Errc::kTimeout, "did not answer");
  EXPECT_EQ(code_of(run(inv("ADD"), a.fn())), kTryAgainLater);
  a.answer = Response::error(kTryAgainLater, "not ready: no address yet", "why");
  auto o = run(inv("ADD"), a.fn());
  EXPECT_EQ(code_of(o), kTryAgainLater);
  EXPECT_EQ(out_json(o).at("msg"), "not ready: no address yet");
  EXPECT_EQ(out_json(o).at("details"), "why");
}

TEST(CniPlugin, CheckSendsPrevResultAndGcTheValidList) {
  FakeAgent a;
  auto conf = with("prevResult", R"({"cniVersion":"1.0.0","interfaces":[{"name":"veth0"},{"name":"eth0","mac":"0a:00:0a:0a:00:65","sandbox":"/x"}],
                                    "ips":[{"address":"10.10.0.2/24","interface":1}]})");
  ASSERT_EQ(run(inv("CHECK", conf), a.fn()).exit_code, 0);
  EXPECT_EQ(a.seen.at(0).op, "check");
  EXPECT_EQ(a.seen.at(0).prev_address, "10.10.0.2/24");
  EXPECT_EQ(a.seen.at(0).prev_mac, "0a:00:0a:0a:00:65");
  EXPECT_EQ(code_of(run(inv("CHECK", with("prevResult", R"({"interfaces":[]})")), a.fn())), kMismatch);

  auto gc = json::parse(with("cniVersion", "\"1.1.0\"")).as_object();
  gc["cni.dev/valid-attachments"] = json::parse(R"([{"containerID":"c1","ifname":"eth0"},{"containerID":"c2","ifname":"net1"}])");
  gc.erase("namespace");
  auto g = inv("GC", json::serialize(gc), {{"CNI_CONTAINERID", "<unset>"}, {"CNI_IFNAME", "<unset>"}, {"CNI_NETNS", "<unset>"}});
  ASSERT_EQ(run(g, a.fn()).exit_code, 0);
  EXPECT_EQ(a.seen.back().op, "gc");
  EXPECT_EQ(a.seen.back().network, "tenant-a");
  EXPECT_EQ(a.seen.back().valid, (std::vector<std::pair<std::string, std::string>>{{"c1", "eth0"}, {"c2", "net1"}}));
}

TEST(CniPlugin, DelWithAMissingNetnsStillAsksTheAgent) {
  FakeAgent a;
  auto o = run(inv("DEL", kConf, {{"CNI_NETNS", "/var/run/netns/kos-none-such-ns"}}), a.fn());
  ASSERT_EQ(o.exit_code, 0) << o.stdout_data;
  EXPECT_EQ(o.stdout_data, "");
  EXPECT_EQ(a.seen.at(0).op, "del");
  EXPECT_EQ(a.seen.at(0).netns, "");
}

TEST(CniProtocol, RequestsAndResponsesRoundTrip) {
  Request q;
  q.op = "gc";
  q.network = "n";
  q.valid = {{"a", "eth0"}};
  q.args = {{"K8S_POD_NAME", "p"}};
  q.timeout_ms = 5;
  EXPECT_EQ(decode_request(encode(q)).value(), q);
  Response r;
  r.code = 11;
  r.msg = "m";
  r.routes = {"10.0.0.0/8"};
  r.deleted = {"ns/x"};
  EXPECT_EQ(decode_response(encode(r)).value(), r);
  EXPECT_FALSE(decode_request("nope"));
}

TEST(CniProtocol, ProbeRequestsAndAnswersRoundTrip) {
  Request q;
  q.op = "probe";
  q.ns = "demo";
  q.attachment = "client";
  q.uid = "u-1";
  q.target = "10.1.0.3";
  q.protocol = "tcp";
  q.port = 22;
  q.timeout_ms = 1000;
  EXPECT_EQ(decode_request(encode(q)).value(), q);
  EXPECT_EQ(encode(q),
            R"({"op":"probe","namespace":"demo","timeoutMs":1000,"attachment":"client","uid":"u-1","target":"10.1.0.3","protocol":"tcp","port":22})");
  Response r;
  r.attachment = "demo/client";
  r.ifname = "eth0";
  r.sandbox = "/var/run/netns/guest-a";
  r.verdict = "deny";
  r.detail = "no answer in 1000 ms";
  r.elapsed_us = 1000123;
  EXPECT_EQ(decode_response(encode(r)).value(), r);
  // An out-of-range port is kept out of range (the agent refuses it), not wrapped.
  EXPECT_EQ(decode_request(R"({"op":"probe","port":4294967318})").value().port, 1 << 20);
  EXPECT_EQ(decode_request(R"({"op":"probe","port":-5})").value().port, -1);
}

}  // namespace
}  // namespace kos::cni
