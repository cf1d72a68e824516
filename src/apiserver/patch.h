// PATCH support for the API server: JSON Merge Patch (RFC 7386), JSON Patch (RFC 6902,
// with JSON Pointer, RFC 6901) and the Content-Type that selects between the patch kinds.
//
// Both patch functions are pure: they return a new document and never modify `target`;
// a JSON Patch applies atomically (all operations or none). Errors:
//   kBadRequest  the patch document is malformed: not an array, an operation that is not
//                an object, "op" missing/unknown, "path" missing/not a string/not a
//                pointer, "value" missing for add/replace/test, "from" missing for
//                move/copy; more than kMaxPatchOperations operations; a pointer with more
//                than kMaxPointerDepth segments; a merge patch nested deeper than that.
//                JSON Patch messages name the operation: `json patch operation 2:
//                missing "value"`.
//   kInvalid     a well-formed operation that cannot apply to the document, with the
//                pointer: `json patch operation 0: test failed at /spec/vni`, `... path
//                not found: /a/b`, `... array index out of range at /a/7`, moving a
//                location into one of its children, removing the document root.
// Array indexes follow RFC 6901: "0" or digits without a leading zero; "-" (one past the
// end) and an index equal to the size are only valid as the target of add/move/copy.
// "test" compares numbers by value (1 equals 1.0) and objects regardless of member order.
//
// No function here throws (bar std::bad_alloc).
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

#include <boost/json/value.hpp>

#include "common/error.h"

namespace kos::apiserver {

inline constexpr std::size_t kMaxPatchOperations = 10'000;
inline constexpr std::size_t kMaxPointerDepth = 64;

Result<boost::json::value> apply_merge_patch(const boost::json::value& target,
                                             const boost::json::value& patch);

Result<boost::json::value> apply_json_patch(const boost::json::value& target,
                                            const boost::json::value& patch);

enum class PatchType { kMerge, kJson, kStrategicMerge, kApply };

// application/merge-patch+json, application/json-patch+json,
// application/strategic-merge-patch+json, application/apply-patch+yaml; media type
// parameters (`; charset=utf-8`) and case are ignored. nullopt for anything else.
std::optional<PatchType> patch_type_from_content_type(std::string_view content_type);

}  // namespace kos::apiserver
