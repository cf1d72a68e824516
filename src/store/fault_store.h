// A Store decorator that injects faults, for tests: errors and delays at chosen operations
// and keys, watches that lag (events held back for a while), stall (nothing delivered) or
// break (next() fails, as after a compaction or an outage). The faults are what a real
// backend does under load or failure; tests use them to show that a component survives
// them (the API server's caches and garbage collector, and through the API server, the
// controllers and agents).
//
// Threading: every method may be called from any thread; faults may be changed while
// operations run. A FaultWatch shares the fault state with its store, so it may outlive it.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "store/store.h"

namespace kos::store {

enum class StoreOp { kGet, kList, kCreate, kUpdate, kRemove, kWatch, kCompact, kCurrentRevision };

struct Fault {
  StoreOp op = StoreOp::kGet;
  std::string key_prefix;  // the operation's key (or a list's or watch's prefix) starts with it
  int times = 1;           // how many matching calls it hits; -1: until cleared
  std::chrono::milliseconds delay{0};  // wait this long first
  std::optional<Error> error;          // then fail with this (else: call through)
  // For writes: apply the write, then return the error anyway (a reply lost after the
  // commit: the caller cannot know the write happened).
  bool after_applying = false;
  // Sleep the delay after the call instead of before it (a reply that is slow to come
  // back: what it says may be stale by the time it arrives). Reads only (get, list) that
  // call through; other calls get no delay.
  bool delay_after = false;
};

class FaultStore final : public Store {
 public:
  explicit FaultStore(std::unique_ptr<Store> inner);
  ~FaultStore() override;

  void inject(Fault f);
  void clear();  // removes every injected fault (watch settings stay)
  // Faults that fired so far.
  uint64_t fired() const;
  // Calls inside a fault's delay now (before or after the call they delay).
  int delaying() const;

  // Every watch (or only those whose prefix starts with `prefix`) holds each event back this
  // long after it arrives (a lagging watch).
  void set_watch_delay(std::chrono::milliseconds d, std::string prefix = "");
  // While held, watches deliver nothing (they keep their events for later).
  void hold_watches(bool held);
  // Every watch open now fails with `e` from its next next() on (watches opened later
  // work).
  void break_watches(Error e);

  Store& inner() { return *inner_; }

  Result<KeyValue> get(const std::string& key, Revision rev) override;
  Result<ListResult> list(const std::string& prefix, const ListOptions& opts) override;
  Result<KeyValue> create(const std::string& key, const std::string& value) override;
  Result<KeyValue> update(const std::string& key, const std::string& value,
                          Revision expected_mod_revision) override;
  Result<KeyValue> remove(const std::string& key, Revision expected_mod_revision,
                          Revision* deleted_at) override;
  using Store::watch;
  Result<std::unique_ptr<Watch>> watch(const std::string& prefix, Revision after, const WatchOptions& opts) override;
  Result<void> compact(Revision rev) override;
  Result<Revision> current_revision() override;

  struct State;

 private:
  // The fault that hits this call, if any (counted), after its delay.
  std::optional<Fault> hit(StoreOp op, const std::string& key);
  // Sleeps a fault's delay when it comes after the call.
  void delay_after(const std::optional<Fault>& f);

  std::unique_ptr<Store> inner_;
  std::shared_ptr<State> state_;
};

}  // namespace kos::store
