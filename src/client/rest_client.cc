#include "client/rest_client.h"

#include <thread>

#include <boost/json/serialize.hpp>
#include <spdlog/spdlog.h>

namespace kos::client {
namespace json = boost::json;

ResourceRef ResourceRef::of(api::Kind kind) {
  const auto& k = api::kind_info(kind);
  return {std::string(api::kGroup), std::string(api::kVersion), std::string(k.plural), true};
}

std::string ResourceRef::path(const std::string& ns, const std::string& name,
                              const std::string& sub) const {
  std::string p = group.empty() ? "/api/" + version : "/apis/" + group + "/" + version;
  if (namespaced && !ns.empty()) p += "/namespaces/" + url_escape(ns);
  p += "/" + plural;
  if (!name.empty()) p += "/" + url_escape(name);
  if (!sub.empty()) p += "/" + sub;
  return p;
}

std::string url_escape(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string ListOptions::query(bool watch) const {
  std::string q;
  auto add = [&](std::string_view k, const std::string& v) {
    q += q.empty() ? "?" : "&";
    q += k;
    q += "=";
    q += url_escape(v);
  };
  if (watch) add("watch", "true");
  if (!label_selector.empty()) add("labelSelector", label_selector);
  if (!field_selector.empty()) add("fieldSelector", field_selector);
  if (resource_version) add("resourceVersion", *resource_version);
  if (!resource_version_match.empty()) add("resourceVersionMatch", resource_version_match);
  if (limit > 0) add("limit", std::to_string(limit));
  if (!continue_token.empty()) add("continue", continue_token);
  if (timeout_seconds) add("timeoutSeconds", std::to_string(*timeout_seconds));
  if (allow_bookmarks) add("allowWatchBookmarks", "true");
  if (send_initial_events) add("sendInitialEvents", "true");
  return q;
}

RestClient::RestClient(std::shared_ptr<Transport> transport, const ClientOptions& opts)
    : transport_(std::move(transport)), opts_(opts) {
  if (opts.qps > 0)
    limiter_ = std::make_unique<BucketRateLimiter>(opts.qps, opts.burst, RealClock::instance());
}

Result<std::shared_ptr<RestClient>> RestClient::from_kubeconfig(const std::string& path,
                                                                const ClientOptions& opts) {
  auto cfg = config_from_env_or_file(path);
  if (!cfg) return fail(cfg.error());
  auto t = Transport::create(*cfg);
  if (!t) return fail(t.error());
  return std::make_shared<RestClient>(std::move(*t), opts);
}

Result<json::value> RestClient::call(HttpRequest req, bool idempotent) {
  req.timeout = opts_.timeout;
  for (int attempt = 0;; ++attempt) {
    if (limiter_) {
      auto delay = limiter_->when({});
      if (delay.count() > 0) std::this_thread::sleep_for(delay);  // client-side throttling
    }
    auto res = transport_->request_sync(req);
    if (!res) {
      if (idempotent && res.error().code == Errc::kUnavailable && attempt < opts_.read_retries) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50 << attempt));  // backoff
        continue;
      }
      return fail(res.error());
    }
    auto body = res->body.empty() ? Result<json::value>(json::value()) : api::parse_json(res->body);
    if (res->status >= 200 && res->status < 300) {
      if (!body) return fail(Errc::kInternal, "the server sent malformed JSON: " + body.error().message);
      return std::move(*body);
    }
    if (!body) return fail(api::error_from_status(json::value(json::string(res->body)), static_cast<int>(res->status)));
    return fail(api::error_from_status(*body, static_cast<int>(res->status)));
  }
}

Result<json::value> RestClient::get(const ResourceRef& r, const std::string& ns,
                                    const std::string& name) {
  return call({"GET", r.path(ns, name)}, true);
}

Result<ListPage> RestClient::list(const ResourceRef& r, const std::string& ns,
                                  const ListOptions& opts) {
  auto v = call({"GET", r.path(ns) + opts.query(false)}, true);
  if (!v) return fail(v.error());
  ListPage page;
  const auto* o = v->if_object();
  if (!o) return fail(Errc::kInternal, "the server's list is not a JSON object");
  if (const auto* items = o->if_contains("items"); items && items->is_array())
    page.items.assign(items->get_array().begin(), items->get_array().end());
  if (const auto* m = o->if_contains("metadata"); m && m->is_object()) {
    if (const auto* rv = m->get_object().if_contains("resourceVersion"); rv && rv->is_string())
      page.resource_version = std::string(rv->get_string());
    if (const auto* c = m->get_object().if_contains("continue"); c && c->is_string())
      page.continue_token = std::string(c->get_string());
  }
  return page;
}

namespace {
std::string meta_string(const json::value& obj, const char* field) {
  const auto* o = obj.if_object();
  const auto* m = o ? o->if_contains("metadata") : nullptr;
  const auto* v = m && m->is_object() ? m->get_object().if_contains(field) : nullptr;
  return v && v->is_string() ? std::string(v->get_string()) : std::string();
}
}  // namespace

Result<json::value> RestClient::create(const ResourceRef& r, const std::string& ns,
                                       const json::value& obj) {
  return call({"POST", r.path(ns), json::serialize(obj)}, false);
}

Result<json::value> RestClient::update(const ResourceRef& r, const std::string& ns,
                                       const json::value& obj, bool status) {
  std::string name = meta_string(obj, "name");
  if (name.empty()) return fail(Errc::kBadRequest, "update: the object has no metadata.name");
  return call({"PUT", r.path(ns, name, status ? "status" : ""), json::serialize(obj)}, false);
}

Result<json::value> RestClient::patch(const ResourceRef& r, const std::string& ns,
                                      const std::string& name, PatchType type,
                                      const json::value& patch, bool status) {
  HttpRequest req{"PATCH", r.path(ns, name, status ? "status" : ""), json::serialize(patch)};
  req.content_type = type == PatchType::kMerge ? "application/merge-patch+json"
                                               : "application/json-patch+json";
  return call(std::move(req), false);
}

Result<json::value> RestClient::remove(const ResourceRef& r, const std::string& ns,
                                       const std::string& name, const DeleteOptions& opts) {
  json::object body;
  body["kind"] = "DeleteOptions";
  body["apiVersion"] = "v1";
  if (!opts.propagation_policy.empty()) body["propagationPolicy"] = opts.propagation_policy;
  if (opts.uid || opts.resource_version) {
    json::object pre;
    if (opts.uid) pre["uid"] = *opts.uid;
    if (opts.resource_version) pre["resourceVersion"] = *opts.resource_version;
    body["preconditions"] = std::move(pre);
  }
  return call({"DELETE", r.path(ns, name), json::serialize(body)}, false);
}

}  // namespace kos::client
