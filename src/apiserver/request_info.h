// Stage 1 of the request pipeline: what a request asks for, read from its method and URL
// alone (as kube-apiserver's RequestInfoFactory does), so authorization can decide before
// any handler runs.
//
// Resource requests: /apis/GROUP/VERSION/[namespaces/NS/]RESOURCE[/NAME[/SUBRESOURCE]]
// and /api/v1/... for the core group. Their verb is Kubernetes's: get, list, watch,
// create, update, patch, delete, deletecollection. Anything else is a non-resource request
// (discovery, /healthz, /metrics, /openapi/...) with the HTTP method, lowercased, as verb.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/http_server.h"

namespace kos::apiserver {

struct Query {
  std::map<std::string, std::string, std::less<>> params;
  std::optional<std::string> get(std::string_view k) const {
    auto it = params.find(k);
    if (it == params.end()) return std::nullopt;
    return it->second;
  }
  bool flag(std::string_view k) const;  // "true" or "1", any case
};

struct RequestInfo {
  std::string path;
  std::vector<std::string> segments;  // the path's, decoded, trailing empty ones dropped
  Query query;
  bool resource_request = false;
  std::string verb;
  // Resource requests only.
  std::string group, version, resource, subresource, ns, name;
  // The segment index where RESOURCE is (after any namespaces/NS).
  size_t resource_index = 0;
};

// Errors: kBadRequest for a malformed URL.
Result<RequestInfo> resolve_request(const http::Request& req);

}  // namespace kos::apiserver
