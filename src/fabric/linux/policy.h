// Security groups (fabric.h: Policy, address sets) for the linux fabric, in nftables.
//
// Where a bridged packet can be judged. With br_netfilter (net.bridge.bridge-nf-call-iptables
// = 1) bridged IPv4 goes through the inet hooks with conntrack, but there the bridge ports
// are out of sight: in PREROUTING and in FORWARD both iifname and oifname are the bridge
// (kosbr<V>), never the port (kh<MAC>) — measured on kernel 6.18, and what br_netfilter
// does: it hands the inet hooks the bridge as the "logical" device. `meta ibrname` and its
// kind are refused in the inet family ("Operation not supported"), and the bridge family
// cannot track connections here (`ct state` in a bridge chain: "Protocol error", no
// nf_conntrack_bridge). So the ports are named in the bridge family, whose hooks run
// before br_netfilter's (which sit at priority 0), and passed on in the packet mark:
//
//   table bridge kos {
//     map port-marks { type ifname : mark }          # policed host end -> its mark
//     chain mark-in  { prerouting, priority -200:     # the port a frame came from
//       meta mark 0x4b050000/16 meta mark set 0       #   (a stale mark of ours is cleared)
//       meta mark set iifname map @port-marks
//       meta mark 0x4b050000/16 ether type != { ip, arp } drop }
//     chain mark-out { forward, priority -200: the same with oifname: the port it goes to }
//   }
//   table inet kos {
//     set s-<name> { type ipv4_addr }                 # the address sets (update_set)
//     map egress-chains  { type mark : verdict }      # mark -> jump e-<host end>
//     map ingress-chains { type mark : verdict }      # mark -> jump i-<host end>
//     map bridge-zones { typeof iifname : ct zone }   # bridge -> conntrack zone
//     chain set-zone      { prerouting, priority -300: ct zone set iifname map @bridge-zones }
//     chain check-egress  { prerouting, priority -150 (after conntrack): meta mark vmap @egress-chains }
//     chain check-ingress { forward, priority 0: meta mark vmap @ingress-chains }
//     chain e-<host end> { ct state established,related accept; ct state invalid drop;
//                          <egress rules, matching ip daddr> accept ...; drop;
//                          <the policy's encoding in comments, never reached> }
//     chain i-<host end> { the same for ingress, matching ip saddr }
//   }
//
// A frame from a policed port gets its mark in mark-in, is judged by its egress chain in
// the inet PREROUTING (after conntrack); in mark-out (the bridge has chosen the port) the
// mark becomes that of the port it goes to, cleared if that port is not policed, and the
// inet FORWARD judges it by the destination's ingress chain. Frames to or from a policed
// port other than IPv4 and ARP are dropped in the bridge family (IPv6, VLAN- or
// PPPoE-tagged frames that br_netfilter would not show the inet hooks); ARP passes.
// The mark is a whole 32-bit value 0x4b05xxxx (xxxx: 1..0x3fff, one per policed port, never
// the bits 0x4000 and 0x8000 that kube-proxy uses); on frames to or from a policed port
// the fabric owns skb->mark in its namespace. The bridge-family chains see the frames of
// every bridge of the namespace; on a bridge that is not the fabric's they change nothing
// but a stale mark of the fabric's range. Why the port and not the guest's MAC (ether
// saddr, which the inet hooks do see): a guest chooses its source MAC, not its port.
//
// Conntrack zones: one conntrack table serves every bridge of the namespace, and VNIs may
// use the same addresses, so a connection of one VNI would make the same 5-tuple of
// another "established". Each bridge with a policed port therefore gets a zone of its own
// (set-zone, before conntrack). The zones also keep apart the two passes of a packet
// routed through a VPC router (once on the sender's bridge, once on the receiver's).
//
// Rules. Each PolicyRule accepts, for each of its peer groups (its CIDRs together, each of
// its sets), new connections with that peer and its protocol and destination ports; a CIDR
// of length 0 is any peer; a rule without peers matches nothing (fabric.h does not say;
// this fabric reads "its peers are ..." literally). Replies and related packets of
// accepted connections pass (conntrack), invalid ones are dropped, the rest too.
//
// br_netfilter is a precondition, not a guarantee: set_policy and open make
// bridge-nf-call-iptables 1, but whoever sets it to 0 afterwards turns enforcement off
// (bridged IPv4 then never meets the inet hooks).
//
// What the fabric keeps where. The policy an interface was given is written, exactly, in
// the comments of rules after its chain's final drop (never evaluated; 128 bytes per
// comment, so a header "kos-policy v1 <rules> <length>" and chunks "kos:..."): that is
// how a fabric restarted lists exactly what set_policy was given. Sets are named "s-" +
// the set's name, which keeps them apart from the fabric's own objects and nft's keywords.
// The tables exist while there is a set or a policy; the last one gone, both are deleted
// (a node without security groups pays nothing per packet).
//
// Changes. set_policy is one transaction: the chains are flushed and refilled (only if the
// policy changed), the map elements and missing sets added. update_set adds and deletes
// single elements (never rebuilds a set); the fabric's cache of each set's addresses,
// read at open, makes adding a present or deleting an absent address a no-op (nft 1.0.6
// has no `destroy element`). On an nftables error the cache is read again from the kernel
// and the call retried once. At open (and before the first call if that failed) the tables
// are adopted, never flushed: the cache is rebuilt from their JSON listing; the pieces of
// interfaces that no longer exist, or whose encoding cannot be read, are removed; missing
// pieces of the others (a map element, a zone) are added; the base chains are rewritten if
// they are not as this version makes them.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include "fabric/fabric.h"
#include "fabric/linux/nft.h"

