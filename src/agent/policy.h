// Security groups on a node: how the agent turns the SecurityGroups of a local attachment
// into the fabric's Policy, names the address sets of the groups their rules reference,
// and keeps a set's elements as its members come and go (one element at a time).
//
// Address domains. A rule naming group G matches G's members *in the address domain of the
// attachment it protects*: its VNI, or for a subnet of a VPC the VPC (addresses are
// unique only there). So the set of G used by an attachment in domain D holds the
// addresses of G's members in D, and the agent watches exactly those members
// (spec.securityGroups=G plus the domain's field) of the groups its local attachments'
// rules name.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "api/types.h"
#include "fabric/fabric.h"

namespace kos::agent {

// The address domain of an addressed attachment: its VNI ("V"), or its VPC ("rR").
std::string address_domain(const api::NetworkAttachment& na);

// The field selector of the members of group `group` in domain `domain` (namespaced by
// the watch): spec.securityGroups=G,status.addressVNI=V (or status.routingVNI=R),status.ipv4!=.
std::string member_selector(const std::string& group, const std::string& domain);

// The fabric set of group `ns`/`group`'s members in `domain`: "m" and 16 hex digits of a
// hash of the three (a fabric set name is short; names and namespaces are long).
std::string member_set_name(const std::string& ns, const std::string& group, const std::string& domain);

// The groups a group's rules name as peers.
std::set<std::string> referenced_groups(const api::SecurityGroup& g);

// The policy of an attachment of namespace `ns` in domain `domain` that is in `groups`
// (the ones that exist; a missing group allows nothing): the union of their rules, each
// group peer as its member set in the domain. Rules are kept in group order, then rule
// order, so the same groups give the same policy.
fabric::Policy build_policy(const std::vector<const api::SecurityGroup*>& groups, const std::string& ns,
                            const std::string& domain);

// The addresses of one member set, by member (attachment key): what was programmed, with
// a count per address (two members may hold one address for a moment: one deleted, the
// other addressed). set() says which addresses to add to and remove from the fabric's set.
class MemberSet {
 public:
  struct Delta {
    std::vector<uint32_t> add, remove;
    bool empty() const { return add.empty() && remove.empty(); }
  };
  // Member `key` now has address `ip` (nullopt: it is no member).
  Delta set(const std::string& key, std::optional<uint32_t> ip);
  // Undoes set(): the fabric refused the delta.
  void restore(const std::string& key, std::optional<uint32_t> ip_before);
  std::optional<uint32_t> of(const std::string& key) const;
  // The delta that turns a fabric set holding `have` into this one.
  Delta against(const std::set<uint32_t>& have) const;
  size_t size() const { return by_key_.size(); }
  size_t addresses() const { return count_.size(); }

 private:
  std::map<std::string, uint32_t> by_key_;
  std::map<uint32_t, int> count_;
};

}  // namespace kos::agent
