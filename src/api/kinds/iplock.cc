// IPLock: one address of one virtual network, taken.
#include "api/describe.h"
#include "api/kinds/rules.h"
#include "api/names.h"

namespace kos::api {
namespace {

const StructDesc<IPLockSpec>& spec() {
  static const StructDesc<IPLockSpec> d{
      "IPLockSpec",
      "The desired state of an IPLock.",
      {
          field("subnetName", &IPLockSpec::subnet_name,
                {.description = "Name of the Subnet, in the same namespace, the locked "
                                "address belongs to. Required. Immutable.",
                 .required = true,
                 // The name pins the lock to a VNI: moving it to another subnet makes
                 // no sense.
                 .immutable = true,
                 .selectable = true,
                 .always = true},
                FieldRule<std::string>(rules::object_name)),
      }};
  return d;
}

KindDesc<IPLock> make() {
  KindDesc<IPLock> d;
  d.kind = Kind::kIPLock;
  d.description =
      "An IPLock (short name ipl) records that one IPv4 address of one virtual network is "
      "taken. Its name is v1-<vni>-<a>-<b>-<c>-<d> with the decimal VNI and address octets "
      "(e.g. v1-65537-172-24-0-5), so the store refuses a second lock on the same address: "
      "creating the lock is taking the address. It carries exactly one controller "
      "ownerReference, to the NetworkAttachment that holds the address, and is "
      "garbage-collected when that attachment is deleted. IPAM creates and deletes IPLocks.";
  d.spec_description = "The desired state of the lock. Immutable.";
  d.spec_desc = &spec();
  d.cluster_unique_names = true;  // one holder per (VNI, address), in any namespace
  d.sections = {section::kSpec};
  d.name_rule = [](std::string_view name) -> std::optional<std::string> {
    if (auto r = parse_iplock_name(name); !r) return detail_of(r.error());
    return std::nullopt;
  };
  d.columns = {
      field_column<IPLock>("Subnet", "spec.subnetName", "Subnet of the locked address"),
      {"Owner", "string", "Attachment that holds the lock", 0,
       [](const IPLock& l) {
         std::string owner;
         for (const auto& r : l.metadata.owner_references)
           if (r.controller.value_or(false)) owner = r.kind + "/" + r.name;
         return boost::json::value(owner);
       }},
  };
  d.finish();
  return d;
}

}  // namespace

template <>
const KindDesc<IPLock>& describe<IPLock>() {
  static const KindDesc<IPLock> d = make();
  return d;
}

}  // namespace kos::api
