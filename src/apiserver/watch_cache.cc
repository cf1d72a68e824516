#include "apiserver/watch_cache.h"

#include <boost/json/serialize.hpp>
#include <spdlog/spdlog.h>

#include "apiserver/table.h"
#include "common/thread_name.h"

namespace kos::apiserver {
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {
constexpr std::string_view kTypes[3] = {"ADDED", "MODIFIED", "DELETED"};
constexpr int kAdded = 0, kModified = 1, kDeleted = 2;
}  // namespace

std::optional<std::string_view> CachedObject::field(std::string_view f) const {
  for (const auto& [k, v] : fields)
    if (k == f) return std::string_view(v);
  return std::nullopt;
}

Result<CachedPtr> make_cached(const Strategy& strategy, const std::string& key,
                              const std::string& value, store::Revision rv) {
  api::ScratchJson scratch;
  auto parsed = scratch.parse(value);
  if (!parsed) return fail(parsed.error());
  auto* o = scratch.value().if_object();
  if (!o) return fail(Errc::kInternal, "stored object " + key + " is not a JSON object");
  auto meta = read_meta(*o);
  if (!meta) return fail(meta.error());
  auto c = std::make_shared<CachedObject>();
  c->key = key;
  c->ns = meta->namespace_;
  c->name = meta->name;
  c->uid = meta->uid;
  c->rv = rv;
  c->labels = meta->labels;
  c->owners = meta->owner_references;
  c->deleting = meta->deletion_timestamp.has_value();
  c->finalizers = meta->finalizers;
  c->created = meta->creation_timestamp;
  meta->resource_version = std::to_string(rv);
  write_meta(*o, *meta);
  c->json = json::serialize(*o);
  c->fields = strategy.fields(*o);
  return CachedPtr(std::move(c));
}

json::object CachedObject::obj() const {
  // The text was serialized from an object by make_cached: it parses.
  return api::parse_json(this->json)->as_object();
}

struct WatchCache::Watcher {
  uint64_t id = 0;
  WatchRequest req;
  std::shared_ptr<WatchSink> sink;
  int index_field = -1;  // which indexed field pins this watcher, -1 = unindexed
  std::string index_value;
  uint64_t seen_epoch = 0;  // dedupes a watcher found in two buckets for one event
};

WatchCache::WatchCache(store::Store& store, const Strategy& strategy, const Clock& clock,
                       Options opts)
    : store_(store), strategy_(strategy), clock_(clock), opts_(opts) {
  index_.resize(strategy.info().indexed_fields.size());
  obj_index_.resize(strategy.info().indexed_fields.size());
}

void WatchCache::index_object(const CachedObject& o, bool add) {
  const auto& fields = strategy_.info().indexed_fields;
  for (size_t i = 0; i < fields.size(); ++i) {
    auto v = o.field(fields[i]);
    if (!v) continue;
    auto& m = obj_index_[i];
    api::for_each_field_value(*v, [&](std::string_view x) {  // a list: under each element
      if (add) {
        m[std::string(x)].insert(o.key);
      } else if (auto it = m.find(std::string(x)); it != m.end()) {
        it->second.erase(o.key);
        if (it->second.empty()) m.erase(it);
      }
    });
  }
}

WatchCache::~WatchCache() { stop(); }

Result<void> WatchCache::start() {
  if (auto r = relist(); !r) return r;
  thread_ = named_thread("kos-wc-" + strategy_.info().plural, [this] { run(); });
  return {};
}

void WatchCache::stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
  std::unique_lock lk(mu_);
  for (auto& [id, w] : watchers_) w->sink->close(std::nullopt);
  watchers_.clear();
  for (auto& m : index_) m.clear();
  unindexed_.clear();
}

