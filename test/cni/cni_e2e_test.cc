// kos-cni end to end on a simulated 2-node cluster (test/e2e/cluster.h): real kernel VXLAN,
// the API server, the controller-manager and one agent per node as processes, and
// "containers" that are network namespaces of their own. The plugin is driven through
// libcni (the library containerd and CRI-O use, via test/cni/libcni_harness) for ADD, CHECK
// and DEL of a chain [kos-cni, tuning], and through the CNI exec protocol directly for the
// 1.1 verbs and the failure cases. Needs root; everything goes when a test ends.
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <fstream>

#include "test/support/skip.h"
#include "api/cidr.h"
#include "test/e2e/cluster.h"

namespace kos::e2e {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;
using ctltest::make_subnet;
using ctltest::poll_until;
using kos::testing::run;
using kos::testing::RunOptions;

const std::string kPlugin = KOS_CNI_PLUGIN;
const std::string kHarness = KOS_LIBCNI_HARNESS;
const std::string kCniPath = std::filesystem::path(KOS_CNI_PLUGIN).parent_path().string() + ":/usr/lib/cni";

class CniE2e : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) return;
    cluster_ = new Cluster(Cluster::Options{.nodes = 2});
    error_ = cluster_->start();
    if (!error_.empty()) return;
    auto c = cluster_->client();
    // Two tenants with the same CIDR on two VNIs.
    for (auto [ns, name, vni] : {std::tuple{"cni-a", "sa", 5101u}, std::tuple{"cni-b", "sb", 5102u}})
      if (!c->create(make_subnet(ns, name, "10.60.0.0/24", vni))) error_ = "cannot create subnet " + std::string(name);
    // A VPC with two subnets.
    api::Vpc v;
    v.metadata.namespace_ = "cni-v";
    v.metadata.name = "v";
    v.spec.vni = 5110;
    if (!c->create(v)) error_ = "cannot create the VPC";
    for (auto [name, cidr, vni] : {std::tuple{"v1", "10.61.0.0/24", 5111u}, std::tuple{"v2", "10.62.0.0/24", 5112u}}) {
      auto s = make_subnet("cni-v", name, cidr, vni);
      s.spec.vpc = "v";
      if (!c->create(s)) error_ = "cannot create subnet " + std::string(name);
    }
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override {
    if (geteuid() != 0) KOS_SKIP_UNLESS_CI() << "needs root (network namespaces)";
    ASSERT_TRUE(error_.empty()) << error_ << "\n" << (cluster_ ? cluster_->logs() : "");
    dir_ = std::make_unique<kos::testing::TempDir>("kos-cni");
  }
  void TearDown() override {
    for (const auto& n : containers_) run({"ip", "netns", "del", n});
    if (HasFailure() && cluster_) std::cerr << cluster_->logs();
    // Each test leaves the cluster as it found it.
    auto c = cluster_ ? cluster_->client() : nullptr;
    if (c) {
      for (const auto& na : c->list<api::NetworkAttachment>("").value_or(std::vector<api::NetworkAttachment>{}))
        (void)c->remove<api::NetworkAttachment>(na.metadata.namespace_, na.metadata.name);
    }
    if (cluster_) {
      EXPECT_TRUE(poll_until([&] { return nothing_left(); }, 30s)) << leftovers();
    }
  }

  // A container: a network namespace of this test (deleted by TearDown).
  std::string container(const std::string& tag) {
    const std::string n = cluster_->prefix() + "-ct-" + tag;
    EXPECT_EQ(must({"ip", "netns", "add", n}), "");
    containers_.push_back(n);
    return "/var/run/netns/" + n;
  }
  static std::string ns_name(const std::string& path) { return std::filesystem::path(path).filename().string(); }

  json::object plugin_conf(const std::string& tenant, int node, const std::string& version = "1.0.0") {
    return json::object{{"cniVersion", version},       {"name", "tenant-" + tenant}, {"type", "kos-cni"},
                        {"namespace", "cni-" + tenant}, {"subnet", "s" + tenant},    {"agentSocket", cluster_->cni_socket(node)},
                        {"timeoutSeconds", 20}};
  }
  // The conflist libcni runs: kos-cni, then the reference `tuning` plugin, which consumes
  // kos-cni's Result as its prevResult and changes the MTU in the container.
  std::string conflist(const std::string& tenant, int node) {
    auto p = plugin_conf(tenant, node);
    p.erase("cniVersion");
    p.erase("name");
    json::object list{{"cniVersion", "1.0.0"},
                      {"name", "tenant-" + tenant},
                      {"plugins", json::array{p, json::object{{"type", "tuning"}, {"mtu", 1400}}}}};
    auto path = dir_->path() / ("tenant-" + tenant + "-node" + std::to_string(node) + ".conflist");
    std::ofstream(path) << json::serialize(list);
    return path.string();
  }
  kos::testing::RunResult libcni(const std::string& op, const std::string& conflist, const std::string& id,
                                 const std::string& netns, const std::string& ifname = "eth0") {
    RunOptions o;
    o.env = {{"CNI_PATH", kCniPath}, {"KOS_CNI_CACHE_DIR", (dir_->path() / "cache").string()}};
    return run({kHarness, op, conflist, id, netns, ifname}, o);
  }
  // The exec protocol, as the spec defines it.
  kos::testing::RunResult exec(const std::string& command, const json::object& conf, const std::string& id = {},
                               const std::string& netns = {}, const std::string& ifname = "eth0") {
    RunOptions o;
    o.env = {{"CNI_COMMAND", command}, {"CNI_PATH", kCniPath}};
    if (!id.empty()) o.env.insert(o.env.end(), {{"CNI_CONTAINERID", id}, {"CNI_IFNAME", ifname}});
    if (!netns.empty()) o.env.push_back({"CNI_NETNS", netns});
    o.stdin_data = json::serialize(conf);
    return run({kPlugin}, o);
  }
  // An ADD through the exec protocol in a child process (to kill it midway).
  std::unique_ptr<kos::testing::ChildProcess> background_add(const json::object& conf, const std::string& id,
                                                             const std::string& netns) {
    const auto path = dir_->path() / (id + ".json");
    std::ofstream(path) << json::serialize(conf);
    return std::make_unique<kos::testing::ChildProcess>(std::vector<std::string>{
        "env", "CNI_COMMAND=ADD", "CNI_CONTAINERID=" + id, "CNI_IFNAME=eth0", "CNI_NETNS=" + netns,
        "CNI_PATH=" + kCniPath, "sh", "-c", "exec \"$0\" < \"$1\"", kPlugin, path.string()});
  }
  static int64_t code(const kos::testing::RunResult& r) {
    if (r.exit_code == 0) return 0;
    boost::system::error_code ec;
    auto v = json::parse(r.out, ec);
    if (ec || !v.is_object() || !v.as_object().contains("code")) return -1;
    return v.as_object().at("code").as_int64();
  }
  static std::string address_of(const std::string& result) {
    auto v = json::parse(result).as_object();
    std::string a(v.at("ips").as_array().at(0).as_object().at("address").as_string());
    return a.substr(0, a.find('/'));
  }

  std::vector<api::NetworkAttachment> attachments() {
    return cluster_->client()->list<api::NetworkAttachment>("").value_or(std::vector<api::NetworkAttachment>{});
  }
  size_t iplocks() { return cluster_->client()->list<api::IPLock>("").value_or(std::vector<api::IPLock>{}).size(); }
  // No attachment, no IPLock, no KOS interface on any node, no interface but lo in any
  // container of this test.
  bool nothing_left() {
    if (!attachments().empty() || iplocks() != 0) return false;
    for (int i = 0; i < cluster_->nodes(); ++i) {
      auto k = cluster_->kernel_state(i);
      if (!k.locals.empty() || !k.guest_ends.empty() || !k.other_kos_links.empty()) return false;
    }
    for (const auto& n : containers_) {
      auto r = run({"ip", "-n", n, "-o", "link", "show"});
      if (r.exit_code == 0 && r.out.find("eth") != std::string::npos) return false;
    }
    return true;
  }
  std::string leftovers() {
    std::string s = "attachments=" + std::to_string(attachments().size()) + " iplocks=" + std::to_string(iplocks());
    for (int i = 0; i < cluster_->nodes(); ++i) s += "\nnode " + std::to_string(i) + ": " + describe(cluster_->kernel_state(i));
    return s;
  }

  static inline Cluster* cluster_ = nullptr;
  static inline std::string error_;
  std::unique_ptr<kos::testing::TempDir> dir_;
  std::vector<std::string> containers_;
};

