// An Open vSwitch of a test's own: ovsdb-server on a fresh database and ovs-vswitchd
// (userspace datapath: this kernel has no openvswitch module), both in the network
// namespace `netns` with their own run dir, so nothing touches a system OVS. The
// destructor kills both (its bridges' netdev ports go with the namespace's owner).
// Needs root (ovs-vswitchd makes tap devices) and openvswitch-switch.
#pragma once

#include <memory>
#include <string>

#include "test/support/process.h"

namespace kos::testing {

class OvsInstance {
 public:
  explicit OvsInstance(std::string netns);
  ~OvsInstance();
  OvsInstance(const OvsInstance&) = delete;
  OvsInstance& operator=(const OvsInstance&) = delete;

  // Starts both daemons; an error message, empty on success.
  std::string start();
  // Kills ovs-vswitchd (SIGKILL) and starts it again on the same database.
  std::string restart_vswitchd();

  std::string db() const { return "unix:" + (dir_.path() / "db.sock").string(); }
  std::string rundir() const { return dir_.path().string(); }
  std::string mgmt(const std::string& bridge) const { return (dir_.path() / (bridge + ".mgmt")).string(); }
  // `ovs-vsctl --db=... ARGS`, `ovs-ofctl -O OpenFlow14 ARGS` against this instance.
  RunResult vsctl(std::vector<std::string> args) const;
  RunResult ofctl(std::vector<std::string> args) const;

 private:
  std::string start_vswitchd();
  std::string netns_;
  TempDir dir_{"kos-ovs"};
  std::unique_ptr<ChildProcess> ovsdb_, vswitchd_;
};

bool ovs_installed();

}  // namespace kos::testing