namespace kos::fabric::sg {

inline constexpr const char* kTable = "kos";
inline constexpr uint32_t kMarkBase = 0x4b050000, kMarkMask = 0xffff0000, kMaxMarkId = 0x3fff;

std::string set_object_name(const std::string& set);          // "s-" + set
std::string egress_chain_name(const std::string& host_end);   // "e-" + host end
std::string ingress_chain_name(const std::string& host_end);  // "i-" + host end

// The exact encoding of one direction's rules: rules joined by ';', each
// "<protocol>|<ports>|<cidrs>|<sets>" with ','-separated lists ("22" or "1000-2000";
// "10.0.0.0/8"; set names), everything as given (order, duplicates, host bits).
std::string encode_rules(const std::vector<PolicyRule>& rules);
std::optional<std::vector<PolicyRule>> decode_rules(std::string_view text, size_t count);
// The comments that carry them (each at most 128 bytes), and back.
std::vector<std::string> rule_comments(const std::vector<PolicyRule>& rules);
std::optional<std::vector<PolicyRule>> rules_from_comments(const std::vector<std::string>& comments);

// The nft commands that (re)fill chain `chain` with `rules`: created if missing, flushed,
// the stateful prologue, one rule per (rule, peer group), the final drop and the encoding.
// ingress: peers are sources (ip saddr); else destinations (ip daddr).
std::string chain_commands(const std::string& chain, const std::vector<PolicyRule>& rules, bool ingress);

// What the kos tables hold, as the fabric understands them.
struct State {
  bool inet = false, bridge = false;  // the tables exist
  bool base_ok = false;               // with the base maps and chains as this version makes them
  // e-/i- chains: their rules as the encoding says (nullopt: no readable encoding).
  std::map<std::string, std::optional<std::vector<PolicyRule>>> chains;
  std::map<uint32_t, std::string> egress, ingress;  // mark -> jump target
  std::map<std::string, uint32_t> ports;            // host end -> mark
  std::map<std::string, uint32_t> zones;            // bridge -> conntrack zone
  // Not in the kernel: the bridge of each policed host end (for its zone).
  std::map<std::string, std::string> bridges;
};

// Parses `list table inet kos` and `list table bridge kos` (JSON; null: the table does not
// exist) into a State and the sets' addresses. kInternal on what it cannot read.
Result<void> parse_tables(const boost::json::value* inet, const boost::json::value* bridge, State& state,
                          std::map<std::string, std::set<uint32_t>>& sets);

// The host end's policy if every piece is in place and agrees (chains readable, the port's
// mark, both map elements), else nullopt.
std::optional<Policy> policy_of(const State& s, const std::string& host_end);

struct PolicyStats {
  std::atomic<uint64_t> transactions{0};          // nft transactions run
  std::atomic<uint64_t> errors{0};                // transactions nft refused
  std::atomic<uint64_t> policy_updates{0};        // set_policy calls that changed something
  std::atomic<uint64_t> set_elements_changed{0};  // addresses added to or removed from sets
  std::atomic<uint64_t> adoptions{0};             // reads of the tables from the kernel
};

// The security-group state of one fabric. Used by the fabric's worker thread only (in its
// namespace); `bridge_of` tells the bridge of an existing local by host end, nullopt for a
// host end that is not a local.
class PolicyTables {
 public:
  using BridgeOf = std::function<std::optional<std::string>(const std::string& host_end)>;
  PolicyTables(std::string where, BridgeOf bridge_of) : where_(std::move(where)), bridge_of_(std::move(bridge_of)) {}

  // Opens the nftables context in the calling thread's namespace and adopts the tables.
  // Errors are kept: the calls try again first and answer them if it still fails.
  Result<void> open();

  // The host end's local exists and sits on `bridge` (the caller checked).
  Result<void> set_policy(const std::string& host_end, const std::string& bridge, const Policy& policy);
  // Removes every piece of the host end's policy (absent: nothing to do).
  Result<void> remove_policy(const std::string& host_end);
  bool has_policy_pieces(const std::string& host_end) const;
  // An address both in `add` and in `remove` ends up in the set.
  Result<void> update_set(const std::string& name, const std::vector<uint32_t>& add,
                          const std::vector<uint32_t>& remove);
  Result<void> delete_set(const std::string& name);
  // Read from the kernel again.
  Result<std::map<std::string, std::vector<uint32_t>>> list_sets();
  Result<std::map<std::string, Policy>> list_policies();  // by host end, complete ones only

  const PolicyStats& stats() const { return stats_; }

 private:
  struct Tx;
  Result<void> ready();
  Result<void> read();
  // ready() and read() for list_sets and list_policies: false without nf_tables (nothing
  // to list).
  Result<bool> read_for_listing();
  Result<void> adopt();
  Result<void> run(Tx& tx);
  Result<void> retrying(const std::function<Result<void>(Tx&)>& plan);
  Result<void> drop_tables_if_empty();
  void plan_base(Tx& tx) const;
  Result<void> plan_policy(Tx& tx, const std::string& host_end, const std::string& bridge, const Policy& policy) const;
  void plan_removal(Tx& tx, const std::string& host_end) const;
  bool empty() const;

  const std::string where_;
  const BridgeOf bridge_of_;
  nft::Context nft_;
  bool adopted_ = false;
  std::optional<Error> open_error_;
  State state_;
  std::map<std::string, std::set<uint32_t>> sets_;  // set name -> addresses
  PolicyStats stats_;
};

// Makes net.bridge.bridge-nf-call-iptables 1 in the calling thread's namespace (policies
// mean nothing without it); kUnsupported if br_netfilter is not loaded.
Result<void> ensure_bridge_netfilter(const std::string& where);

}  // namespace kos::fabric::sg