TEST_F(CniE2e, ThroughLibcniContainersOnTwoNodesPingAndAnotherVniCannot) {
  const std::string c1 = container("c1"), c2 = container("c2"), c3 = container("c3");
  const std::string a0 = conflist("a", 0), a1 = conflist("a", 1), b1 = conflist("b", 1);
  auto r1 = libcni("add", a0, "ctr-one", c1);
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  auto r2 = libcni("add", a1, "ctr-two", c2);
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  auto r3 = libcni("add", b1, "ctr-three", c3);
  ASSERT_EQ(r3.exit_code, 0) << r3.err;

  // The Result as libcni returns it after the whole chain.
  auto res = json::parse(r1.out).as_object();
  EXPECT_EQ(res.at("cniVersion"), "1.0.0");
  auto ifc = res.at("interfaces").as_array().at(0).as_object();
  EXPECT_EQ(ifc.at("name"), "eth0");
  EXPECT_EQ(ifc.at("sandbox"), json::value(c1));
  auto ip = res.at("ips").as_array().at(0).as_object();
  EXPECT_EQ(ip.at("interface"), 0);
  EXPECT_EQ(ip.at("gateway"), "10.60.0.1");
  const std::string ip1 = address_of(r1.out), ip2 = address_of(r2.out), ip3 = address_of(r3.out);
  EXPECT_NE(ip1, ip2);
  // The container's interface: the attachment's MAC and address, tuning's MTU.
  auto link = run({"ip", "-n", ns_name(c1), "-j", "addr", "show", "dev", "eth0"});
  ASSERT_EQ(link.exit_code, 0) << link.err;
  auto l = json::parse(link.out).as_array().at(0).as_object();
  EXPECT_EQ(l.at("address"), ifc.at("mac"));
  EXPECT_EQ(l.at("mtu"), 1400) << "tuning ran after kos-cni on its Result";
  EXPECT_NE(link.out.find(ip1), std::string::npos);

  EXPECT_TRUE(ping(ns_name(c1), ip2, 3)) << "node 0 -> node 1 within tenant a";
  EXPECT_TRUE(ping(ns_name(c2), ip1, 3)) << "node 1 -> node 0 within tenant a";
  int tried = 0;
  for (const auto& target : {ip1, ip2})
    if (target != ip3) {
      ++tried;
      EXPECT_FALSE(ping(ns_name(c3), target, 2)) << "tenant b reached tenant a's " << target;
    }
  EXPECT_GT(tried, 0);

  for (auto [list, id, path] : {std::tuple{a0, "ctr-one", c1}, std::tuple{a1, "ctr-two", c2}, std::tuple{b1, "ctr-three", c3}}) {
    auto chk = libcni("check", list, id, path);
    EXPECT_EQ(chk.exit_code, 0) << id << ": " << chk.err;
  }
  // CHECK notices a container whose interface lost its address.
  ASSERT_EQ(must({"ip", "-n", ns_name(c1), "addr", "flush", "dev", "eth0"}), "");
  auto broken = libcni("check", a0, "ctr-one", c1);
  EXPECT_NE(broken.exit_code, 0);
  EXPECT_NE(broken.err.find("code=102"), std::string::npos) << broken.err;

  for (auto [list, id, path] : {std::tuple{a0, "ctr-one", c1}, std::tuple{a1, "ctr-two", c2}, std::tuple{b1, "ctr-three", c3}}) {
    auto del = libcni("del", list, id, path);
    EXPECT_EQ(del.exit_code, 0) << id << ": " << del.err;
  }
  EXPECT_TRUE(attachments().empty()) << "DEL returns after the attachment is gone";
  EXPECT_TRUE(poll_until([&] { return nothing_left(); }, 30s)) << leftovers();
  auto again = libcni("del", a0, "ctr-one", c1);
  EXPECT_EQ(again.exit_code, 0) << "DEL of what is gone succeeds: " << again.err;
}