// Loads the whole resource from the store and starts a store watch after that revision.
// Watchers that exist (after a compaction overtook the cache) are told to start over.
Result<void> WatchCache::relist() {
  const std::string prefix = strategy_.info().key_prefix();
  auto l = store_.list(prefix);
  if (!l) return fail(l.error());
  std::map<std::string, CachedPtr, std::less<>> objects;
  std::unordered_multimap<std::string, std::string> by_owner;
  for (const auto& kv : l->items) {
    auto c = make_cached(strategy_, kv.key, kv.value, kv.mod_revision);
    if (!c) {
      spdlog::error("watch cache: skipping undecodable object key={} error={}", kv.key,
                    c.error().message);
      continue;
    }
    for (const auto& o : (*c)->owners) by_owner.emplace(o.uid, kv.key);
    objects.emplace(kv.key, std::move(*c));
  }
  // The cache keeps every object: it needs no previous values from the store.
  auto w = store_.watch(prefix, l->revision, store::Store::WatchOptions{.prev = false});
  if (!w) return fail(w.error());
  std::unique_lock lk(mu_);
  // What changed while the store watch was down, for the listeners (the garbage collector
  // must hear of an owner deleted meanwhile): the old and new maps, both in key order.
  if (!listeners_.empty()) {
    auto tell = [&](const CachedPtr& prev, const CachedPtr& obj) {
      for (auto& l : listeners_) l(prev, obj);
    };
    auto o = objects_.begin();
    auto n = objects.begin();
    while (o != objects_.end() || n != objects.end()) {
      if (n == objects.end() || (o != objects_.end() && o->first < n->first)) {
        tell(o->second, nullptr);
        ++o;
      } else if (o == objects_.end() || n->first < o->first) {
        tell(nullptr, n->second);
        ++n;
      } else {
        if (o->second->uid != n->second->uid) {
          tell(o->second, nullptr);
          tell(nullptr, n->second);
        } else if (o->second->rv != n->second->rv) {
          tell(o->second, n->second);
        }
        ++o;
        ++n;
      }
    }
  }
  objects_ = std::move(objects);
  for (auto& m : obj_index_) m.clear();
  for (const auto& [_, o] : objects_) index_object(*o, true);
  by_owner_ = std::move(by_owner);
  history_.clear();
  history_floor_ = l->revision;
  rv_ = l->revision;
  store_watch_ = std::move(*w);
  std::vector<uint64_t> ids;
  for (auto& [id, _] : watchers_) ids.push_back(id);
  for (auto id : ids)
    close_watcher(id, Error{Errc::kCompacted, "the watch cache was reset; list again", {}});
  spdlog::info("watch cache: filled resource={} objects={} revision={}",
               strategy_.info().plural, objects_.size(), rv_);
  advanced_.notify_all();
  return {};
}

void WatchCache::run() {
  // Each watcher gets a bookmark about once per bookmark_interval; the watchers are spread
  // over the interval's one-second slices (by id), so thousands of idle watches (one per
  // node and VNI) cost a trickle of lines every second instead of a burst under the lock.
  const auto tick = std::min<std::chrono::milliseconds>(opts_.bookmark_interval, 1000ms);
  const uint64_t slices = std::max<uint64_t>(1, static_cast<uint64_t>(opts_.bookmark_interval / tick));
  uint64_t slice = 0;
  auto next_bookmark = clock_.steady_now() + tick;
  while (!stopping_) {
    auto batch = store_watch_->next(100ms);
    if (!batch) {
      if (stopping_ || batch.error().code == Errc::kCancelled) return;
      spdlog::warn("watch cache: store watch failed resource={} error={}; relisting",
                   strategy_.info().plural, batch.error().message);
      while (!stopping_) {
        auto r = relist();
        if (r) break;
        spdlog::warn("watch cache: relist failed resource={} error={}", strategy_.info().plural,
                     r.error().message);
        std::this_thread::sleep_for(500ms);  // back off before asking the store again
      }
      continue;
    }
    if (!batch->empty()) apply(*batch);
    advance(store_watch_->progress());
    if (clock_.steady_now() >= next_bookmark) {
      send_bookmarks(slice++ % slices, slices);
      next_bookmark = clock_.steady_now() + tick;
    }
  }
}

