#include "client/informer.h"

#include <future>
#include <optional>
#include <random>

#include <boost/json/serialize.hpp>
#include <spdlog/spdlog.h>

#include "common/metrics.h"

namespace kos::client {
namespace json = boost::json;

std::string object_key(const std::string& ns, const std::string& name) {
  return ns.empty() ? name : ns + "/" + name;
}

std::string object_key(const api::AnyObject& obj) {
  const auto& m = api::meta(obj);
  return object_key(m.namespace_, m.name);
}

// ---- Indexer --------------------------------------------------------------------------

void Indexer::add_index(const std::string& name, IndexFunc fn) {
  std::unique_lock lk(mu_);
  auto& idx = indexes_[name];
  idx.fn = std::move(fn);
  for (const auto& [key, obj] : items_)
    for (const auto& v : idx.fn(*obj)) idx.values[v][key] = obj;
}

void Indexer::index_locked(const std::string& key, const api::AnyObject& obj, bool add) {
  for (auto& [_, idx] : indexes_)
    for (const auto& v : idx.fn(obj)) {
      if (add) continue;
      auto it = idx.values.find(v);
      if (it == idx.values.end()) continue;
      it->second.erase(key);
      if (it->second.empty()) idx.values.erase(it);
    }
}

ObjectPtr Indexer::upsert(const std::string& key, ObjectPtr obj) {
  std::unique_lock lk(mu_);
  ObjectPtr prev;
  auto it = items_.find(key);
  if (it != items_.end()) {
    prev = it->second;
    index_locked(key, *prev, false);
  }
  for (auto& [_, idx] : indexes_)
    for (const auto& v : idx.fn(*obj)) idx.values[v][key] = obj;
  items_[key] = std::move(obj);
  return prev;
}

ObjectPtr Indexer::erase(const std::string& key) {
  std::unique_lock lk(mu_);
  auto it = items_.find(key);
  if (it == items_.end()) return nullptr;
  ObjectPtr prev = it->second;
  index_locked(key, *prev, false);
  items_.erase(it);
  return prev;
}

ObjectPtr Indexer::get(const std::string& key) const {
  std::shared_lock lk(mu_);
  auto it = items_.find(key);
  return it == items_.end() ? nullptr : it->second;
}

std::vector<ObjectPtr> Indexer::list() const {
  std::shared_lock lk(mu_);
  std::vector<ObjectPtr> out;
  out.reserve(items_.size());
  for (const auto& [_, o] : items_) out.push_back(o);
  return out;
}

std::vector<std::string> Indexer::keys() const {
  std::shared_lock lk(mu_);
  std::vector<std::string> out;
  for (const auto& [k, _] : items_) out.push_back(k);
  return out;
}

std::vector<ObjectPtr> Indexer::by_index(const std::string& index, const std::string& value) const {
  std::shared_lock lk(mu_);
  std::vector<ObjectPtr> out;
  auto idx = indexes_.find(index);
  if (idx == indexes_.end()) return out;
  auto it = idx->second.values.find(value);
  if (it == idx->second.values.end()) return out;
  for (const auto& [_, o] : it->second) out.push_back(o);
  return out;
}

std::vector<std::string> Indexer::index_values(const std::string& index) const {
  std::shared_lock lk(mu_);
  std::vector<std::string> out;
  auto idx = indexes_.find(index);
  if (idx == indexes_.end()) return out;
  out.reserve(idx->second.values.size());
  for (const auto& [v, _] : idx->second.values) out.push_back(v);
  return out;
}

size_t Indexer::size() const {
  std::shared_lock lk(mu_);
  return items_.size();
}

// ---- Reflector ------------------------------------------------------------------------

// Everything below runs on the transport thread, except start/stop which post to it.
struct Informer::State : std::enable_shared_from_this<Informer::State> {
  // Not owned: the Informer holds the client (and so the transport) for as long as this
  // state can run. Callbacks that outlive the Informer only see `stopped`.
  Transport* transport = nullptr;
  InformerOptions opts;
  ResourceRef ref;
  Indexer* indexer = nullptr;
  std::atomic<bool>* synced = nullptr;
  std::vector<EventHandlers> handlers;

  bool stopped = false;
  std::string rv;                  // last resourceVersion seen
  bool relist_needed = false;      // the watch said 410
  bool consistent_relist = false;  // after the first list, relist with a fresh read
  bool watch_list_refused = false; // the server answered a WatchList with 400 or 422: LIST
  // During a WatchList's initial events: the state so far, applied at its end bookmark.
  std::optional<std::map<std::string, ObjectPtr>> initial;
  int failures = 0;
  std::shared_ptr<StreamHandle> stream;
  std::function<void()> cancel_timer;
  uint64_t generation = 0;  // invalidates callbacks of a superseded list or watch

