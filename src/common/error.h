// Errors as values. Every fallible call in KOS returns Result<T>; exceptions stay at
// library boundaries (Boost, gRPC, SQLite wrappers) and are converted there.
#pragma once

#include <expected>
#include <string>
#include <string_view>
#include <vector>

namespace kos {

// What went wrong, in terms a caller can act on. Each code maps to one HTTP status and one
// Kubernetes Status reason (see http_status() and reason()).
enum class Errc {
  kNotFound,          // 404 NotFound
  kAlreadyExists,     // 409 AlreadyExists
  kConflict,          // 409 Conflict: a precondition (revision, uid) did not hold
  kInvalid,           // 422 Invalid: the object breaks a validation rule (see causes)
  kBadRequest,        // 400 BadRequest: malformed input (JSON, selector, parameter)
  kCompacted,         // 410 Expired: the requested revision has been compacted away
  kUnavailable,       // 503 ServiceUnavailable: a backend cannot be reached right now
  kTimeout,           // 504 Timeout
  kCancelled,         // the operation was stopped because its owner is shutting down
  kUnsupported,       // 415 UnsupportedMediaType / operation not supported
  kInternal,          // 500 InternalError: a bug or an I/O failure
  kUnauthorized,      // 401 Unauthorized: no valid credentials
  kForbidden,         // 403 Forbidden: the user may not do this
  kTooManyRequests,   // 429 TooManyRequests: over a rate or concurrency limit
};

// One field-level reason for an Invalid or BadRequest error, as in a Kubernetes
// StatusCause: reason is FieldValueRequired, FieldValueInvalid, FieldValueNotSupported,
// FieldValueForbidden, FieldValueTypeInvalid, FieldValueDuplicate or FieldValueUnknown.
struct FieldCause {
  std::string reason;
  std::string message;
  std::string field;  // JSON path such as "spec.vni" or "metadata.labels[app]"
  bool operator==(const FieldCause&) const = default;
};

struct Error {
  Errc code = Errc::kInternal;
  std::string message;
  std::vector<FieldCause> causes;

  int http_status() const;
  // The Kubernetes Status "reason" for this code (NotFound, AlreadyExists, Conflict,
  // Invalid, BadRequest, Expired, ServiceUnavailable, Timeout, InternalError, ...).
  std::string_view reason() const;
  // "message" followed by the causes, for logs and CLI output.
  std::string to_string() const;
};

template <class T>
using Result = std::expected<T, Error>;

// Shorthand for returning an error from a function whose type is Result<T>.
inline std::unexpected<Error> fail(Errc code, std::string message) {
  return std::unexpected(Error{code, std::move(message), {}});
}
inline std::unexpected<Error> fail(Error e) { return std::unexpected(std::move(e)); }

std::string_view errc_name(Errc code);

}  // namespace kos
