// The fixture of the OVS fabric's root tests: a namespace "<prefix>-<pid>-<n>" with its own
// ovsdb-server and userspace ovs-vswitchd (test/support/ovs.h), and an OvsFabric opened on
// them (netdev datapath). Skips without root or Open vSwitch (fails in CI).
#pragma once

#include <unistd.h>

#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "fabric/ovs/ovs_fabric.h"
#include "test/support/netns.h"
#include "test/support/ovs.h"
#include "test/support/skip.h"

namespace kos::fabric {

class OvsFixture : public ::testing::Test {
 protected:
  explicit OvsFixture(std::string prefix) : prefix_(std::move(prefix)) {}
  void SetUp() override {
    if (geteuid() != 0) KOS_SKIP_UNLESS_CI() << "needs root (network namespaces, ovs-vswitchd)";
    if (!kos::testing::ovs_installed()) KOS_SKIP_UNLESS_CI() << "needs openvswitch-switch";
    static int n = 0;
    ns_ = std::make_unique<kos::testing::ScopedNetns>(prefix_ + "-" + std::to_string(getpid()) + "-" + std::to_string(n++));
    ovs_ = std::make_unique<kos::testing::OvsInstance>(ns_->name());
    ASSERT_EQ(ovs_->start(), "");
    open_fabric();
  }
  void TearDown() override {
    fabric_.reset();
    ovs_.reset();
    ns_.reset();
  }
  // (Re)opens the fabric on this node's OVS, as a restarted agent does.
  void open_fabric() {
    OvsFabricOptions o;
    o.db = ovs_->db();
    o.netns = ns_->name();
    o.datapath_type = "netdev";
    auto f = OvsFabric::open(o);
    ASSERT_TRUE(f) << f.error().message;
    fabric_ = std::move(*f);
  }
  OvsFabric& ovs_fabric() { return static_cast<OvsFabric&>(*fabric_); }

  std::string prefix_;
  std::unique_ptr<kos::testing::ScopedNetns> ns_;
  std::unique_ptr<kos::testing::OvsInstance> ovs_;
  std::unique_ptr<Fabric> fabric_;
};

}  // namespace kos::fabric
