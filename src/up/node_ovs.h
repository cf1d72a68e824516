// Open vSwitch for a node of `kos up --fabric ovs`: the node's own ovsdb-server (on a fresh
// database) and ovs-vswitchd (userspace datapath: no kernel module is needed), both
// started in the node's namespace under the supervisor, with their run dir, database,
// sockets and logs in `rundir`; then the bridge `brul` (netdev) that takes over the node's
// underlay port ul0 and its address, because OVS's userspace tunnelling sends and receives
// VXLAN through the bridge that holds the address. The agent's fabric makes bridge kos.
#pragma once

#include <filesystem>
#include <string>

#include "common/error.h"
#include "up/supervisor.h"

namespace kos::up {

struct NodeOvs {
  std::string db;  // "unix:<rundir>/db.sock", for kos agent --ovs-db
};

// Whether this machine has Open vSwitch's programs and schema (package openvswitch-switch).
bool ovs_installed();

// name: the node's name (the children are "ovsdb <name>" and "vswitchd <name>").
// underlay_cidr: the node's underlay address with its prefix, now on ul0.
Result<NodeOvs> start_node_ovs(Supervisor& sup, const std::string& name, const std::string& netns,
                               const std::filesystem::path& rundir, const std::string& underlay_cidr);

}  // namespace kos::up