void WatchCache::apply(const std::vector<store::Event>& events) {
  std::unique_lock lk(mu_);
  for (const auto& se : events) {
    Event e;
    e.rv = se.revision();
    auto it = objects_.find(se.kv.key);
    e.prev = it == objects_.end() ? nullptr : it->second;
    if (se.type == store::Event::Type::kDelete) {
      if (!e.prev) continue;  // never seen: nothing to tell anyone
      // The last state, stamped with the revision of the delete, as Kubernetes sends it.
      auto last = std::make_shared<CachedObject>(*e.prev);
      last->rv = e.rv;
      auto o = last->obj();
      if (auto* m = o["metadata"].if_object()) (*m)["resourceVersion"] = std::to_string(e.rv);
      last->json = json::serialize(o);
      e.obj = std::move(last);
      e.deleted = true;
      objects_.erase(it);
    } else {
      auto c = make_cached(strategy_, se.kv.key, se.kv.value, e.rv);
      if (!c) {
        spdlog::error("watch cache: undecodable object key={} error={}", se.kv.key,
                      c.error().message);
        continue;
      }
      e.obj = std::move(*c);
      e.deleted = false;
      objects_[se.kv.key] = e.obj;
    }
    // Keep the indexes in step.
    if (e.prev) index_object(*e.prev, false);
    if (!e.deleted) index_object(*e.obj, true);
    if (e.prev)
      for (const auto& o : e.prev->owners) {
        auto range = by_owner_.equal_range(o.uid);
        for (auto i = range.first; i != range.second; ++i)
          if (i->second == se.kv.key) {
            by_owner_.erase(i);
            break;
          }
      }
    if (!e.deleted)
      for (const auto& o : e.obj->owners) by_owner_.emplace(o.uid, se.kv.key);

    rv_ = e.rv;
    ++stats_.events;
    dispatch(e);
    for (auto& l : listeners_) l(e.prev, e.deleted ? nullptr : e.obj);
    // The window keeps the objects, not their serialized lines: the watchers that got the
    // event hold their lines; a watch resuming from the window builds them again.
    for (auto& row : e.lines)
      for (auto& line : row) line.reset();
    history_.push_back(std::move(e));
    while (history_.size() > opts_.history) {
      history_floor_ = history_.front().rv;
      history_.pop_front();
    }
  }
  advanced_.notify_all();
}

// The store watch has returned every event up to `rv`: the cache is as current as that,
// also when none of those events was of this resource.
void WatchCache::advance(store::Revision rv) {
  {
    std::shared_lock lk(mu_);
    if (rv <= rv_) return;
  }
  std::unique_lock lk(mu_);
  if (rv <= rv_) return;
  rv_ = rv;
  advanced_.notify_all();
}

bool WatchCache::matches(const Watcher& w, const CachedObject& o) const {
  if (!w.req.ns.empty() && w.req.ns != o.ns) return false;
  if (!w.req.labels.empty() && !w.req.labels.matches(o.labels)) return false;
  if (!w.req.fields.empty() &&
      !w.req.fields.matches([&](std::string_view f) -> std::optional<std::string> {
        auto v = o.field(f);
        return v ? std::optional<std::string>(std::string(*v)) : std::nullopt;
      }))
    return false;
  return true;
}