  mutable std::mutex stats_mu;
  Stats stats;
  std::string rv_copy;  // readable from other threads under stats_mu

  std::mutex sync_mu;
  std::condition_variable sync_cv;

  std::chrono::milliseconds backoff() {
    int f = std::min(failures, 10);
    auto d = std::chrono::milliseconds(std::min<int64_t>(opts.max_backoff.count(), 100LL << f));
    thread_local std::mt19937 rng{std::random_device{}()};
    return d / 2 + std::chrono::milliseconds(rng() % static_cast<uint64_t>(std::max<int64_t>(1, d.count() / 2)));
  }

  void set_rv(std::string v) {
    rv = std::move(v);
    std::lock_guard lk(stats_mu);
    rv_copy = rv;
  }

  void after(std::chrono::milliseconds d, void (State::*fn)()) {
    auto self = shared_from_this();
    cancel_timer = transport->post_after(d, [self, fn, gen = generation] {
      if (self->stopped || gen != self->generation) return;
      (self.get()->*fn)();
    });
  }

  // The first sync (and its retries): a WatchList unless it is off or refused.
  void sync() {
    if (opts.watch_list && !watch_list_refused && !consistent_relist) return start_watch(true);
    list();
  }

  void list() {
    if (stopped) return;
    ++generation;
    ListOptions lo;
    lo.label_selector = opts.label_selector;
    lo.field_selector = opts.field_selector;
    // First list: from the server's cache. After a 410: a consistent read, never older
    // than what this informer has already seen.
    if (!consistent_relist) lo.resource_version = "0";
    {
      std::lock_guard lk(stats_mu);
      ++stats.lists;
    }
    HttpRequest req{"GET", ref.path(opts.ns) + lo.query(false)};
    req.timeout = std::chrono::seconds(60);
    auto self = shared_from_this();
    transport->request(std::move(req), [self, gen = generation](Result<HttpResponse> r) {
      if (self->stopped || gen != self->generation) return;
      self->on_list(std::move(r));
    });
  }

  void on_list(Result<HttpResponse> r) {
    auto retry = [&](const std::string& why) {
      ++failures;
      spdlog::warn("informer: list failed resource={} selector={} error={}", ref.plural,
                   opts.field_selector, why);
      after(backoff(), &State::list);
    };
    if (!r) return retry(r.error().message);
    auto body = api::parse_json(r->body);
    if (!body) return retry(body.error().message);
    if (r->status != 200) return retry(api::error_from_status(*body, static_cast<int>(r->status)).message);
    const auto* o = body->if_object();
    const auto* items = o ? o->if_contains("items") : nullptr;
    const auto* meta = o ? o->if_contains("metadata") : nullptr;
    const auto* list_rv = meta && meta->is_object() ? meta->get_object().if_contains("resourceVersion") : nullptr;
    if (!items || !items->is_array() || !list_rv || !list_rv->is_string())
      return retry("malformed list");
    std::map<std::string, ObjectPtr> fresh;
    for (const auto& v : items->get_array()) {
      auto obj = api::object_from_json(opts.kind, v);
      if (!obj) {
        spdlog::warn("informer: skipping undecodable {}: {}", ref.plural, obj.error().message);
        continue;
      }
      auto ptr = std::make_shared<const api::AnyObject>(std::move(*obj));
      fresh.emplace(object_key(*ptr), std::move(ptr));
    }
    replace(std::move(fresh), std::string(list_rv->get_string()));
    watch();
  }

  // Makes the indexer hold `fresh`, the state at `fresh_rv`, delivering the difference
  // from what it held; the informer has synced.
  void replace(std::map<std::string, ObjectPtr> fresh, std::string fresh_rv) {
    for (const auto& key : indexer->keys()) {
      if (fresh.count(key)) continue;
      auto gone = indexer->erase(key);
      for (auto& h : handlers)
        if (h.on_delete && gone) h.on_delete(gone, true);
    }
    for (auto& [key, obj] : fresh) {
      auto prev = indexer->upsert(key, obj);
      for (auto& h : handlers) {
        if (!prev) {
          if (h.on_add) h.on_add(obj);
        } else if (api::meta(*prev).resource_version != api::meta(*obj).resource_version) {
          if (h.on_update) h.on_update(prev, obj);
        }
      }
    }
    set_rv(std::move(fresh_rv));
    failures = 0;
    relist_needed = false;
    consistent_relist = true;
    if (!synced->exchange(true)) {
      std::lock_guard lk(sync_mu);
      sync_cv.notify_all();
    }
  }

