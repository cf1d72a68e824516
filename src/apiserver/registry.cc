#include "apiserver/registry.h"

#include <sys/random.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <utility>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <spdlog/spdlog.h>

#include "api/names.h"
#include "common/metrics.h"

namespace kos::apiserver {
namespace json = boost::json;
using namespace std::chrono_literals;

std::string new_uid() {
  // 122 random bits from the kernel's CSPRNG (getrandom blocks only before the pool is
  // first initialised, at boot). No user-space generator: nothing is shared across fork()
  // or predictable from a small seed.
  unsigned char b[16];
  size_t got = 0;
  while (got < sizeof b) {
    ssize_t n = ::getrandom(b + got, sizeof b - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      // Only on a kernel without getrandom (< 3.17): no UID may ever be weak, so stop here.
      spdlog::critical("getrandom failed: {}", std::strerror(errno));
      std::abort();
    }
    got += static_cast<size_t>(n);
  }
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);  // variant 10 (RFC 4122)
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += kHex[b[i] >> 4];
    out += kHex[b[i] & 15];
  }
  return out;
}

namespace {

constexpr int kMaxConflictRetries = 16;

// ---- continue tokens: base64url of {"v":"meta.k8s.io/v1","rv":N,"start":"<key>"} ------

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string base64url(std::string_view in) {
  std::string out;
  uint32_t buf = 0;
  int bits = 0;
  for (unsigned char c : in) {
    buf = (buf << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += kB64[(buf >> bits) & 63];
    }
  }
  if (bits > 0) out += kB64[(buf << (6 - bits)) & 63];
  return out;
}

std::optional<std::string> unbase64url(std::string_view in) {
  std::string out;
  uint32_t buf = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    const char* p = std::strchr(kB64, c);
    if (!p || !*p) {
      if (c == '+') p = kB64 + 62;
      else if (c == '/') p = kB64 + 63;
      else return std::nullopt;
    }
    buf = (buf << 6) | static_cast<uint32_t>(p - kB64);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buf >> bits) & 0xff);
    }
  }
  return out;
}

std::string make_continue(store::Revision rv, std::string_view start) {
  json::object o;
  o["v"] = "meta.k8s.io/v1";
  o["rv"] = rv;
  o["start"] = start;
  return base64url(json::serialize(o));
}

struct ContinueToken {
  store::Revision rv;
  std::string start;
};

Result<ContinueToken> parse_continue(std::string_view token) {
  auto bad = [] { return fail(Errc::kBadRequest, "continue key is not valid: expected a token from a previous list"); };
  auto raw = unbase64url(token);
  if (!raw) return bad();
  auto v = api::parse_json(*raw);
  if (!v || !v->is_object()) return bad();
  const auto& o = v->get_object();
  const auto* ver = o.if_contains("v");
  const auto* rv = o.if_contains("rv");
  const auto* start = o.if_contains("start");
  if (!ver || !ver->is_string() || ver->get_string() != "meta.k8s.io/v1" || !rv ||
      !rv->is_int64() || rv->get_int64() <= 0 || !start || !start->is_string())
    return bad();
  return ContinueToken{rv->get_int64(), std::string(start->get_string())};
}

Result<store::Revision> parse_rv(std::string_view s, std::string_view what) {
  store::Revision v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < 0)
    return fail(Error{Errc::kBadRequest,
                      std::string(what) + ": invalid resourceVersion \"" + std::string(s) + "\"",
                      {}});
  return v;
}

api::MicroTime micro_now(const Clock& c) {
  return std::chrono::time_point_cast<std::chrono::microseconds>(c.now());
}

// The stored form: the object without metadata.resourceVersion (the store's mod
// revision is the resourceVersion).
std::string stored_form(const json::object& obj) {
  json::object copy = obj;
  if (auto* m = copy["metadata"].if_object()) m->erase("resourceVersion");
  return json::serialize(copy);
}