void WatchCache::dispatch(const Event& e) {
  ++epoch_;
  std::vector<uint64_t> slow;  // closed after the fan-out, which holds raw pointers
  auto deliver = [&](Watcher* w, int type) {
    if (!this->deliver(*w, e, type)) slow.push_back(w->id);
  };
  auto consider = [&](Watcher* w) {
    if (w->seen_epoch == epoch_) return;
    w->seen_epoch = epoch_;
    ++stats_.watchers_evaluated;
    bool now = !e.deleted && matches(*w, *e.obj);
    bool before = e.prev && matches(*w, *e.prev);
    if (e.deleted) {
      if (before) deliver(w, kDeleted);
    } else if (now) {
      deliver(w, before ? kModified : kAdded);
    } else if (before) {
      deliver(w, kDeleted);  // it no longer matches the watcher's selectors
    }
  };
  const auto& fields = strategy_.info().indexed_fields;
  for (size_t i = 0; i < fields.size(); ++i) {
    for (const CachedObject* o : {e.obj.get(), e.prev.get()}) {
      if (!o) continue;
      auto v = o->field(fields[i]);
      if (!v) continue;
      api::for_each_field_value(*v, [&](std::string_view x) {
        auto b = index_[i].find(std::string(x));
        if (b != index_[i].end())
          for (Watcher* w : b->second) consider(w);
      });
    }
  }
  for (Watcher* w : unindexed_) consider(w);
  for (auto id : slow) {
    spdlog::warn("watch cache: closing a watcher that cannot keep up resource={} id={}",
                 strategy_.info().plural, id);
    close_watcher(id, Error{Errc::kCompacted,
                            "the watcher fell too far behind; list and watch again", {}});
  }
}

std::shared_ptr<const std::string> WatchCache::line_for(const Event& e, int type, WatchFormat f) {
  auto& slot = e.lines[type][static_cast<int>(f)];
  if (!slot) {
    slot = std::make_shared<const std::string>(event_line(kTypes[type], *e.obj, f));
    ++stats_.lines_serialized;
  }
  return slot;
}

bool WatchCache::deliver(Watcher& w, const Event& e, int type) {
  if (w.req.since && e.rv <= *w.req.since) return true;
  ++stats_.lines_sent;
  return w.sink->send(line_for(e, type, w.req.format), false);
}

std::string WatchCache::event_line(std::string_view type, const CachedObject& obj,
                                   WatchFormat format) const {
  std::string out = "{\"type\":\"";
  out += type;
  out += "\",\"object\":";
  if (format == WatchFormat::kJson) {
    out += obj.json;
  } else {
    json::array rows;
    rows.push_back(table_row(strategy_, obj.obj(), clock_.now(),
                             format == WatchFormat::kTableWithObject ? TableObjects::kObject
                                                                     : TableObjects::kMetadata));
    json::object meta;
    meta["resourceVersion"] = std::to_string(obj.rv);
    out += json::serialize(make_table(strategy_, std::move(rows), std::move(meta)));
  }
  out += "}\n";
  return out;
}

std::string WatchCache::bookmark_line(store::Revision rv, bool initial_events_end) const {
  const auto& info = strategy_.info();
  return "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"" + info.kind + "\",\"apiVersion\":\"" +
         info.api_version() + "\",\"metadata\":{\"resourceVersion\":\"" + std::to_string(rv) + "\"" +
         (initial_events_end ? ",\"annotations\":{\"k8s.io/initial-events-end\":\"true\"}" : "") + "}}}\n";
}

void WatchCache::send_bookmarks(uint64_t slice, uint64_t slices) {
  std::unique_lock lk(mu_);
  std::shared_ptr<const std::string> line;
  std::vector<uint64_t> slow;
  for (auto& [id, w] : watchers_) {
    if (!w->req.bookmarks || id % slices != slice) continue;
    // A watch that started from a revision the cache has yet to reach (the store has: a
    // consistent list's) gets that revision, never one below its start.
    std::shared_ptr<const std::string> own;
    if (*w->req.since > rv_) {
      own = std::make_shared<const std::string>(bookmark_line(*w->req.since));
    } else if (!line) {
      line = std::make_shared<const std::string>(bookmark_line(rv_));
    }
    if (!w->sink->send(own ? own : line, false)) slow.push_back(id);
  }
  for (auto id : slow)
    close_watcher(id, Error{Errc::kCompacted, "the watcher fell too far behind", {}});
}

void WatchCache::index_watcher(const std::shared_ptr<Watcher>& w) {
  const auto& fields = strategy_.info().indexed_fields;
  for (size_t i = 0; i < fields.size(); ++i) {
    if (auto v = w->req.fields.exact_value(fields[i])) {
      w->index_field = static_cast<int>(i);
      w->index_value = *v;
      index_[i][*v].push_back(w.get());
      return;
    }
  }
  unindexed_.push_back(w.get());
}

