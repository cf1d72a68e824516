// SecurityGroup: what its member attachments may accept and send.
#include "api/cidr.h"
#include "api/describe.h"
#include "api/kinds/rules.h"
#include "api/names.h"
#include "api/security_groups.h"

namespace kos::api {

std::optional<std::uint8_t> protocol_number(std::string_view protocol) {
  if (protocol == "tcp") return 6;
  if (protocol == "udp") return 17;
  if (protocol == "icmp") return 1;
  if (protocol == "any") return 0;
  return std::nullopt;
}

std::optional<std::pair<std::uint16_t, std::uint16_t>> parse_port_range(std::string_view text) {
  const auto dash = text.find('-');
  const auto first = parse_decimal(text.substr(0, dash), 65535);
  const auto last = dash == std::string_view::npos ? first : parse_decimal(text.substr(dash + 1), 65535);
  if (!first || !last || *first == 0 || *first > *last) return std::nullopt;
  return std::pair{static_cast<std::uint16_t>(*first), static_cast<std::uint16_t>(*last)};
}

namespace {

const StructDesc<SecurityGroupPeer>& peer() {
  using S = SecurityGroupPeer;
  static const StructDesc<S> d{
      "SecurityGroupPeer",
      "The other end of a rule's traffic: an address range or the members of a security "
      "group. Exactly one of cidr and securityGroup.",
      {
          field("cidr", &S::cidr,
                {.description = "An IPv4 address range, e.g. \"10.1.0.0/16\" or \"0.0.0.0/0\" "
                                "(everything)."},
                FieldRule<std::string>([](Causes& c, const FieldPath& path, const std::string& v) {
                  if (auto r = parse_cidr(v); !r) c.invalid(path, show(v), detail_of(r.error()));
                })),
          field("securityGroup", &S::security_group,
                {.description = "The name of a SecurityGroup in the same namespace: the "
                                "addresses of its members (the attachments that name it in "
                                "spec.securityGroups), in the address domain (VNI or VPC) of "
                                "the attachment the rule protects. A group that does not "
                                "exist has no members."},
                FieldRule<std::string>(rules::object_name)),
      }};
  return d;
}

void check_peer(Causes& c, const std::string& path, const SecurityGroupPeer& p) {
  if (p.cidr.empty() == p.security_group.empty())
    c.invalid(path, "{...}", "exactly one of cidr and securityGroup is required");
}

// The fields ingress and egress rules share; `peers` is "from" or "to".
template <class R>
const StructDesc<R>& rule_desc(std::string name, std::string description, std::string_view peers,
                               std::vector<SecurityGroupPeer> R::*peer_member, std::string peers_doc) {
  static const StructDesc<R> d{
      std::move(name),
      std::move(description),
      {
          field("protocol", &R::protocol,
                {.description = "tcp, udp, icmp or any. Required.", .required = true},
                FieldRule<std::string>([](Causes& c, const FieldPath& path, const std::string& v) {
                  if (!protocol_number(v)) c.invalid(path, show(v), "must be tcp, udp, icmp or any");
                })),
          field("ports", &R::ports,
                {.description = "Destination ports, each \"N\" or \"N-M\" (1..65535), tcp and "
                                "udp only. Empty: every port."},
                FieldRule<std::vector<std::string>>(
                    [](Causes& c, const FieldPath& path, const std::vector<std::string>& v) {
                      if (v.size() > kMaxRulePorts) {
                        c.invalid(path, std::to_string(v.size()) + " ports",
                                  "at most " + std::to_string(kMaxRulePorts));
                        return;
                      }
                      for (std::size_t i = 0; i < v.size(); ++i) {
                        if (!parse_port_range(v[i]))
                          c.invalid(path.str() + "[" + std::to_string(i) + "]", show(v[i]),
                                    "must be a port N or a range N-M with 1 <= N <= M <= 65535");
                      }
                    })),
          list_field(peers, peer_member, peer(), {.description = std::move(peers_doc), .required = true},
                     check_peer),
      }};
  return d;
}

void check_rule_common(Causes& c, const std::string& path, const std::string& protocol,
                       const std::vector<std::string>& ports, std::size_t peers) {
  if (auto p = protocol_number(protocol); p && !ports.empty() && !protocol_has_ports(*p))
    c.invalid(path + ".ports", show(ports), "only tcp and udp rules have ports");
  if (peers > kMaxRulePeers)
    c.invalid(path, std::to_string(peers) + " peers", "at most " + std::to_string(kMaxRulePeers));
}

const StructDesc<SecurityGroupSpec>& spec() {
  using S = SecurityGroupSpec;
  static const auto& ingress = rule_desc<SecurityGroupIngressRule>(
      "SecurityGroupIngressRule", "Traffic the group's members accept.", "from",
      &SecurityGroupIngressRule::from,
      "Where the traffic may come from: address ranges and security groups. Required.");
  static const auto& egress = rule_desc<SecurityGroupEgressRule>(
      "SecurityGroupEgressRule", "Traffic the group's members may send.", "to",
      &SecurityGroupEgressRule::to,
      "Where the traffic may go: address ranges and security groups. Required.");
  static const StructDesc<S> d{
      "SecurityGroupSpec",
      "The rules of a SecurityGroup. An attachment in at least one group accepts only what "
      "the ingress rules of its groups allow and sends only what their egress rules allow; "
      "replies to allowed traffic always pass (the rules are stateful).",
      {
          list_field("ingress", &S::ingress, ingress,
                     {.description = "What members accept. Empty: nothing but replies."},
                     [](Causes& c, const std::string& path, const SecurityGroupIngressRule& r) {
                       check_rule_common(c, path, r.protocol, r.ports, r.from.size());
                     }),
          list_field("egress", &S::egress, egress,
                     {.description = "What members send. Empty: nothing but replies."},
                     [](Causes& c, const std::string& path, const SecurityGroupEgressRule& r) {
                       check_rule_common(c, path, r.protocol, r.ports, r.to.size());
                     }),
      }};
  return d;
}

KindDesc<SecurityGroup> make() {
  KindDesc<SecurityGroup> d;
  d.kind = Kind::kSecurityGroup;
  d.description =
      "A SecurityGroup (short name sg) says what the NetworkAttachments that name it in "
      "spec.securityGroups (its members) may accept (ingress) and send (egress). Rules "
      "allow; everything an attachment's groups do not allow is dropped, except replies to "
      "allowed traffic. Attachments in no group accept and send everything. The connection "
      "agent of each node enforces the groups of its attachments, and learns the members "
      "of a group only where a rule names it.";
  d.spec_description = "The group's ingress and egress rules.";
  d.spec_desc = &spec();
  d.rules = [](Causes& c, const SecurityGroup& g) {
    if (g.spec.ingress.size() > kMaxSecurityGroupRules)
      c.invalid("spec.ingress", std::to_string(g.spec.ingress.size()) + " rules",
                "at most " + std::to_string(kMaxSecurityGroupRules));
    if (g.spec.egress.size() > kMaxSecurityGroupRules)
      c.invalid("spec.egress", std::to_string(g.spec.egress.size()) + " rules",
                "at most " + std::to_string(kMaxSecurityGroupRules));
  };
  d.sections = {section::kSpec};
  d.columns = {
      field_column<SecurityGroup>("Ingress", "spec.ingress", "Ingress rules"),
      field_column<SecurityGroup>("Egress", "spec.egress", "Egress rules"),
  };
  d.finish();
  return d;
}

}  // namespace

template <>
const KindDesc<SecurityGroup>& describe<SecurityGroup>() {
  static const KindDesc<SecurityGroup> d = make();
  return d;
}

}  // namespace kos::api