// The object with metadata, status and extendedMetadata left out: what "generation"
// counts changes of.
json::object spec_part(const json::object& obj) {
  json::object o = obj;
  o.erase("metadata");
  o.erase("status");
  o.erase("extendedMetadata");
  return o;
}

void stamp_sections(const Strategy& s, const json::object* old_obj, json::object& obj,
                    api::MicroTime now) {
  auto sections = s.changed_sections(old_obj, obj);
  if (sections.empty() && !old_obj) return;
  api::ExtendedObjectMeta ext;
  const json::object& src = old_obj ? *old_obj : obj;
  if (const auto* e = src.if_contains("extendedMetadata")) {
    if (const auto* writes = e->is_object() ? e->get_object().if_contains("writes") : nullptr;
        writes && writes->is_array()) {
      for (const auto& w : writes->get_array()) {
        const auto* wo = w.if_object();
        if (!wo) continue;
        const auto* sec = wo->if_contains("section");
        const auto* t = wo->if_contains("serverTime");
        if (!sec || !sec->is_string() || !t || !t->is_string()) continue;
        if (auto tt = api::parse_micro_time(t->get_string()))
          ext.writes.push_back({std::string(sec->get_string()), *tt});
      }
    }
  }
  if (!old_obj) ext.writes.clear();  // server-owned: a client's value is ignored
  for (auto sec : sections) ext.set_write(sec, now);
  if (ext.writes.empty()) {
    obj.erase("extendedMetadata");
    return;
  }
  json::array writes;
  for (const auto& w : ext.writes) {
    json::object wo;
    wo["section"] = w.section;
    wo["serverTime"] = api::format_micro_time(w.server_time);
    writes.push_back(std::move(wo));
  }
  json::object e;
  e["writes"] = std::move(writes);
  // Canonical position: after metadata.
  json::object out;
  for (auto& kv : obj) {
    if (kv.key() == "extendedMetadata") continue;
    out[kv.key()] = std::move(kv.value());
    if (kv.key() == "metadata") out["extendedMetadata"] = e;
  }
  if (!out.contains("extendedMetadata")) out["extendedMetadata"] = std::move(e);
  obj = std::move(out);
}

}  // namespace

Registry::Registry(store::Store& store, WatchCache& cache, const Clock& clock,
                   const Admission* admission)
    : store_(store), cache_(cache), strategy_(cache.strategy()), clock_(clock),
      admission_(admission) {}

std::string Registry::not_found(const std::string& name) const {
  const auto& i = strategy_.info();
  return i.plural + (i.group.empty() ? "" : "." + i.group) + " \"" + name + "\" not found";
}

Error Registry::not_found_error(const std::string& name) const {
  return Error{Errc::kNotFound, not_found(name), {}};
}

Result<CachedPtr> Registry::read(const std::string& key) {
  auto kv = store_.get(key);
  if (!kv) return fail(kv.error());
  return make_cached(strategy_, key, kv->value, kv->mod_revision);
}

Result<CachedPtr> Registry::read(const std::string& ns, const std::string& name) {
  auto c = read(strategy_.info().key(ns, name));
  // A kind whose names are unique across namespaces keeps every namespace's objects under
  // one prefix: the object of that name may be another namespace's.
  if (c && strategy_.info().namespaced && (*c)->ns != ns) return fail(Errc::kNotFound, "");
  return c;
}

Result<CachedPtr> Registry::read_after(CachedPtr& first, const std::string& ns, const std::string& name) {
  if (first) return std::exchange(first, nullptr);
  return read(ns, name);
}

// ---- create ---------------------------------------------------------------------------

