#include "common/error.h"

namespace kos {

int Error::http_status() const {
  switch (code) {
    case Errc::kNotFound: return 404;
    case Errc::kAlreadyExists: return 409;
    case Errc::kConflict: return 409;
    case Errc::kInvalid: return 422;
    case Errc::kBadRequest: return 400;
    case Errc::kCompacted: return 410;
    case Errc::kUnavailable: return 503;
    case Errc::kTimeout: return 504;
    case Errc::kCancelled: return 503;
    case Errc::kUnsupported: return 415;
    case Errc::kInternal: return 500;
    case Errc::kUnauthorized: return 401;
    case Errc::kForbidden: return 403;
    case Errc::kTooManyRequests: return 429;
  }
  return 500;
}

std::string_view Error::reason() const {
  switch (code) {
    case Errc::kNotFound: return "NotFound";
    case Errc::kAlreadyExists: return "AlreadyExists";
    case Errc::kConflict: return "Conflict";
    case Errc::kInvalid: return "Invalid";
    case Errc::kBadRequest: return "BadRequest";
    case Errc::kCompacted: return "Expired";
    case Errc::kUnavailable: return "ServiceUnavailable";
    case Errc::kTimeout: return "Timeout";
    case Errc::kCancelled: return "ServiceUnavailable";
    case Errc::kUnsupported: return "UnsupportedMediaType";
    case Errc::kInternal: return "InternalError";
    case Errc::kUnauthorized: return "Unauthorized";
    case Errc::kForbidden: return "Forbidden";
    case Errc::kTooManyRequests: return "TooManyRequests";
  }
  return "InternalError";
}

std::string_view errc_name(Errc code) {
  switch (code) {
    case Errc::kNotFound: return "not-found";
    case Errc::kAlreadyExists: return "already-exists";
    case Errc::kConflict: return "conflict";
    case Errc::kInvalid: return "invalid";
    case Errc::kBadRequest: return "bad-request";
    case Errc::kCompacted: return "compacted";
    case Errc::kUnavailable: return "unavailable";
    case Errc::kTimeout: return "timeout";
    case Errc::kCancelled: return "cancelled";
    case Errc::kUnsupported: return "unsupported";
    case Errc::kInternal: return "internal";
    case Errc::kUnauthorized: return "unauthorized";
    case Errc::kForbidden: return "forbidden";
    case Errc::kTooManyRequests: return "too-many-requests";
  }
  return "internal";
}

std::string Error::to_string() const {
  std::string out = message;
  for (const auto& c : causes) {
    out += "; ";
    if (!c.field.empty()) out += c.field + ": ";
    out += c.message;
  }
  return out;
}

}  // namespace kos
