#include "controllers/ipam/ipam.h"

#include <spdlog/spdlog.h>

#include "api/cidr.h"
#include "api/names.h"

namespace kos::controllers {

namespace {

constexpr const char* kNoAddresses = "Referenced subnet has run out of IPs";

client::InformerOptions informer_of(api::Kind kind) {
  client::InformerOptions o;
  o.kind = kind;
  return o;
}

const api::OwnerReference* controller_ref(const api::IPLock& lock) {
  for (const auto& r : lock.metadata.owner_references)
    if (r.controller.value_or(false)) return &r;
  return nullptr;
}

std::string key_of(const api::ObjectMeta& m) { return client::object_key(m.namespace_, m.name); }

// A validated subnet of a VPC: its attachments route through its gateway.
bool routed(const api::Subnet& subnet) { return !subnet.spec.vpc.empty() && !subnet.status.gateway.empty(); }

void clear_routing(api::NetworkAttachmentStatus& st) {
  st.gateway.clear();
  st.prefix_length = 0;
  st.routes.clear();
  st.routing_vni = 0;
}

// Copies what a guest on a subnet of a VPC routes by (the validated Subnet's status) into
// an attachment's status; clears it for an isolated subnet.
void set_routing(api::NetworkAttachmentStatus& st, const api::Subnet& subnet, const api::Ipv4Cidr& cidr) {
  if (!routed(subnet)) return clear_routing(st);
  st.gateway = subnet.status.gateway;
  st.prefix_length = cidr.prefix;
  st.routes = subnet.status.routes;
  st.routing_vni = subnet.status.routing_vni;
}

// What set_routing would write is there already (compared in place: this runs on every
// reconcile of an addressed attachment).
bool routing_matches(const api::NetworkAttachmentStatus& st, const api::Subnet& subnet,
                     const api::Ipv4Cidr& cidr) {
  if (!routed(subnet)) return st.gateway.empty() && st.prefix_length == 0 && st.routes.empty() && st.routing_vni == 0;
  return st.gateway == subnet.status.gateway && st.prefix_length == cidr.prefix &&
         st.routes == subnet.status.routes && st.routing_vni == subnet.status.routing_vni;
}

}  // namespace

Ipam::Ipam(std::shared_ptr<client::RestClient> client, IpamOptions opts,
           client::EventRecorder* events)
    : client_(client), events_(events), subnets_(client, informer_of(api::Kind::kSubnet)),
      nas_(client, informer_of(api::Kind::kNetworkAttachment)),
      locks_(client, informer_of(api::Kind::kIPLock)),
      controller_("ipam", opts.workers, [this](const std::string& k) { return reconcile(k); },
                  metrics::Registry::global(), opts.clock),
      pool_(opts.clock ? *opts.clock : RealClock::instance(), opts.reservation_ttl),
      release_grace_(opts.release_grace),
      lock_ops_(metrics::Registry::global().histogram("kos_ipam_lock_op_seconds",
                                                      "Latency of IPLock creates and deletes.",
                                                      {"op"})),
      addressed_latency_(metrics::Registry::global().histogram(
          "kos_ipam_write_to_addressed_seconds",
          "Time from the last client write of an attachment's spec to its address being written.")),
      contention_(metrics::Registry::global().counter(
          "kos_ipam_address_contention_total", "Attachments that found their subnet full.")),
      anticipation_(metrics::Registry::global().counter(
          "kos_ipam_anticipation_used_total",
          "Reconciles skipped because the informer had not yet shown IPAM's own write.")) {
  nas_.indexer().add_index("subnet", [](const api::AnyObject& o) {
    const auto& na = std::get<api::NetworkAttachment>(o);
    return std::vector<std::string>{client::object_key(na.metadata.namespace_, na.spec.subnet)};
  });
  locks_.indexer().add_index("owner-uid", [](const api::AnyObject& o) {
    const auto* r = controller_ref(std::get<api::IPLock>(o));
    return r ? std::vector<std::string>{r->uid} : std::vector<std::string>{};
  });
  locks_.indexer().add_index("owner-key", [](const api::AnyObject& o) {
    const auto& lock = std::get<api::IPLock>(o);
    const auto* r = controller_ref(lock);
    return r ? std::vector<std::string>{client::object_key(lock.metadata.namespace_, r->name)}
             : std::vector<std::string>{};
  });

  // Most events need no work (our own writes coming back, the agent's status): decided here
  // when the caches show it, else a worker takes the key.
  auto enqueue_na = [this](const client::ObjectPtr& o) { settle_or_queue(client::object_key(*o)); };
  nas_.add_handlers({enqueue_na, [=](const client::ObjectPtr&, const client::ObjectPtr& o) { enqueue_na(o); },
                     [=](const client::ObjectPtr& o, bool) { enqueue_na(o); }});

  auto subnet_changed = [this](const client::ObjectPtr& o) {
    for (const auto& na : nas_.indexer().by_index("subnet", client::object_key(*o)))
      controller_.enqueue(client::object_key(*na));
  };
  subnets_.add_handlers({subnet_changed,
                         [=](const client::ObjectPtr&, const client::ObjectPtr& o) { subnet_changed(o); },
                         [=](const client::ObjectPtr& o, bool) { subnet_changed(o); }});

  auto lock_event = [this](const client::ObjectPtr& o, bool added) {
    const auto& lock = std::get<api::IPLock>(*o);
    auto name = api::parse_iplock_name(lock.metadata.name);
    std::unordered_set<std::string> waiters;
    if (name) {
      std::lock_guard lk(mu_);
      auto& holders = holder_ns_[name->vni];
      if (added) {
        pool_.taken(name->vni, name->ipv4);
        ++holders[lock.metadata.namespace_];
      } else {
        pool_.released(name->vni, name->ipv4);
        if (auto it = holders.find(lock.metadata.namespace_); it != holders.end() && --it->second == 0) {
          holders.erase(it);
          // The namespace let go of the VNI: whoever waited for it tries now.
          if (auto w = vni_waiters_.find(name->vni); w != vni_waiters_.end()) {
            waiters = std::move(w->second);
            vni_waiters_.erase(w);
          }
        }
        if (holders.empty()) holder_ns_.erase(name->vni);
      }
    }
    for (const auto& k : waiters) controller_.enqueue(k);
    if (const auto* r = controller_ref(lock)) settle_or_queue(client::object_key(lock.metadata.namespace_, r->name));
    // A freed address: the attachments waiting for one in that subnet try again now
    // rather than when their backoff ends.
    if (!added)
      for (const auto& o :
           nas_.indexer().by_index("subnet", client::object_key(lock.metadata.namespace_, lock.spec.subnet_name)))
        if (std::get<api::NetworkAttachment>(*o).status.address_contention)
          controller_.enqueue(client::object_key(*o));
  };
  locks_.add_handlers({[=](const client::ObjectPtr& o) { lock_event(o, true); }, nullptr,
                       [=](const client::ObjectPtr& o, bool) { lock_event(o, false); }});
}

Ipam::~Ipam() { stop(); }

Result<void> Ipam::start() {
  for (auto* inf : {&subnets_, &locks_, &nas_}) inf->start();
  for (auto* inf : {&subnets_, &locks_, &nas_})
    if (!inf->wait_for_sync(std::chrono::minutes(2)))
      return fail(Errc::kUnavailable, "ipam: informers did not sync");
  // Workers start only now: the taken addresses are known.
  controller_.start();
  spdlog::info("ipam: started locks={} attachments={}", locks_.indexer().size(), nas_.indexer().size());
  return {};
}

void Ipam::stop() {
  controller_.stop();
  for (auto* inf : {&nas_, &locks_, &subnets_}) inf->stop();
}

std::optional<std::string> Ipam::foreign_holder(uint32_t vni, const std::string& ns,
                                                const std::string& waiter) {
  std::lock_guard lk(mu_);
  auto h = holder_ns_.find(vni);
  if (h == holder_ns_.end()) return std::nullopt;
  for (const auto& [other, n] : h->second)
    if (other != ns) {
      vni_waiters_[vni].insert(waiter);
      return other;
    }
  return std::nullopt;
}

void Ipam::unreserve(uint32_t vni, uint32_t ip) {
  std::lock_guard lk(mu_);
  pool_.unreserve(vni, ip);
}

std::optional<uint32_t> Ipam::pick(uint32_t vni, uint32_t first, uint32_t last) {
  std::lock_guard lk(mu_);
  return pool_.pick(vni, first, last);
}

Result<void> Ipam::delete_lock(const api::IPLock& lock) {
  client::DeleteOptions d;
  d.uid = lock.metadata.uid;  // never a newer lock of the same name
  auto t0 = std::chrono::steady_clock::now();
  auto r = client_->remove<api::IPLock>(lock.metadata.namespace_, lock.metadata.name, d);
  lock_ops_.with({"delete"}).observe(std::chrono::steady_clock::now() - t0);
  if (!r && r.error().code != Errc::kNotFound && r.error().code != Errc::kConflict) return r;
  spdlog::debug("ipam: deleted lock {}/{}", lock.metadata.namespace_, lock.metadata.name);
  return {};
}

// The attachment is not in the cache. Caches lag (a lock can be seen before its owner),
// so ask the server: only if the attachment is really gone are the locks that name it
// released; otherwise only locks of other incarnations of the name go.
//
// The owner index is read before the live GET: a lock the cache shows was created before
// the GET, so it belongs to the incarnation the GET sees or to an earlier one. Read after
// the GET, it could be a newer incarnation's (created by another IPAM in between) and
// would be deleted as an orphan.
Result<Requeue> Ipam::release_all(const std::string& key) {
  auto cached_locks = locks_.indexer().by_index("owner-key", key);
  {
    std::lock_guard lk(mu_);
    if (cached_locks.empty()) {
      // Nothing to release (a lock created since shows up in the informer and requeues
      // the key): no need to ask the server.
      inflight_.erase(key);
      releasing_.erase(key);
      return Requeue{};
    }
    // First the collector's turn: what it has not deleted after the grace, the IPAM does.
    if (release_grace_.count() > 0 && releasing_.insert(key).second)
      return Requeue{false, release_grace_};
    releasing_.erase(key);
  }
  auto slash = key.find('/');
  auto live = client_->get<api::NetworkAttachment>(key.substr(0, slash), key.substr(slash + 1));
  if (!live && live.error().code != Errc::kNotFound) return fail(live.error());
  for (const auto& o : cached_locks) {
    const auto& lock = std::get<api::IPLock>(*o);
    const auto* r = controller_ref(lock);
    if (live && r && r->uid == live->metadata.uid) continue;  // the live attachment's own
    if (auto d = delete_lock(lock); !d) return fail(d.error());
  }
  if (!live) {
    std::lock_guard lk(mu_);
    inflight_.erase(key);
  }
  return Requeue{};
}

Result<Requeue> Ipam::write_status(const api::NetworkAttachment& na,
                                   const api::NetworkAttachmentStatus& st) {
  if (na.status == st) return Requeue{};
  api::NetworkAttachment next = na;
  next.status = st;
  auto r = client_->update_status(next);  // resourceVersion precondition: na as read
  if (!r) {
    if (r.error().code == Errc::kNotFound) return Requeue{};
    return fail(r.error());
  }
  std::lock_guard lk(mu_);
  inflight_[key_of(na.metadata)] = InFlight{na.metadata.resource_version, r->metadata.resource_version};
  return Requeue{};
}

std::optional<Result<Requeue>> Ipam::reconcile_cached(const std::string& key) {
  auto cached = nas_.indexer().get(key);
  if (!cached) {
    // Gone, and no lock names it: nothing to release (release_all's first case).
    if (!locks_.indexer().by_index("owner-key", key).empty()) return std::nullopt;
    std::lock_guard lk(mu_);
    inflight_.erase(key);
    releasing_.erase(key);
    return Requeue{};
  }
  const auto& na = std::get<api::NetworkAttachment>(*cached);
  {
    std::lock_guard lk(mu_);
    releasing_.erase(key);  // (a new incarnation of a deleted one)
    auto it = inflight_.find(key);
    if (it != inflight_.end()) {
      if (it->second.before == na.metadata.resource_version) {
        anticipation_.get().inc();
        return Requeue{};  // our status write has not reached the informer yet
      }
      inflight_.erase(it);
    }
  }
  auto subnet_obj = subnets_.indexer().get(client::object_key(na.metadata.namespace_, na.spec.subnet));
  if (!subnet_obj) return std::nullopt;
  const auto& subnet = std::get<api::Subnet>(*subnet_obj);
  if (!subnet.status.validated) {
    if (subnet.status.errors.empty()) return Requeue{};  // not examined yet: its update requeues us
    return std::nullopt;
  }
  if (addressed(na, subnet)) return Requeue{};
  return std::nullopt;
}

void Ipam::settle_or_queue(const std::string& key) {
  controller_.reconcile_now(key, [this, &key] { return reconcile_cached(key); });
}

Result<Requeue> Ipam::reconcile(const std::string& key) {
  if (auto done = reconcile_cached(key)) return *done;
  // The caches may have moved since: decide on what they show now.
  auto cached = nas_.indexer().get(key);
  if (!cached) return release_all(key);
  const auto& na = std::get<api::NetworkAttachment>(*cached);
  auto subnet_obj = subnets_.indexer().get(client::object_key(na.metadata.namespace_, na.spec.subnet));
  if (!subnet_obj) return without_subnet(na, "Subnet " + na.spec.subnet + " does not exist");
  const auto& subnet = std::get<api::Subnet>(*subnet_obj);
  if (!subnet.status.validated) {
    if (subnet.status.errors.empty()) return Requeue{};  // not examined yet: its update requeues us
    return without_subnet(na, "Subnet " + na.spec.subnet + " has not passed validation");
  }
  return assign(na, subnet);
}

// The attachment's Subnet is gone (or not validated): it gets no new address, and keeps
// the one it holds (a deleted Subnet's attachments keep theirs, and the VNI stays bound to
// the namespace while they do). What it holds must show in its status: the lock the status
// names if it is live; else a live lock of this incarnation, taken by an attempt that did
// not get to write it into the status before the Subnet went (it would otherwise hold an
// address, and the VNI, that nothing shows); else nothing, and an address the status names
// without a live lock behind it leaves the status (nobody holds it: no node may implement
// it). Its other locks are deleted after the status write.
//
// Never delete a lock the status does not name while the status names nothing: another
// IPAM whose cache still shows the Subnet may be about to write that lock into the status
// (the race test caught exactly that). Once the status names a live lock, every IPAM keeps
// that one (assign does), so the others are safe to delete, as in assign.
Result<Requeue> Ipam::without_subnet(const api::NetworkAttachment& cached, std::string msg) {
  auto mine = locks_.indexer().by_index("owner-uid", cached.metadata.uid);
  auto live = client_->get<api::NetworkAttachment>(cached.metadata.namespace_, cached.metadata.name);
  if (!live) {
    if (live.error().code == Errc::kNotFound) return Requeue{};
    return fail(live.error());
  }
  if (live->metadata.uid != cached.metadata.uid) return Requeue{};  // replaced: its events come
  const api::NetworkAttachment& na = *live;
  // The lock of this name as the store has it, if this incarnation owns it.
  auto owned = [&](const std::string& name) -> Result<std::optional<api::IPLock>> {
    auto l = client_->get<api::IPLock>(na.metadata.namespace_, name);
    if (!l) {
      if (l.error().code == Errc::kNotFound) return std::optional<api::IPLock>{};
      return fail(l.error());
    }
    const auto* r = controller_ref(*l);
    if (!r || r->uid != na.metadata.uid) return std::optional<api::IPLock>{};
    return std::optional<api::IPLock>(*l);
  };

  api::NetworkAttachmentStatus st = na.status;
  st.errors.ipam = {std::move(msg)};
  st.address_contention = false;
  bool held = false;
  if (auto ip = api::parse_ipv4(st.ipv4); ip && !st.lock_uid.empty()) {
    auto l = owned(api::format_iplock_name(st.address_vni, *ip));
    if (!l) return fail(l.error());
    held = *l && (*l)->metadata.uid == st.lock_uid;
  }
  if (!held)
    for (const auto& o : mine) {
      auto l = owned(std::get<api::IPLock>(*o).metadata.name);
      if (!l) return fail(l.error());
      if (!*l) continue;
      auto name = api::parse_iplock_name((*l)->metadata.name);
      if (!name) continue;
      spdlog::info("ipam: attachment={} holds lock {} that its status did not show ({}): the status shows it now",
                   key_of(na.metadata), (*l)->metadata.name, st.errors.ipam[0]);
      st.ipv4 = api::format_ipv4(name->ipv4);
      st.address_vni = name->vni;
      st.lock_uid = (*l)->metadata.uid;
      held = true;
      break;
    }
  if (!held && (!st.ipv4.empty() || !st.lock_uid.empty())) {
    spdlog::warn("ipam: attachment={} showed ipv4={} vni={} but holds no lock for it ({}): the address "
                 "leaves its status",
                 key_of(na.metadata), st.ipv4, st.address_vni, st.errors.ipam[0]);
    st.ipv4.clear();
    st.address_vni = 0;
    st.lock_uid.clear();
    clear_routing(st);
  }
  if (auto w = write_status(na, st); !w) return w;
  if (!held) return Requeue{};  // nothing named: nothing of this incarnation is deleted
  for (const auto& o : mine) {
    const auto& lock = std::get<api::IPLock>(*o);
    if (lock.metadata.uid == st.lock_uid) continue;
    spdlog::info("ipam: releasing lock {}/{} of attachment={}: its status names {}", lock.metadata.namespace_,
                 lock.metadata.name, key_of(na.metadata), st.ipv4);
    if (auto d = delete_lock(lock); !d) return fail(d.error());
  }
  return Requeue{};
}

bool Ipam::addressed(const api::NetworkAttachment& na, const api::Subnet& subnet) {
  auto ip = api::parse_ipv4(na.status.ipv4);
  if (!ip || na.status.address_vni != subnet.spec.vni || na.status.address_contention ||
      !na.status.errors.ipam.empty())
    return false;
  auto cidr = api::parse_cidr(subnet.spec.ipv4);
  if (!cidr || *ip < cidr->first_usable() || *ip > cidr->last_usable() ||
      !routing_matches(na.status, subnet, *cidr))
    return false;
  auto mine = locks_.indexer().by_index("owner-uid", na.metadata.uid);
  if (mine.size() != 1) return false;
  const auto& lock = std::get<api::IPLock>(*mine[0]);
  const auto* r = controller_ref(lock);
  return lock.metadata.uid == na.status.lock_uid && lock.spec.subnet_name == subnet.metadata.name &&
         lock.metadata.name == api::format_iplock_name(subnet.spec.vni, *ip) && r &&
         r->uid == na.metadata.uid;
}

Result<Requeue> Ipam::assign(const api::NetworkAttachment& cached, const api::Subnet& subnet) {
  auto cidr = api::parse_cidr(subnet.spec.ipv4);
  if (!cidr) return fail(Errc::kInvalid, "subnet " + subnet.metadata.name + " has a bad CIDR");
  const uint32_t vni = subnet.spec.vni;
  const uint32_t first = cidr->first_usable(), last = cidr->last_usable();
  auto usable = [&](const api::IPLock& lock) {
    auto name = api::parse_iplock_name(lock.metadata.name);
    return name && name->vni == vni && name->ipv4 >= first && name->ipv4 <= last &&
           lock.spec.subnet_name == subnet.metadata.name;
  };

  std::vector<api::IPLock> mine;
  for (const auto& o : locks_.indexer().by_index("owner-uid", cached.metadata.uid))
    mine.push_back(std::get<api::IPLock>(*o));

  // Two cases are decided on the cache alone (most reconciles are one of them):
  //  - Done (addressed()): the status names the one lock the cache shows for this
  //    incarnation, and that lock fits. Nothing is written; if the cache is stale, the
  //    events that make it current requeue the attachment.
  //  - New: no address in the status and no lock of this incarnation. A lock is taken and
  //    the status written with the cached resourceVersion as precondition: if the cache
  //    was stale (another IPAM addressed it), the write fails, nothing is deleted, and the
  //    retry takes the careful path below with the lock just created among `mine`.
  if (addressed(cached, subnet)) return Requeue{};
  const bool fresh = mine.empty() && cached.status.ipv4.empty() && cached.status.lock_uid.empty();

  // Otherwise decide on the attachment as the store has it now: another IPAM may have
  // addressed it since the cache was filled. Locks are deleted only after the status write
  // that makes them unnecessary, and never the lock the status names, so an address is
  // never freed while an attachment still shows it.
  std::optional<api::NetworkAttachment> live;
  if (fresh) {
    live = cached;
  } else {
    auto l = client_->get<api::NetworkAttachment>(cached.metadata.namespace_, cached.metadata.name);
    if (!l) {
      if (l.error().code == Errc::kNotFound) return Requeue{};
      return fail(l.error());
    }
    if (l->metadata.uid != cached.metadata.uid) return Requeue{};  // replaced: its events come
    live = std::move(*l);
  }
  const api::NetworkAttachment& na = *live;

  // The lock the status names, if it exists and fits this subnet.
  std::optional<api::IPLock> keep;
  auto status_ip = api::parse_ipv4(na.status.ipv4);
  if (status_ip && na.status.address_vni == vni && !na.status.lock_uid.empty()) {
    std::string name = api::format_iplock_name(vni, *status_ip);
    auto l = client_->get<api::IPLock>(na.metadata.namespace_, name);
    if (l) {
      const auto* r = controller_ref(*l);
      if (r && r->uid == na.metadata.uid && l->metadata.uid == na.status.lock_uid && usable(*l)) {
        keep = *l;
      }
    } else if (l.error().code != Errc::kNotFound) {
      return fail(l.error());
    }
  }
  // Else a usable lock this incarnation already holds (an earlier attempt's), checked
  // against the server before it goes into the status.
  if (!keep)
    for (const auto& lock : mine) {
      if (!usable(lock)) continue;
      auto l = client_->get<api::IPLock>(lock.metadata.namespace_, lock.metadata.name);
      if (!l) {
        if (l.error().code == Errc::kNotFound) continue;
        return fail(l.error());
      }
      const auto* r = controller_ref(*l);
      if (r && r->uid == na.metadata.uid) {
        keep = *l;
        break;
      }
    }

  if (!keep) {
    if (auto foreign = foreign_holder(vni, na.metadata.namespace_, key_of(na.metadata))) {
      // Addresses of this VNI are still held in another namespace (by attachments of a
      // deleted Subnet): the VNI is not this namespace's yet. The release of the last one
      // requeues this attachment; the backoff covers a missed event.
      api::NetworkAttachmentStatus st = na.status;
      st.errors.ipam = {"VNI " + std::to_string(vni) + " is still in use in namespace " + *foreign +
                        " by attachments of a deleted Subnet"};
      if (auto w = write_status(na, st); !w) return w;
      return Requeue{true};
    }
    // Take a free address: create its lock. AlreadyExists means someone holds it.
    for (int attempt = 0; attempt < 64 && !keep; ++attempt) {
      auto ip = pick(vni, first, last);
      if (!ip) {
        contention_.get().inc();
        api::NetworkAttachmentStatus st = na.status;
        st.address_contention = true;
        st.errors.ipam = {kNoAddresses};
        auto w = write_status(na, st);
        if (!w) return w;
        if (events_ && na.status.errors.ipam != st.errors.ipam)
          events_->event(api::AnyObject(na), "Warning", "NoAddress",
                         "Subnet " + subnet.metadata.name + " has no free address");
        return Requeue{true};  // retry with backoff: addresses free up when attachments go
      }
      api::IPLock lock;
      lock.metadata.name = api::format_iplock_name(vni, *ip);
      lock.metadata.namespace_ = na.metadata.namespace_;
      lock.metadata.owner_references.push_back(api::OwnerReference{
          std::string(api::kApiVersion), "NetworkAttachment", na.metadata.name, na.metadata.uid,
          true, true});
      lock.spec.subnet_name = subnet.metadata.name;
      auto t0 = std::chrono::steady_clock::now();
      auto created = client_->create(lock);
      lock_ops_.with({"create"}).observe(std::chrono::steady_clock::now() - t0);
      if (created) {
        keep = *created;
        break;
      }
      if (created.error().code != Errc::kAlreadyExists) {
        unreserve(vni, *ip);
        return fail(created.error());
      }
      // Held already: by an earlier attempt for this very attachment, or by another.
      auto holder = client_->get<api::IPLock>(lock.metadata.namespace_, lock.metadata.name);
      if (holder) {
        const auto* r = controller_ref(*holder);
        if (r && r->uid == na.metadata.uid) {
          keep = *holder;
            break;
        }
      }
      std::lock_guard lk(mu_);
      pool_.taken(vni, *ip);  // until the informer shows the holder's lock and its release
    }
    if (!keep) return fail(Errc::kUnavailable, "ipam: no lock could be taken after 64 attempts");
  }

  auto name = api::parse_iplock_name(keep->metadata.name);
  api::NetworkAttachmentStatus st = na.status;
  st.ipv4 = api::format_ipv4(name->ipv4);
  st.address_vni = vni;
  st.lock_uid = keep->metadata.uid;
  st.address_contention = false;
  st.errors.ipam.clear();
  set_routing(st, subnet, *cidr);
  bool newly = na.status.ipv4 != st.ipv4 || na.status.lock_uid != st.lock_uid;
  auto w = write_status(na, st);  // resourceVersion precondition: the live read
  if (!w) return w;
  if (newly) {
    if (auto t = na.extended_metadata.write_time(api::section::kSpec))
      addressed_latency_.get().observe(std::chrono::system_clock::now() - *t);
    spdlog::debug("ipam: addressed attachment={} ipv4={} vni={}", key_of(na.metadata), st.ipv4, vni);
  }
  // Now that the status names `keep`, every other lock of this incarnation can go.
  for (const auto& lock : mine)
    if (lock.metadata.uid != keep->metadata.uid)
      if (auto d = delete_lock(lock); !d) return fail(d.error());
  return Requeue{};
}

}  // namespace kos::controllers