  void watch() { start_watch(false); }
  // Watches from rv; with `initial_state`, a WatchList: the state first (from the server's
  // cache), collected in `initial` until the bookmark that ends it.
  void start_watch(bool initial_state) {
    if (stopped) return;
    ++generation;
    ListOptions lo;
    lo.label_selector = opts.label_selector;
    lo.field_selector = opts.field_selector;
    lo.resource_version = rv;
    lo.allow_bookmarks = true;
    if (initial_state) {
      lo.resource_version = "0";
      lo.resource_version_match = "NotOlderThan";
      lo.send_initial_events = true;
      initial.emplace();
      std::lock_guard lk(stats_mu);
      ++stats.lists;
    }
    thread_local std::mt19937 rng{std::random_device{}()};
    // Spread the ends of many informers' watches over time.
    auto t = opts.watch_timeout.count();
    lo.timeout_seconds = t / 2 + static_cast<int64_t>(rng() % static_cast<uint64_t>(std::max<int64_t>(1, t / 2)));
    {
      std::lock_guard lk(stats_mu);
      ++stats.watches;
    }
    HttpRequest req{"GET", ref.path(opts.ns) + lo.query(true)};
    req.timeout = std::chrono::seconds(30);  // to connect and get the headers
    auto self = shared_from_this();
    auto gen = generation;
    stream = transport->stream(
        std::move(req),
        [self, gen](unsigned status, const std::string& body) {
          if (self->stopped || gen != self->generation || status == 200) return;
          auto v = api::parse_json(body);
          Error e = v ? api::error_from_status(*v, static_cast<int>(status))
                      : Error{Errc::kUnavailable, "watch answered HTTP " + std::to_string(status), {}};
          if (self->initial && (status == 400 || status == 422)) {
            self->watch_list_refused = true;  // a server without WatchList: LIST and WATCH
            spdlog::info("informer: the server refused a WatchList resource={} error={}; listing instead",
                         self->ref.plural, e.message);
            return;
          }
          if (e.code == Errc::kCompacted) self->relist_needed = true;
          else spdlog::warn("informer: watch refused resource={} error={}", self->ref.plural, e.message);
          ++self->failures;
        },
        [self, gen](std::string_view line) {
          if (self->stopped || gen != self->generation) return;
          self->on_event(line);
        },
        [self, gen](Result<void> end) {
          if (self->stopped || gen != self->generation) return;
          self->stream.reset();
          if (self->initial) {  // ended before the state was whole
            self->initial.reset();
            if (self->relist_needed || self->watch_list_refused) return self->list();
            if (!end) ++self->failures;  // a refusal was counted with its status
            return self->after(self->backoff(), &State::sync);
          }
          if (self->relist_needed) return self->list();
          if (!end) {
            ++self->failures;
            spdlog::info("informer: watch broke resource={} rv={} error={}; resuming",
                         self->ref.plural, self->rv, end.error().message);
            return self->after(self->backoff(), &State::watch);
          }
          if (self->failures > 0) return self->after(self->backoff(), &State::watch);
          self->watch();  // the server ended the watch (timeout): resume from rv
        });
  }

