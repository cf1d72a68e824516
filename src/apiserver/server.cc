#include "apiserver/server.h"

#include <malloc.h>

#include <charconv>

#include <boost/json/serialize.hpp>
#include <boost/url/parse.hpp>
#include <spdlog/spdlog.h>

#include <set>

#include "api/cidr.h"
#include "api/names.h"
#include "apiserver/admission.h"
#include "apiserver/gc.h"
#include "apiserver/migrate.h"
#include "apiserver/openapi.h"
#include "apiserver/review_protobuf.h"
#include "apiserver/table.h"

namespace kos::apiserver {
namespace json = boost::json;
namespace bhttp = boost::beast::http;
using namespace std::chrono_literals;

struct ApiServer::Resource {
  std::unique_ptr<Strategy> strategy;
  std::unique_ptr<WatchCache> cache;
  std::unique_ptr<Registry> registry;
  std::vector<std::string> verbs{"create", "delete", "deletecollection", "get", "list",
                                 "patch", "update", "watch"};
};

namespace {

// ---- metrics --------------------------------------------------------------------------

struct ServerMetrics {
  metrics::Family<metrics::Counter>& requests = metrics::Registry::global().counter(
      "kos_apiserver_requests_total", "API requests by verb, resource and HTTP code.",
      {"verb", "resource", "code"});
  metrics::Family<metrics::Histogram>& latency = metrics::Registry::global().histogram(
      "kos_apiserver_request_duration_seconds",
      "API request latency by verb and resource (watches: until the stream starts).",
      {"verb", "resource"});
  metrics::Family<metrics::Gauge>& watches = metrics::Registry::global().gauge(
      "kos_apiserver_open_watches", "Watch streams open, by resource.", {"resource"});
};

ServerMetrics& server_metrics() {
  static ServerMetrics m;
  return m;
}

// ---- responses ------------------------------------------------------------------------

http::Response json_response(unsigned status, std::string body) {
  return http::Response{status, "application/json", std::move(body), {}};
}

http::Response error_response(const Error& e, std::string_view name = {},
                              const ResourceInfo* info = nullptr) {
  // Kubernetes names the resource in most errors and the kind in Invalid ones.
  std::string kind = info ? (e.code == Errc::kInvalid ? info->kind : info->plural) : std::string();
  std::string group = info ? info->group : std::string();
  return json_response(static_cast<unsigned>(e.http_status()),
                       json::serialize(api::status_json(e, name, group, kind)));
}

http::Response method_not_allowed() {
  return json_response(405, R"({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server does not allow this method on the requested resource","reason":"MethodNotAllowed","code":405})");
}

http::Response status_error(Errc code, std::string msg) {
  return error_response(Error{code, std::move(msg), {}});
}

// ---- request parsing ------------------------------------------------------------------

bool wants_table(const http::Request& req) {
  auto accept = req[bhttp::field::accept];
  return accept.find("as=Table") != std::string_view::npos;
}

TableObjects table_objects(const Query& q) {
  auto v = q.get("includeObject").value_or("Metadata");
  if (v == "None") return TableObjects::kNone;
  if (v == "Object") return TableObjects::kObject;
  return TableObjects::kMetadata;
}

Result<api::DecodeOptions> decode_options(const Query& q, std::vector<std::string>* warnings) {
  api::DecodeOptions o;
  auto fv = q.get("fieldValidation").value_or("Warn");
  if (fv == "Strict") o.strict = true;
  else if (fv == "Warn") o.warnings = warnings;
  else if (fv != "Ignore")
    return fail(Errc::kBadRequest, "fieldValidation: invalid value \"" + fv +
                                       "\": use Strict, Warn or Ignore");
  return o;
}

Result<json::value> parse_body(const http::Request& req) {
  if (req.body().empty()) return fail(Errc::kBadRequest, "the request has no body");
  auto ct = req[bhttp::field::content_type];
  if (ct.find("yaml") != std::string_view::npos && ct.find("apply-patch") == std::string_view::npos)
    return fail(Errc::kUnsupported, "Content-Type " + std::string(ct) +
                                        " is not supported: send application/json");
  if (ct.find("protobuf") != std::string_view::npos)
    return fail(Errc::kUnsupported, "protobuf bodies are not supported: send application/json");
  return api::parse_json(req.body());
}

void add_warnings(http::Response& r, const std::vector<std::string>& warnings) {
  for (const auto& w : warnings) {
    std::string escaped;
    for (char c : w) {
      if (c == '"' || c == '\\') escaped += '\\';
      escaped += c;
    }
    r.headers.emplace_back("Warning", "299 - \"" + escaped + "\"");
  }
}

std::string list_json(const ResourceInfo& info, const ListResult& l) {
  std::string out = "{\"kind\":\"" + info.list_kind() + "\",\"apiVersion\":\"" +
                    info.api_version() + "\",\"metadata\":{\"resourceVersion\":\"" +
                    std::to_string(l.rv) + "\"";
  if (!l.continue_token.empty()) out += ",\"continue\":\"" + l.continue_token + "\"";
  out += "},\"items\":[";
  for (size_t i = 0; i < l.items.size(); ++i) {
    if (i) out += ",";
    out += l.items[i]->json;
  }
  out += "]}";
  return out;
}

std::string table_json(const Strategy& s, const ListResult& l, TableObjects include,
                       std::chrono::system_clock::time_point now) {
  json::array rows;
  for (const auto& o : l.items) rows.push_back(table_row(s, o->obj(), now, include));
  json::object meta;
  meta["resourceVersion"] = std::to_string(l.rv);
  if (!l.continue_token.empty()) meta["continue"] = l.continue_token;
  return json::serialize(make_table(s, std::move(rows), std::move(meta)));
}

// ---- watch streams --------------------------------------------------------------------

class StreamSink : public WatchSink {
 public:
  explicit StreamSink(std::shared_ptr<http::Stream> s) : stream_(std::move(s)) {}
  bool send(std::shared_ptr<const std::string> line, bool initial) override {
    return initial ? stream_->write_initial(std::move(line)) : stream_->write(std::move(line));
  }
  void close(std::optional<Error> error) override {
    if (error) {
      json::object ev;
      ev["type"] = "ERROR";
      ev["object"] = api::status_json(*error);
      stream_->write_final(std::make_shared<const std::string>(json::serialize(ev) + "\n"));
    }
    stream_->finish();
  }

