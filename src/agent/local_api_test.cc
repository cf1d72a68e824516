// The agent's local API (what kos-cni calls) over its real unix socket, with an agent on
// the fake fabric, a real API server, the subnet validator and the IPAM, in process.
#include "agent/local_api.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <mutex>

#include <gtest/gtest.h>

#include "api/cidr.h"
#include "agent/testing.h"
#include "fabric/fake/fake_fabric.h"

namespace kos::agent {
namespace {

using namespace std::chrono_literals;
using cni::Request;
using cni::Response;

class LocalApiTest : public testing::ControllersTest {
 protected:
  void SetUp() override {
    ControllersTest::SetUp();
    if (HasFatalFailure()) return;
    AgentOptions o;
    o.node = "node-a";
    o.host_ip = 0x0a090001;
    o.workers = 2;
    agent_ = std::make_unique<Agent>(c_, fabric_, o);
    ASSERT_TRUE(agent_->start().has_value());
    dir_ = std::filesystem::temp_directory_path() / ("kos-localapi-" + std::to_string(getpid()) + "-" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    socket_ = (dir_ / "cni.sock").string();
    api_ = std::make_unique<LocalApi>(c_, *agent_, fabric_, LocalApiOptions{socket_});
    ASSERT_TRUE(api_->start().has_value());
    api::Subnet s;
    s.metadata.namespace_ = "ns1";
    s.metadata.name = "s1";
    s.spec.vni = 7;
    s.spec.ipv4 = "10.10.0.0/24";
    ASSERT_TRUE(c_->create(s).has_value());
  }
  void TearDown() override {
    if (api_) api_->stop();
    if (agent_) agent_->stop();
    std::filesystem::remove_all(dir_);
    ControllersTest::TearDown();
  }

  Request req(const std::string& op, const std::string& container = "c1", const std::string& ifname = "eth0") {
    Request r;
    r.op = op;
    r.container_id = container;
    r.ifname = ifname;
    r.netns = "/proc/self/ns/net";  // the fake fabric plugs into any path; the agent checks it exists
    r.network = "tenant-a";
    r.ns = "ns1";
    r.subnet = "s1";
    r.timeout_ms = 10000;
    return r;
  }
  Response call(const Request& r) {
    auto a = cni::call(socket_, r, 30s);
    EXPECT_TRUE(a) << a.error().message;
    return a ? *a : Response::error(-1, a.error().message);
  }
  std::vector<api::NetworkAttachment> attachments() { return c_->list<api::NetworkAttachment>("ns1").value(); }

  fabric::FakeFabric fabric_;
  std::unique_ptr<Agent> agent_;
  std::filesystem::path dir_;
  std::string socket_;
  std::unique_ptr<LocalApi> api_;
};

TEST_F(LocalApiTest, AddAttachesThePluggedInterfaceAndIsIdempotent) {
  struct stat st{};
  ASSERT_EQ(::stat(socket_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "only root may use the local API";

  auto r = call(req("add"));
  ASSERT_EQ(r.code, 0) << r.msg;
  const std::string name = cni_attachment_name("node-a", "c1", "eth0");
  EXPECT_EQ(r.attachment, "ns1/" + name);
  EXPECT_EQ(r.ifname, "eth0");
  EXPECT_EQ(r.sandbox, "/proc/self/ns/net");
  EXPECT_EQ(r.gateway, "10.10.0.1");
  EXPECT_EQ(r.routes, std::vector<std::string>{"10.10.0.0/24"});
  ASSERT_TRUE(r.address.starts_with("10.10.0.") && r.address.ends_with("/24")) << r.address;

  auto na = c_->get<api::NetworkAttachment>("ns1", name).value();
  EXPECT_EQ(na.spec.node, "node-a");
  EXPECT_EQ(na.spec.subnet, "s1");
  EXPECT_EQ(na.metadata.labels.at(kCniPluginLabel), "kos-cni");
  EXPECT_EQ(na.metadata.annotations.at(kCniContainerAnnotation), "c1");
  EXPECT_EQ(na.metadata.annotations.at(kCniIfnameAnnotation), "eth0");
  EXPECT_EQ(na.metadata.annotations.at(kCniNetworkAnnotation), "tenant-a");
  EXPECT_EQ(na.status.ipv4 + "/24", r.address);
  auto seen = fabric_.inspect("/proc/self/ns/net", "eth0");
  ASSERT_TRUE(seen) << seen.error().message;
  EXPECT_EQ(api::format_mac(seen->mac), r.mac);
  EXPECT_EQ(r.mac, api::format_mac(api::guest_mac(api::parse_ipv4(na.status.ipv4).value(), 7)));

  auto again = call(req("add"));
  EXPECT_EQ(again, r) << "a second ADD answers the same";
  EXPECT_EQ(attachments().size(), 1u);

  auto chk = call(req("check"));
  EXPECT_EQ(chk.code, 0) << chk.msg;
  auto bad = req("check");
  bad.prev_address = "10.10.0.250/24";
  EXPECT_EQ(call(bad).code, cni::kMismatch);
}

TEST_F(LocalApiTest, DelRemovesTheAttachmentAndItsInterfaceAndSucceedsWhenGone) {
  auto r = call(req("add"));
  ASSERT_EQ(r.code, 0) << r.msg;
  auto d = req("del");
  d.netns.clear();  // the container's namespace may be gone by now
  auto del = call(d);
  ASSERT_EQ(del.code, 0) << del.msg;
  EXPECT_TRUE(attachments().empty());
  EXPECT_TRUE(fabric_.locals().empty()) << "DEL returns once the node has removed the interface";
  EXPECT_FALSE(fabric_.inspect("/proc/self/ns/net", "eth0"));
  EXPECT_EQ(call(d).code, 0) << "DEL of what is gone succeeds";
  EXPECT_EQ(call(req("del", "never-added")).code, 0);
  EXPECT_EQ(call(req("check")).code, cni::kUnknownContainer);
}

TEST_F(LocalApiTest, AnAddThatCannotCompleteSaysWhyAndLeavesNothing) {
  auto missing = req("add");
  missing.subnet = "s9";
  auto m = call(missing);
  EXPECT_EQ(m.code, cni::kTryAgainLater);
  EXPECT_NE(m.msg.find("Subnet ns1/s9 does not exist"), std::string::npos) << m.msg;
  EXPECT_TRUE(attachments().empty());

  ipam_->stop();  // nobody hands out addresses
  auto q = req("add");
  q.timeout_ms = 500;
  auto r = call(q);
  EXPECT_EQ(r.code, cni::kTryAgainLater);
  EXPECT_NE(r.msg.find("no address yet"), std::string::npos) << r.msg;
  EXPECT_TRUE(attachments().empty()) << "the failed ADD deleted the attachment it made";

  auto gone = req("add");
  gone.netns = "/var/run/netns/kos-localapi-none-such";
  EXPECT_EQ(call(gone).code, cni::kUnknownContainer);
  auto bad = req("add", "c1", "a-name-too-long-for-linux");
  EXPECT_EQ(call(bad).code, cni::kInvalidEnvironment);
  auto badns = req("add");
  badns.ns = "Not_A_Namespace";
  EXPECT_EQ(call(badns).code, cni::kInvalidConfig);
  EXPECT_EQ(call(req("spin")).code, cni::kDecodeFailure);
  EXPECT_TRUE(attachments().empty());

  // A name the container already uses for another interface: refused, and undone.
  ipam_ = std::make_unique<controllers::Ipam>(c_);
  ASSERT_TRUE(ipam_->start().has_value());
  ASSERT_EQ(call(req("add", "c1", "eth0")).code, 0);
  auto clash = call(req("add", "c2", "eth0"));
  EXPECT_EQ(clash.code, cni::kInvalidEnvironment);
  EXPECT_NE(clash.msg.find("already has an interface eth0"), std::string::npos) << clash.msg;
  EXPECT_EQ(attachments().size(), 1u) << "the refused ADD deleted the attachment it made";
  EXPECT_EQ(fabric_.locals().size(), 1u);
}

TEST_F(LocalApiTest, ADelCancelsAnAddInProgress) {
  ipam_->stop();
  auto q = req("add");
  q.timeout_ms = 60000;
  auto pending = std::async(std::launch::async, [&] { return cni::call(socket_, q, 90s); });
  // The ADD has made its attachment and waits for an address.
  auto t0 = std::chrono::steady_clock::now();
  while (attachments().empty() && std::chrono::steady_clock::now() - t0 < 10s) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(attachments().size(), 1u);
  auto del = call(req("del"));
  EXPECT_EQ(del.code, 0) << del.msg;
  ASSERT_EQ(pending.wait_for(10s), std::future_status::ready) << "the ADD gave up";
  auto add = pending.get();
  ASSERT_TRUE(add);
  EXPECT_EQ(add->code, cni::kTryAgainLater);
  EXPECT_NE(add->msg.find("DEL"), std::string::npos) << add->msg;
  EXPECT_TRUE(attachments().empty());
}

TEST_F(LocalApiTest, GcDeletesThisNetworksAttachmentsThatAreNotValid) {
  // One namespace for all (the fake fabric's), so each container has its own interface name.
  ASSERT_EQ(call(req("add", "c1", "eth1")).code, 0);
  ASSERT_EQ(call(req("add", "c2", "eth2")).code, 0);
  auto other = req("add", "c3", "eth3");
  other.network = "tenant-b";
  ASSERT_EQ(call(other).code, 0);
  Request gc;
  gc.op = "gc";
  gc.network = "tenant-a";
  gc.valid = {{"c1", "eth1"}, {"c2", "eth0"}};  // c2's eth0 is not its eth2
  auto r = call(gc);
  ASSERT_EQ(r.code, 0) << r.msg;
  EXPECT_EQ(r.deleted, std::vector<std::string>{"ns1/" + cni_attachment_name("node-a", "c2", "eth2")});
  std::set<std::string> left;
  for (const auto& na : attachments()) left.insert(na.metadata.annotations.at(kCniContainerAnnotation));
  EXPECT_EQ(left, (std::set<std::string>{"c1", "c3"}));
  Request status;
  status.op = "status";
  EXPECT_EQ(call(status).code, 0);
}

// The guest end is made in the namespace the runtime named in the ADD, and never in one an
// attachment's annotations name: whoever may write attachments must not choose namespaces
// on the node.
TEST_F(LocalApiTest, OnlyTheRuntimesAddChoosesTheGuestNamespace) {
  ASSERT_EQ(call(req("add", "c1")).code, 0);
  api::NetworkAttachment forged;
  forged.metadata.namespace_ = "ns1";
  forged.metadata.name = "forged";
  forged.metadata.labels[kCniPluginLabel] = "kos-cni";
  forged.metadata.annotations[kCniNetnsAnnotation] = "/proc/1/ns/net";
  forged.metadata.annotations[kCniIfnameAnnotation] = "eth9";
  forged.spec.node = "node-a";
  forged.spec.subnet = "s1";
  ASSERT_TRUE(c_->create(forged));
  std::vector<fabric::LocalIfc> locals;
  for (int i = 0; i < 500 && locals.size() < 2; ++i) {
    std::this_thread::sleep_for(10ms);  // polling the agent's effect
    locals = fabric_.locals();
  }
  ASSERT_EQ(locals.size(), 2u);
  int in_container = 0;
  for (const auto& l : locals) {
    EXPECT_NE(l.guest_netns, "/proc/1/ns/net") << "an annotation chose the namespace";
    if (l.guest_netns == "/proc/self/ns/net" && l.guest_ifname == "eth0") ++in_container;
  }
  EXPECT_EQ(in_container, 1) << "the ADD's own attachment is made in its CNI_NETNS";
}

TEST_F(LocalApiTest, ASecondServerOnALiveSocketIsRefusedAndAStaleOneReplaced) {
  LocalApi second(c_, *agent_, fabric_, LocalApiOptions{socket_});
  auto r = second.start();
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("another process serves"), std::string::npos) << r.error().message;
  api_->stop();
  // A socket file whose server is gone (as after kill -9) is replaced.
  ASSERT_EQ(::mknod(socket_.c_str(), S_IFSOCK | 0600, 0), 0);
  LocalApi third(c_, *agent_, fabric_, LocalApiOptions{socket_});
  ASSERT_TRUE(third.start()) ;
  Request status;
  status.op = "status";
  auto a = cni::call(socket_, status, 10s);
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->code, 0);
  third.stop();
}

// ---------------------------------------------------------------------------------------
// probe (kos check)

// Records what it is asked to probe and answers `answer`.
class FakeProber : public GuestProber {
 public:
  Result<Answer> probe(const Guest& guest, const ProbeSpec& spec) override {
    std::lock_guard lk(mu);
    guests.push_back(guest);
    specs.push_back(spec);
    return answer;
  }
  std::mutex mu;
  std::vector<Guest> guests;
  std::vector<ProbeSpec> specs;
  Result<Answer> answer = Answer{{"/var/run/netns/guest-a", "eth0"}, {true, "connected in 0.3 ms", 300us}};
};

Request probe_req(const std::string& name, const std::string& protocol = "tcp", int port = 22,
                  const std::string& target = "10.10.0.99") {
  Request r;
  r.op = "probe";
  r.ns = "ns1";
  r.attachment = name;
  r.target = target;
  r.protocol = protocol;
  r.port = port;
  return r;
}

TEST_F(LocalApiTest, ProbeRunsFromTheGuestOfAnAttachmentImplementedHere) {
  ASSERT_EQ(call(req("add")).code, 0);
  const std::string name = cni_attachment_name("node-a", "c1", "eth0");
  auto na = c_->get<api::NetworkAttachment>("ns1", name).value();
  auto prober = std::make_shared<FakeProber>();
  LocalApiOptions o;
  o.socket_path = (dir_ / "probe.sock").string();
  o.prober = prober;
  LocalApi api(c_, *agent_, fabric_, o);  // handle() alone: no socket

  auto r = api.handle(probe_req(name));
  ASSERT_EQ(r.code, 0) << r.msg;
  EXPECT_EQ(r.attachment, "ns1/" + name);
  EXPECT_EQ(r.verdict, "allow");
  EXPECT_EQ(r.detail, "connected in 0.3 ms");
  EXPECT_EQ(r.elapsed_us, 300);
  EXPECT_EQ(r.ifname, "eth0");
  EXPECT_EQ(r.sandbox, "/var/run/netns/guest-a");
  ASSERT_EQ(prober->guests.size(), 1u);
  const Guest& g = prober->guests[0];
  EXPECT_EQ(g.key, "ns1/" + name);
  EXPECT_EQ(g.uid, na.metadata.uid);
  EXPECT_EQ(g.ip, api::parse_ipv4(na.status.ipv4).value());
  EXPECT_EQ(g.mac, api::guest_mac(g.ip, 7));
  const ProbeSpec& s = prober->specs[0];
  EXPECT_EQ(s.protocol, ProbeProtocol::kTcp);
  EXPECT_EQ(s.target, api::parse_ipv4("10.10.0.99").value());
  EXPECT_EQ(s.port, 22);
  EXPECT_EQ(s.timeout, 1000ms) << "the default";

  // Timeouts are clamped; icmp takes no port.
  auto q = probe_req(name, "icmp", 0);
  q.timeout_ms = 5;
  ASSERT_EQ(api.handle(q).code, 0);
  EXPECT_EQ(prober->specs.back().timeout, 100ms);
  EXPECT_EQ(prober->specs.back().protocol, ProbeProtocol::kIcmp);
  q.timeout_ms = 600000;
  ASSERT_EQ(api.handle(q).code, 0);
  EXPECT_EQ(prober->specs.back().timeout, 10000ms);

  // The caller's uid: this incarnation's is served, another's is not here.
  q.uid = na.metadata.uid;
  EXPECT_EQ(api.handle(q).code, 0);
  q.uid = "another-incarnation";
  auto other = api.handle(q);
  EXPECT_EQ(other.code, cni::kNotLocal);
  EXPECT_NE(other.msg.find("(uid another-incarnation) is not implemented on node node-a"), std::string::npos) << other.msg;

  prober->answer = GuestProber::Answer{{"/var/run/netns/guest-a", "eth0"}, {false, "no answer in 1000 ms", 1s}};
  auto deny = api.handle(probe_req(name, "udp", 53));
  ASSERT_EQ(deny.code, 0) << deny.msg;
  EXPECT_EQ(deny.verdict, "deny");
  EXPECT_EQ(deny.detail, "no answer in 1000 ms");

  prober->answer = fail(Errc::kNotFound, "no network namespace on this node has a guest interface with MAC x");
  auto lost = api.handle(probe_req(name));
  EXPECT_EQ(lost.code, cni::kNoGuest);
  EXPECT_NE(lost.msg.find("the guest of NetworkAttachment ns1/" + name + " was not found on node node-a: no network"),
            std::string::npos)
      << lost.msg;
  prober->answer = fail(Errc::kConflict, "the guest's interface eth0 does not have its address");
  auto broken = api.handle(probe_req(name));
  EXPECT_EQ(broken.code, cni::kProbeFailed);
  EXPECT_NE(broken.msg.find("does not have its address"), std::string::npos) << broken.msg;
}

TEST_F(LocalApiTest, ProbeRefusesBadArgumentsAndAttachmentsNotHere) {
  ASSERT_EQ(call(req("add")).code, 0);
  const std::string name = cni_attachment_name("node-a", "c1", "eth0");
  EXPECT_EQ(call(probe_req(name, "sctp", 1)).code, cni::kInvalidConfig);
  EXPECT_EQ(call(probe_req(name, "icmp", 7)).code, cni::kInvalidConfig);
  EXPECT_EQ(call(probe_req(name, "tcp", 0)).code, cni::kInvalidConfig);
  EXPECT_EQ(call(probe_req(name, "udp", 70000)).code, cni::kInvalidConfig);
  EXPECT_EQ(call(probe_req(name, "tcp", 22, "10.0.0.300")).code, cni::kInvalidConfig);
  EXPECT_EQ(call(probe_req("Not_A_Name")).code, cni::kInvalidConfig);

  auto ghost = call(probe_req("ghost"));
  EXPECT_EQ(ghost.code, cni::kNotLocal);
  EXPECT_EQ(ghost.msg, "NetworkAttachment ns1/ghost does not exist");

  api::NetworkAttachment far;
  far.metadata.namespace_ = "ns1";
  far.metadata.name = "far";
  far.spec.node = "node-b";
  far.spec.subnet = "s1";
  ASSERT_TRUE(c_->create(far));
  auto elsewhere = call(probe_req("far"));
  EXPECT_EQ(elsewhere.code, cni::kNotLocal);
  EXPECT_EQ(elsewhere.msg, "NetworkAttachment ns1/far is on node node-b, not node-a: ask that node's agent");

  // The real prober finds no guest: the fake fabric makes no interfaces. (It searches an
  // empty directory here, not this machine's namespaces.)
  LocalApiOptions o;
  o.socket_path = (dir_ / "probe.sock").string();
  o.prober = std::make_shared<LinuxGuestProber>(LinuxGuestProberOptions{{dir_.string()}, false});
  LocalApi api(c_, *agent_, fabric_, o);
  auto none = api.handle(probe_req(name));
  EXPECT_EQ(none.code, cni::kNoGuest);
  EXPECT_NE(none.msg.find("was not found on node node-a: no network namespace on this node has a guest interface with MAC "),
            std::string::npos)
      << none.msg;
}

}  // namespace
}  // namespace kos::agent
