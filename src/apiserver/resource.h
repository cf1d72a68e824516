// A served resource: what discovery says about it (ResourceInfo) and the kind-specific
// rules the generic REST machinery calls (Strategy). Objects travel through the API
// server as canonical JSON objects (boost::json::object); each Strategy knows the typed
// model behind its kind. KOS's three kinds and core/v1 Events are Strategies.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include "api/json.h"
#include "api/selectors.h"
#include "api/types.h"
#include "common/error.h"

namespace kos::apiserver {

struct ResourceInfo {
  std::string group;  // "" for the core group
  std::string version;
  std::string kind;
  std::string plural;
  std::string singular;
  std::vector<std::string> short_names;
  std::vector<std::string> categories;
  bool namespaced = true;
  bool has_status = false;  // serves the /status subresource
  // Field paths a watch may pin exactly (field=value) that the watch cache indexes, so an
  // event costs O(watchers that can match it).
  std::vector<std::string> indexed_fields;

  // Names unique across namespaces: the store key leaves the namespace out, so the store
  // itself refuses a second object of one name in any namespace. IPLocks: a name is a
  // (VNI, address), and one address has one holder cluster-wide. The namespace still
  // scopes reads, lists, watches and owner references (it lives in the object).
  bool cluster_unique_names = false;

  std::string api_version() const { return group.empty() ? version : group + "/" + version; }
  std::string list_kind() const { return kind + "List"; }
  // Store keys: /registry/<group or "core">/<plural>/<namespace>/<name>, or
  // /registry/<group>/<plural>/<name> with cluster_unique_names.
  std::string key_prefix() const {
    return "/registry/" + (group.empty() ? std::string("core") : group) + "/" + plural + "/";
  }
  std::string key(std::string_view ns, std::string_view name) const {
    if (cluster_unique_names) return key_prefix() + std::string(name);
    return key_prefix() + std::string(ns) + "/" + std::string(name);
  }
  // The store prefix holding the objects of namespace `ns` (all namespaces when empty).
  // With cluster_unique_names, namespaces share one prefix: callers filter on the object's
  // namespace.
  std::string list_prefix(std::string_view ns) const {
    if (ns.empty() || cluster_unique_names) return key_prefix();
    return key_prefix() + std::string(ns) + "/";
  }
};

// Selectable field values of one object: (field path, value) for every selectable field.
// The paths are views of the strategies' static field tables (one copy per process, not
// one per cached object).
using Fields = std::vector<std::pair<std::string_view, std::string>>;

struct TableColumn {
  std::string name;
  std::string type;    // "string", "integer", "boolean", "date"
  std::string format;  // "name" for the NAME column
  std::string description;
  int priority = 0;    // 1 = shown only with -o wide
};

class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual const ResourceInfo& info() const = 0;

  // The canonical stored form of a client's document: decoded (strictly or not, per
  // `opts`) and re-encoded, kind and apiVersion filled in. kBadRequest names the field.
  virtual Result<boost::json::object> canonicalize(const boost::json::value& in,
                                                   const api::DecodeOptions& opts) const = 0;
  // Kind-specific validation of a whole object (metadata included). kInvalid with causes.
  virtual Result<void> validate(const boost::json::object& obj) const = 0;
  // Also checks immutable fields.
  virtual Result<void> validate_update(const boost::json::object& old_obj,
                                       const boost::json::object& new_obj) const = 0;
  // The extendedMetadata sections whose content differs (old_obj null: a create). Kinds
  // without extendedMetadata return nothing.
  virtual std::vector<std::string_view> changed_sections(const boost::json::object* old_obj,
                                                         const boost::json::object& new_obj) const {
    (void)old_obj;
    (void)new_obj;
    return {};
  }
  // Every selectable field of the object with its value (metadata.name and
  // metadata.namespace included).
  virtual Fields fields(const boost::json::object& obj) const = 0;
  // kBadRequest "field label not supported: X" for a field that is not selectable.
  virtual Result<void> check_field_selector(const api::FieldSelector& sel) const = 0;
  // Table output for kubectl: the columns, and one row's cells (NAME first).
  virtual std::span<const TableColumn> columns() const = 0;
  virtual boost::json::array cells(const boost::json::object& obj,
                                   std::chrono::system_clock::time_point now) const = 0;
};

// The strategies of the KOS kinds, core/v1 Events and coordination.k8s.io/v1 Leases
// (leader election).
std::unique_ptr<Strategy> make_kos_strategy(api::Kind kind);
std::unique_ptr<Strategy> make_event_strategy();
std::unique_ptr<Strategy> make_lease_strategy();

// Kubernetes' short age format ("5s", "3m2s", "4h", "12d") of `created` at `now`.
std::string age(std::chrono::system_clock::time_point created,
                std::chrono::system_clock::time_point now);

// Helpers over the canonical JSON form.
Result<api::ObjectMeta> read_meta(const boost::json::object& obj);
void write_meta(boost::json::object& obj, const api::ObjectMeta& meta);
// Looks up a dotted path ("status.ipv4") in a JSON object; nullptr if absent.
const boost::json::value* find_path(const boost::json::object& obj, std::string_view path);

}  // namespace kos::apiserver
