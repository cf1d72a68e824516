// The IPAM consistency check (`kos ipam-check`): reads every NetworkAttachment, IPLock and
// Subnet (of one namespace or all) as one snapshot and reports what breaks the IPAM
// invariants:
//   1. two attachments with the same (status.addressVNI, status.ipv4);
//   2. an attachment with an address but no IPLock for it held by its UID;
//   3. an IPLock whose controller (the attachment) is gone, that has no controller, or
//      whose controller is not a NetworkAttachment;
//   4. an IPLock whose name does not parse, whose Subnet does not exist, whose VNI is not
//      the Subnet's, or whose address lies outside the Subnet or its usable range.
// The only repair offered is deleting the locks of category 3 whose owner is gone
// (orphans), each with UID and resourceVersion preconditions, so that a lock re-created
// or changed since the check is never removed.
//
// The snapshot: the first list is a consistent read from the store (no resourceVersion);
// the others (and every page) read at exactly the revision it returned
// (resourceVersionMatch=Exact), so no finding comes from a write that landed between two
// reads. An owner missing at that revision is gone for good (UIDs are never reused).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/object.hpp>

#include "api/types.h"
#include "client/rest_client.h"
#include "common/error.h"

namespace kos::controllers::ipam {

enum class FindingKind {
  // 1. Attachments sharing one (VNI, IPv4); objects: the attachments.
  kDuplicateAddress,
  // 2. Attachment addressed, but the lock named for its address does not exist;
  //    objects: the attachment.
  kAddressWithoutLock,
  // 2. The lock exists but its controller is not this attachment (UID); objects: the
  //    attachment, then the lock.
  kLockHeldByOther,
  // 2. status.ipv4 does not parse or status.addressVNI is not a valid VNI, so no lock can
  //    name the address; objects: the attachment.
  kInvalidAddress,
  // 3. The controller NetworkAttachment (namespace/name with that UID) is gone; objects:
  //    the lock. The one repairable kind.
  kOrphanLock,
  // 3. The lock has no controller owner reference; objects: the lock.
  kUnownedLock,
  // 3. The lock's controller is not a NetworkAttachment of network.example.com/v1alpha1;
  //    objects: the lock.
  kForeignOwner,
  // 4. The lock's name is not v1-<vni>-<a>-<b>-<c>-<d>; objects: the lock.
  kBadLockName,
  // 4. spec.subnetName names no Subnet of the lock's namespace (or one whose CIDR does
  //    not parse); objects: the lock.
  kSubnetMissing,
  // 4. The lock's VNI is not its Subnet's; objects: the lock, then the Subnet.
  kVniMismatch,
  // 4. The lock's address is outside its Subnet's CIDR; objects: the lock, the Subnet.
  kOutsideSubnet,
  // 4. Inside the CIDR but outside the usable range (base+2 .. last-1 for subnets of at
  //    least 5 addresses); objects: the lock, then the Subnet.
  kOutsideRange,
};
inline constexpr int kFindingKinds = static_cast<int>(FindingKind::kOutsideRange) + 1;

// "duplicateAddress", "addressWithoutLock", ... (the JSON form).
std::string_view finding_kind_name(FindingKind kind);
// "duplicate address" / "duplicate addresses", ... (the summary line): the singular when
// count is 1, else the plural.
std::string_view finding_kind_label(FindingKind kind, size_t count = 1);
// 1..4: the category of the check list above.
int finding_category(FindingKind kind);

// An object a finding is about, as it was in the snapshot.
struct ObjectRef {
  std::string kind;  // "NetworkAttachment", "IPLock" or "Subnet"
  std::string ns;
  std::string name;
  std::string uid;
  std::string resource_version;
  std::string key() const { return ns + "/" + name; }
  bool operator==(const ObjectRef&) const = default;
};

struct Finding {
  FindingKind kind;
  std::vector<ObjectRef> objects;  // see FindingKind for what is where
  std::string message;             // one line, naming the objects by namespace/name
};

struct IpamReport {
  std::string resource_version;  // the snapshot's revision ("" when built in memory)
  std::string ns;                // the namespace checked ("" = all)
  size_t attachments = 0;
  size_t addressed = 0;  // attachments with status.ipv4 set
  size_t locks = 0;
  size_t subnets = 0;
  std::vector<Finding> findings;  // ordered by kind, then by the objects' keys

  bool clean() const { return findings.empty(); }
  size_t count(FindingKind kind) const;
};

// The findings of one snapshot. Pure; the inputs may be in any order.
IpamReport analyze(const std::vector<api::NetworkAttachment>& attachments,
                   const std::vector<api::IPLock>& locks, const std::vector<api::Subnet>& subnets);

// Lists the three kinds (`ns` empty: all namespaces) as one snapshot, `page_limit` objects
// a request, and analyzes them. Errors are the client's (kUnavailable or kTimeout when the
// server cannot be reached), prefixed with what was being listed.
Result<IpamReport> check_ipam(client::RestClient& client, const std::string& ns,
                              int64_t page_limit = 500);

// What repair_orphan_locks did with each orphan lock of the report.
struct RepairAction {
  enum class Outcome { kDeleted, kAlreadyGone, kChanged };  // kChanged: a precondition failed
  Outcome outcome;
  ObjectRef lock;
  std::string message;  // one line
};

// Deletes the kOrphanLock locks of `report` with preconditions uid and resourceVersion as
// they were in the report. A lock that is already gone or was changed or re-created since
// (409 Conflict) is skipped. Returns how many were deleted; `actions`, if given, receives
// one entry per orphan handled, in report order. Any other error stops the repair and is
// returned (the actions so far are kept).
Result<int> repair_orphan_locks(client::RestClient& client, const IpamReport& report,
                                std::vector<RepairAction>* actions = nullptr);

// "3 attachments (2 addressed), 2 locks, 1 subnet checked at resourceVersion 42 in all
// namespaces: 1 duplicate address, 1 orphan lock (2 findings)" or "...: no findings".
std::string format_summary(const IpamReport& report);

// {"resourceVersion", "namespace", "attachments", "addressed", "locks", "subnets",
//  "findings": [{"kind", "category", "message", "objects": [{kind, namespace, name, uid,
//  resourceVersion}]}], "counts": {kind: n, ...}}
boost::json::object report_json(const IpamReport& report);
boost::json::object repair_json(const RepairAction& action);

}  // namespace kos::controllers::ipam
