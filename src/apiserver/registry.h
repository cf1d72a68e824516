// REST semantics of one resource over the Store, as Kubernetes defines them: create
// (generateName, server-set uid/timestamps/generation), get, list (resourceVersion
// semantics, paging with continue tokens, selectors), update with a resourceVersion
// precondition, merge and JSON patches, the status subresource, delete with
// preconditions, finalizers and propagation policies, deletecollection. Every write
// stamps extendedMetadata.writes for the sections it changes.
//
// Threading: every method blocks on the store and may be called from any thread.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "apiserver/patch.h"
#include "apiserver/resource.h"
#include "apiserver/watch_cache.h"
#include "common/clock.h"
#include "store/store.h"

namespace kos::apiserver {

// A check that spans objects (e.g. no overlapping subnets on one VNI), run before a
// create or update is written. Best effort: it can race with concurrent writes.
class Admission {
 public:
  virtual ~Admission() = default;
  // old_obj is null for a create.
  virtual Result<void> admit(const boost::json::object* old_obj,
                             const boost::json::object& new_obj) const = 0;
  // Before `cur` is deleted (or marked for deletion).
  virtual Result<void> admit_delete(const boost::json::object& cur) const {
    (void)cur;
    return {};
  }
};

struct ListRequest {
  std::string ns;  // empty: all namespaces
  api::LabelSelector labels;
  api::FieldSelector fields;
  std::optional<std::string> resource_version;  // unset: a consistent (latest) read
  std::string resource_version_match;           // "", "Exact" or "NotOlderThan"
  int64_t limit = 0;
  std::string continue_token;
};

struct ListResult {
  store::Revision rv = 0;
  std::vector<CachedPtr> items;
  std::string continue_token;
};

struct WriteOptions {
  api::DecodeOptions decode;
  bool dry_run = false;
  const Admission* admission = nullptr;  // the request's (its user's), after the resource's
};

struct DeleteOptions {
  std::string propagation_policy;  // "", "Background", "Foreground" or "Orphan"
  std::optional<std::string> precondition_uid;
  std::optional<std::string> precondition_resource_version;
  bool dry_run = false;
  const Admission* admission = nullptr;  // the request's (its user's)
};

class Registry {
 public:
  Registry(store::Store& store, WatchCache& cache, const Clock& clock,
           const Admission* admission = nullptr);

  const Strategy& strategy() const { return strategy_; }
  WatchCache& cache() { return cache_; }

  Result<CachedPtr> create(const std::string& ns, const boost::json::value& body,
                           const WriteOptions& opts);
  Result<CachedPtr> get(const std::string& ns, const std::string& name,
                        const std::optional<std::string>& resource_version);
  Result<ListResult> list(const ListRequest& req);
  // Returns once the store has reached revision `rv` (at once, usually: a client's
  // revision came from this store), waiting up to 3 s for one in the future, as Kubernetes
  // does. A list or watch from `rv` may then start. Errors: kTimeout with reason
  // ResourceVersionTooLarge.
  Result<void> await_revision(store::Revision rv);
  // PUT of the whole object (status = true: PUT of the status subresource).
  Result<CachedPtr> update(const std::string& ns, const std::string& name,
                           const boost::json::value& body, bool status, const WriteOptions& opts);
  Result<CachedPtr> patch(const std::string& ns, const std::string& name, PatchType type,
                          const boost::json::value& patch, bool status, const WriteOptions& opts);

  struct Deleted {
    CachedPtr obj;       // the last state (deleted) or the state marked for deletion
    bool gone = false;   // false: finalizers keep it until they are removed
  };
  Result<Deleted> remove(const std::string& ns, const std::string& name,
                         const DeleteOptions& opts);
  Result<std::vector<CachedPtr>> delete_collection(const ListRequest& req,
                                                   const DeleteOptions& opts);

  // Applies `mutate` to the current object and writes the result, retrying on conflicts
  // with concurrent writers (for server-side changes such as garbage collection).
  using Mutation = std::function<Result<boost::json::object>(const CachedObject& current)>;
  Result<CachedPtr> update_with(const std::string& ns, const std::string& name,
                                const Mutation& mutate);

 private:
  Result<CachedPtr> read(const std::string& key);
  // The object `name` of namespace `ns` (kNotFound when the key holds another namespace's).
  Result<CachedPtr> read(const std::string& ns, const std::string& name);
  // The copy a write decides on: `first` the first time (a watch cache copy; it is taken,
  // so the next attempt reads), then the store's.
  Result<CachedPtr> read_after(CachedPtr& first, const std::string& ns, const std::string& name);
  // Turns a client's new version of `cur` into the object to store.
  Result<boost::json::object> prepare_update(const CachedObject& cur,
                                             const boost::json::value& body, bool status,
                                             const WriteOptions& opts, bool* has_precondition);
  // Writes `next` over `cur` (or deletes it when its last finalizer went away). With
  // `unchanged`, a write that changes nothing is not done and *unchanged is set.
  Result<CachedPtr> write(const CachedObject& cur, boost::json::object next, bool dry_run,
                          const Admission* request_admission, bool* unchanged = nullptr);
  // The watch cache's copy of an object if it is at the resourceVersion `body` names
  // (an update's precondition), else null.
  CachedPtr cached_at_precondition(const std::string& ns, const std::string& name,
                                   const boost::json::value& body) const;
  std::string not_found(const std::string& name) const;
  Error not_found_error(const std::string& name) const;

  store::Store& store_;
  WatchCache& cache_;
  const Strategy& strategy_;
  const Clock& clock_;
  const Admission* admission_;
};

// A random RFC 4122 version 4 UUID.
std::string new_uid();

}  // namespace kos::apiserver
