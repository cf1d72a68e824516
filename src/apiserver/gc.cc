#include "apiserver/gc.h"

#include <spdlog/spdlog.h>

#include "common/thread_name.h"

namespace kos::apiserver {
namespace json = boost::json;

namespace {
constexpr const char* kOrphan = "orphan";
constexpr const char* kForeground = "foregroundDeletion";
constexpr std::chrono::milliseconds kFirstRetry{100};
constexpr std::chrono::milliseconds kMaxRetry{10000};
constexpr std::chrono::milliseconds kCacheWait{5000};

bool has(const std::vector<std::string>& v, std::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}
}  // namespace

GarbageCollector::GarbageCollector(std::vector<Registry*> registries, const Clock& clock)
    : registries_(std::move(registries)), clock_(clock) {}

GarbageCollector::~GarbageCollector() { stop(); }

void GarbageCollector::start() {
  for (size_t i = 0; i < registries_.size(); ++i)
    registries_[i]->cache().add_listener(
        [this, i](const CachedPtr& prev, const CachedPtr& obj) { on_event(i, prev, obj); });
  // Whatever is already stored, by the same rule as events. Objects waiting in the
  // foreground join the record (one gone meanwhile stays in it, which only costs an
  // examination of it when a dependent goes); their UIDs do not: an owner the record does
  // not show is looked up by a worker.
  for (size_t i = 0; i < registries_.size(); ++i) {
    auto snap = registries_[i]->cache().list("", {}, {});
    std::lock_guard lk(mu_);
    for (const auto& o : snap.items) {
      if (o->deleting && has(o->finalizers, kForeground)) foreground_.insert({i, o->ns, o->name});
      if (may_act_on_locked(*o)) enqueue_locked({i, o->ns, o->name});
    }
  }
  for (int i = 0; i < kWorkers; ++i) threads_.push_back(named_thread("kos-gc", [this] { run(); }));
}

void GarbageCollector::stop() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

void GarbageCollector::on_event(size_t i, const CachedPtr& prev, const CachedPtr& obj) {
  std::lock_guard lk(mu_);
  if (obj) {
    Item self{i, obj->ns, obj->name};
    if (prev && prev->uid != obj->uid) alive_.erase(prev->uid);
    alive_.insert_or_assign(obj->uid, self);
    if (obj->deleting && has(obj->finalizers, kForeground)) foreground_.insert(self);
    else foreground_.erase(self);
    if (may_act_on_locked(*obj)) enqueue_locked(std::move(self));
    return;
  }
  if (!prev) return;
  alive_.erase(prev->uid);
  foreground_.erase(Item{i, prev->ns, prev->name});
  // Its dependents are read from the other caches by a worker (their locks are not to be
  // taken here).
  if (!prev->uid.empty()) enqueue_locked(Item{SIZE_MAX, prev->uid, ""});
  // A dependent went away: an owner waiting for it in the foreground may now go.
  for (const auto& ref : prev->owners)
    for (size_t j = 0; j < registries_.size(); ++j)
      if (registries_[j]->strategy().info().kind == ref.kind) {
        Item owner{j, prev->ns, ref.name};
        if (foreground_.count(owner)) enqueue_locked(std::move(owner));
      }
}

// Mirrors examine(): it acts on an object being deleted with the Orphan or Foreground
// finalizer, and on one none of whose owners exists. An owner the record shows alive
// (the same UID, kind and name in the dependent's namespace) is in its cache, which is
// what examine() asks first; its deletion queues the dependents again.
bool GarbageCollector::may_act_on_locked(const CachedObject& obj) const {
  if (obj.deleting && (has(obj.finalizers, kOrphan) || has(obj.finalizers, kForeground))) return true;
  if (obj.owners.empty()) return false;
  for (const auto& ref : obj.owners) {
    auto it = alive_.find(ref.uid);
    if (it == alive_.end()) continue;
    const auto& info = registries_[it->second.registry]->strategy().info();
    if (info.kind == ref.kind && info.api_version() == ref.api_version && it->second.name == ref.name &&
        it->second.ns == obj.ns)
      return false;
  }
  return true;
}

void GarbageCollector::enqueue(Item item) {
  std::lock_guard lk(mu_);
  enqueue_locked(std::move(item));
}

void GarbageCollector::enqueue_locked(Item item) {
  ++queued_total_;
  if (processing_.count(item)) {
    dirty_.insert(std::move(item));  // queued again when its worker is done
    return;
  }
  if (!queued_.insert(item).second) return;
  queue_.push_back(std::move(item));
  cv_.notify_one();
}

void GarbageCollector::retry(const Item& item) {
  std::lock_guard lk(mu_);
  int& n = failures_[item];
  n = std::min(n + 1, 8);
  auto backoff = std::min<std::chrono::milliseconds>(kFirstRetry * (1 << (n - 1)), kMaxRetry);
  delayed_.emplace(clock_.steady_now() + backoff, item);
  cv_.notify_one();
}

void GarbageCollector::run() {
  while (true) {
    Item item;
    {
      std::unique_lock lk(mu_);
      while (true) {
        if (stopping_) return;
        // Retries that are due join the queue.
        const auto now = clock_.steady_now();
        while (!delayed_.empty() && delayed_.begin()->first <= now) {
          Item due = delayed_.begin()->second;
          delayed_.erase(delayed_.begin());
          if (processing_.count(due)) dirty_.insert(due);
          else if (queued_.insert(due).second) queue_.push_back(std::move(due));
        }
        if (!queue_.empty()) break;
        if (delayed_.empty()) cv_.wait(lk);
        else clock_.wait_until(cv_, lk, delayed_.begin()->first);
      }
      item = std::move(queue_.front());
      queue_.pop_front();
      queued_.erase(item);
      processing_.insert(item);  // one worker per item at a time
    }
    bool ok = true;
    if (item.registry == SIZE_MAX) {
      for (size_t i = 0; i < registries_.size(); ++i)
        for (const auto& d : registries_[i]->cache().dependents(item.ns)) enqueue({i, d->ns, d->name});
    } else if (auto r = examine(item); !r) {
      ok = false;
      spdlog::warn("gc: {} {}/{}: {}; retrying", registries_[item.registry]->strategy().info().kind,
                   item.ns, item.name, r.error().message);
    }
    if (!ok) retry(item);
    std::lock_guard lk(mu_);
    if (ok) failures_.erase(item);
    processing_.erase(item);
    if (dirty_.erase(item) && queued_.insert(item).second) {
      queue_.push_back(item);
      cv_.notify_one();
    }
  }
}

Registry* GarbageCollector::owner_registry(const api::OwnerReference& ref) const {
  for (auto* r : registries_) {
    const auto& i = r->strategy().info();
    if (i.kind == ref.kind && i.api_version() == ref.api_version) return r;
  }
  return nullptr;
}

Result<bool> GarbageCollector::owner_exists(const api::OwnerReference& ref, const std::string& ns,
                                            store::Revision dependent_rv) const {
  Registry* r = owner_registry(ref);
  if (!r) return true;  // a kind KOS does not serve: never collect on its account
  // Present in the cache with that UID: it exists, or its deletion is still on its way to
  // the cache, and that event queues its dependents again. Only an owner the cache does
  // not show needs a live read (caches may lag each other).
  if (auto c = r->cache().get(ns, ref.name); c && c->uid == ref.uid) return true;
  // The owner was created before any version of the dependent that names its UID (the UID
  // is the server's, known only once the owner exists): a cache that has reached the
  // dependent's revision and does not show the owner has seen it go, or it never existed.
  if (r->cache().revision() >= dependent_rv) return false;
  auto o = r->get(ns, ref.name, std::nullopt);
  if (!o) {
    if (o.error().code == Errc::kNotFound) return false;
    return fail(o.error().code, "reading owner " + ref.kind + " " + ns + "/" + ref.name + ": " +
                                    o.error().message);
  }
  return (*o)->uid == ref.uid;
}

Result<void> GarbageCollector::remove_finalizer(Registry& r, const CachedObject& obj,
                                                const std::string& finalizer) {
  auto res = r.update_with(obj.ns, obj.name, [&](const CachedObject& cur) -> Result<json::object> {
    if (cur.uid != obj.uid) return fail(Errc::kConflict, "object was replaced");
    json::object next = cur.obj();
    auto meta = read_meta(next);
    if (!meta) return fail(meta.error());
    std::erase(meta->finalizers, finalizer);
    write_meta(next, *meta);
    return next;
  });
  if (!res && res.error().code != Errc::kNotFound)
    return fail(res.error().code, "removing finalizer " + finalizer + ": " + res.error().message);
  return {};
}

Result<void> GarbageCollector::caches_reach(store::Revision rv) const {
  for (auto* r : registries_)
    if (!r->cache().wait_for(rv, kCacheWait))
      return fail(Errc::kUnavailable, "the " + r->strategy().info().plural + " cache has not reached revision " +
                                          std::to_string(rv) + " yet");
  return {};
}

Result<void> GarbageCollector::examine(const Item& item) {
  Registry& r = *registries_[item.registry];
  auto obj = r.cache().get(item.ns, item.name);
  if (!obj) return {};
  const auto& kind = r.strategy().info().kind;

  // Orphaning or deleting in the foreground acts on every dependent: first every cache must
  // show those written before the owner's deletion.
  if (obj->deleting && (has(obj->finalizers, kOrphan) || has(obj->finalizers, kForeground)))
    if (auto r = caches_reach(obj->rv); !r) return r;

  if (obj->deleting && has(obj->finalizers, kOrphan)) {
    for (auto* dr : registries_)
      for (const auto& d : dr->cache().dependents(obj->uid)) {
        auto res = dr->update_with(d->ns, d->name, [&](const CachedObject& cur) -> Result<json::object> {
          json::object next = cur.obj();
          auto meta = read_meta(next);
          if (!meta) return fail(meta.error());
          std::erase_if(meta->owner_references, [&](const auto& o) { return o.uid == obj->uid; });
          write_meta(next, *meta);
          return next;
        });
        if (!res && res.error().code != Errc::kNotFound)
          return fail(res.error().code, "orphaning " + d->ns + "/" + d->name + ": " + res.error().message);
      }
    return remove_finalizer(r, *obj, kOrphan);
  }

  if (obj->deleting && has(obj->finalizers, kForeground)) {
    size_t remaining = 0;
    for (auto* dr : registries_)
      for (const auto& d : dr->cache().dependents(obj->uid)) {
        ++remaining;
        if (d->deleting) continue;
        DeleteOptions opts;
        opts.precondition_uid = d->uid;
        opts.propagation_policy = "Foreground";
        auto res = dr->remove(d->ns, d->name, opts);
        if (res) {
          ++deleted_;
          spdlog::info("gc: deleted dependent {}/{} of {} {}/{} (foreground)", d->ns, d->name, kind,
                       obj->ns, obj->name);
        } else if (res.error().code != Errc::kNotFound && res.error().code != Errc::kConflict) {
          return fail(res.error().code, "deleting dependent " + d->ns + "/" + d->name + ": " +
                                            res.error().message);
        }
      }
    // The owner goes when its dependents are gone; their delete events requeue it.
    if (remaining == 0) return remove_finalizer(r, *obj, kForeground);
    return {};
  }

  if (obj->owners.empty()) return {};
  for (const auto& ref : obj->owners) {
    auto exists = owner_exists(ref, obj->ns, obj->rv);
    if (!exists) return fail(exists.error());
    if (*exists) return {};
  }
  // Only the version examined: one changed since (its owner reference removed by an
  // orphaning the cache has not shown yet) is examined again when its event comes.
  DeleteOptions opts;
  opts.precondition_uid = obj->uid;
  opts.precondition_resource_version = std::to_string(obj->rv);
  auto res = r.remove(obj->ns, obj->name, opts);
  if (res) {
    ++deleted_;
    spdlog::info("gc: deleted {} {}/{}: its owners are gone", kind, obj->ns, obj->name);
  } else if (res.error().code != Errc::kNotFound && res.error().code != Errc::kConflict) {
    return fail(res.error().code, "deleting: " + res.error().message);
  }
  return {};
}

}  // namespace kos::apiserver
