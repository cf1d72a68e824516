// A simulated KOS cluster on one machine, for end-to-end tests and benchmarks (needs root):
//
//   host namespace:  kos apiserver (loopback, embedded store) + kos controller-manager
//   <p>-ul:          the underlay: a Linux bridge joining the nodes
//   <p>-n0..nN-1:    one network namespace per node, with an underlay address
//                    10.253.0.(i+1)/24 on a veth to the bridge; node i's agent runs in the
//                    host namespace (`kos agent --fabric linux --netns <p>-n<i>`)
//   <p>-g-<name>:    guest namespaces made by scripts/kos-guest-netns (postCreateExec)
//
// <p> is "kos-e2e-<pid>": every name is unique to this process, and the destructor kills
// the processes and deletes every namespace with the prefix (and with it every link in
// them), whatever state a failed test left. Namespaces left by an earlier test process
// that was killed (its pid gone) are deleted at construction.
//
// Kernel state is read with `ip -j` / `bridge -j`, independently of the fabric's code.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "api/types.h"
#include "test/controllers/harness.h"
#include "test/support/ovs.h"

namespace kos::e2e {

inline constexpr const char* kGuestScript = KOS_GUEST_SCRIPT;

// What one node's kernel holds, as KOS devices show it.
struct NodeKernelState {
  std::set<uint32_t> vxlan_vnis, bridge_vnis;   // kosvx<vni>, kosbr<vni>
  std::set<std::pair<uint32_t, std::string>> locals;  // (vni, guest ip) from host-end aliases
  std::map<std::string, int> local_ifindex;           // host-end name -> ifindex
  std::set<std::string> guest_ends;                   // guest ends still in the node namespace
  // Per VNI: guest MAC -> underlay IP (FDB) and guest IP -> guest MAC (neighbours).
  std::map<uint32_t, std::map<std::string, std::string>> fdb, neigh;
  std::set<std::string> other_kos_links;  // any other link whose name starts with kos/kh
  bool operator==(const NodeKernelState&) const = default;
};

class Cluster {
 public:
  struct Options {
    int nodes = 3;
    int agent_workers = 4;
    std::string agent_log_level = "info";
    // kos agent --vni-linger: 0 in tests, which check that a VNI's devices go with its last
    // attachment (the agent's default is 5s).
    std::string vni_linger = "0";
    // "linux", or "ovs": each node runs its own ovsdb-server and userspace ovs-vswitchd
    // (test/support/ovs.h) in its namespace, its underlay address on an OVS bridge "brul"
    // that holds ul0 (OVS's userspace tunnelling sends and receives VXLAN through the
    // bridge that has the address), and its agent runs --fabric ovs on them.
    std::string fabric = "linux";
    // Each agent serves --metrics-listen on a free loopback port (for `kos driver
    // --agent-endpoints`: create -> implemented on every node).
    bool agent_metrics = false;
  };
  explicit Cluster(Options o);
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  // Builds the namespaces and starts the API server, the controller-manager and one agent
  // per node, and returns once every agent serves its CNI socket (it has synced). An error
  // message, empty on success. Call on the test's main thread.
  std::string start();

  int nodes() const { return static_cast<int>(nodes_.size()); }
  std::string node_name(int i) const { return "node-" + std::to_string(i); }
  const std::string& node_ns(int i) const { return nodes_[static_cast<size_t>(i)].ns; }
  std::string host_ip(int i) const { return "10.253.0." + std::to_string(i + 1); }
  int node_index(const std::string& node_name) const;
  // Node i's agent serves kos-cni here (the default: its state dir's cni.sock).
  std::string cni_socket(int i) const;
  // Whether node i's agent answers a CNI status call (it has synced and adopted).
  bool agent_serving(int i) const;
  ctltest::KosProcess& agent(int i) { return *nodes_[static_cast<size_t>(i)].agent; }
  // http://127.0.0.1:PORT of each agent's --metrics-listen (Options::agent_metrics).
  std::vector<std::string> agent_endpoints() const { return agent_endpoints_; }
  // Node i's Open vSwitch (fabric "ovs" only).
  kos::testing::OvsInstance& ovs(int i) { return *nodes_[static_cast<size_t>(i)].ovs; }
  // With fabric "ovs": what node i's bridge kos should hold for the attachments in the API
  // now (ready ones: addressed, implemented on their node), in ovs-ofctl's words without
  // cookies (test/support/ovs.h expected_flows); and "" if every node's flows, as
  // `ovs-ofctl dump-flows` shows them, are exactly that, else the differences.
  std::vector<std::string> desired_flows(int i);
  std::string compare_flows_with_desired();
  ctltest::KosProcess& controllers() { return *controllers_; }
  ctltest::ApiServer& server() { return *server_; }
  std::shared_ptr<client::RestClient> client() { return client_; }
  const std::string& prefix() const { return prefix_; }
  // The guest namespace for an attachment name, and the exec lines that move the guest
  // interface there (kos-guest-netns add/del).
  std::string guest_ns(const std::string& attachment) const { return prefix_ + "-g-" + attachment; }
  // With `gateway`, the guest's default route goes through ${gateway} (subnets of a VPC).
  std::vector<std::string> post_create_exec(const std::string& attachment, int prefix_len,
                                            bool gateway = false) const;
  std::vector<std::string> post_delete_exec(const std::string& attachment) const;

  // Reads a node's KOS kernel state.
  NodeKernelState kernel_state(int i) const;
  // The kernel state every node should have for the attachments in the API now (only
  // attachments that are ready count: addressed, and implemented on their node).
  std::vector<NodeKernelState> desired_state() const;
  // "" if every node's kernel equals the desired state, else a description of the first
  // differences.
  std::string compare_with_desired() const;

  // The tails of every process's log, for failure messages.
  std::string logs() const;

 private:
  struct Node {
    std::string ns;
    std::unique_ptr<ctltest::KosProcess> agent;
    std::unique_ptr<kos::testing::OvsInstance> ovs;
  };
  Options opts_;
  std::string prefix_;
  std::string underlay_ns_;
  std::unique_ptr<ctltest::ApiServer> server_;
  std::unique_ptr<ctltest::KosProcess> controllers_;
  std::vector<Node> nodes_;
  std::shared_ptr<client::RestClient> client_;
  std::vector<std::string> namespaces_;  // made by start(), deleted by the destructor
  std::vector<std::string> agent_endpoints_;
};

// Runs a command that must succeed; an error message (with its stderr), empty on success.
std::string must(const std::vector<std::string>& argv);
// `ip netns exec FROM ping -c COUNT -W 1 TO`: whether a reply came back.
bool ping(const std::string& from_ns, const std::string& to, int count = 1);

std::string describe(const NodeKernelState& s);

}  // namespace kos::e2e
