// Subnet: an IPv4 range of one virtual network (VNI).
#include "api/cidr.h"
#include "api/describe.h"
#include "api/kinds/rules.h"
#include "api/names.h"

namespace kos::api {
namespace {

const StructDesc<SubnetSpec>& spec() {
  static const StructDesc<SubnetSpec> d{
      "SubnetSpec",
      "The desired state of a Subnet.",
      {
          field("ipv4", &SubnetSpec::ipv4,
                {.description =
                     "The address range of the subnet in CIDR notation, e.g. \"10.1.2.0/24\". "
                     "Must lie inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16 (guest MAC "
                     "addresses are derived from the address and are collision-free only "
                     "there) and must not overlap the range of any other Subnet with the "
                     "same VNI. Required. Immutable.",
                 .required = true,
                 .immutable = true,
                 .always = true},
                FieldRule<std::string>(rules::private_cidr)),
          field("vni", &SubnetSpec::vni,
                {.description = "The VXLAN Network Identifier (VNI) of the virtual network "
                                "the subnet belongs to, " +
                                rules::vni_range() +
                                ". All Subnets with the same VNI must be in the same "
                                "namespace. Required. Immutable.",
                 .format = "int64",
                 .minimum = 1,
                 .maximum = kMaxVni,
                 .required = true,
                 .immutable = true,
                 .selectable = true,
                 .always = true}),
          field("vpc", &SubnetSpec::vpc,
                {.description =
                     "Name of the Vpc, in the same namespace, that routes this subnet to the "
                     "VPC's other subnets. A subnet of a VPC reserves its first usable "
                     "address as its gateway, so it needs a /29 or larger range; its VNI "
                     "must differ from the VPC's and from its other subnets', and its range "
                     "must not overlap theirs. Empty: an isolated network, reachable only "
                     "from its own VNI. Optional. Immutable.",
                 .immutable = true,
                 .selectable = true},
                FieldRule<std::string>(rules::object_name)),
      }};
  return d;
}

const StructDesc<SubnetStatus>& status() {
  static const StructDesc<SubnetStatus> d{
      "SubnetStatus",
      "The observed state of a Subnet, written by the subnet validator.",
      {
          field("validated", &SubnetStatus::validated,
                {.description = "True once the subnet validator found that this subnet "
                                "conflicts with no other Subnet of the same VNI (no "
                                "overlapping range, same namespace). Once true it stays true "
                                "for the lifetime of this object (its UID). IPAM assigns "
                                "addresses only from validated subnets."}),
          field("errors", &SubnetStatus::errors,
                {.description = "Why the subnet is not validated, e.g. \"CIDR overlaps with "
                                "ns/name's (cidr)\" or \"same VNI but different namespace wrt "
                                "ns/name\"."}),
          field("gateway", &SubnetStatus::gateway,
                {.description = "Subnets of a VPC: the gateway address guests route through, "
                                "the first usable address of the range (never assigned to an "
                                "attachment). Set with validated."}),
          field("routes", &SubnetStatus::routes,
                {.description = "Subnets of a VPC: the destinations (CIDRs) routed through the "
                                "gateway: the VPC's spec.cidrBlocks, or 0.0.0.0/0 when it has "
                                "none. Set with validated."}),
          field("routingVNI", &SubnetStatus::routing_vni,
                {.description = "Subnets of a VPC: the VPC's VNI. Set with validated.",
                 .format = "int64"}),
      }};
  return d;
}

KindDesc<Subnet> make() {
  KindDesc<Subnet> d;
  d.kind = Kind::kSubnet;
  d.description =
      "A Subnet is an IPv4 address range (CIDR) of one virtual network, identified by its "
      "VXLAN Network Identifier (VNI). Subnets with the same VNI form one virtual network: "
      "their CIDRs must not overlap and they must all be in the same namespace. The subnet "
      "validator checks this and sets status.validated; addresses are only assigned from "
      "validated subnets.";
  d.spec_description = "The desired state of the Subnet: its VNI and address range. Immutable.";
  d.status_description = "The observed state of the Subnet: whether it passed validation.";
  d.spec_desc = &spec();
  d.status_desc = &status();
  d.indexed_fields = {"spec.vni"};
  d.sections = {section::kSpec, section::kStatus};
  d.rules = [](Causes& c, const Subnet& s) {
    if (s.spec.vpc.empty()) return;
    // The gateway is the base address + 1, which IPAM skips in a /29 or larger (cidr.h).
    if (auto cidr = parse_cidr(s.spec.ipv4); cidr && cidr->size() < 8) {
      c.invalid("spec.ipv4", show(s.spec.ipv4),
                "a subnet of a VPC needs room for a gateway: a /29 or larger");
    }
  };
  d.columns = {
      field_column<Subnet>("VNI", "spec.vni", "VXLAN network identifier"),
      field_column<Subnet>("CIDR", "spec.ipv4", "IPv4 block of the subnet"),
      field_column<Subnet>("VPC", "spec.vpc", "The VPC that routes it", 1),
      field_column<Subnet>("Gateway", "status.gateway", "Gateway address (subnets of a VPC)", 1),
      field_column<Subnet>("Validated", "status.validated", "Passed the subnet validator"),
      field_column<Subnet>("Errors", "status.errors", "Why it is not validated", 1),
  };
  d.finish();
  return d;
}

}  // namespace

template <>
const KindDesc<Subnet>& describe<Subnet>() {
  static const KindDesc<Subnet> d = make();
  return d;
}

}  // namespace kos::api
