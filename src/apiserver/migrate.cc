#include "apiserver/migrate.h"

#include <algorithm>
#include <map>
#include <optional>
#include <vector>

#include <spdlog/spdlog.h>

namespace kos::apiserver {

namespace {

// Deletes `kv` (only as it was read: a concurrent change is left for the next start).
Result<void> remove_exact(store::Store& store, const store::KeyValue& kv) {
  auto r = store.remove(kv.key, kv.mod_revision);
  if (!r && r.error().code != Errc::kNotFound && r.error().code != Errc::kConflict)
    return fail(r.error());
  return {};
}

}  // namespace

Result<MigrationReport> migrate_to_cluster_unique_keys(store::Store& store, const ResourceInfo& info) {
  MigrationReport rep;
  if (!info.cluster_unique_names) return rep;
  const std::string prefix = info.key_prefix();
  auto l = store.list(prefix);
  if (!l) return fail(l.error());

  // Old-layout keys ("<ns>/<name>" after the prefix), grouped by name, oldest first.
  std::map<std::string, std::vector<store::KeyValue>> old_by_name;
  for (auto& kv : l->items) {
    std::string_view rest = std::string_view(kv.key).substr(prefix.size());
    auto slash = rest.find('/');
    if (slash == std::string_view::npos) continue;  // already the new layout
    old_by_name[std::string(rest.substr(slash + 1))].push_back(std::move(kv));
  }
  for (auto& [name, olds] : old_by_name) {
    std::ranges::sort(olds, {}, &store::KeyValue::create_revision);
    const std::string key = prefix + name;
    // The holder: a lock already at the new key (an earlier, interrupted migration or a
    // new server's write), else the earliest-created old one.
    std::optional<store::KeyValue> holder;
    if (auto cur = store.get(key); cur) holder = *cur;
    else if (cur.error().code != Errc::kNotFound) return fail(cur.error());
    for (const auto& kv : olds) {
      if (!holder) {
        auto c = store.create(key, kv.value);
        if (!c && c.error().code != Errc::kAlreadyExists) return fail(c.error());
        if (c) {
          holder = *c;
          ++rep.moved;
          spdlog::info("migrate: moved {} to {}", kv.key, key);
          if (auto r = remove_exact(store, kv); !r) return fail(r.error());
          continue;
        }
        auto cur = store.get(key);  // created meanwhile by someone else
        if (!cur) return fail(cur.error());
        holder = *cur;
      }
      if (holder->value == kv.value) {
        // The same object, moved before a crash left the old key behind.
        ++rep.moved;
        if (auto r = remove_exact(store, kv); !r) return fail(r.error());
        continue;
      }
      ++rep.duplicates;
      spdlog::error("migrate: {} names an address already held (kept: {}); deleting it, its "
                    "attachment gets a new address",
                    kv.key, key);
      if (auto r = remove_exact(store, kv); !r) return fail(r.error());
    }
  }
  if (rep.moved || rep.duplicates)
    spdlog::info("migrate: resource={} moved={} duplicates_deleted={}", info.plural, rep.moved,
                 rep.duplicates);
  return rep;
}

}  // namespace kos::apiserver
