#include "store/compactor.h"

#include <spdlog/spdlog.h>

namespace kos::store {

Compactor::Compactor(Store& store, std::chrono::milliseconds interval)
    : store_(store), interval_(interval) {}

Compactor::~Compactor() { stop(); }

void Compactor::start() {
  if (interval_.count() <= 0 || thread_.joinable()) return;
  thread_ = std::thread([this] { run(); });
}

void Compactor::stop() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Revision Compactor::compacted() const {
  std::lock_guard lk(mu_);
  return compacted_;
}

void Compactor::run() {
  std::unique_lock lk(mu_);
  while (!stopping_) {
    lk.unlock();
    auto r = tick();
    if (!r) spdlog::warn("compactor: tick failed (retrying next interval): {}", r.error().message);
    lk.lock();
    cv_.wait_for(lk, interval_, [&] { return stopping_; });
  }
}

Result<std::optional<Revision>> Compactor::tick() {
  auto key = store_.get(kCompactionKey);
  if (!key && key.error().code != Errc::kNotFound) return std::unexpected(key.error());
  if (!key) {
    auto created = store_.create(kCompactionKey, "0");
    if (!created && created.error().code != Errc::kAlreadyExists)
      return std::unexpected(created.error());
    // Another server created it first: its turn; read the key again at the next tick.
    seen_key_rev_ = pending_ = created ? created->mod_revision : 0;
    return std::nullopt;
  }
  if (seen_key_rev_ == 0 || key->mod_revision != seen_key_rev_) {
    // First tick here, or another server compacted since our last tick: record and wait.
    seen_key_rev_ = key->mod_revision;
    auto cur = store_.current_revision();
    if (!cur) return std::unexpected(cur.error());
    pending_ = *cur;
    return std::nullopt;
  }
  // Our turn: the key is as we left it one interval ago.
  const Revision target = pending_;
  auto updated = store_.update(kCompactionKey, std::to_string(target), key->mod_revision);
  if (!updated) {
    if (updated.error().code != Errc::kConflict && updated.error().code != Errc::kNotFound)
      return std::unexpected(updated.error());
    seen_key_rev_ = 0;  // lost the race: start over at the next tick
    return std::nullopt;
  }
  // The next compaction point: this tick's revision (always above `target`).
  seen_key_rev_ = pending_ = updated->mod_revision;
  if (auto c = store_.compact(target); !c) return std::unexpected(c.error());
  {
    std::lock_guard lk(mu_);
    compacted_ = target;
  }
  spdlog::info("compactor: compacted history revision={}", target);
  return target;
}

}  // namespace kos::store
