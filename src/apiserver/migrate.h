// Start-up migrations of the stored layout, run by the API server before its watch caches
// fill.
//
// Key layout of kinds whose names are unique across namespaces (IPLock): versions before
// this one stored them under /registry/<group>/<plural>/<namespace>/<name>, where the store
// refused only a second lock of one (namespace, VNI, address). They now live under
// /registry/<group>/<plural>/<name>: one holder per (VNI, address) cluster-wide. Each
// old-layout key is moved (create at the new key, then delete the old one; a crash in
// between leaves both, and the next start finishes the move). Where two namespaces held
// the same name (the double allocation the new layout prevents), the earliest-created lock
// keeps the address and the others are deleted with an error in the log: their
// attachments' IPAM sees the lock gone and gives them a new address.
//
// Upgrade: stop every API server, then start them; the first one moves the keys. A server
// of an older version writing meanwhile would create old-layout keys that only the next
// start moves.
#pragma once

#include <cstddef>

#include "apiserver/resource.h"
#include "common/error.h"
#include "store/store.h"

namespace kos::apiserver {

struct MigrationReport {
  size_t moved = 0;       // old-layout keys moved to the new layout
  size_t duplicates = 0;  // old-layout keys deleted: another namespace held the name
};

// Moves every old-layout key of `info` (cluster_unique_names set; otherwise a no-op).
Result<MigrationReport> migrate_to_cluster_unique_keys(store::Store& store, const ResourceInfo& info);

}  // namespace kos::apiserver
