// The OpenAPI documents of the KOS API (group network.example.com, version v1alpha1),
// as kube-apiserver serves them, so that unmodified kubectl can explain and validate
// Subnets, NetworkAttachments and IPLocks:
//
//   GET /openapi/v2                        openapi_v2_protobuf(), served with
//                                          Content-Type application/octet-stream (kubectl
//                                          asks with Accept application/com.github.
//                                          proto-openapi.spec.v2@v1.0+protobuf)
//   GET /openapi/v3                        openapi_v3_index(), application/json
//   GET /openapi/v3/apis/network.example.com/v1alpha1[?hash=H]
//                                          openapi_v3_group(), application/json;
//                                          ETag "H" where H = openapi_v3_hash()
//
// Both versions are generated from one schema table in openapi.cc, which also carries
// the field documentation `kubectl explain` prints. Each top-level kind (and its List)
// has the vendor extension x-kubernetes-group-version-kind; the resource paths carry
// operations whose PATCH lists the `fieldValidation` query parameter (so kubectl 1.32
// relies on the server's strict field validation) and does NOT list
// application/strategic-merge-patch+json (so `kubectl apply` sends a JSON merge patch).
//
// The documents are built on first use and never change afterwards; every function
// here is thread-safe and returns a reference to the same immutable string.
#pragma once

#include <string>
#include <string_view>

namespace kos::apiserver {

inline constexpr std::string_view kOpenApiV2Path = "/openapi/v2";
inline constexpr std::string_view kOpenApiV3IndexPath = "/openapi/v3";
inline constexpr std::string_view kOpenApiV3GroupPath =
    "/openapi/v3/apis/network.example.com/v1alpha1";
inline constexpr std::string_view kOpenApiV2ContentType = "application/octet-stream";

// A serialized gnostic `openapi.v2.Document` (swagger 2.0).
const std::string& openapi_v2_protobuf();

// {"paths":{"apis/network.example.com/v1alpha1":{"serverRelativeURL":
//   "/openapi/v3/apis/network.example.com/v1alpha1?hash=<openapi_v3_hash()>"}}}
const std::string& openapi_v3_index();

// The OpenAPI 3.0 JSON document of the group: components.schemas and paths.
const std::string& openapi_v3_group();

// Upper-case hex digest of openapi_v3_group(); stable for a given build of KOS.
const std::string& openapi_v3_hash();

}  // namespace kos::apiserver