Result<CachedPtr> Registry::create(const std::string& ns, const json::value& body,
                                   const WriteOptions& opts) {
  const auto& info = strategy_.info();
  auto canon = strategy_.canonicalize(body, opts.decode);
  if (!canon) return fail(canon.error());
  json::object obj = std::move(*canon);
  auto meta = read_meta(obj);
  if (!meta) return fail(meta.error());

  if (info.namespaced) {
    if (meta->namespace_.empty()) meta->namespace_ = ns;
    if (meta->namespace_ != ns)
      return fail(Errc::kBadRequest, "the namespace of the provided object (" + meta->namespace_ +
                                         ") does not match the namespace sent on the request (" +
                                         ns + ")");
  }
  if (!meta->resource_version.empty())
    return fail(Errc::kBadRequest, "resourceVersion should not be set on objects to be created");
  if (meta->name.empty()) {
    if (meta->generate_name.empty())
      return fail(Error{Errc::kInvalid,
                        info.kind + "." + info.group + " is invalid: metadata.name: Required value: "
                                                       "name or generateName is required",
                        {{"FieldValueRequired", "name or generateName is required",
                          "metadata.name"}}});
    meta->name = api::generate_name(meta->generate_name);
  }
  meta->uid = new_uid();
  meta->creation_timestamp = std::chrono::time_point_cast<std::chrono::seconds>(clock_.now());
  meta->deletion_timestamp.reset();
  meta->deletion_grace_period_seconds.reset();
  meta->generation = 1;
  write_meta(obj, *meta);
  if (info.has_status) obj["status"] = json::object();
  stamp_sections(strategy_, nullptr, obj, micro_now(clock_));

  if (auto v = strategy_.validate(obj); !v) return fail(v.error());
  if (admission_)
    if (auto a = admission_->admit(nullptr, obj); !a) return fail(a.error());
  if (opts.admission)
    if (auto a = opts.admission->admit(nullptr, obj); !a) return fail(a.error());
  std::string key = info.key(meta->namespace_, meta->name);
  std::string value = stored_form(obj);
  if (opts.dry_run) return make_cached(strategy_, key, value, 0);
  auto kv = store_.create(key, value);
  if (!kv) {
    if (kv.error().code != Errc::kAlreadyExists) return fail(kv.error());
    std::string msg = info.plural + (info.group.empty() ? "" : "." + info.group) + " \"" +
                      meta->name + "\" already exists";
    // With names unique across namespaces, the holder may be in another namespace: say so.
    if (info.cluster_unique_names)
      if (auto holder = read(key); holder && (*holder)->ns != meta->namespace_)
        msg += " in namespace " + (*holder)->ns;
    return fail(Errc::kAlreadyExists, msg);
  }
  return make_cached(strategy_, key, value, kv->mod_revision);
}

// ---- get / list -----------------------------------------------------------------------

Result<CachedPtr> Registry::get(const std::string& ns, const std::string& name,
                                const std::optional<std::string>& resource_version) {
  if (resource_version && *resource_version == "0") {
    if (auto c = cache_.get(ns, name)) return c;
    return fail(not_found_error(name));
  }
  if (resource_version && !resource_version->empty())
    if (auto r = parse_rv(*resource_version, "get"); !r) return fail(r.error());
  auto r = read(ns, name);
  if (!r && r.error().code == Errc::kNotFound) return fail(not_found_error(name));
  return r;
}

namespace {

// How long a consistent list waits for the watch cache to reach the store's revision
// before it reads the store instead (the cache is usually there within a millisecond).
constexpr auto kConsistentListWait = 100ms;

metrics::Counter& consistent_lists(const std::string& resource, bool from_cache) {
  static auto& family = metrics::Registry::global().counter(
      "kos_apiserver_consistent_lists_total",
      "Lists of the latest state (no resourceVersion, no limit) by resource and where they "
      "were served from: the watch cache once it had reached the store's revision, or the "
      "store.",
      {"resource", "served_from"});
  return family.with({resource, from_cache ? "cache" : "store"});
}

}  // namespace