// Containers on two subnets of a VPC: the Result names the gateway and the routes through
// it, the container routes through it, and the two reach each other across nodes.
TEST_F(CniE2e, ContainersOnTwoSubnetsOfAVpcRouteThroughTheirGateway) {
  ASSERT_TRUE(poll_until([&] {
    for (const char* s : {"v1", "v2"}) {
      auto sn = cluster_->client()->get<api::Subnet>("cni-v", s);
      if (!sn || !sn->status.validated) return false;
    }
    return true;
  }, 30s));
  const std::string c1 = container("v1"), c2 = container("v2");
  auto conf = [&](const std::string& subnet, int node) {
    auto p = plugin_conf("v", node);
    p["subnet"] = subnet;
    return p;
  };
  auto r1 = exec("ADD", conf("v1", 0), "ctr-v1", c1);
  ASSERT_EQ(r1.exit_code, 0) << r1.out << r1.err;
  auto r2 = exec("ADD", conf("v2", 1), "ctr-v2", c2);
  ASSERT_EQ(r2.exit_code, 0) << r2.out << r2.err;
  auto res = json::parse(r1.out).as_object();
  EXPECT_EQ(res.at("ips").as_array().at(0).as_object().at("gateway"), "10.61.0.1");
  const auto& routes = res.at("routes").as_array();
  EXPECT_NE(std::find(routes.begin(), routes.end(), json::value(json::object{{"dst", "0.0.0.0/0"}, {"gw", "10.61.0.1"}})),
            routes.end())
      << r1.out;
  auto table = run({"ip", "-n", ns_name(c1), "route", "show", "default"});
  EXPECT_NE(table.out.find("default via 10.61.0.1 dev eth0"), std::string::npos) << table.out << table.err;
  const std::string ip1 = address_of(r1.out), ip2 = address_of(r2.out);
  EXPECT_TRUE(ping(ns_name(c1), ip2, 3)) << "v1 on node 0 -> v2 on node 1, routed";
  EXPECT_TRUE(ping(ns_name(c2), ip1, 3)) << "v2 on node 1 -> v1 on node 0, routed";
  EXPECT_EQ(exec("DEL", conf("v1", 0), "ctr-v1", c1).exit_code, 0);
  EXPECT_EQ(exec("DEL", conf("v2", 1), "ctr-v2", c2).exit_code, 0);
}

