// The protobuf form of the two review kinds kubectl sends as protobuf (its clientset for
// built-in types does: `kubectl auth whoami`, `kubectl auth can-i`): the Kubernetes
// envelope ("k8s\0" + runtime.Unknown) around a SelfSubjectReview or a
// SelfSubjectAccessReview, decoded into the JSON object the review handler reads. The
// answers go back as JSON, which those clients accept.
#pragma once

#include <string_view>

#include <boost/json/value.hpp>

#include "common/error.h"

namespace kos::apiserver {

// Errors: kBadRequest for anything that is not a well-formed envelope of one of the two
// kinds.
Result<boost::json::value> decode_review_protobuf(std::string_view body);

}  // namespace kos::apiserver
