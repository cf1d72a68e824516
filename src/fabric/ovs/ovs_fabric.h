// OvsFabric: the Fabric on Open vSwitch, the original KOS datapath, driven over two
// persistent connections of its own: OVSDB (RFC 7047) for the bridge and ports, OpenFlow
// 1.4 for the flows. No ovs-vsctl or ovs-ofctl is run.
//
//  - Bridge `bridge` (default kos) with port vtep (VXLAN, key=flow, remote_ip=flow): made by
//    ensure_bridge() (bridge.h), fail-mode secure, alongside any other bridges.
//  - Per local interface: a veth pair, as in the linux fabric. The guest end is named
//    LocalIfc::name (status.ifcName) and carries the guest MAC, left down in the fabric's
//    namespace for the client to move (or made directly in a CNI workload's namespace);
//    the host end kh<12 hex digits of the MAC> carries the alias "kos vni=.. ip=.. name=.."
//    and is an OVS port whose Interface row carries external_ids kos-vni, kos-ip,
//    kos-ifname and attached-mac (the guest MAC). A veth
//    rather than an internal port: in the userspace datapath an internal port is a tap
//    device that ovs-vswitchd addresses by name in its own namespace, so it could not be
//    handed to a container; a veth's guest end can, and plug() is the linux fabric's.
//  - Flows: flows.h (two tables; three flows per local, two per remote; one cookie per
//    attachment; security groups: conntrack and per-policy tables, only once a local has
//    a policy).
//
// Batches. Calls queue requests for one worker thread; the requests waiting together form
// a batch, planned against the fabric's cache by final state per interface (a local by
// MAC, a remote by VNI and guest IP), then carried out as: one OVSDB transaction removing
// the ports of removed or replaced locals; one netlink sendmsg of veth deletes and creates;
// one OVSDB transaction adding ports; a wait until ovs-vswitchd has given every new port an
// OpenFlow port number (from the OVSDB monitor, no polling); and one OpenFlow bundle
// (atomic, ordered: every delete by cookie, then every add) carrying the flows of the
// whole batch. OVS avoids reusing a freed OpenFlow port number at once, so the old flows of
// a removed port cannot match a new port's traffic in between.
//
// Adoption and restoration. open() reads the kh* veths, whose host ends carry their local
// in an alias as in the linux fabric (so a lost OVS database loses no interface), the
// ports and the flows: a local keeps its veth, gets its port back if the port is missing
// or differs, and its flows if they are not exactly its three; a remote is read back from
// its two flows (parse_remote); anything else (a port or veth of no local, a flow whose
// cookie no adopted attachment has) is removed, and missing flows are added, in one
// bundle. A live attachment's flows are never touched. Security groups the same way:
// policies come back from the bridge's external_ids (kos-policy-<interface>, for locals
// that still exist; the others' records and flows go), sets from their names there
// (kos-set-<name>) and their addresses from their own flows (flows.h), and a policy's
// flows stay if they are exactly as its policy and sets say.
// When either connection drops (ovs-vswitchd or ovsdb-server restarted), the worker
// reconnects (at once, then every 500 ms until OVS answers) and restores the bridge, the ports, the veths and the flows of
// everything in its cache the same way, without the agent restarting. Calls made while OVS
// is away fail with kUnavailable (the agent retries them).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "fabric/fabric.h"
#include "fabric/worker_queue.h"

namespace kos::fabric {

struct OvsFabricOptions {
  std::string db = "unix:/var/run/openvswitch/db.sock";  // ovsdb-server's socket
  // Where ovs-vswitchd makes <bridge>.mgmt (its OVS_RUNDIR); empty: the db socket's folder.
  std::string rundir;
  std::string bridge = "kos";
  std::string datapath_type;  // "system" or "netdev"; empty: detected (netdev without the kernel module)
  std::string netns;          // where the veths are made (name or path); empty: the caller's
  uint32_t mtu = 1450;        // of both veth ends
  std::chrono::milliseconds timeout{10000};  // for each OVSDB or OpenFlow exchange
};

// Counters of one OvsFabric, for tests and benchmarks (also exported process-wide as
// kos_fabric_ovs_* metrics).
struct OvsFabricStats {
  uint64_t calls = 0;         // create/delete calls handled
  uint64_t batches = 0;       // groups of calls planned together
  uint64_t unchanged = 0;     // calls that found OVS as asked
  uint64_t bundles = 0;       // OpenFlow bundles committed
  uint64_t flow_mods = 0;     // flow adds and deletes in them
  uint64_t transactions = 0;  // OVSDB transactions
  uint64_t restores = 0;      // full reconciliations begun (open, reconnects, after a failure)
  uint64_t restored = 0;      // and completed
  uint64_t reconnects = 0;    // connections to OVS made again after one dropped
};

class OvsFabric final : public QueuedFabric {
 public:
  // Connects, makes the bridge, adopts what is there and repairs it (see above). kInvalid
  // for bad options, kNotFound for a missing namespace, kUnavailable when ovsdb-server or
  // ovs-vswitchd does not answer, kTimeout when ovs-vswitchd assigns no port numbers.
  static Result<std::unique_ptr<Fabric>> open(const OvsFabricOptions& opts);
  ~OvsFabric() override;  // stops the worker; calls still queued fail with kCancelled

  std::string name() const override { return "ovs"; }
  // The calls (QueuedFabric, worker_queue.h). Arguments are checked as every fabric does
  // (fabric.h). create_local replaces a local with the same MAC and other settings;
  // delete_local removes the local with that MAC; create_remote replaces the remote of the
  // same VNI and guest IP; delete_remote removes it only if it has the same MAC and host (a
  // stale delete cannot undo a newer create). list_local and list_remote give the fabric's
  // view (adopted at open, kept since), ordered by (vni, mac) and (vni, guest_ip).
  Result<Plugged> plug(const LocalIfc& ifc, const Plug& plug) override;
  Result<Plugged> inspect(const std::string& netns, const std::string& ifname) override;

  // Security groups (fabric.h; the flows: flows.h), enforced with the userspace datapath's
  // connection tracker. Each call runs on the worker after what was queued before it:
  // set_policy and update_set send one bundle (update_set: O(rules naming the set) flows
  // per address added or removed), recording the policy and the set's name in the bridge's
  // external_ids first; the lists answer from the fabric's view (adopted at open: policies
  // from the bridge's external_ids, set addresses from their flows). kUnavailable while
  // OVS is away; kInvalid for a policy of more than 4096 rules in a direction. A change is
  // in the OpenFlow tables when the call returns; ovs-vswitchd revalidates the datapath's
  // cached flows after it asynchronously (typically within milliseconds), so a packet of
  // that moment may still meet the old verdict. Fragmented IPv4 to or from a policed
  // local is dropped unless the datapath's reassembly is enabled (ovs-appctl
  // dpctl/ipf-set-enabled v4 true). The userspace datapath forwards what a veth hands it
  // as it is: guests must not offload transmit checksums (ethtool -K eth0 tx off) for
  // TCP to pass at all, policy or not.
  Result<void> set_policy(const LocalIfc& ifc, const std::optional<Policy>& policy) override;
  Result<void> update_set(const std::string& name, const std::vector<uint32_t>& add,
                          const std::vector<uint32_t>& remove) override;
  Result<void> delete_set(const std::string& name) override;
  Result<std::map<std::string, std::vector<uint32_t>>> list_sets() override;
  Result<std::map<std::string, Policy>> list_policies() override;

  OvsFabricStats stats() const;

 protected:
  WorkerQueue& queue() override;

 private:
  struct Impl;
  explicit OvsFabric(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kos::fabric