 private:
  std::shared_ptr<http::Stream> stream_;
};

}  // namespace

// ---- ApiServer ------------------------------------------------------------------------

ApiServer::ApiServer(store::Store& store, const ServerOptions& opts, const Clock& clock)
    : store_(store), opts_(opts), clock_(clock),
      watch_budget_(opts.watch_memory_budget
                        ? std::make_shared<http::StreamBudget>(opts.watch_memory_budget)
                        : nullptr) {}

ApiServer::~ApiServer() { stop(); }

void ApiServer::stop() {
  if (http_) http_->stop();
  if (gc_) gc_->stop();
  for (auto& r : resources_) r->cache->stop();
}

uint16_t ApiServer::port() const { return http_ ? http_->port() : 0; }

std::string ApiServer::url() const {
  return (opts_.tls ? "https://" : "http://") + opts_.address + ":" + std::to_string(port());
}

ApiServer::Resource* ApiServer::resource(std::string_view group, std::string_view plural) {
  for (auto& r : resources_) {
    const auto& i = r->strategy->info();
    if (i.group == group && i.plural == plural) return r.get();
  }
  return nullptr;
}

Result<void> ApiServer::init() {
  std::vector<std::unique_ptr<Strategy>> strategies;
  for (const auto& k : api::all_kinds()) strategies.push_back(make_kos_strategy(k.kind));
  strategies.push_back(make_event_strategy());
  strategies.push_back(make_lease_strategy());
  for (auto& s : strategies) {
    auto r = std::make_unique<Resource>();
    r->strategy = std::move(s);
    // The stored layout first: the cache fills from it.
    if (auto m = migrate_to_cluster_unique_keys(store_, r->strategy->info()); !m)
      return fail(m.error().code, "migrating " + r->strategy->info().plural + ": " + m.error().message);
    r->cache = std::make_unique<WatchCache>(store_, *r->strategy, clock_, opts_.cache);
    if (auto st = r->cache->start(); !st) return st;
    resources_.push_back(std::move(r));
  }
  auto* subnets = resource(api::kGroup, "subnets");
  auto* iplocks = resource(api::kGroup, "iplocks");
  subnet_admission_ = std::make_unique<SubnetAdmission>(*subnets->cache, *iplocks->cache);
  for (auto& r : resources_) {
    const Admission* adm = r.get() == subnets ? subnet_admission_.get() : nullptr;
    r->registry = std::make_unique<Registry>(store_, *r->cache, clock_, adm);
    auto* cache = r->cache.get();
    std::string plural = r->strategy->info().plural;
    metrics::Registry::global().callback_gauge(
        "kos_apiserver_watch_cache_objects_" + plural, "Objects in the watch cache of " + plural,
        [cache] { return static_cast<double>(cache->stats().objects); });
  }
  auto& reg = metrics::Registry::global();
  reg.callback_gauge("kos_apiserver_watch_events_sent",
                     "Watch event lines handed to watchers (all resources).", [this] {
                       double n = 0;
                       for (auto& r : resources_) n += static_cast<double>(r->cache->stats().lines_sent);
                       return n;
                     });
  if (watch_budget_) {
    reg.callback_gauge("kos_apiserver_watch_queued_bytes",
                       "Bytes of watch events queued or being sent, all watches (capped by "
                       "--watch-memory-budget).",
                       [b = watch_budget_] { return static_cast<double>(b->used()); });
  }
  // The initial lists were large transient buffers: give their pages back.
  malloc_trim(0);
  std::vector<Registry*> registries;
  for (auto& r : resources_) registries.push_back(r->registry.get());
  gc_ = std::make_unique<GarbageCollector>(registries, clock_);
  gc_->start();

  http::ServerOptions ho;
  ho.address = opts_.address;
  ho.port = opts_.port;
  ho.io_threads = opts_.io_threads;
  ho.worker_threads = opts_.worker_threads;
  ho.tls = opts_.tls;
  auto chain = std::make_unique<AuthenticatorChain>();
  chain->add(std::make_unique<CertificateAuthenticator>());
  if (!opts_.token_file.empty()) {
    auto tokens = TokenFileAuthenticator::open(opts_.token_file);
    if (!tokens) return fail(tokens.error());
    chain->add(std::move(*tokens));
  }
  authenticator_ = std::move(chain);
  limits_ = std::make_unique<UserLimits>(opts_.limits, clock_);
  if (!opts_.audit.path.empty()) {
    auto a = AuditLog::open(opts_.audit);
    if (!a) return fail(a.error());
    audit_ = std::move(*a);
  }
  auto* attachments = resource(api::kGroup, "networkattachments");
  // Whether `node` has an attachment whose `field` (status.addressVNI, status.routingVNI)
  // is `vni`. The watch cache answers; when it says no, a consistent list from the store
  // does (an agent learns of its VNI from this cache, but a client may ask right after the
  // write that addressed it).
  authorizer_ = std::make_unique<Authorizer>([attachments](const std::string& node, const std::string& field,
                                                           const std::string& vni) {
    auto sel = api::FieldSelector::parse("spec.node=" + node + "," + field + "=" + vni);
    if (!sel) return false;
    if (attachments->cache->any("", {}, *sel)) return true;
    ListRequest lr;
    lr.fields = *sel;
    lr.limit = 1;
    auto l = attachments->registry->list(lr);
    return l && !l->items.empty();
  });
  auto srv = http::Server::start(ho, [this](const http::Request& req, const http::Peer& peer) {
    return handle(req, peer);
  });
  if (!srv) return fail(srv.error());
  http_ = std::move(*srv);
  spdlog::info("apiserver: serving url={}", url());
  return {};
}