TEST_F(CniE2e, AddTwiceIsIdempotentAndDelWithoutTheNamespaceCleansUp) {
  const std::string c = container("twice");
  auto conf = plugin_conf("a", 0);
  auto r1 = exec("ADD", conf, "ctr-twice", c);
  ASSERT_EQ(r1.exit_code, 0) << r1.out << r1.err;
  auto r2 = exec("ADD", conf, "ctr-twice", c);
  ASSERT_EQ(r2.exit_code, 0) << r2.out << r2.err;
  EXPECT_EQ(json::parse(r1.out), json::parse(r2.out));
  EXPECT_EQ(attachments().size(), 1u);
  EXPECT_EQ(iplocks(), 1u);
  // The runtime deleted the namespace first.
  ASSERT_EQ(must({"ip", "netns", "del", ns_name(c)}), "");
  auto del = exec("DEL", conf, "ctr-twice", c);
  EXPECT_EQ(del.exit_code, 0) << del.out << del.err;
  EXPECT_TRUE(poll_until([&] { return nothing_left(); }, 30s)) << leftovers();
}

TEST_F(CniE2e, StatusAndGcThroughTheExecProtocol) {
  auto conf = plugin_conf("a", 0, "1.1.0");
  auto st = exec("STATUS", conf);
  EXPECT_EQ(st.exit_code, 0) << st.out << st.err;
  auto nowhere = conf;
  nowhere["agentSocket"] = (dir_->path() / "nobody.sock").string();
  EXPECT_EQ(code(exec("STATUS", nowhere)), 50);

  const std::string keep = container("keep"), drop = container("drop");
  ASSERT_EQ(exec("ADD", conf, "ctr-keep", keep).exit_code, 0);
  ASSERT_EQ(exec("ADD", conf, "ctr-drop", drop).exit_code, 0);
  auto other = plugin_conf("b", 0, "1.1.0");
  const std::string b = container("otherb");
  ASSERT_EQ(exec("ADD", other, "ctr-b", b).exit_code, 0);
  auto gc = conf;
  gc["cni.dev/valid-attachments"] = json::array{json::object{{"containerID", "ctr-keep"}, {"ifname", "eth0"}}};
  auto g = exec("GC", gc);
  ASSERT_EQ(g.exit_code, 0) << g.out << g.err;
  std::set<std::string> left;
  for (const auto& na : attachments()) left.insert(na.metadata.annotations.at("cni.network.example.com/container-id"));
  EXPECT_EQ(left, (std::set<std::string>{"ctr-keep", "ctr-b"})) << "GC of tenant-a keeps its valid one and tenant-b's";
  EXPECT_TRUE(poll_until([&] { return iplocks() == 2; }, 30s));
  for (auto [cf, id, path] : {std::tuple{conf, "ctr-keep", keep}, std::tuple{other, "ctr-b", b}})
    EXPECT_EQ(exec("DEL", cf, id, path).exit_code, 0);
}

