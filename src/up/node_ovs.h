// Open vSwitch for a node of `kos up --fabric ovs`: the node's own ovsdb-server (on a fresh
// database) and ovs-vswitchd (userspace datapath: no kernel module is needed), both
// started in the node's namespace under the supervisor, with their run dir, database,
// sockets and logs in `rundir`; then the bridge `brul` (netdev) that takes over the node's
// underlay port ul0 and its address, because OVS's userspace tunnelling sends and receives
// VXLAN through the bridge that holds the address. The agent's fabric makes bridge kos.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "common/error.h"
#include "up/supervisor.h"

namespace kos::up {

struct NodeOvs {
  std::string db;  // "unix:<rundir>/db.sock", for kos agent --ovs-db
};

// Whether this machine has Open vSwitch's programs and schema (package openvswitch-switch).
bool ovs_installed();

// How the daemons of one namespace's own OVS run (argv, absolute paths), all their files in
// `rundir`: the database conf.db and its socket db.sock, the control sockets ovsdb.ctl and
// vswitchd.ctl, the logs, and (ovs-vswitchd's OVS_RUNDIR) the bridges' <bridge>.mgmt.
// The test support's OVS runs them the same way.
inline constexpr const char* kOvsSchema = "/usr/share/openvswitch/vswitch.ovsschema";
std::vector<std::string> ovsdb_server_argv(const std::string& netns, const std::filesystem::path& rundir);
std::vector<std::string> ovs_vswitchd_argv(const std::string& netns, const std::filesystem::path& rundir);

// name: the node's name (the children are "ovsdb <name>" and "vswitchd <name>").
// underlay_cidr: the node's underlay address with its prefix, now on ul0.
Result<NodeOvs> start_node_ovs(Supervisor& sup, const std::string& name, const std::string& netns,
                               const std::filesystem::path& rundir, const std::string& underlay_cidr);

}  // namespace kos::up