Result<std::unique_ptr<ApiServer>> ApiServer::start(store::Store& store, const ServerOptions& opts,
                                                    const Clock& clock) {
  std::unique_ptr<ApiServer> s(new ApiServer(store, opts, clock));
  if (auto r = s->init(); !r) return fail(r.error());
  return s;
}

namespace {

json::object resource_list_entry(const ResourceInfo& i, const std::vector<std::string>& verbs) {
  json::object r;
  r["name"] = i.plural;
  r["singularName"] = i.singular;
  r["namespaced"] = i.namespaced;
  r["kind"] = i.kind;
  json::array v(verbs.begin(), verbs.end());
  r["verbs"] = std::move(v);
  if (!i.short_names.empty()) r["shortNames"] = json::array(i.short_names.begin(), i.short_names.end());
  if (!i.categories.empty()) r["categories"] = json::array(i.categories.begin(), i.categories.end());
  return r;
}

struct Review {
  const char* group;
  const char* plural;
  const char* kind;
};
constexpr Review kReviews[] = {
    {"authentication.k8s.io", "selfsubjectreviews", "SelfSubjectReview"},
    {"authorization.k8s.io", "selfsubjectaccessreviews", "SelfSubjectAccessReview"},
};

json::object group_entry(const std::string& group, const std::string& version) {
  json::object gv;
  gv["groupVersion"] = group + "/" + version;
  gv["version"] = version;
  json::object g;
  g["name"] = group;
  g["versions"] = json::array{gv};
  g["preferredVersion"] = gv;
  return g;
}

}  // namespace

// ---- reviews: who am I, may I ---------------------------------------------------------------