TEST_F(CniE2e, KillingThePluginMidAddThenDelLeaksNothing) {
  const std::string c = container("killed");
  auto conf = plugin_conf("a", 1);
  // ADD in the background, killed once its attachment exists (before the Result is out).
  auto add = background_add(conf, "ctr-killed", c);
  ASSERT_TRUE(poll_until([&] { return !attachments().empty(); }, 20s));
  add->signal(SIGKILL);
  (void)add->wait(5s);
  auto del = exec("DEL", conf, "ctr-killed", c);
  EXPECT_EQ(del.exit_code, 0) << del.out << del.err;
  EXPECT_TRUE(poll_until([&] { return nothing_left(); }, 30s)) << leftovers();
}

TEST_F(CniE2e, KillingTheAgentMidAddThenAddAgainGivesTheSameAddress) {
  const std::string c = container("agentkill");
  auto conf = plugin_conf("a", 0);
  // With the controllers stopped the ADD waits for an address; the agent dies meanwhile.
  cluster_->controllers().stop();
  auto add = background_add(conf, "ctr-agentkill", c);
  ASSERT_TRUE(poll_until([&] { return !attachments().empty(); }, 20s));
  cluster_->agent(0).kill9();
  auto st = add->wait(10s);
  ASSERT_TRUE(st) << "the plugin returns when its agent dies";
  EXPECT_NE(*st, 0);
  cluster_->controllers().start();
  ASSERT_TRUE(poll_until([&] { return !attachments().empty() && !attachments()[0].status.ipv4.empty(); }, 30s));
  const std::string address = attachments()[0].status.ipv4;
  cluster_->agent(0).start();
  // As a CNI 1.1 runtime does: STATUS until the plugin can serve ADD.
  ASSERT_TRUE(poll_until([&] { return exec("STATUS", plugin_conf("a", 0, "1.1.0")).exit_code == 0; }, 30s));
  auto again = exec("ADD", conf, "ctr-agentkill", c);
  ASSERT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_EQ(address_of(again.out), address);
  EXPECT_EQ(attachments().size(), 1u);
  EXPECT_EQ(iplocks(), 1u);
  EXPECT_EQ(exec("DEL", conf, "ctr-agentkill", c).exit_code, 0);
  EXPECT_TRUE(poll_until([&] { return nothing_left(); }, 30s)) << leftovers();
}

TEST_F(CniE2e, BadConfigsAndEnvironmentsGetTheRightCodes) {
  const std::string c = container("bad");
  auto conf = plugin_conf("a", 0);
  auto with = [&](const char* k, json::value v) {
    auto o = conf;
    o[k] = std::move(v);
    return o;
  };
  EXPECT_EQ(code(exec("ADD", with("cniVersion", "0.2.0"), "ctr-bad", c)), 1);
  auto nosubnet = conf;
  nosubnet.erase("subnet");
  EXPECT_EQ(code(exec("ADD", nosubnet, "ctr-bad", c)), 7);
  EXPECT_EQ(code(exec("ADD", with("subnet", "does-not-exist"), "ctr-bad", c)), 11);
  EXPECT_EQ(code(exec("ADD", conf, "ctr-bad", c, "an-interface-name-too-long")), 4);
  EXPECT_EQ(code(exec("ADD", conf, "bad/id", c)), 4);
  EXPECT_EQ(code(exec("ADD", conf, "ctr-bad", "/var/run/netns/kos-none-such-netns")), 3);
  EXPECT_EQ(code(exec("ADD", with("agentSocket", json::value((dir_->path() / "x.sock").string())), "ctr-bad", c)), 100);
  {
    RunOptions o;
    o.env = {{"CNI_COMMAND", "ADD"}, {"CNI_CONTAINERID", "ctr-bad"}, {"CNI_IFNAME", "eth0"}, {"CNI_NETNS", c}};
    o.stdin_data = "{oops";
    auto r = run({kPlugin}, o);
    EXPECT_EQ(code(r), 6) << r.out;
  }
  auto v = exec("VERSION", conf);
  ASSERT_EQ(v.exit_code, 0);
  EXPECT_EQ(json::parse(v.out).as_object().at("supportedVersions"), json::parse(R"(["0.4.0","1.0.0","1.1.0"])"));
  EXPECT_TRUE(attachments().empty()) << "nothing half-made after an error";
}

}  // namespace
}  // namespace kos::e2e
