// End to end on Open vSwitch: a simulated 3-node cluster (test/e2e/cluster.h) whose nodes
// each run their own ovsdb-server and userspace ovs-vswitchd in their namespace, the
// underlay address on an OVS bridge (userspace VXLAN), and `kos agent --fabric ovs`.
// Guests ping across nodes through real OVS tunnels; each bridge's flows, read with
// `ovs-ofctl dump-flows`, are exactly those the design gives for the attachments in the
// API, after creates, deletes, an agent restart and an ovs-vswitchd restart. Root.
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>

#include "api/cidr.h"
#include "test/e2e/cluster.h"
#include "test/support/ovs.h"
#include "test/support/skip.h"

namespace kos::e2e {
namespace {

using namespace std::chrono_literals;
using ctltest::make_attachment;
using ctltest::make_subnet;
using ctltest::poll_until;

constexpr uint32_t kBlueVni = 4201, kRedVni = 4202;
const std::string kCidr = "10.60.0.0/24";  // the same on both VNIs

class OvsNodes : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) KOS_SKIP_UNLESS_CI() << "needs root (network namespaces, ovs-vswitchd)";
    if (!kos::testing::ovs_installed()) KOS_SKIP_UNLESS_CI() << "needs openvswitch-switch";
    Cluster::Options o;
    o.fabric = "ovs";
    cluster_ = std::make_unique<Cluster>(o);
    if (auto e = cluster_->start(); !e.empty()) FAIL() << e << "\n" << cluster_->logs();
    client_ = cluster_->client();
    ASSERT_TRUE(client_->create(make_subnet("ovs-blue", "blue", kCidr, kBlueVni)));
    ASSERT_TRUE(client_->create(make_subnet("ovs-red", "red", kCidr, kRedVni)));
  }
  void TearDown() override {
    if (HasFailure() && cluster_) std::cerr << cluster_->logs();
  }

  void create(uint32_t vni, const std::string& name, int node) {
    const std::string ns = vni == kBlueVni ? "ovs-blue" : "ovs-red";
    auto na = make_attachment(ns, name, vni == kBlueVni ? "blue" : "red", cluster_->node_name(node));
    na.spec.post_create_exec = cluster_->post_create_exec(name, 24);
    na.spec.post_delete_exec = cluster_->post_delete_exec(name);
    ASSERT_TRUE(ctltest::with_retries([&] { return client_->create(na); }));
  }
  std::map<std::string, api::NetworkAttachment> ready() {
    std::map<std::string, api::NetworkAttachment> out;
    auto l = client_->list<api::NetworkAttachment>("");
    if (!l) return out;
    for (const auto& na : *l)
      if (!na.status.ifc_name.empty() && !na.status.host_ip.empty() && na.status.post_create_exec_report &&
          na.status.post_create_exec_report->exit_status == 0)
        out[na.metadata.name] = na;
    return out;
  }
  // Polls until every bridge holds exactly the flows the API calls for.
  void expect_flows_as_desired(const std::string& when) {
    std::string diff;
    const bool same = poll_until([&] { return (diff = cluster_->compare_flows_with_desired()).empty(); }, 30s);
    EXPECT_TRUE(same) << when << ":\n" << diff;
  }
  bool reaches(const std::string& from, const std::string& ip) {
    for (int i = 0; i < 5; ++i)  // the first packets wait for OVS's own ARP of the underlay
      if (ping(cluster_->guest_ns(from), ip)) return true;
    return false;
  }

  std::unique_ptr<Cluster> cluster_;
  std::shared_ptr<client::RestClient> client_;
};

TEST_F(OvsNodes, GuestsReachTheirVniAcrossNodesAndFlowsStayExactThroughRestarts) {
  // Blue on all three nodes; red on node 2 only, with the same addresses.
  create(kBlueVni, "blue-0", 0);
  create(kBlueVni, "blue-1", 1);
  create(kBlueVni, "blue-2", 2);
  create(kRedVni, "red-0", 2);
  create(kRedVni, "red-1", 2);
  std::map<std::string, api::NetworkAttachment> nas;
  ASSERT_TRUE(poll_until([&] { return (nas = ready()).size() == 5; }, 60s)) << cluster_->logs();
  expect_flows_as_desired("after the creates");

  // Across nodes over OVS's userspace VXLAN, and on one node.
  EXPECT_TRUE(reaches("blue-0", nas["blue-1"].status.ipv4)) << "node 0 -> node 1";
  EXPECT_TRUE(reaches("blue-1", nas["blue-2"].status.ipv4)) << "node 1 -> node 2";
  EXPECT_TRUE(reaches("blue-2", nas["blue-0"].status.ipv4)) << "node 2 -> node 0";
  EXPECT_TRUE(reaches("red-0", nas["red-1"].status.ipv4)) << "red on node 2";
  // Red has blue's addresses, but reaches none of blue's guests: an address red lacks.
  std::string blue_only;
  for (const auto& b : {"blue-0", "blue-1", "blue-2"})
    if (nas[b].status.ipv4 != nas["red-0"].status.ipv4 && nas[b].status.ipv4 != nas["red-1"].status.ipv4)
      blue_only = nas[b].status.ipv4;
  ASSERT_FALSE(blue_only.empty());
  EXPECT_FALSE(ping(cluster_->guest_ns("red-0"), blue_only, 3)) << "red reached blue's " << blue_only;

  // A delete: its flows go here and on the other nodes.
  ASSERT_TRUE(client_->remove<api::NetworkAttachment>("ovs-blue", "blue-2"));
  ASSERT_TRUE(poll_until([&] { return ready().size() == 4; }, 30s));
  expect_flows_as_desired("after a delete");

  // The agent of node 0 restarts: it adopts, its flows are the same rows.
  const auto before = cluster_->ovs(0).flows("kos");
  cluster_->agent(0).kill9();
  cluster_->agent(0).start();
  ASSERT_TRUE(poll_until([&] { return cluster_->agent_serving(0); }, 30s)) << cluster_->logs();
  create(kBlueVni, "blue-3", 0);  // and goes on working
  ASSERT_TRUE(poll_until([&] { return ready().size() == 5; }, 60s)) << cluster_->logs();
  expect_flows_as_desired("after node 0's agent restarted");
  const auto now = cluster_->ovs(0).flows("kos");
  for (const auto& line : before)
    EXPECT_NE(std::find(now.begin(), now.end(), line), now.end()) << "node 0 lost or changed: " << line;

  // ovs-vswitchd of node 1 restarts (its flows are gone with it): the agent restores them.
  ASSERT_EQ(cluster_->ovs(1).restart_vswitchd(), "");
  expect_flows_as_desired("after node 1's ovs-vswitchd restarted");
  EXPECT_TRUE(reaches("blue-3", nas["blue-1"].status.ipv4)) << "node 0 -> node 1 after the restart";
}

}  // namespace
}  // namespace kos::e2e