http::Reply ApiServer::serve_review(const http::Request& req, const RequestInfo& ri, const UserInfo& user) {
  const bool protobuf = req[bhttp::field::content_type].find("protobuf") != std::string_view::npos;
  auto body = protobuf ? decode_review_protobuf(req.body()) : parse_body(req);
  if (!body) return error_response(body.error());
  json::object* in = body->if_object();
  if (!in) return status_error(Errc::kBadRequest, "the body must be a JSON object");
  json::object out;
  out["apiVersion"] = ri.group + "/" + ri.version;
  if (ri.resource == "selfsubjectreviews") {
    out["kind"] = "SelfSubjectReview";
    out["metadata"] = json::object{{"creationTimestamp", api::format_time(std::chrono::time_point_cast<std::chrono::seconds>(clock_.now()))}};
    json::object ui;
    ui["username"] = user.name;
    if (!user.uid.empty()) ui["uid"] = user.uid;
    ui["groups"] = json::array(user.groups.begin(), user.groups.end());
    out["status"] = json::object{{"userInfo", std::move(ui)}};
    return json_response(201, json::serialize(out));
  }
  // SelfSubjectAccessReview: the authorizer's answer for the attributes asked about.
  out["kind"] = "SelfSubjectAccessReview";
  out["metadata"] = json::object{};
  const json::value* spec = in->if_contains("spec");
  if (!spec || !spec->is_object())
    return error_response(Error{Errc::kInvalid, "SelfSubjectAccessReview.authorization.k8s.io is invalid: spec: Required value",
                                {{"FieldValueRequired", "Required value", "spec"}}});
  out["spec"] = *spec;
  auto str = [](const json::object* o, std::string_view k) {
    const auto* v = o ? o->if_contains(k) : nullptr;
    return v && v->is_string() ? std::string(v->get_string()) : std::string();
  };
  Attributes a;
  a.user = user;
  const json::value* ra = spec->get_object().if_contains("resourceAttributes");
  const json::value* na = spec->get_object().if_contains("nonResourceAttributes");
  if (ra && ra->is_object()) {
    const auto* o = &ra->get_object();
    a.resource_request = true;
    a.verb = str(o, "verb");
    a.group = str(o, "group");
    a.resource = str(o, "resource");
    a.subresource = str(o, "subresource");
    a.ns = str(o, "namespace");
    a.name = str(o, "name");
    if (const auto* fs = o->if_contains("fieldSelector"); fs && fs->is_object())
      if (auto raw = str(&fs->get_object(), "rawSelector"); !raw.empty()) a.field_selector = raw;
  } else if (na && na->is_object()) {
    a.verb = str(&na->get_object(), "verb");
    a.path = str(&na->get_object(), "path");
  } else {
    return error_response(Error{Errc::kInvalid,
                                "SelfSubjectAccessReview.authorization.k8s.io is invalid: spec.resourceAttributes: "
                                "Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
                                {{"FieldValueInvalid", "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                                  "spec.resourceAttributes"}}});
  }
  auto d = authorizer_->authorize(a);
  json::object st;
  st["allowed"] = d.allowed;
  if (!d.reason.empty()) st["reason"] = d.reason;
  out["status"] = std::move(st);
  return json_response(201, json::serialize(out));
}

// ---- the request pipeline -----------------------------------------------------------------
//
// resolve (what is asked, request_info.h) -> authenticate (who asks, authentication.h) ->
// per-user limits (limits.h) -> authorize (may they, authorization.h) -> serve, with
// admission (the checks that need the objects, admission.h) inside the registry's writes;
// then metrics and the audit log (audit.h). Each stage answers the request itself when it
// must stop it (400, 401, 429, 403).

namespace {

// Admins and controllers are not held to the per-user limits (as kube-apiserver's flow
// control exempts system:masters and serves its controllers at a high priority): a
// controller-manager's rate is the whole cluster's.
bool is_exempt_from_limits(const UserInfo& u) { return is_admin_or_controller(u); }

bool is_public_path(const RequestInfo& ri) {
  return !ri.resource_request && ri.segments.size() == 1 &&
         (ri.segments[0] == "healthz" || ri.segments[0] == "livez" || ri.segments[0] == "readyz" ||
          ri.segments[0] == "version");
}

http::Response unauthorized(const std::string& why) {
  return error_response(Error{Errc::kUnauthorized, why, {}});
}

}  // namespace

Result<UserInfo> ApiServer::authenticate(const http::Request& req, const http::Peer& peer,
                                         const RequestInfo& ri) const {
  auto u = authenticator_->authenticate(req, peer);
  if (!u) return fail(u.error());
  if (*u) return **u;
  // No credentials. A server without TLS (--insecure-listen, for tests) treats them as an
  // admin, as kube-apiserver's insecure port did; a secure one answers 401, except for
  // health and version.
  if (!opts_.tls) return UserInfo{"kos:insecure", "", {std::string(kAdminsGroup)}};
  if (is_public_path(ri)) return UserInfo{"system:anonymous", "", {"system:unauthenticated"}};
  return fail(Errc::kUnauthorized, "Unauthorized: present a client certificate signed by the "
                                   "cluster CA or a bearer token");
}

Attributes ApiServer::attributes(const RequestInfo& ri, const UserInfo& user) const {
  Attributes a;
  a.user = user;
  a.verb = ri.verb;
  a.resource_request = ri.resource_request;
  a.group = ri.group;
  a.resource = ri.resource;
  a.subresource = ri.subresource;
  a.ns = ri.ns;
  a.name = ri.name;
  a.path = ri.path;
  if (ri.verb == "list" || ri.verb == "watch") a.field_selector = ri.query.get("fieldSelector");
  return a;
}

namespace {

http::Response forbidden_response(const RequestInfo& ri, const UserInfo& user, const Decision& d) {
  std::string msg;
  if (ri.resource_request) {
    std::string res = ri.resource + (ri.subresource.empty() ? "" : "/" + ri.subresource);
    std::string gr = ri.resource + (ri.group.empty() ? "" : "." + ri.group);
    msg = gr + (ri.name.empty() ? "" : " \"" + ri.name + "\"") + " is forbidden: User \"" + user.name +
          "\" cannot " + ri.verb + " resource \"" + res + "\" in API group \"" + ri.group + "\"" +
          (ri.ns.empty() ? " at the cluster scope" : " in the namespace \"" + ri.ns + "\"") + ": " + d.reason;
  } else {
    msg = "forbidden: User \"" + user.name + "\" cannot " + ri.verb + " path \"" + ri.path + "\": " + d.reason;
  }
  json::object st = api::status_json(Error{Errc::kForbidden, msg, {}}, ri.name, ri.group, ri.resource);
  return json_response(403, json::serialize(st));
}

}  // namespace

http::Reply ApiServer::handle(const http::Request& req, const http::Peer& peer) {
  auto started = std::chrono::steady_clock::now();
  std::string verb = "unknown", resource_name = "";
  std::optional<RequestInfo> ri;
  std::optional<UserInfo> user;
  http::Reply reply = [&]() -> http::Reply {
    auto resolved = resolve_request(req);
    if (!resolved) return error_response(resolved.error());
    ri = std::move(*resolved);
    auto who = authenticate(req, peer, *ri);
    if (!who) {
      verb = "unauthorized";
      return unauthorized(who.error().message);
    }
    user = std::move(*who);
    const bool exempt = is_exempt_from_limits(*user);
    if (!exempt && !is_public_path(*ri))
      if (auto retry = limits_->take(user->name)) {
        verb = "throttled";
        http::Response r = error_response(Error{Errc::kTooManyRequests,
                                                "Too many requests: user " + user->name + " is over " +
                                                    std::to_string(static_cast<int>(opts_.limits.requests_per_second)) +
                                                    " requests per second; retry after " + std::to_string(*retry) + " s",
                                                {}});
        r.headers.emplace_back("Retry-After", std::to_string(*retry));
        return r;
      }
    if (!is_public_path(*ri)) {
      auto d = authorizer_->authorize(attributes(*ri, *user));
      if (!d.allowed) {
        verb = "forbidden";
        if (ri->resource_request) resource_name = ri->resource;
        spdlog::info("apiserver: forbidden user={} verb={} resource={} ns={} name={} path={} reason=\"{}\"",
                     user->name, ri->verb, ri->resource, ri->ns, ri->name, ri->path, d.reason);
        return forbidden_response(*ri, *user, d);
      }
    }
    return serve(req, *ri, *user, verb, resource_name);
  }();
  unsigned code = 200;
  if (auto* r = std::get_if<http::Response>(&reply)) code = r->status;
  const auto latency = std::chrono::steady_clock::now() - started;
  auto& m = server_metrics();
  m.requests.with({verb, resource_name, std::to_string(code)}).inc();
  m.latency.with({verb, resource_name}).observe(latency);
  if (code >= 500) spdlog::warn("apiserver: {} {} -> {}", std::string(req.method_string()), std::string(req.target()), code);
  if (audit_ && ri && AuditLog::wanted(ri->verb, code)) {
    AuditEntry e;
    e.time = std::chrono::system_clock::now();
    e.user = user ? user->name : "system:anonymous";
    if (user) e.groups = user->groups;
    e.verb = ri->verb;
    if (ri->resource_request) {
      e.group = ri->group;
      e.resource = ri->resource;
      e.subresource = ri->subresource;
      e.ns = ri->ns;
      e.name = ri->name;
    } else {
      e.path = ri->path;
    }
    e.code = code;
    e.latency = std::chrono::duration_cast<std::chrono::microseconds>(latency);
    audit_->record(e);
  }
  return reply;
}

http::Reply ApiServer::serve(const http::Request& req, const RequestInfo& ri, const UserInfo& user,
                             std::string& verb, std::string& resource_name) {
  {
    const auto& seg = ri.segments;
    const Query& q = ri.query;
    const auto method = req.method();
    const bool is_get = method == bhttp::verb::get || method == bhttp::verb::head;

    // Non-resource endpoints.
    if (seg.size() == 1 && (seg[0] == "healthz" || seg[0] == "livez" || seg[0] == "readyz")) {
      verb = "health";
      return http::Response{200, "text/plain", "ok", {}};
    }
    if (seg.size() == 1 && seg[0] == "metrics") {
      verb = "metrics";
      return http::Response{200, "text/plain; version=0.0.4", metrics::Registry::global().render(), {}};
    }
    if (seg.size() == 1 && seg[0] == "version") {
      verb = "discovery";
      return json_response(200, R"({"major":"1","minor":"32","gitVersion":"v1.32.0-kos.0.1.0","gitCommit":"","gitTreeState":"clean","buildDate":"","goVersion":"","compiler":"g++","platform":"linux/amd64"})");
    }
    if (!seg.empty() && seg[0] == "openapi") {
      verb = "openapi";
      if (seg.size() == 2 && seg[1] == "v2")
        return http::Response{200, "application/octet-stream", openapi_v2_protobuf(), {}};
      if (seg.size() == 2 && seg[1] == "v3") return json_response(200, openapi_v3_index());
      if (seg.size() == 5 && seg[1] == "v3" && seg[2] == "apis" && seg[3] == api::kGroup &&
          seg[4] == api::kVersion) {
        http::Response r = json_response(200, openapi_v3_group());
        r.headers.emplace_back("ETag", "\"" + openapi_v3_hash() + "\"");
        return r;
      }
      return status_error(Errc::kNotFound, "the server could not find the requested resource");
    }
    if (seg.size() == 1 && seg[0] == "api") {
      verb = "discovery";
      return json_response(200, R"({"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":""}]})");
    }
    // The served API groups (all but core), each with one version.
    std::vector<std::pair<std::string, std::string>> groups;
    for (auto& r : resources_) {
      const auto& i = r->strategy->info();
      std::pair gv{i.group, i.version};
      if (!i.group.empty() && std::find(groups.begin(), groups.end(), gv) == groups.end())
        groups.push_back(gv);
    }
    // Who am I, what may I do (kubectl auth whoami, kubectl auth can-i).
    for (const auto& r : kReviews) groups.emplace_back(r.group, "v1");
    if (ri.resource_request && ri.segments.size() == 4 && ri.name.empty()) {
      for (const auto& r : kReviews)
        if (ri.group == r.group && ri.resource == r.plural) {
          verb = "review";
          resource_name = r.plural;
          if (ri.version != "v1" && !(r.group == std::string_view("authentication.k8s.io") &&
                                      (ri.version == "v1beta1" || ri.version == "v1alpha1")))
            return status_error(Errc::kNotFound, "the server could not find the requested resource");
          if (method != bhttp::verb::post) return method_not_allowed();
          return serve_review(req, ri, user);
        }
    }
    auto served = [&](const std::string& g, const std::string& v) {
      return std::find(groups.begin(), groups.end(), std::pair{g, v}) != groups.end();
    };
    auto group_version = [&](const std::string& g) -> std::optional<std::string> {
      for (auto& [gg, vv] : groups)
        if (gg == g) return vv;
      return std::nullopt;
    };
    if (seg.size() == 1 && seg[0] == "apis") {
      verb = "discovery";
      json::array list;
      for (auto& [g, v] : groups) list.push_back(group_entry(g, v));
      json::object l;
      l["kind"] = "APIGroupList";
      l["apiVersion"] = "v1";
      l["groups"] = std::move(list);
      return json_response(200, json::serialize(l));
    }
    if (seg.size() == 2 && seg[0] == "apis" && group_version(seg[1])) {
      verb = "discovery";
      json::object g = group_entry(seg[1], *group_version(seg[1]));
      g["kind"] = "APIGroup";
      g["apiVersion"] = "v1";
      return json_response(200, json::serialize(g));
    }
    if ((seg.size() == 3 && seg[0] == "apis" && served(seg[1], seg[2])) ||
        (seg.size() == 2 && seg[0] == "api" && seg[1] == "v1")) {
      verb = "discovery";
      std::string group = seg[0] == "api" ? "" : seg[1];
      json::array list;
      for (const auto& r : kReviews)
        if (group == r.group) {
          json::object e;
          e["name"] = r.plural;
          e["singularName"] = "";
          e["namespaced"] = false;
          e["kind"] = r.kind;
          e["verbs"] = json::array{"create"};
          list.push_back(std::move(e));
        }
      for (auto& r : resources_) {
        const auto& i = r->strategy->info();
        if (i.group != group) continue;
        list.push_back(resource_list_entry(i, r->verbs));
        if (i.has_status) {
          json::object s;
          s["name"] = i.plural + "/status";
          s["singularName"] = "";
          s["namespaced"] = i.namespaced;
          s["kind"] = i.kind;
          s["verbs"] = json::array{"get", "patch", "update"};
          list.push_back(std::move(s));
        }
      }
      if (group.empty()) {
        json::object n;
        n["name"] = "namespaces";
        n["singularName"] = "namespace";
        n["namespaced"] = false;
        n["kind"] = "Namespace";
        n["verbs"] = json::array{"get", "list"};
        n["shortNames"] = json::array{"ns"};
        list.push_back(std::move(n));
      }
      json::object l;
      l["kind"] = "APIResourceList";
      l["apiVersion"] = "v1";
      l["groupVersion"] = group.empty() ? "v1" : group + "/" + seg[2];
      l["resources"] = std::move(list);
      return json_response(200, json::serialize(l));
    }

    // Resource endpoints: /apis/G/V/[namespaces/NS/]PLURAL[/NAME[/SUB]], /api/v1/...
    size_t base;
    std::string group;
    if (seg.size() >= 4 && seg[0] == "apis" && served(seg[1], seg[2])) {
      base = 3;
      group = seg[1];
    } else if (seg.size() >= 3 && seg[0] == "api" && seg[1] == "v1") {
      base = 2;
    } else {
      return status_error(Errc::kNotFound, "the server could not find the requested resource");
    }
    std::string ns;
    if (seg.size() > base + 2 && seg[base] == "namespaces") {
      ns = seg[base + 1];
      base += 2;
    } else if (base == 2 && seg.size() <= 4 && seg[base] == "namespaces" && is_get) {
      // Namespaces are implicit in KOS: every name is an active namespace. kubectl asks
      // for one to word its "not found" messages.
      verb = "namespaces";
      auto ns_json = [&](const std::string& n) {
        json::object o;
        o["kind"] = "Namespace";
        o["apiVersion"] = "v1";
        json::object m;
        m["name"] = n;
        o["metadata"] = std::move(m);
        o["spec"] = json::object{{"finalizers", json::array{"kubernetes"}}};
        o["status"] = json::object{{"phase", "Active"}};
        return o;
      };
      if (seg.size() == 4) {
        if (!api::is_dns1123_label(seg[3]))
          return status_error(Errc::kNotFound, "namespaces \"" + seg[3] + "\" not found");
        return json_response(200, json::serialize(ns_json(seg[3])));
      }
      std::set<std::string> names{"default"};
      for (auto& r : resources_)
        for (const auto& o : r->cache->list("", {}, {}).items) names.insert(o->ns);
      json::array items;
      for (const auto& n : names) items.push_back(ns_json(n));
      json::object l;
      l["kind"] = "NamespaceList";
      l["apiVersion"] = "v1";
      l["metadata"] = json::object{};
      l["items"] = std::move(items);
      return json_response(200, json::serialize(l));
    }
    Resource* res = resource(group, seg[base]);
    if (!res) return status_error(Errc::kNotFound, "the server could not find the requested resource (" + seg[base] + ")");
    const ResourceInfo& info = res->strategy->info();
    resource_name = info.plural;
    std::string name = seg.size() > base + 1 ? seg[base + 1] : "";
    std::string sub = seg.size() > base + 2 ? seg[base + 2] : "";
    if (seg.size() > base + 3 || (!sub.empty() && (sub != "status" || !info.has_status)))
      return status_error(Errc::kNotFound, "the server could not find the requested resource");
    if (!name.empty() && ns.empty() && info.namespaced)
      return status_error(Errc::kNotFound, "a namespace is required for " + info.plural + "/" + name);
    Registry& reg = *res->registry;
    std::vector<std::string> warnings;
    auto dopts = decode_options(q, &warnings);
    if (!dopts) return error_response(dopts.error());
    UserAdmission user_admission(user, info);
    WriteOptions wo{*dopts, q.get("dryRun").has_value(), &user_admission};
    auto fail_with = [&](const Error& e) { return error_response(e, name, &info); };
    auto now = clock_.now();
    auto object_reply = [&](unsigned status, const CachedPtr& o) -> http::Response {
      http::Response r;
      if (wants_table(req)) {
        ListResult l{o->rv, {o}, {}};
        r = json_response(status, table_json(*res->strategy, l, table_objects(q), now));
      } else {
        r = json_response(status, o->json);
      }
      add_warnings(r, warnings);
      return r;
    };

    auto list_request = [&]() -> Result<ListRequest> {
      ListRequest lr;
      lr.ns = ns;
      if (auto ls = q.get("labelSelector")) {
        auto s = api::LabelSelector::parse(*ls);
        if (!s) return fail(s.error());
        lr.labels = std::move(*s);
      }
      if (auto fs = q.get("fieldSelector")) {
        auto s = api::FieldSelector::parse(*fs);
        if (!s) return fail(s.error());
        if (auto c = res->strategy->check_field_selector(*s); !c) return fail(c.error());
        lr.fields = std::move(*s);
      }
      lr.resource_version = q.get("resourceVersion");
      lr.resource_version_match = q.get("resourceVersionMatch").value_or("");
      if (auto l = q.get("limit")) {
        int64_t v = 0;
        auto [p, ec] = std::from_chars(l->data(), l->data() + l->size(), v);
        if (ec != std::errc() || p != l->data() + l->size() || v < 0)
          return fail(Errc::kBadRequest, "limit: invalid value \"" + *l + "\"");
        lr.limit = v;
      }
      lr.continue_token = q.get("continue").value_or("");
      return lr;
    };

    auto delete_options = [&]() -> Result<DeleteOptions> {
      DeleteOptions d;
      d.dry_run = wo.dry_run;
      d.admission = &user_admission;
      if (auto p = q.get("propagationPolicy")) d.propagation_policy = *p;
      if (!req.body().empty()) {
        auto body = api::parse_json(req.body());
        if (!body) return fail(body.error());
        const auto* o = body->if_object();
        if (!o) return fail(Errc::kBadRequest, "DeleteOptions must be a JSON object");
        if (auto* p = o->if_contains("propagationPolicy"); p && p->is_string())
          d.propagation_policy = std::string(p->get_string());
        if (auto* o2 = o->if_contains("orphanDependents"); o2 && o2->is_bool() && d.propagation_policy.empty())
          d.propagation_policy = o2->get_bool() ? "Orphan" : "Background";
        if (auto* pre = o->if_contains("preconditions"); pre && pre->is_object()) {
          if (auto* u = pre->get_object().if_contains("uid"); u && u->is_string())
            d.precondition_uid = std::string(u->get_string());
          if (auto* rv = pre->get_object().if_contains("resourceVersion"); rv && rv->is_string())
            d.precondition_resource_version = std::string(rv->get_string());
        }
        if (auto* dr = o->if_contains("dryRun"); dr && dr->is_array() && !dr->get_array().empty())
          d.dry_run = true;
      }
      return d;
    };

    // Collection.
    if (name.empty()) {
      if (is_get && q.flag("watch")) {
        verb = "watch";
        auto lr = list_request();
        if (!lr) return fail_with(lr.error());
        WatchRequest wr;
        wr.ns = ns;
        wr.labels = lr->labels;
        wr.fields = lr->fields;
        wr.bookmarks = q.flag("allowWatchBookmarks");
        if (wants_table(req))
          wr.format = table_objects(q) == TableObjects::kObject ? WatchFormat::kTableWithObject
                                                                : WatchFormat::kTable;
        // WatchList (sendInitialEvents=true, as kube-apiserver's): the state as ADDED
        // events, a bookmark annotated k8s.io/initial-events-end, then the changes. An
        // informer syncs with it without a LIST: one request instead of two.
        std::vector<std::shared_ptr<const std::string>> initial;
        if (q.flag("sendInitialEvents")) {
          auto forbidden = [&](std::string field, std::string msg) {
            return fail_with(Error{Errc::kInvalid, field + ": Forbidden: " + msg, {{"FieldValueForbidden", msg, field}}});
          };
          if (!wr.bookmarks)
            return forbidden("allowWatchBookmarks", "sendInitialEvents requires setting allowWatchBookmarks to true");
          if (lr->resource_version_match != "NotOlderThan")
            return forbidden("resourceVersionMatch",
                             "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan");
          // The state is a list, not older than resourceVersion ("0": any, from the watch
          // cache; unset: the latest, from the store); the changes follow from its revision.
          ListRequest state_req = *lr;
          if (!state_req.resource_version || state_req.resource_version->empty()) {
            state_req.resource_version.reset();
            state_req.resource_version_match.clear();
          }
          state_req.limit = 0;
          state_req.continue_token.clear();
          auto listed = reg.list(state_req);
          if (!listed) return fail_with(listed.error());
          initial.reserve(listed->items.size() + 1);
          for (const auto& obj : listed->items)
            initial.push_back(std::make_shared<const std::string>(res->cache->event_line("ADDED", *obj, wr.format)));
          initial.push_back(std::make_shared<const std::string>(res->cache->bookmark_line(listed->rv, true)));
          wr.since = listed->rv;
        } else if (lr->resource_version && !lr->resource_version->empty() && *lr->resource_version != "0") {
          int64_t v = 0;
          const auto& s = *lr->resource_version;
          auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
          if (ec != std::errc() || p != s.data() + s.size() || v < 0)
            return status_error(Errc::kBadRequest, "resourceVersion: invalid value \"" + s + "\"");
          wr.since = v;
          // A revision the cache has not reached (a consistent list's: the store's revision,
          // usually above this resource's last write) starts at once if the store has
          // reached it: the cache skips the events up to v, which the client's list has, and
          // sends those after. A revision in the future is waited for a little.
          if (res->cache->revision() < v)
            if (auto r = reg.await_revision(v); !r) return fail_with(r.error());
        }
        std::optional<std::chrono::milliseconds> timeout = std::chrono::minutes(30);
        if (auto t = q.get("timeoutSeconds")) {
          int64_t v = 0;
          auto [p, ec] = std::from_chars(t->data(), t->data() + t->size(), v);
          if (ec != std::errc() || v < 0)
            return status_error(Errc::kBadRequest, "timeoutSeconds: invalid value \"" + *t + "\"");
          timeout = std::chrono::seconds(v);
        }
        // Watches per user: each holds memory and a share of every event's fan-out.
        const bool counted = !is_exempt_from_limits(user);
        if (counted && !limits_->start_watch(user.name)) {
          http::Response r = error_response(Error{Errc::kTooManyRequests,
                                                  "Too many requests: user " + user.name + " has " +
                                                      std::to_string(opts_.limits.watches) +
                                                      " watches open, the most one user may",
                                                  {}});
          r.headers.emplace_back("Retry-After", "1");
          return r;
        }
        struct State {
          std::mutex mu;
          std::optional<uint64_t> id;
          bool closed = false;
        };
        auto state = std::make_shared<State>();
        auto* cache = res->cache.get();
        std::string rname = info.plural;
        http::StreamStart ss;
        ss.max_queued_bytes = opts_.watch_queue_bytes;
        ss.budget = watch_budget_;
        ss.timeout = timeout;
        ss.attach = [state, cache, wr = std::move(wr), rname,
                     initial = std::move(initial)](std::shared_ptr<http::Stream> s) mutable {
          auto sink = std::make_shared<StreamSink>(s);
          for (auto& line : initial) {
            if (sink->send(std::move(line), true)) continue;
            sink->close(initial_events_over_budget());
            return;
          }
          auto id = cache->watch(std::move(wr), sink);
          if (!id) {
            sink->close(id.error());
            return;
          }
          server_metrics().watches.with({rname}).inc();
          std::lock_guard lk(state->mu);
          state->id = *id;
          if (state->closed) {
            cache->stop_watch(*id);
            server_metrics().watches.with({rname}).dec();
          }
        };
        ss.on_close = [state, cache, rname, limits = counted ? limits_.get() : nullptr, who = user.name] {
          if (limits) limits->end_watch(who);
          std::lock_guard lk(state->mu);
          state->closed = true;
          if (state->id) {
            cache->stop_watch(*state->id);
            server_metrics().watches.with({rname}).dec();
          }
        };
        return ss;
      }
      if (is_get) {
        verb = "list";
        auto lr = list_request();
        if (!lr) return fail_with(lr.error());
        auto l = reg.list(*lr);
        if (!l) return fail_with(l.error());
        if (wants_table(req)) return json_response(200, table_json(*res->strategy, *l, table_objects(q), now));
        return json_response(200, list_json(info, *l));
      }
      if (method == bhttp::verb::post) {
        verb = "create";
        if (info.namespaced && ns.empty())
          return status_error(Errc::kNotFound, "create needs a namespace: POST to .../namespaces/NS/" + info.plural);
        auto body = parse_body(req);
        if (!body) return fail_with(body.error());
        if (const auto* bo = body->if_object())  // the name, for the Status of an error
          if (const auto* n = find_path(*bo, "metadata.name"); n && n->is_string())
            name = std::string(n->get_string());
        auto o = reg.create(ns, *body, wo);
        if (!o) return fail_with(o.error());
        return object_reply(201, *o);
      }
      if (method == bhttp::verb::delete_) {
        verb = "deletecollection";
        auto lr = list_request();
        if (!lr) return fail_with(lr.error());
        auto d = delete_options();
        if (!d) return fail_with(d.error());
        auto items = reg.delete_collection(*lr, *d);
        if (!items) return fail_with(items.error());
        return json_response(200, list_json(info, ListResult{0, std::move(*items), {}}));
      }
      return method_not_allowed();
    }

    // One object.
    const bool status = sub == "status";
    if (is_get) {
      verb = "get";
      auto o = reg.get(ns, name, q.get("resourceVersion"));
      if (!o) return fail_with(o.error());
      return object_reply(200, *o);
    }
    if (method == bhttp::verb::put) {
      verb = status ? "update-status" : "update";
      auto body = parse_body(req);
      if (!body) return fail_with(body.error());
      auto o = reg.update(ns, name, *body, status, wo);
      if (!o) return fail_with(o.error());
      return object_reply(200, *o);
    }
    if (method == bhttp::verb::patch) {
      verb = status ? "patch-status" : "patch";
      auto type = patch_type_from_content_type(req[bhttp::field::content_type]);
      if (!type)
        return fail_with(Error{Errc::kUnsupported,
                               "the body of the request was in an unknown format - accepted media "
                               "types include: application/json-patch+json, "
                               "application/merge-patch+json",
                               {}});
      auto body = api::parse_json(req.body());
      if (!body) return fail_with(body.error());
      auto o = reg.patch(ns, name, *type, *body, status, wo);
      if (!o) return fail_with(o.error());
      return object_reply(200, *o);
    }
    if (method == bhttp::verb::delete_ && !status) {
      verb = "delete";
      auto d = delete_options();
      if (!d) return fail_with(d.error());
      auto r = reg.remove(ns, name, *d);
      if (!r) return fail_with(r.error());
      if (!r->gone) return object_reply(200, r->obj);  // marked: finalizers hold it
      json::object st;
      st["kind"] = "Status";
      st["apiVersion"] = "v1";
      st["metadata"] = json::object{};
      st["status"] = "Success";
      st["details"] = json::object{{"name", name}, {"group", info.group}, {"kind", info.plural},
                                   {"uid", r->obj->uid}};
      return json_response(200, json::serialize(st));
    }
    return method_not_allowed();
  }
}

}  // namespace kos::apiserver
