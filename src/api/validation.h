// Validation of KOS objects, as the API server runs it before every write.
//
// Each function returns kInvalid with one FieldCause per problem, in Kubernetes' form:
// reason FieldValueRequired / FieldValueInvalid / FieldValueTooLong, field the JSON
// path ("spec.vni", "metadata.labels[app]"), message "Required value",
// "Invalid value: 0: must be in the range 1..2097151". The Error message is Kubernetes'
// too: `Subnet.network.example.com "s1" is invalid: spec.vni: Invalid value: ...`.
//
// Rules beyond metadata (see kos-api.md):
//   Subnet  spec.vni 1..2097151; spec.ipv4 a CIDR (see cidr.h: no host bits, any
//           prefix length /8../32 that fits) inside 10/8, 172.16/12 or 192.168/16.
//   NA      spec.node, spec.subnet required DNS-1123 subdomains; a non-empty exec
//           command names a program; status.ipv4 / macAddress parse when set and
//           status.addressVNI <= 2097151.
//   IPLock  metadata.name is an IPLock name (names.h); spec.subnetName required.
// Immutable on update: metadata.name/namespace/uid; Subnet spec.vni/ipv4; NA
// spec.node/subnet/postCreateExec; IPLock spec.subnetName (the name pins the lock to
// a VNI, so moving it to another subnet makes no sense). An update is also validated
// as a whole, like a create. The caller fills server-owned fields (uid, namespace)
// before validating: an update without uid is an attempt to change it.
#pragma once

#include "api/types.h"
#include "common/error.h"

namespace kos::api {

Result<void> validate_subnet(const Subnet& obj);
Result<void> validate_network_attachment(const NetworkAttachment& obj);
Result<void> validate_iplock(const IPLock& obj);

Result<void> validate_subnet_update(const Subnet& old_obj, const Subnet& new_obj);
Result<void> validate_network_attachment_update(const NetworkAttachment& old_obj,
                                                const NetworkAttachment& new_obj);
Result<void> validate_iplock_update(const IPLock& old_obj, const IPLock& new_obj);

Result<void> validate(const AnyObject& obj);
// old_obj and new_obj must be the same kind (else kInternal: a caller bug).
Result<void> validate_update(const AnyObject& old_obj, const AnyObject& new_obj);

}  // namespace kos::api
