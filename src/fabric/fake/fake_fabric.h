// FakeFabric: the Fabric in memory, for agent tests and scale tests. It keeps what it is
// told in maps and counts the calls; an optional latency, slept by every call, stands in
// for the kernel's cost so that a scale test sees realistic queueing in the agent.
//
// Semantics follow the linux fabric (linux/linux_fabric.h) wherever a caller could tell:
//  - every call is idempotent: creating what exists or deleting what is absent succeeds;
//  - a local interface is identified by (vni, mac): creating one that exists with another
//    name or guest IP replaces it; delete_local removes it whatever its name and IP;
//  - a remote interface is identified by (vni, guest_ip): creating one that exists with
//    another MAC or host IP replaces it; delete_remote removes it only if its MAC and host
//    IP are the ones given (a stale delete does not remove a newer mapping);
//  - plug() records (netns, ifname) -> the interface; it needs the local to exist and
//    refuses an (netns, ifname) that holds another MAC; deleting or replacing the local
//    unplugs it. The fake cannot see namespaces: any absolute path is one;
//  - security groups: a policy per local interface (by name; kNotFound for an interface it
//    does not have) and address sets by name, as fabric.h says; delete_local drops the
//    interface's policy, delete_set refuses a set a policy names (kConflict);
//  - the same argument checks: VNI 1..api::kMaxVni, a unicast non-zero MAC, a local name
//    of 1..15 characters, a non-zero guest IP and (remote) host IP; else kInvalid.
//
// Thread-safe: every method may be called from any thread. The latency is slept outside the
// lock, so concurrent calls overlap (as the linux fabric's batched requests do).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "fabric/fabric.h"

namespace kos::fabric {

struct FakeFabricOptions {
  // Slept by every call (creates, deletes and lists) before it takes effect.
  std::chrono::microseconds latency{0};
};

class FakeFabric final : public Fabric {
 public:
  enum class Op { kCreateLocal, kDeleteLocal, kCreateRemote, kDeleteRemote, kListLocal, kListRemote, kPlug, kSetPolicy, kUpdateSet };

  // Calls by kind (failed and no-op calls included), and how many calls changed the state.
  struct Counts {
    uint64_t create_local = 0;
    uint64_t delete_local = 0;
    uint64_t create_remote = 0;
    uint64_t delete_remote = 0;
    uint64_t list_local = 0;
    uint64_t list_remote = 0;
    uint64_t plug = 0;
    uint64_t set_policy = 0;
    uint64_t update_set = 0;
    uint64_t set_elements_changed = 0;  // elements added or removed by update_set
    uint64_t changes = 0;  // creates and deletes that added, replaced or removed something
    uint64_t batches = 0;  // apply() calls
    uint64_t mutations() const { return create_local + delete_local + create_remote + delete_remote; }
    bool operator==(const Counts&) const = default;
  };

  FakeFabric() : FakeFabric(FakeFabricOptions{}) {}
  explicit FakeFabric(FakeFabricOptions opts);

  std::string name() const override { return "fake"; }
  Result<void> create_local(const LocalIfc& ifc) override;
  Result<void> delete_local(const LocalIfc& ifc) override;
  Result<void> create_remote(const RemoteIfc& ifc) override;
  Result<void> delete_remote(const RemoteIfc& ifc) override;
  Result<std::vector<LocalIfc>> list_local() override;
  Result<std::vector<RemoteIfc>> list_remote() override;
  Result<Plugged> plug(const LocalIfc& ifc, const Plug& plug) override;
  Result<Plugged> inspect(const std::string& netns, const std::string& ifname) override;
  Result<void> set_policy(const LocalIfc& ifc, const std::optional<Policy>& policy) override;
  Result<void> update_set(const std::string& name, const std::vector<uint32_t>& add,
                          const std::vector<uint32_t>& remove) override;
  Result<void> delete_set(const std::string& name) override;
  Result<std::map<std::string, std::vector<uint32_t>>> list_sets() override;
  Result<std::map<std::string, Policy>> list_policies() override;
  // One latency for the whole batch (a batched kernel operation), each change counted as
  // its call.
  std::vector<Result<void>> apply(const std::vector<Change>& changes) override;

  // Takes effect for calls that start after it returns.
  void set_latency(std::chrono::microseconds latency) { latency_us_.store(latency.count()); }
  // The next `times` calls of kind `op` fail with `error` and change nothing (they are
  // counted, and they do sleep the latency).
  void fail_next(Op op, Error error, int times = 1);

  Counts counts() const;
  // Snapshots, ordered by (vni, mac) and (vni, guest_ip).
  std::vector<LocalIfc> locals() const;
  std::vector<RemoteIfc> remotes() const;
  std::map<std::string, Policy> policies() const;              // by local interface name
  std::map<std::string, std::set<uint32_t>> sets() const;      // by set name

 private:
  // Sleeps the latency, counts the call and consumes an injected failure if one is armed.
  std::optional<Error> begin(Op op, uint64_t Counts::*counter);
  std::optional<Error> count(Op op, uint64_t Counts::*counter);  // begin() without the latency
  Result<void> do_create_local(const LocalIfc& ifc);
  Result<void> do_delete_local(const LocalIfc& ifc);
  Result<void> do_create_remote(const RemoteIfc& ifc);
  Result<void> do_delete_remote(const RemoteIfc& ifc);

  std::atomic<int64_t> latency_us_;
  mutable std::mutex mu_;
  Counts counts_;
  std::map<Op, std::pair<int, Error>> failures_;
  std::map<std::pair<uint32_t, api::MacAddress>, LocalIfc> locals_;
  std::map<std::pair<uint32_t, uint32_t>, RemoteIfc> remotes_;
  std::map<std::string, Policy> policies_;
  std::map<std::string, std::set<uint32_t>> sets_;
  bool set_in_use(const std::string& name) const;  // mu_ held
  struct PlugState {
    uint32_t vni;
    Plugged plugged;
  };
  std::map<std::pair<std::string, std::string>, PlugState> plugs_;  // (netns, ifname) ->
  void unplug(uint32_t vni, const api::MacAddress& mac);             // mu_ held
};

}  // namespace kos::fabric