  void on_event(std::string_view line) {
    api::ScratchJson scratch;
    auto v = scratch.parse(line);
    const auto* o = v ? (*v)->if_object() : nullptr;
    const auto* type = o ? o->if_contains("type") : nullptr;
    const auto* object = o ? o->if_contains("object") : nullptr;
    if (!type || !type->is_string() || !object) {
      spdlog::warn("informer: malformed watch event resource={}", ref.plural);
      return;
    }
    std::string_view t(type->get_string().data(), type->get_string().size());
    if (t == "ERROR") {
      auto e = api::error_from_status(*object, 0);
      if (e.code == Errc::kCompacted) relist_needed = true;  // the stream ends next
      else spdlog::warn("informer: watch error resource={} error={}", ref.plural, e.message);
      return;
    }
    const auto* m = object->is_object() ? object->get_object().if_contains("metadata") : nullptr;
    const auto* orv = m && m->is_object() ? m->get_object().if_contains("resourceVersion") : nullptr;
    if (t == "BOOKMARK") {
      if (initial) {
        const auto* ann = m && m->is_object() ? m->get_object().if_contains("annotations") : nullptr;
        const auto* end = ann && ann->is_object() ? ann->get_object().if_contains("k8s.io/initial-events-end") : nullptr;
        if (end && end->is_string() && end->get_string() == "true" && orv && orv->is_string()) {
          auto fresh = std::move(*initial);
          initial.reset();
          replace(std::move(fresh), std::string(orv->get_string()));
        }
      } else if (orv && orv->is_string()) {
        set_rv(std::string(orv->get_string()));
      }
      std::lock_guard lk(stats_mu);
      ++stats.bookmarks;
      return;
    }
    auto obj = api::object_from_json(opts.kind, *object);
    if (!obj) {
      spdlog::warn("informer: undecodable {} in watch: {}", ref.plural, obj.error().message);
      return;
    }
    failures = 0;
    auto ptr = std::make_shared<const api::AnyObject>(std::move(*obj));
    std::string key = object_key(*ptr);
    if (initial) {  // part of a WatchList's state: delivered at its end
      if (t == "DELETED") initial->erase(key);
      else (*initial)[key] = std::move(ptr);
      return;
    }
    if (t == "DELETED") {
      if (indexer->erase(key))  // deletions of objects never seen need no handling
        for (auto& h : handlers)
          if (h.on_delete) h.on_delete(ptr, false);
    } else {
      auto prev = indexer->upsert(key, ptr);
      for (auto& h : handlers) {
        if (!prev) {
          if (h.on_add) h.on_add(ptr);
        } else if (h.on_update) {
          h.on_update(prev, ptr);
        }
      }
    }
    const std::string& erv = api::meta(*ptr).resource_version;
    const bool in_order = rv.empty() || revision_of(erv) > revision_of(rv);
    if (!in_order) {
      spdlog::warn("informer: out-of-order watch event resource={} type={} resourceVersion={} after={}", ref.plural,
                   t, erv, rv);
      out_of_order_events().with({ref.plural}).inc();
    } else {
      set_rv(erv);  // resumes from the furthest revision seen, never from the past
    }
    std::lock_guard lk(stats_mu);
    ++stats.events;
    if (!in_order) ++stats.out_of_order;
  }

  static metrics::Family<metrics::Counter>& out_of_order_events() {
    static auto& f = metrics::Registry::global().counter(
        "kos_informer_out_of_order_events_total",
        "Watch events whose resourceVersion did not advance past the stream's (duplicates or events from the past "
        "after a resume): never expected.",
        {"resource"});
    return f;
  }

  void shutdown() {
    stopped = true;
    ++generation;
    if (stream) stream->cancel();
    stream.reset();
    if (cancel_timer) cancel_timer();
    std::lock_guard lk(sync_mu);
    sync_cv.notify_all();
  }
};

uint64_t revision_of(std::string_view resource_version) {
  uint64_t n = 0;
  for (char c : resource_version) {
    if (c < '0' || c > '9') return 0;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  return n;
}

Informer::Informer(std::shared_ptr<RestClient> client, InformerOptions opts)
    : state_(std::make_shared<State>()) {
  client_ = client;
  state_->transport = client->transport().get();
  state_->opts = std::move(opts);
  state_->ref = ResourceRef::of(state_->opts.kind);
  state_->indexer = &indexer_;
  state_->synced = &synced_;
}

Informer::~Informer() { stop(); }

void Informer::add_handlers(EventHandlers h) { state_->handlers.push_back(std::move(h)); }

void Informer::start() {
  auto s = state_;
  s->transport->post([s] { s->sync(); });
}

void Informer::stop() {
  if (!state_) return;
  auto s = state_;
  std::promise<void> done;
  s->transport->post([s, &done] {
    s->shutdown();
    done.set_value();
  });
  // Waits for the transport thread, so that no handler runs after this returns. If the
  // transport was shut down first, nothing runs on it anymore anyway.
  auto f = done.get_future();
  while (f.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready)
    if (s->transport->stopped()) break;
  state_.reset();
}

bool Informer::wait_for_sync(std::chrono::milliseconds timeout) {
  if (!state_) return false;
  std::unique_lock lk(state_->sync_mu);
  return state_->sync_cv.wait_for(lk, timeout, [&] { return synced_.load() || state_->stopped; }) &&
         synced_.load();
}

Informer::Stats Informer::stats() const {
  if (!state_) return {};
  std::lock_guard lk(state_->stats_mu);
  return state_->stats;
}

std::string Informer::resource_version() const {
  if (!state_) return {};
  std::lock_guard lk(state_->stats_mu);
  return state_->rv_copy;
}

}  // namespace kos::client
