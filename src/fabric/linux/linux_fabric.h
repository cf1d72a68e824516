// LinuxFabric: the Fabric in the Linux kernel, programmed over rtnetlink (libmnl; no `ip`
// or `bridge` commands), as the KOS design has it:
//
//  - per VNI V: a VXLAN device `kosvx<V>` (id V, local = host IP, UDP port 4789, learning
//    off, ARP proxy on, no default destination: unknown and broadcast frames are dropped)
//    enslaved to a bridge `kosbr<V>`; both up, MTU `mtu`;
//  - per local interface: a veth pair. The host end `kh<12 hex digits of the guest MAC>`
//    (14 characters; "kos" + 12 would collide with the guest end's name and 16 exceeds
//    IFNAMSIZ) is up, joins `kosbr<V>` and carries the alias "kos vni=<V> ip=<guest IP>
//    name=<guest end>"; the guest end is named LocalIfc::name, carries the guest MAC and
//    MTU `mtu`, is left down in the fabric's namespace for the client to move (the agent's
//    postCreateExec) and configure;
//  - per remote interface: on `kosvx<V>` a static FDB entry guest MAC -> host IP (NTF_SELF,
//    permanent) and a permanent neighbour entry guest IP -> guest MAC, which the VXLAN ARP
//    proxy answers from (ARP never crosses the underlay);
//  - a VNI's devices are created with its first attachment (local or remote) and deleted
//    with its last, or options.vni_linger after it if no attachment came back meanwhile;
//  - a VNI whose interfaces carry Routing (a subnet of a VPC) also gets a gateway port on
//    its bridge into the VPC's router namespace, made with the VPC's first routed VNI here
//    and deleted with its last (router.h).
//
// State. The fabric reads the kernel's state at open() (links, neighbours, FDB) and keeps it
// cached; a call that finds the kernel already as asked sends nothing. list_local() and
// list_remote() read the kernel again (that is adoption) and refresh the cache. Locals are
// recognised by their host end, so a guest end moved to another namespace is still listed.
// On any kernel error the cache is re-read and the failed call retried once. At open(),
// VNI devices without attachments are deleted, and a `kosvx<V>` whose settings differ
// (host IP, port, MTU, underlay device changed) is re-created (its remote entries go with
// it, so list_remote() no longer shows them and the agent programs them again).
//
// Threads. One worker thread owns the netlink socket and the cache; calls from any thread
// queue a request and wait for it. Requests waiting together form a batch: the worker
// plans all of them against the cache and sends their netlink messages in one sendmsg (up
// to 256 messages), then matches the acknowledgements by sequence number. So throughput
// grows with the number of concurrent callers.
//
// Namespaces. With options.netns set, the worker thread enters that network namespace
// (setns on /var/run/netns/NAME, or on the path itself if it starts with '/') before it
// opens its socket; all kernel work happens there. No other thread changes namespace.
//
// Security groups (set_policy, the address sets): nftables tables `inet kos` and `bridge
// kos` in the fabric's namespace, programmed through libnftables by the worker thread
// (policy.h has the layout, and why the bridge ports travel in the packet mark). They need
// br_netfilter (net.bridge.bridge-nf-call-iptables = 1, which set_policy ensures).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "fabric/fabric.h"
#include "fabric/worker_queue.h"

