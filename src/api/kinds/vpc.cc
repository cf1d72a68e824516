// Vpc: a virtual private cloud, the routing domain of the subnets that name it.
#include "api/describe.h"
#include "api/kinds/rules.h"
#include "api/names.h"

namespace kos::api {
namespace {

const StructDesc<VpcSpec>& spec() {
  static const StructDesc<VpcSpec> d{
      "VpcSpec",
      "The desired state of a Vpc.",
      {
          field("vni", &VpcSpec::vni,
                {.description = "The VPC's routing VNI, " + rules::vni_range() +
                                ": it identifies the VPC's routing domain on every node. No "
                                "Subnet and no other Vpc may use it. Required. Immutable.",
                 .format = "int64",
                 .minimum = 1,
                 .maximum = kMaxVni,
                 .required = true,
                 .immutable = true,
                 .selectable = true,
                 .always = true}),
          field("cidrBlocks", &VpcSpec::cidr_blocks,
                {.description = "Address ranges (CIDRs inside 10.0.0.0/8, 172.16.0.0/12 or "
                                "192.168.0.0/16) that the VPC's subnets must lie in; they "
                                "are also the routes its guests send through their gateway. "
                                "Empty: any range, and guests route everything (0.0.0.0/0) "
                                "through the gateway. Optional. Immutable.",
                 .immutable = true},
                FieldRule<std::vector<std::string>>(
                    [](Causes& c, const FieldPath& path, const std::vector<std::string>& v) {
                      for (std::size_t i = 0; i < v.size(); ++i) {
                        const std::string p = path.str() + "[" + std::to_string(i) + "]";
                        if (v[i].empty()) c.required(p);
                        else rules::private_cidr(c, FieldPath{{}, p}, v[i]);
                      }
                    })),
      }};
  return d;
}

const StructDesc<VpcStatus>& status() {
  static const StructDesc<VpcStatus> d{
      "VpcStatus",
      "The observed state of a Vpc, written by the subnet validator.",
      {
          field("validated", &VpcStatus::validated,
                {.description = "True once the subnet validator found that no other Vpc and "
                                "no Subnet uses the VPC's VNI. Once true it stays true for "
                                "the lifetime of this object (its UID). Subnets of the VPC "
                                "are validated only once it is."}),
          field("errors", &VpcStatus::errors,
                {.description = "Why the VPC is not validated, e.g. \"VNI used by Vpc "
                                "ns/name\"."}),
          field("subnetCount", &VpcStatus::subnet_count,
                {.description = "How many Subnets name this VPC in spec.vpc.",
                 .format = "int32"}),
      }};
  return d;
}

KindDesc<Vpc> make() {
  KindDesc<Vpc> d;
  d.kind = Kind::kVpc;
  d.description =
      "A Vpc (virtual private cloud) is the routing domain of the Subnets that name it in "
      "spec.vpc: guests on those subnets reach each other through their subnet's gateway, "
      "routed on the node they are on, and reach nothing of other VPCs or of isolated "
      "subnets. Different VPCs may use the same address ranges.";
  d.spec_description = "The desired state of the VPC: its routing VNI and address ranges.";
  d.status_description = "The observed state of the VPC: whether it passed validation.";
  d.spec_desc = &spec();
  d.status_desc = &status();
  d.indexed_fields = {"spec.vni"};
  d.sections = {section::kSpec, section::kStatus};
  d.columns = {
      field_column<Vpc>("VNI", "spec.vni", "Routing VNI"),
      {"CIDRs", "string", "Address ranges of its subnets", 0,
       [](const Vpc& v) {
         return boost::json::value(v.spec.cidr_blocks.empty()
                                       ? std::string("<any>")
                                       : describe_detail::text_of(v.spec.cidr_blocks));
       }},
      field_column<Vpc>("Subnets", "status.subnetCount", "Subnets that name it"),
      field_column<Vpc>("Validated", "status.validated", "Passed the subnet validator"),
      field_column<Vpc>("Errors", "status.errors", "Why it is not validated", 1),
  };
  d.finish();
  return d;
}

}  // namespace

template <>
const KindDesc<Vpc>& describe<Vpc>() {
  static const KindDesc<Vpc> d = make();
  return d;
}

}  // namespace kos::api
