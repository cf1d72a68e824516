// An Open vSwitch of a test's own: ovsdb-server on a fresh database and ovs-vswitchd
// (userspace datapath: this kernel has no openvswitch module), both in the network
// namespace `netns` with their own run dir, so nothing touches a system OVS. The
// destructor kills both (its bridges' netdev ports go with the namespace's owner).
// Needs root (ovs-vswitchd makes tap devices) and openvswitch-switch.
#pragma once

#include <memory>
#include <cstdint>
#include <string>
#include <vector>

#include "fabric/fabric.h"
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
  // Kills ovsdb-server (SIGKILL) and starts it again: on the same database, or (fresh) on
  // a new empty one, as if its configuration were lost. ovs-vswitchd stays and reconnects.
  std::string restart_ovsdb(bool fresh);

  std::string db() const { return "unix:" + (dir_.path() / "db.sock").string(); }
  std::string rundir() const { return dir_.path().string(); }
  std::string mgmt(const std::string& bridge) const { return (dir_.path() / (bridge + ".mgmt")).string(); }
  // `ovs-vsctl --db=... ARGS`, `ovs-ofctl -O OpenFlow14 ARGS` against this instance.
  RunResult vsctl(std::vector<std::string> args) const;
  RunResult ofctl(std::vector<std::string> args) const;
  // The bridge's flows as `ovs-ofctl dump-flows` prints them (OVS's own decoder, not KOS's),
  // one line each, sorted, without the counters that change (duration, n_packets, n_bytes,
  // idle_age): "cookie=0x1..., table=1, priority=100,tun_id=0x65,dl_dst=... actions=...".
  // One error line instead if ovs-ofctl fails.
  std::vector<std::string> flows(const std::string& bridge) const;
  // The same lines without their cookies (as expected_flows writes them), sorted.
  std::vector<std::string> flows_without_cookies(const std::string& bridge) const;

 private:
  std::string start_vswitchd();
  std::string start_ovsdb(bool create);
  std::string netns_;
  TempDir dir_{"kos-ovs"};
  std::unique_ptr<ChildProcess> ovsdb_, vswitchd_;
};

bool ovs_installed();

// The flows kos-api.md gives for a bridge with these locals (each with its OpenFlow port)
// and remotes (through port vtep), in ovs-ofctl's words as OvsInstance::flows prints them,
// without cookies, sorted. Written from the design, not from the fabric's code.
std::vector<std::string> expected_flows(const std::vector<std::pair<fabric::LocalIfc, int>>& locals,
                                        const std::vector<fabric::RemoteIfc>& remotes, int vtep);

// The cookie of a line of OvsInstance::flows ("cookie=0x1f..., ..."), and the line without it.
uint64_t flow_cookie(const std::string& line);
std::string without_cookie(const std::string& line);

}  // namespace kos::testing