namespace kos::fabric {

struct LinuxFabricOptions {
  uint32_t host_ip = 0;      // this node's underlay IPv4 address (host byte order); required
  std::string netns;         // network namespace name (or path); empty: the caller's current one
  uint16_t vxlan_port = 4789;
  uint32_t mtu = 1450;       // of the VXLAN devices, bridges and both veth ends
  std::string underlay_dev;  // optional: the VXLAN devices' underlay link (must exist)
  // A VNI's devices outlive its last attachment this long, so a network whose only
  // container on the node is replaced finds them in place: deleting a VXLAN device and its
  // bridge holds the kernel's rtnl lock ~75 ms here (every netlink call of the node waits),
  // making them again ~12 ms. 0: deleted with the last attachment.
  std::chrono::milliseconds vni_linger{0};
};

// Device names (all at most 15 characters).
std::string vxlan_device_name(uint32_t vni);           // "kosvx<vni>"
std::string bridge_device_name(uint32_t vni);          // "kosbr<vni>"
std::string host_end_name(const api::MacAddress& mac);  // "kh" + 12 lowercase hex digits
// The VNI of a "kosvx<vni>" / "kosbr<vni>" name (decimal, 1..kMaxVni, no leading zero).
std::optional<uint32_t> parse_vxlan_device_name(std::string_view name);
std::optional<uint32_t> parse_bridge_device_name(std::string_view name);
std::optional<api::MacAddress> parse_host_end_name(std::string_view name);
// The alias a host end carries: what the kernel cannot record of its local (the VNI, the
// guest IP, and the guest end's name, which may have moved out of sight), so that a fabric
// can adopt it from the kernel alone: "kos vni=<V> ip=<IP> name=<N>".
std::string host_end_alias(const LocalIfc& l);
// The local a host end describes (its name "kh<MAC>", its alias as above), or nullopt.
std::optional<LocalIfc> parse_host_end(std::string_view name, std::string_view alias);

// Counters of one LinuxFabric, for tests and benchmarks (also exported process-wide as
// kos_fabric_* metrics).
struct LinuxFabricStats {
  uint64_t calls = 0;             // create/delete calls handled
  uint64_t batches = 0;           // groups of calls planned and sent together
  uint64_t sends = 0;             // sendmsg calls carrying requests (not dumps)
  uint64_t messages = 0;          // netlink requests sent (not dumps)
  uint64_t unchanged = 0;         // calls that found the kernel as asked and sent nothing
  uint64_t resyncs = 0;           // full reads of the kernel's state
  uint64_t vnis_created = 0;      // VXLAN+bridge pairs created
  uint64_t vnis_deleted = 0;
  uint64_t retries = 0;           // calls retried after a kernel error
  uint64_t routers_created = 0;   // router namespaces of VPCs (router.h)
  uint64_t routers_deleted = 0;
  uint64_t gateways_created = 0;  // gateway ports: VNIs of a VPC routed here
  // Security groups (policy.h).
  uint64_t nft_transactions = 0;      // nftables transactions run
  uint64_t nft_errors = 0;            // ... that nftables refused
  uint64_t policy_updates = 0;        // set_policy and removals that changed the kernel
  uint64_t set_elements_changed = 0;  // addresses added to or removed from address sets
  uint64_t policy_adoptions = 0;      // reads of the kos tables from the kernel
};

class LinuxFabric final : public QueuedFabric {
 public:
  // Enters the namespace (if any), opens the netlink socket, reads the kernel's state and
  // repairs it as described above. kNotFound if the namespace or the underlay device does
  // not exist; kInvalid for bad options; kInternal if netlink fails (e.g. not root).
  static Result<std::unique_ptr<Fabric>> open(const LinuxFabricOptions& opts);
  ~LinuxFabric() override;  // stops the worker; calls still queued fail with kCancelled

  std::string name() const override { return "linux"; }
  // The calls (QueuedFabric, worker_queue.h). Arguments are checked first (kInvalid): VNI
  // 1..api::kMaxVni, a unicast non-zero MAC, a local name of 1..15 characters, a non-zero
  // guest IP and (remote) host IP. create_local: replaces a local with the same MAC but
  // another name (another guest IP only rewrites the alias). delete_local: removes the
  // local with that MAC, whatever its name. create_remote: adds or replaces the FDB and
  // neighbour entries. delete_remote: removes the neighbour entry if it maps ifc.guest_ip to
  // ifc.mac and the FDB entry of ifc.mac if it points at ifc.host_ip; if that FDB entry
  // points at another host (a newer create moved the guest), it removes nothing: a stale
  // delete cannot undo a newer create. apply: the worker plans a batch together and sends
  // its messages in as few sendmsg calls as the batch limits allow. list_local and
  // list_remote read back from the kernel, ordered by (vni, mac) and (vni, guest_ip); a
  // remote with only one of its two entries is listed with guest_ip (FDB only) or host_ip
  // (neighbour only) 0, so that it matches nothing and gets deleted or re-created.
  // On a thread of its own (see Plug in fabric.h): moves the guest end into plug.netns as
  // plug.ifname (one RTM_SETLINK with IFLA_NET_NS_FD and the new name), sets lo and it up
  // and the address (replacing one of the same address). kNotFound when the host end is
  // not here, kConflict when the workload already has another interface of that name.
  Result<Plugged> plug(const LocalIfc& ifc, const Plug& plug) override;
  Result<Plugged> inspect(const std::string& netns, const std::string& ifname) override;

  // Security groups (fabric.h), in nftables as policy.h describes, by the worker thread
  // in the fabric's namespace. Arguments are checked first (kInvalid). set_policy: kNotFound
  // unless a local of that VNI, MAC and name exists; with a policy it also makes
  // net.bridge.bridge-nf-call-iptables 1 (kUnsupported without br_netfilter); nullopt
  // removes the policy of the local with that MAC (none: success). delete_local, and a
  // create_local that makes the veth pair anew, remove the host end's policy. list_sets and
  // list_policies read the kernel again; list_policies names each policed local by its
  // guest end (LocalIfc::name). Without nf_tables in the kernel the lists are empty,
  // removals succeed and the rest is kUnsupported.
  Result<void> set_policy(const LocalIfc& ifc, const std::optional<Policy>& policy) override;
  Result<void> update_set(const std::string& name, const std::vector<uint32_t>& add,
                          const std::vector<uint32_t>& remove) override;
  Result<void> delete_set(const std::string& name) override;
  Result<std::map<std::string, std::vector<uint32_t>>> list_sets() override;
  Result<std::map<std::string, Policy>> list_policies() override;

  LinuxFabricStats stats() const;

 protected:
  WorkerQueue& queue() override;

 private:
  struct Impl;
  explicit LinuxFabric(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kos::fabric
