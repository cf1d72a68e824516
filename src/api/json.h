// JSON codec for the KOS kinds, ObjectMeta and the Kubernetes Status object.
//
// Encoding is canonical: keys in Go struct order (kind, apiVersion, metadata,
// extendedMetadata, spec, status; inside each struct the order of types.h), and a field
// is omitted when it has its zero value (empty string/list/map, 0, false, unset time,
// nullopt), as Go's `omitempty` does. The exceptions, as the original's JSON tags have
// it: "metadata", "spec" and "status" are always present (status may be {}); Subnet
// spec.ipv4/spec.vni, NA spec.node/spec.subnet and IPLock spec.subnetName are always
// present; a present postCreateExecReport always carries command, exitStatus, stdOut
// and stdErr. So decode(encode(x)) == x for every x, and encode(decode(s)) == s for
// every canonical s.
//
// Decoding follows Kubernetes: null means "zero value" anywhere (also as a list element
// or map value, as Go does); kind and apiVersion may be absent (the URL says what is
// meant) but must match when present; keys are case-sensitive; of duplicate keys the
// last wins. All problems found are reported together (up to 32) in one kBadRequest
// Error; each cause names its field by full path, map keys and list indexes in brackets:
// "spec.vni: expected unsigned integer, got string", "metadata.labels[app]: expected
// string, got number", "spec.postCreateExec[2]: expected string, got object".
// Integer fields take integral JSON numbers that fit the field: 1.0 is 1, but 1.5, -1
// and 4294967296 are errors for a uint32.
//
// No function here throws.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/monotonic_resource.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include "api/types.h"
#include "common/error.h"

namespace kos::api {

struct DecodeOptions {
  // fieldValidation=Strict: an unknown field fails the decode. Otherwise unknown fields
  // are ignored and, if `warnings` is set, described there (`unknown field
  // "spec.vnii"`) for the Warning header of fieldValidation=Warn.
  bool strict = false;
  std::vector<std::string>* warnings = nullptr;
};

// Parses JSON text. Malformed input is kBadRequest "malformed JSON at byte N: ...".
// Nesting deeper than 32 levels is malformed (no KOS object needs more than 5).
Result<boost::json::value> parse_json(std::string_view text);

// A parsed value that lives in scratch memory: for JSON read and dropped (decoded into a
// type, inspected) on hot paths. The nodes come from an arena (a buffer inside the object,
// then blocks freed all at once), and the parser's work space is the calling thread's,
// so a parse costs no allocation per node. The value must not outlive the ScratchJson; a
// ScratchJson parses once. Errors as parse_json.
class ScratchJson {
 public:
  ScratchJson() = default;
  ScratchJson(const ScratchJson&) = delete;
  ScratchJson& operator=(const ScratchJson&) = delete;
  Result<const boost::json::value*> parse(std::string_view text);
  // For modifying the value in place (what is added comes from the same arena). Only
  // after a successful parse.
  boost::json::value& value() { return *value_; }

 private:
  alignas(16) unsigned char buffer_[8192];
  boost::json::monotonic_resource arena_{buffer_, sizeof buffer_};
  // Move-constructed from the parser's result, so it keeps the arena as its storage
  // (assigning it to a value of other storage would copy every node).
  std::optional<boost::json::value> value_;
};

// T is a kind's struct or ObjectMeta. Paths in ObjectMeta errors are
// relative ("labels[app]") when it is decoded on its own. decode() takes JSON text,
// from_json() a parsed value (two names, as a string literal converts to both).
template <class T>
Result<T> decode(std::string_view text, const DecodeOptions& options = {});
template <class T>
Result<T> from_json(const boost::json::value& v, const DecodeOptions& options = {});

Result<AnyObject> decode_object(Kind kind, std::string_view text,
                                const DecodeOptions& options = {});
Result<AnyObject> object_from_json(Kind kind, const boost::json::value& v,
                                   const DecodeOptions& options = {});

// A kind's struct (Subnet, NetworkAttachment, IPLock, Vpc).
template <class T>
concept KindStruct = requires { T::kKind; };

boost::json::object to_json(const ObjectMeta& meta);
template <KindStruct T>
boost::json::object to_json(const T& obj);
boost::json::object to_json(const AnyObject& obj);

// Compact JSON text of to_json(x).
std::string encode(const ObjectMeta& meta);
template <KindStruct T>
std::string encode(const T& obj);
std::string encode(const AnyObject& obj);

// The Kubernetes Status object for a failure: {"kind":"Status","apiVersion":"v1",
// "metadata":{},"status":"Failure","message","reason","details":{name,group,kind,
// causes:[{reason,message,field}]},"code"}; "details" only when something goes in it.
boost::json::object status_json(const Error& error, std::string_view name = {},
                                std::string_view group = {}, std::string_view kind = {});

// The inverse, for clients: the Error a Status body describes. The code comes from
// "reason" when it names one of ours, else from http_status (401/403/405/406 and other
// 4xx map to kBadRequest, 429 to kUnavailable). A body that is not a Status still gives
// an Error, with the body's text as message.
Error error_from_status(const boost::json::value& body, int http_status);

}  // namespace kos::api
