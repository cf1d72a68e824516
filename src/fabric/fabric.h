// The Fabric seam: how a node implements network attachments in its kernel (or a fake).
// The connection agent tells the fabric what exists; the fabric makes it so.
//
//  - A local interface is an attachment on this node: a Linux interface named `name`
//    with the guest MAC, on the virtual network `vni`.
//  - A remote interface is an attachment on another node of a VNI present here: the
//    mapping guest IP/MAC -> that node's underlay address `host_ip`.
// A (VNI, guest IP) pair is unique across local and remote interfaces.
//
// Implementations: linux/ (netlink: VXLAN + bridge + veth per the KOS design), fake/
// (in memory, with configurable latency, for scale tests). Every call is idempotent:
// creating what exists or deleting what is absent succeeds. Calls may come from several
// worker threads at once.
//
// Batches: apply() takes the creates and deletes of many attachments at once and answers
// one result per change, so that an implementation turns them into few operations (linux:
// their netlink messages in a few sendmsg calls; OVS: one atomic OpenFlow bundle; eBPF: a
// batched map update). A change's failure does not stop the others.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "api/names.h"
#include "common/error.h"

namespace kos::fabric {

// How the VNI of an interface is routed: in a VPC (its routing VNI `vpc`), through the
// gateway address `gateway`/`prefix_len`, which every node of the VPC answers for (an
// anycast address and MAC: api::guest_mac(gateway, vni)). vpc 0: an isolated network.
// Every interface of one VNI carries the same routing; a fabric routes a VNI as its
// interfaces say, and lists each interface with the routing its VNI has.
struct Routing {
  uint32_t vpc = 0;
  uint32_t gateway = 0;
  int prefix_len = 0;
  bool operator==(const Routing&) const = default;
};

struct LocalIfc {
  uint32_t vni = 0;
  api::MacAddress mac{};
  uint32_t guest_ip = 0;
  std::string name;  // "kos" + 12 hex digits of the MAC
  // Where a new guest end is made: in the fabric's namespace (empty), or directly in a
  // workload's network namespace (a path) under guest_ifname, for an attachment made by
  // the CNI plugin whose namespace is known. Moving a device between namespaces costs the
  // kernel an RCU grace period (15-20 ms here); creating it there costs nothing extra. If
  // the namespace cannot be opened, the guest end is made in the fabric's namespace. Not
  // part of the identity (==): the fabric cannot read it back, and a guest end that exists
  // is never moved by create_local.
  std::string guest_netns, guest_ifname;
  Routing routing;
  bool operator==(const LocalIfc& o) const {
    return vni == o.vni && mac == o.mac && guest_ip == o.guest_ip && name == o.name && routing == o.routing;
  }
};

struct RemoteIfc {
  uint32_t vni = 0;
  api::MacAddress mac{};
  uint32_t guest_ip = 0;
  uint32_t host_ip = 0;  // the other node's underlay IPv4 address
  Routing routing;
  bool operator==(const RemoteIfc&) const = default;
};

// Plugging: a workload (a container, through the CNI plugin) takes a local interface into
// its own network namespace. plug() moves the interface's guest end there under the name
// `ifname` and configures it: up, the guest MAC, `ipv4`/`prefix_len`, and lo up. It is
// idempotent (a guest end already there as asked is configured again, which changes
// nothing). kNotFound: the namespace does not exist, or the local interface is not in this
// fabric; kConflict: the namespace has another interface named `ifname`. The interface
// leaves the workload's namespace with delete_local (the pair is deleted; a namespace
// that is gone took it already).
struct Plug {
  std::string netns;   // path of the workload's network namespace (e.g. /var/run/netns/X)
  std::string ifname;  // the interface's name in it (1..15 characters)
  uint32_t ipv4 = 0;
  int prefix_len = 0;
  // A subnet of a VPC: routes (destination, prefix length) through `gateway` on the
  // interface (e.g. the default route, 0.0.0.0/0), replacing any of the same destination.
  uint32_t gateway = 0;
  std::vector<std::pair<uint32_t, int>> via_gateway;
};

// What a workload's namespace has under one name, read back (the CNI CHECK).
struct Plugged {
  std::string ifname;
  int ifindex = 0;
  api::MacAddress mac{};
  bool up = false;
  std::vector<std::pair<uint32_t, int>> ipv4;  // (address, prefix length)
  bool operator==(const Plugged&) const = default;
};

std::optional<Error> check(const Plug& plug);

// Why an interface cannot be programmed (VNI out of range, a MAC that is not unicast, a
// zero address, an invalid Linux interface name, routing with a VPC VNI out of range or
// equal to the VNI, no gateway, or a prefix length outside 8..29), or nullopt. Every implementation checks
// its arguments with these, so all fabrics refuse the same things.
std::optional<Error> check(const LocalIfc& ifc);
std::optional<Error> check(const RemoteIfc& ifc);

// Security groups. A local interface whose attachment is in at least one group carries a
// Policy: it accepts only what `ingress` allows and sends only what `egress` allows;
// replies of allowed connections pass both ways (stateful), everything else is dropped.
// An interface without a policy accepts and sends everything. A rule's peers are CIDRs
// and address sets: a set is named by the agent (a referenced group's members in the
// interface's address domain) and kept by the fabric, which updates it element by
// element (update_set), so a member joining a set of 10,000 costs what it costs in a set
// of 10. A rule naming a set the fabric does not have makes it (empty).
struct PortRange {
  uint16_t first = 0, last = 0;  // inclusive; first <= last
  bool operator==(const PortRange&) const = default;
  auto operator<=>(const PortRange&) const = default;
};

struct PolicyRule {
  uint8_t protocol = 0;           // 0: any; else IPPROTO_ICMP, IPPROTO_TCP or IPPROTO_UDP
  std::vector<PortRange> ports;   // tcp and udp: the destination ports; empty: every port
  std::vector<std::pair<uint32_t, int>> cidrs;  // peers (address, prefix length)
  std::vector<std::string> sets;  // peers: the addresses of these sets
  bool operator==(const PolicyRule&) const = default;
};

struct Policy {
  std::vector<PolicyRule> ingress;  // peer: the source
  std::vector<PolicyRule> egress;   // peer: the destination
  bool operator==(const Policy&) const = default;
};

// A set's name: 1..63 characters of [a-z0-9_-], starting with a letter.
std::optional<Error> check_set_name(const std::string& name);
// Why a policy cannot be programmed (a protocol not in {0, 1, 6, 17}, ports on a
// protocol without them, an empty or reversed port range, a prefix length outside
// 0..32, a bad set name), or nullopt.
std::optional<Error> check(const Policy& policy);

// One create or delete of a batch.
struct Change {
  enum class Op { kCreateLocal, kDeleteLocal, kCreateRemote, kDeleteRemote };
  Op op = Op::kCreateLocal;
  LocalIfc local;    // for the local ops
  RemoteIfc remote;  // for the remote ops
  static Change create(const LocalIfc& l) { return {Op::kCreateLocal, l, {}}; }
  static Change remove(const LocalIfc& l) { return {Op::kDeleteLocal, l, {}}; }
  static Change create(const RemoteIfc& r) { return {Op::kCreateRemote, {}, r}; }
  static Change remove(const RemoteIfc& r) { return {Op::kDeleteRemote, {}, r}; }
  bool operator==(const Change&) const = default;
};

class Fabric {
 public:
  virtual ~Fabric() = default;
  virtual std::string name() const = 0;

