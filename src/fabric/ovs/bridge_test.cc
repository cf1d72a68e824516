// ensure_bridge against a real OVS of the test's own (test/support/ovs.h: ovsdb-server and
// a userspace ovs-vswitchd in a namespace); the result read back with ovs-vsctl. Root.
#include "fabric/ovs/bridge.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include "fabric/ovs/openflow.h"
#include "test/support/netns.h"
#include "test/support/ovs.h"
#include "test/support/skip.h"

namespace kos::fabric::ovs {
namespace {

using namespace std::chrono_literals;

TEST(OvsBridge, MadeAsAskedBesideOtherBridgesAndCorrectedWhenChanged) {
  if (geteuid() != 0) KOS_SKIP_UNLESS_CI() << "needs root (ovs-vswitchd makes tap devices)";
  if (!kos::testing::ovs_installed()) KOS_SKIP_UNLESS_CI() << "needs openvswitch-switch";
  kos::testing::ScopedNetns ns("kos-br-" + std::to_string(getpid()));
  kos::testing::OvsInstance ovs(ns.name());
  ASSERT_EQ(ovs.start(), "");
  // Someone else's bridge, which must be left alone.
  ASSERT_EQ(ovs.vsctl({"add-br", "other", "--", "set", "bridge", "other", "datapath_type=netdev"}).exit_code, 0);
  auto db = OvsdbClient::connect(ovs.db(), 5s);
  ASSERT_TRUE(db) << db.error().message;
  BridgeOptions o;
  o.datapath_type = "netdev";
  auto made = ensure_bridge(**db, o, 10s);
  ASSERT_TRUE(made) << made.error().message;
  EXPECT_TRUE(made->created);
  EXPECT_GT(made->vtep_ofport, 0);

  auto get = [&](std::vector<std::string> args) {
    args.insert(args.begin(), "get");
    auto r = ovs.vsctl(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  };
  EXPECT_EQ(ovs.vsctl({"list-br"}).out, "kos\nother\n");
  EXPECT_EQ(get({"bridge", "kos", "fail_mode"}), "secure\n");
  EXPECT_EQ(get({"bridge", "kos", "datapath_type"}), "netdev\n");
  EXPECT_EQ(get({"interface", "vtep", "type"}), "vxlan\n");
  EXPECT_EQ(get({"interface", "vtep", "options"}), "{key=flow, remote_ip=flow}\n");
  EXPECT_EQ(get({"interface", "vtep", "ofport"}), std::to_string(made->vtep_ofport) + "\n");
  EXPECT_EQ(ovs.vsctl({"list-ports", "other"}).out, "");
  // Its management socket speaks OpenFlow 1.4 and, fail-mode secure, has no flow.
  auto of = of::Connection::connect(ovs.mgmt("kos"), 5s);
  ASSERT_TRUE(of) << of.error().message;
  auto flows = (*of)->dump_flows(5s);
  ASSERT_TRUE(flows) << flows.error().message;
  EXPECT_TRUE(flows->empty());

  // Again: nothing new. Changed behind its back: set right.
  auto again = ensure_bridge(**db, o, 10s);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->vtep_ofport, made->vtep_ofport);
  ASSERT_EQ(ovs.vsctl({"set", "bridge", "kos", "fail_mode=standalone", "--", "set", "interface", "vtep",
                       "options:remote_ip=10.0.0.9"}).exit_code, 0);
  ASSERT_TRUE(ensure_bridge(**db, o, 10s));
  EXPECT_EQ(get({"bridge", "kos", "fail_mode"}), "secure\n");
  EXPECT_EQ(get({"interface", "vtep", "options"}), "{key=flow, remote_ip=flow}\n");
  EXPECT_EQ(ovs.vsctl({"list-br"}).out, "kos\nother\n");
}

}  // namespace
}  // namespace kos::fabric::ovs
