// The IPAM controller: gives each NetworkAttachment an address from its Subnet by creating
// an IPLock named for (VNI, address). Creating the lock *is* taking the address: the API
// server refuses a second object with the same name, so two IPAM controllers running at
// once (or one restarted at the worst moment) can never hand out the same address. The
// in-memory set of taken addresses (rebuilt from the IPLock informer at start) only
// avoids collisions; it is not trusted for correctness.
//
// Per attachment: find the Subnet (errors: does not exist / has not passed validation);
// classify its locks (wrong VNI or out of range: delete; keep exactly one); with none,
// pick a free address, create the lock with a controller ownerReference to the attachment
// (its UID), then write status.ipv4/addressVNI/lockUID through the status subresource.
// A full subnet sets addressContention and retries with backoff. Without a (validated)
// Subnet an attachment gets no new address and keeps the one it holds, which its status
// then shows (see without_subnet). A reconcile whose caches show the attachment done, or
// not started, needs no read from the server (see assign). Deleting an attachment
// releases its locks: the API server's garbage collector deletes them (they name the
// attachment as owner), and what is left after release_grace the IPAM deletes (UID
// preconditions, so a newer incarnation's lock is never removed).
#pragma once

#include <memory>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "client/event_recorder.h"
#include "client/informer.h"
#include "common/clock.h"
#include "controllers/ipam/address_pool.h"
#include "controllers/controller.h"

namespace kos::controllers {

struct IpamOptions {
  int workers = 4;
  // A picked address whose lock the informer has not shown after this long is free again
  // in the IPAM's view (the store still refuses a second lock if it exists after all).
  std::chrono::milliseconds reservation_ttl = std::chrono::seconds(30);
  const Clock* clock = nullptr;  // reservations and the queue's delays; RealClock when unset
  // The locks of a deleted attachment are the API server's garbage collector's to delete
  // (they name it as their owner): the IPAM deletes those still there after this long
  // (0: at once). Deleting them at once races the collector: a GET and a DELETE per
  // attachment that answer 404.
  std::chrono::milliseconds release_grace = std::chrono::seconds(2);
};

class Ipam {
 public:
  Ipam(std::shared_ptr<client::RestClient> client, IpamOptions opts = {},
       client::EventRecorder* events = nullptr);
  ~Ipam();
  // Starts the informers, waits until all have synced, then starts the workers.
  Result<void> start();
  void stop();

  // One attachment, by "namespace/name". Public for tests.
  Result<Requeue> reconcile(const std::string& key);
  // The part of reconcile() decided on the caches alone: the attachment is addressed as
  // its Subnet says, our own status write has not reached the cache yet, or a deleted one
  // has no lock left. nullopt: it needs the rest (reads and writes of the server). Never
  // blocks: the informers' events run it on their thread (a worker woken for each event of
  // an addressed attachment costs more than the check). Public for tests.
  std::optional<Result<Requeue>> reconcile_cached(const std::string& key);

 private:
  struct Reservation;
  // An event's key: settled here by reconcile_cached() if the caches decide it, else queued.
  void settle_or_queue(const std::string& key);
  // The attachment shows an address of `subnet`, held by the one lock of this incarnation.
  bool addressed(const api::NetworkAttachment& na, const api::Subnet& subnet);
  Result<Requeue> release_all(const std::string& key);
  Result<void> delete_lock(const api::IPLock& lock);
  Result<Requeue> write_status(const api::NetworkAttachment& na, const api::NetworkAttachmentStatus& st);
  Result<Requeue> assign(const api::NetworkAttachment& na, const api::Subnet& subnet);
  Result<Requeue> without_subnet(const api::NetworkAttachment& na, std::string msg);
  std::optional<uint32_t> pick(uint32_t vni, uint32_t first, uint32_t last);
  void unreserve(uint32_t vni, uint32_t ip);
  // Another namespace than `ns` holding addresses of `vni`; `waiter` is then requeued
  // when that namespace lets go.
  std::optional<std::string> foreign_holder(uint32_t vni, const std::string& ns, const std::string& waiter);

  std::shared_ptr<client::RestClient> client_;
  client::EventRecorder* events_;
  client::Informer subnets_, nas_, locks_;
  Controller controller_;

  std::mutex mu_;
  AddressPool pool_;  // taken (from the lock informer) and reserved addresses
  // Per VNI, the namespaces holding its locks (with a count): a VNI whose addresses are
  // held in one namespace hands out none in another (the VNI stays bound to its namespace
  // until the last address there is released, even after its Subnets are deleted).
  std::unordered_map<uint32_t, std::unordered_map<std::string, size_t>> holder_ns_;
  // Per VNI, the attachments waiting for it to be released by another namespace.
  std::unordered_map<uint32_t, std::unordered_set<std::string>> vni_waiters_;
  // Status writes of ours the attachment informer has not shown yet: key -> resourceVersion
  // before and after our write. While the cache shows `before`, the key needs no work.
  struct InFlight {
    std::string before, after;
  };
  std::unordered_map<std::string, InFlight> inflight_;
  // Deleted attachments whose locks wait for the collector (release_grace).
  std::unordered_set<std::string> releasing_;
  const std::chrono::milliseconds release_grace_;

  metrics::Family<metrics::Histogram>& lock_ops_;
  metrics::Family<metrics::Histogram>& addressed_latency_;
  metrics::Family<metrics::Counter>& contention_;
  metrics::Family<metrics::Counter>& anticipation_;
};

}  // namespace kos::controllers