void WatchCache::unindex_watcher(const Watcher& w) {
  if (w.index_field < 0) {
    std::erase(unindexed_, &w);
    return;
  }
  auto& m = index_[static_cast<size_t>(w.index_field)];
  auto it = m.find(w.index_value);
  if (it == m.end()) return;
  std::erase(it->second, &w);
  if (it->second.empty()) m.erase(it);
}

void WatchCache::close_watcher(uint64_t id, std::optional<Error> error) {
  auto it = watchers_.find(id);
  if (it == watchers_.end()) return;
  auto w = it->second;
  unindex_watcher(*w);
  watchers_.erase(it);
  w->sink->close(std::move(error));
}

Error initial_events_over_budget() {
  return Error{Errc::kCompacted,
               "the server's watch memory budget cannot take this watch's initial events; list "
               "with a limit, then watch from the list's resourceVersion",
               {}};
}

Result<uint64_t> WatchCache::watch(WatchRequest req, std::shared_ptr<WatchSink> sink) {
  auto over_budget = [] { return fail(initial_events_over_budget()); };
  std::unique_lock lk(mu_);
  auto w = std::make_shared<Watcher>();
  w->id = next_id_++;
  w->req = std::move(req);
  w->sink = std::move(sink);
  if (!w->req.since) {
    // The current state as ADDED events, then everything after the cache's revision.
    for (const auto& obj : select_locked(*w))
      if (!w->sink->send(std::make_shared<const std::string>(event_line("ADDED", *obj, w->req.format)), true))
        return over_budget();
    w->req.since = rv_;
  } else if (*w->req.since < history_floor_) {
    return fail(Errc::kCompacted,
                "too old resource version: " + std::to_string(*w->req.since) + " (" +
                    std::to_string(history_floor_) + ")");
  } else {
    // History is in revision order: start after `since` (a new informer's watch follows
    // its list, so this is usually the last few events, never the whole window).
    auto first = std::upper_bound(history_.begin(), history_.end(), *w->req.since,
                                  [](store::Revision rv, const Event& e) { return rv < e.rv; });
    for (auto it = first; it != history_.end(); ++it) {
      const Event& e = *it;
      bool now = !e.deleted && matches(*w, *e.obj);
      bool before = e.prev && matches(*w, *e.prev);
      int type = e.deleted ? (before ? kDeleted : -1)
                           : (now ? (before ? kModified : kAdded) : (before ? kDeleted : -1));
      if (type >= 0 && !w->sink->send(line_for(e, type, w->req.format), true)) return over_budget();
    }
    w->req.since = std::max(*w->req.since, rv_);
  }
  index_watcher(w);
  watchers_.emplace(w->id, w);
  return w->id;
}

void WatchCache::stop_watch(uint64_t id) {
  std::unique_lock lk(mu_);
  auto it = watchers_.find(id);
  if (it == watchers_.end()) return;
  unindex_watcher(*it->second);
  watchers_.erase(it);
}

void WatchCache::add_listener(Listener l) {
  std::unique_lock lk(mu_);
  listeners_.push_back(std::move(l));
}

store::Revision WatchCache::revision() const {
  std::shared_lock lk(mu_);
  return rv_;
}

bool WatchCache::wait_for(store::Revision rv, std::chrono::milliseconds timeout) const {
  std::shared_lock lk(mu_);
  return advanced_.wait_for(lk, timeout, [&] { return rv_ >= rv; });
}

bool WatchCache::catch_up(store::Revision rv, std::chrono::milliseconds timeout) {
  std::shared_lock lk(mu_);
  if (rv_ >= rv) return true;
  // store_watch_ is replaced (by a relist) only under the exclusive lock.
  if (!store_watch_ || !store_watch_->request_progress()) return false;
  return advanced_.wait_for(lk, timeout, [&] { return rv_ >= rv; });
}