  // Applies `changes`; result i is change i's. Changes of one interface (a local's VNI and
  // MAC, a remote's VNI and guest IP) take effect in their order in the batch. The default
  // makes one call per change.
  virtual std::vector<Result<void>> apply(const std::vector<Change>& changes);

  virtual Result<void> create_local(const LocalIfc& ifc) = 0;
  virtual Result<void> delete_local(const LocalIfc& ifc) = 0;
  virtual Result<void> create_remote(const RemoteIfc& ifc) = 0;
  virtual Result<void> delete_remote(const RemoteIfc& ifc) = 0;

  // See Plug above. plug() returns what the namespace has once it is done; inspect() reads
  // it (kNotFound: no such namespace or no interface of that name in it).
  virtual Result<Plugged> plug(const LocalIfc& ifc, const Plug& plug) = 0;
  virtual Result<Plugged> inspect(const std::string& netns, const std::string& ifname) = 0;

  // What exists now (read back from the kernel for linux), for adoption at start-up.
  virtual Result<std::vector<LocalIfc>> list_local() = 0;
  virtual Result<std::vector<RemoteIfc>> list_remote() = 0;

  // Security groups (see Policy above). The defaults, for fabrics that do not enforce
  // them: set_policy(ifc, nullopt) and list calls succeed with nothing, everything else
  // answers kUnsupported.
  //
  // set_policy gives local interface `ifc` (created already, kNotFound otherwise) the
  // policy `policy`, replacing the one it had; nullopt: none. The policy goes with the
  // interface (delete_local).
  virtual Result<void> set_policy(const LocalIfc& ifc, const std::optional<Policy>& policy);
  // Adds `add` to set `name` and removes `remove` from it (making the set if needed);
  // adding what is there or removing what is not succeeds.
  virtual Result<void> update_set(const std::string& name, const std::vector<uint32_t>& add,
                                  const std::vector<uint32_t>& remove);
  // Deletes set `name` (absent: success). kConflict while a policy names it.
  virtual Result<void> delete_set(const std::string& name);
  // What exists now, for adoption at start-up: the sets with their addresses, and the
  // policies by local interface name (LocalIfc::name).
  virtual Result<std::map<std::string, std::vector<uint32_t>>> list_sets();
  virtual Result<std::map<std::string, Policy>> list_policies();
};

}  // namespace kos::fabric