Result<void> Registry::await_revision(store::Revision rv) {
  const auto deadline = clock_.steady_now() + 3s;
  while (true) {
    auto cur = store_.current_revision();
    if (!cur) return fail(cur.error());
    if (*cur >= rv) return {};
    if (clock_.steady_now() >= deadline) {
      std::string msg = "Too large resource version: " + std::to_string(rv) +
                        ", current: " + std::to_string(*cur);
      return fail(Error{Errc::kTimeout, msg, {{"ResourceVersionTooLarge", msg, ""}}});
    }
    cache_.wait_for(rv, 50ms);  // a pause, cut short if this resource's cache gets there
  }
}

Result<ListResult> Registry::list(const ListRequest& req) {
  if (auto r = strategy_.check_field_selector(req.fields); !r) return fail(r.error());
  const auto& info = strategy_.info();
  const std::string prefix = info.list_prefix(req.ns);
  const bool has_rv = req.resource_version && !req.resource_version->empty();
  if (!req.resource_version_match.empty() && req.resource_version_match != "Exact" &&
      req.resource_version_match != "NotOlderThan")
    return fail(Errc::kBadRequest, "resourceVersionMatch: Unsupported value: \"" +
                                       req.resource_version_match +
                                       "\": supported values: \"Exact\", \"NotOlderThan\"");
  if (!req.resource_version_match.empty() && !has_rv)
    return fail(Errc::kBadRequest,
                "resourceVersionMatch is forbidden unless resourceVersion is provided");
  if (!req.continue_token.empty() && has_rv && *req.resource_version != "0")
    return fail(Errc::kBadRequest, "specifying resource version is not allowed when using continue");

  store::Revision at = 0;
  std::string start;
  if (!has_rv && req.continue_token.empty() && req.limit == 0) {
    // A consistent list: the latest state. Served from the watch cache once it has reached
    // the store's current revision (as kube-apiserver's ConsistentListFromCache), which
    // costs a lookup in the cache's indexes instead of reading and decoding every object of
    // the resource; from the store when the cache cannot show it is there in time.
    auto cur = store_.current_revision();
    if (!cur) return fail(cur.error());
    if (cache_.catch_up(*cur, kConsistentListWait)) {
      consistent_lists(info.plural, true).inc();
      auto snap = cache_.list(req.ns, req.labels, req.fields);
      return ListResult{snap.rv, std::move(snap.items), {}};
    }
    consistent_lists(info.plural, false).inc();
  } else if (!req.continue_token.empty()) {
    auto tok = parse_continue(req.continue_token);
    if (!tok) return fail(tok.error());
    at = tok->rv;
    start = prefix + tok->start;
    if (!start.starts_with(prefix)) return fail(Errc::kBadRequest, "continue key is not valid");
  } else if (has_rv) {
    auto rv = parse_rv(*req.resource_version, "list");
    if (!rv) return fail(rv.error());
    if (req.resource_version_match == "Exact") {
      if (*rv == 0) return fail(Errc::kBadRequest, "resourceVersionMatch=Exact needs a resourceVersion > 0");
      at = *rv;
    } else if (*rv == 0 || cache_.revision() >= *rv) {
      // Served from the watch cache: resourceVersion "0" means any, and N means not older
      // than N, which the cache has reached.
      auto snap = cache_.list(req.ns, req.labels, req.fields);
      return ListResult{snap.rv, std::move(snap.items), {}};
    } else {
      // The cache has not reached N. Once the store has, a fresh read from it is new
      // enough (N may belong to another resource).
      if (auto r = await_revision(*rv); !r) return fail(r.error());
    }
  }

  // A read from the store, page by page at one revision, until `limit` matches are found.
  ListResult out;
  store::ListOptions lo{.revision = at, .limit = req.limit > 0 ? std::max<int64_t>(req.limit, 64) : 0,
                        .start_key = start};
  while (true) {
    auto page = store_.list(prefix, lo);
    if (!page) {
      if (page.error().code == Errc::kCompacted && !req.continue_token.empty())
        return fail(Errc::kCompacted,
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter.");
      return fail(page.error());
    }
    out.rv = page->revision;
    lo.revision = page->revision;
    for (size_t i = 0; i < page->items.size(); ++i) {
      const auto& kv = page->items[i];
      auto c = make_cached(strategy_, kv.key, kv.value, kv.mod_revision);
      if (!c) {
        spdlog::error("list: skipping undecodable object key={} error={}", kv.key, c.error().message);
        continue;
      }
      const auto& o = **c;
      bool ok = (req.ns.empty() || o.ns == req.ns) && req.labels.matches(o.labels) &&
                req.fields.matches([&](std::string_view f) -> std::optional<std::string> {
                  auto v = o.field(f);
                  return v ? std::optional<std::string>(std::string(*v)) : std::nullopt;
                });
      if (!ok) continue;
      if (req.limit > 0 && static_cast<int64_t>(out.items.size()) == req.limit) {
        out.continue_token = make_continue(out.rv, kv.key.substr(prefix.size()));
        return out;
      }
      out.items.push_back(std::move(*c));
    }
    if (!page->more) break;
    lo.start_key = page->next_key;
  }
  return out;
}

// ---- update / patch -------------------------------------------------------------------

Result<json::object> Registry::prepare_update(const CachedObject& cur, const json::value& body,
                                              bool status, const WriteOptions& opts,
                                              bool* has_precondition) {
  const auto& info = strategy_.info();
  auto canon = strategy_.canonicalize(body, opts.decode);
  if (!canon) return fail(canon.error());
  json::object next = std::move(*canon);
  auto meta = read_meta(next);
  if (!meta) return fail(meta.error());
  const json::object cur_obj = cur.obj();
  auto old_meta = read_meta(cur_obj);
  if (!old_meta) return fail(old_meta.error());

  if (meta->name.empty()) meta->name = cur.name;
  if (meta->name != cur.name)
    return fail(Errc::kBadRequest, "the name of the object (" + meta->name +
                                       ") does not match the name on the URL (" + cur.name + ")");
  if (meta->namespace_.empty()) meta->namespace_ = cur.ns;
  if (meta->namespace_ != cur.ns)
    return fail(Errc::kBadRequest, "the namespace of the object (" + meta->namespace_ +
                                       ") does not match the namespace on the URL (" + cur.ns + ")");
  if (!meta->resource_version.empty()) {
    auto rv = parse_rv(meta->resource_version, "metadata.resourceVersion");
    if (!rv) return fail(rv.error());
    *has_precondition = true;
    if (*rv != cur.rv)
      return fail(Errc::kConflict,
                  "Operation cannot be fulfilled on " + info.plural +
                      (info.group.empty() ? "" : "." + info.group) + " \"" + cur.name +
                      "\": the object has been modified; please apply your changes to the latest "
                      "version and try again");
  }
  if (meta->uid.empty()) meta->uid = old_meta->uid;
  if (old_meta->deletion_timestamp) {
    for (const auto& f : meta->finalizers)
      if (std::find(old_meta->finalizers.begin(), old_meta->finalizers.end(), f) ==
          old_meta->finalizers.end())
        return fail(Error{Errc::kInvalid,
                          info.kind + " \"" + cur.name + "\" is invalid: metadata.finalizers: "
                                                         "Forbidden: no new finalizers can be added "
                                                         "if the object is being deleted",
                          {{"FieldValueForbidden",
                            "no new finalizers can be added if the object is being deleted",
                            "metadata.finalizers"}}});
  }
  // Server-owned metadata keeps its stored value.
  meta->creation_timestamp = old_meta->creation_timestamp;
  meta->deletion_timestamp = old_meta->deletion_timestamp;
  meta->deletion_grace_period_seconds = old_meta->deletion_grace_period_seconds;
  meta->generate_name = meta->generate_name.empty() ? old_meta->generate_name : meta->generate_name;
  meta->resource_version.clear();

  if (status) {
    // The status subresource changes status only.
    json::object from_old = cur_obj;
    from_old["status"] = next.contains("status") ? next["status"] : json::value(json::object());
    next = std::move(from_old);
    meta = old_meta;
    meta->resource_version.clear();
  } else if (info.has_status) {
    if (const auto* s = cur_obj.if_contains("status")) next["status"] = *s;
  }
  meta->generation = spec_part(next) == spec_part(cur_obj) ? old_meta->generation
                                                            : old_meta->generation + 1;
  write_meta(next, *meta);
  // extendedMetadata is server-owned: start from the stored one.
  if (const auto* e = cur_obj.if_contains("extendedMetadata")) next["extendedMetadata"] = *e;
  else next.erase("extendedMetadata");
  return next;
}

Result<CachedPtr> Registry::write(const CachedObject& cur, json::object next, bool dry_run,
                                  const Admission* request_admission, bool* unchanged) {
  json::object old_obj = cur.obj();
  if (auto* m = old_obj["metadata"].if_object()) m->erase("resourceVersion");
  // Nothing changed: no write, no new resourceVersion (as Kubernetes does).
  if (next == old_obj) {
    if (unchanged) *unchanged = true;
    return std::make_shared<CachedObject>(cur);
  }
  stamp_sections(strategy_, &old_obj, next, micro_now(clock_));
  if (auto v = strategy_.validate_update(old_obj, next); !v) return fail(v.error());
  if (admission_)
    if (auto a = admission_->admit(&old_obj, next); !a) return fail(a.error());
  if (request_admission)
    if (auto a = request_admission->admit(&old_obj, next); !a) return fail(a.error());
  auto meta = read_meta(next);
  if (!meta) return fail(meta.error());
  std::string value = stored_form(next);
  if (dry_run) return make_cached(strategy_, cur.key, value, cur.rv);
  if (meta->deletion_timestamp && meta->finalizers.empty()) {
    // The last finalizer is gone: the object goes.
    store::Revision at = 0;
    auto d = store_.remove(cur.key, cur.rv, &at);
    if (!d) return fail(d.error());
    return make_cached(strategy_, cur.key, value, at);
  }
  auto kv = store_.update(cur.key, value, cur.rv);
  if (!kv) return fail(kv.error());
  return make_cached(strategy_, cur.key, value, kv->mod_revision);
}

CachedPtr Registry::cached_at_precondition(const std::string& ns, const std::string& name,
                                           const json::value& body) const {
  const auto* o = body.if_object();
  const auto* m = o ? o->if_contains("metadata") : nullptr;
  const auto* mo = m ? m->if_object() : nullptr;
  const auto* rv = mo ? mo->if_contains("resourceVersion") : nullptr;
  if (!rv || !rv->is_string() || rv->get_string().empty()) return nullptr;
  auto c = cache_.get(ns, name);
  if (!c || std::to_string(c->rv) != std::string_view(rv->get_string())) return nullptr;
  return c;
}

Result<CachedPtr> Registry::update(const std::string& ns, const std::string& name,
                                   const json::value& body, bool status, const WriteOptions& opts) {
  // An update naming the resourceVersion it replaces (controllers' status writes do)
  // starts from the watch cache's copy when the cache has that version: the store writes
  // only if the object is still at it (the same precondition), so a stale copy costs a
  // conflict, never a lost write, and the store read is saved. A write that would change
  // nothing is decided on the store's copy (the object may have moved on: a conflict).
  CachedPtr cached = cached_at_precondition(ns, name, body);
  for (int attempt = 0;; ++attempt) {
    const bool from_cache = cached != nullptr;
    auto cur = read_after(cached, ns, name);
    if (!cur) {
      if (cur.error().code == Errc::kNotFound) return fail(not_found_error(name));
      return fail(cur.error());
    }
    bool precondition = false;
    auto next = prepare_update(**cur, body, status, opts, &precondition);
    if (!next) return fail(next.error());
    bool unchanged = false;
    auto r = write(**cur, std::move(*next), opts.dry_run, opts.admission, &unchanged);
    if (from_cache && (unchanged || opts.dry_run)) {
      --attempt;  // decided again on the store's copy
      continue;
    }
    if (r || r.error().code != Errc::kConflict || precondition || attempt >= kMaxConflictRetries) {
      if (!r && r.error().code == Errc::kConflict) {
        const auto& info = strategy_.info();
        return fail(Errc::kConflict, "Operation cannot be fulfilled on " + info.plural +
                                         (info.group.empty() ? "" : "." + info.group) + " \"" +
                                         name + "\": the object has been modified; please apply "
                                         "your changes to the latest version and try again");
      }
      if (!r && r.error().code == Errc::kNotFound) return fail(not_found_error(name));
      return r;
    }
  }
}

Result<CachedPtr> Registry::patch(const std::string& ns, const std::string& name, PatchType type,
                                  const json::value& patch, bool status, const WriteOptions& opts) {
  if (type == PatchType::kApply)
    return fail(Errc::kUnsupported,
                "server-side apply is not supported by KOS; use client-side `kubectl apply` "
                "(without --server-side)");
  if (type == PatchType::kStrategicMerge)
    return fail(Errc::kUnsupported,
                "strategic merge patch is not supported for custom resources; use "
                "--type=merge or --type=json");
  for (int attempt = 0;; ++attempt) {
    auto cur = read(ns, name);
    if (!cur) {
      if (cur.error().code == Errc::kNotFound) return fail(not_found_error(name));
      return fail(cur.error());
    }
    auto patched = type == PatchType::kMerge ? apply_merge_patch((*cur)->obj(), patch)
                                             : apply_json_patch((*cur)->obj(), patch);
    if (!patched) return fail(patched.error());
    // A resourceVersion the patch leaves equal to the current one is no precondition.
    bool precondition = false;
    auto next = prepare_update(**cur, *patched, status, opts, &precondition);
    if (!next) return fail(next.error());
    auto r = write(**cur, std::move(*next), opts.dry_run, opts.admission);
    if (r || r.error().code != Errc::kConflict || attempt >= kMaxConflictRetries) {
      if (!r && r.error().code == Errc::kNotFound) return fail(not_found_error(name));
      return r;
    }
  }
}

Result<CachedPtr> Registry::update_with(const std::string& ns, const std::string& name,
                                        const Mutation& mutate) {
  for (int attempt = 0;; ++attempt) {
    auto cur = read(ns, name);
    if (!cur) return fail(cur.error());
    auto next = mutate(**cur);
    if (!next) return fail(next.error());
    if (auto* m = (*next)["metadata"].if_object()) m->erase("resourceVersion");
    auto r = write(**cur, std::move(*next), false, nullptr);
    if (r || r.error().code != Errc::kConflict || attempt >= kMaxConflictRetries) return r;
  }
}

// ---- delete ---------------------------------------------------------------------------

Result<Registry::Deleted> Registry::remove(const std::string& ns, const std::string& name,
                                           const DeleteOptions& opts) {
  const auto& info = strategy_.info();
  const std::string key = info.key(ns, name);
  std::string finalizer;
  if (opts.propagation_policy == "Orphan") finalizer = "orphan";
  else if (opts.propagation_policy == "Foreground") finalizer = "foregroundDeletion";
  else if (!opts.propagation_policy.empty() && opts.propagation_policy != "Background")
    return fail(Error{Errc::kInvalid,
                      "propagationPolicy: Unsupported value: \"" + opts.propagation_policy +
                          "\": supported values: \"Orphan\", \"Background\", \"Foreground\"",
                      {{"FieldValueNotSupported", "supported values: Orphan, Background, Foreground",
                        "propagationPolicy"}}});
  // The first attempt starts from the watch cache's copy when it has the object: the store
  // removes (or marks) only at that copy's revision, so a stale copy costs a conflict and
  // a retry from the store, never a wrong delete. What would be answered without a write
  // (a precondition failing, nothing to do, a dry run) is decided again on the store's copy.
  CachedPtr cached = cache_.get(ns, name);
  for (int attempt = 0;; ++attempt) {
    const bool from_cache = cached != nullptr;
    auto cur = read_after(cached, ns, name);
    if (!cur) {
      if (cur.error().code == Errc::kNotFound) return fail(not_found_error(name));
      return fail(cur.error());
    }
    // From the cache: try again on the store's copy (not counted as a conflict retry).
    auto again_from_store = [&] {
      if (from_cache) --attempt;
      return from_cache;
    };
    const CachedObject& c = **cur;
    if (opts.precondition_uid && *opts.precondition_uid != c.uid) {
      if (again_from_store()) continue;
      return fail(Errc::kConflict, "Precondition failed: UID in precondition: " +
                                       *opts.precondition_uid + ", UID in object meta: " + c.uid);
    }
    if (opts.precondition_resource_version &&
        *opts.precondition_resource_version != std::to_string(c.rv)) {
      if (again_from_store()) continue;
      return fail(Errc::kConflict, "Precondition failed: ResourceVersion in precondition: " +
                                       *opts.precondition_resource_version +
                                       ", ResourceVersion in object meta: " + std::to_string(c.rv));
    }
    // The request's admission decides on any copy: what it reads (spec.node) is immutable.
    if (opts.admission)
      if (auto a = opts.admission->admit_delete(c.obj()); !a) return fail(a.error());
    auto meta = read_meta(c.obj());
    if (!meta) return fail(meta.error());
    if (!finalizer.empty() &&
        std::find(meta->finalizers.begin(), meta->finalizers.end(), finalizer) == meta->finalizers.end() &&
        !meta->deletion_timestamp)
      meta->finalizers.push_back(finalizer);
    if (opts.dry_run && again_from_store()) continue;

    Result<CachedPtr> r;
    bool gone = false;
    if (!meta->finalizers.empty()) {
      // Finalizers hold the object: mark it for deletion; whoever owns each finalizer
      // removes it, and the removal of the last one deletes the object.
      if (meta->deletion_timestamp && meta->finalizers == c.finalizers) {
        if (again_from_store()) continue;
        return Deleted{*cur, false};
      }
      if (!meta->deletion_timestamp) {
        meta->deletion_timestamp = std::chrono::time_point_cast<std::chrono::seconds>(clock_.now());
        meta->deletion_grace_period_seconds = 0;
      }
      meta->resource_version.clear();
      json::object next = c.obj();
      write_meta(next, *meta);
      if (opts.dry_run) return Deleted{make_cached(strategy_, key, stored_form(next), c.rv).value(), false};
      auto kv = store_.update(key, stored_form(next), c.rv);
      if (kv) r = make_cached(strategy_, key, stored_form(next), kv->mod_revision);
      else r = fail(kv.error());
    } else {
      if (opts.dry_run) return Deleted{*cur, true};
      store::Revision at = 0;
      auto kv = store_.remove(key, c.rv, &at);
      if (kv) {
        auto last = std::make_shared<CachedObject>(c);
        r = CachedPtr(std::move(last));
        gone = true;
      } else {
        r = fail(kv.error());
      }
    }
    if (r) return Deleted{*r, gone};
    if (r.error().code == Errc::kNotFound) return fail(not_found_error(name));
    if (r.error().code == Errc::kConflict && again_from_store()) continue;  // the copy was stale
    if (r.error().code != Errc::kConflict || attempt >= kMaxConflictRetries) return fail(r.error());
  }
}

Result<std::vector<CachedPtr>> Registry::delete_collection(const ListRequest& req,
                                                           const DeleteOptions& opts) {
  auto l = list(req);
  if (!l) return fail(l.error());
  std::vector<CachedPtr> out;
  for (const auto& o : l->items) {
    auto d = remove(o->ns, o->name, opts);
    if (!d) {
      if (d.error().code == Errc::kNotFound) continue;  // someone else deleted it
      return fail(d.error());
    }
    out.push_back(d->obj);
  }
  return out;
}

}  // namespace kos::apiserver