// The objects a watcher's (or a list's) namespace and selectors match, in key order. The
// indexed fields the selector pins narrow the scan to the objects of the rarest value
// among them (an agent's "its node and this VNI": the VNI's few, not the node's many).
// mu_ held.
template <class F>
void WatchCache::select_locked(const Watcher& probe, F f) const {
  const auto& fields_ix = strategy_.info().indexed_fields;
  const std::set<std::string_view>* narrowest = nullptr;
  bool pinned = false;
  for (size_t i = 0; i < fields_ix.size(); ++i) {
    auto v = probe.req.fields.exact_value(fields_ix[i]);
    if (!v) continue;
    pinned = true;
    auto it = obj_index_[i].find(*v);
    if (it == obj_index_[i].end()) return;  // no object has that value
    if (!narrowest || it->second.size() < narrowest->size()) narrowest = &it->second;
  }
  if (pinned) {
    for (const auto& key : *narrowest) {  // keys are in order: so is the result
      auto o = objects_.find(key);
      if (o != objects_.end() && matches(probe, *o->second) && !f(o->second)) return;
    }
    return;
  }
  auto begin = objects_.begin(), end = objects_.end();
  if (!probe.req.ns.empty()) {
    std::string prefix = strategy_.info().list_prefix(probe.req.ns);
    begin = objects_.lower_bound(prefix);
    end = objects_.lower_bound(store::prefix_end(prefix));
  }
  for (auto it = begin; it != end; ++it)
    if (matches(probe, *it->second) && !f(it->second)) return;
}

std::vector<CachedPtr> WatchCache::select_locked(const Watcher& probe) const {
  std::vector<CachedPtr> out;
  select_locked(probe, [&](const CachedPtr& o) {
    out.push_back(o);
    return true;
  });
  return out;
}

WatchCache::Watcher WatchCache::probe(const std::string& ns, const api::LabelSelector& labels,
                                      const api::FieldSelector& fields) {
  Watcher w;
  w.req.ns = ns;
  w.req.labels = labels;
  w.req.fields = fields;
  return w;
}

WatchCache::Snapshot WatchCache::list(const std::string& ns, const api::LabelSelector& labels,
                                      const api::FieldSelector& fields) const {
  const Watcher w = probe(ns, labels, fields);
  std::shared_lock lk(mu_);
  Snapshot s;
  s.rv = rv_;
  s.items = select_locked(w);
  return s;
}

bool WatchCache::any(const std::string& ns, const api::LabelSelector& labels,
                     const api::FieldSelector& fields) const {
  const Watcher w = probe(ns, labels, fields);
  std::shared_lock lk(mu_);
  bool found = false;
  select_locked(w, [&](const CachedPtr&) {
    found = true;
    return false;
  });
  return found;
}

CachedPtr WatchCache::get(const std::string& ns, const std::string& name) const {
  std::shared_lock lk(mu_);
  auto it = objects_.find(strategy_.info().key(ns, name));
  if (it == objects_.end() || it->second->ns != ns) return nullptr;
  return it->second;
}

std::vector<CachedPtr> WatchCache::dependents(const std::string& owner_uid) const {
  std::shared_lock lk(mu_);
  std::vector<CachedPtr> out;
  auto range = by_owner_.equal_range(owner_uid);
  for (auto i = range.first; i != range.second; ++i) {
    auto it = objects_.find(i->second);
    if (it != objects_.end()) out.push_back(it->second);
  }
  return out;
}

std::map<std::string, size_t> WatchCache::namespaces_with_name_prefix(std::string_view name_prefix) const {
  const std::string prefix = strategy_.info().key_prefix() + std::string(name_prefix);
  std::shared_lock lk(mu_);
  std::map<std::string, size_t> out;
  for (auto it = objects_.lower_bound(prefix); it != objects_.end() && it->first.starts_with(prefix); ++it)
    ++out[it->second->ns];
  return out;
}

WatchCache::Stats WatchCache::stats() const {
  std::shared_lock lk(mu_);
  Stats s = stats_;
  s.objects = objects_.size();
  s.watchers = watchers_.size();
  return s;
}

}  // namespace kos::apiserver
