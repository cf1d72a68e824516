#include "apiserver/request_info.h"

#include <cctype>

#include <boost/url/parse.hpp>

namespace kos::apiserver {
namespace bhttp = boost::beast::http;

bool Query::flag(std::string_view k) const {
  auto v = get(k);
  if (!v) return false;
  std::string s = *v;
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s == "true" || s == "1";
}

Result<RequestInfo> resolve_request(const http::Request& req) {
  auto parsed = boost::urls::parse_origin_form(req.target());
  if (!parsed) return fail(Errc::kBadRequest, "malformed request URL");
  RequestInfo ri;
  ri.path = std::string(parsed->encoded_path());
  for (auto s : parsed->segments()) ri.segments.push_back(s);
  while (!ri.segments.empty() && ri.segments.back().empty()) ri.segments.pop_back();
  for (auto p : parsed->params()) ri.query.params[p.key] = p.has_value ? std::string(p.value) : "";
  const auto& seg = ri.segments;
  std::string method(req.method_string());
  for (auto& c : method) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  ri.verb = method;

  size_t base = 0;
  if (seg.size() >= 4 && seg[0] == "apis") {
    ri.group = seg[1];
    ri.version = seg[2];
    base = 3;
  } else if (seg.size() >= 3 && seg[0] == "api") {
    ri.version = seg[1];
    base = 2;
  } else {
    return ri;  // non-resource
  }
  // namespaces/NS/RESOURCE...: a namespaced resource. namespaces[/NAME] alone: the
  // Namespace resource itself.
  if (seg.size() > base + 2 && seg[base] == "namespaces") {
    ri.ns = seg[base + 1];
    base += 2;
  }
  ri.resource_request = true;
  ri.resource_index = base;
  ri.resource = seg[base];
  if (seg.size() > base + 1) ri.name = seg[base + 1];
  if (seg.size() > base + 2) ri.subresource = seg[base + 2];
  // The Namespace resource: /api/v1/namespaces/NAME names the namespace it is.
  if (ri.resource == "namespaces" && ri.group.empty() && ri.ns.empty() && !ri.name.empty())
    ri.ns = ri.name;

  const auto m = req.method();
  if (m == bhttp::verb::get || m == bhttp::verb::head) {
    if (ri.name.empty()) ri.verb = ri.query.flag("watch") ? "watch" : "list";
    else ri.verb = "get";
  } else if (m == bhttp::verb::post) {
    ri.verb = "create";
  } else if (m == bhttp::verb::put) {
    ri.verb = "update";
  } else if (m == bhttp::verb::patch) {
    ri.verb = "patch";
  } else if (m == bhttp::verb::delete_) {
    ri.verb = ri.name.empty() ? "deletecollection" : "delete";
  }
  return ri;
}

}  // namespace kos::apiserver
