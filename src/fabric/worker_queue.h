// The calling side that the linux and OVS fabrics share: every Fabric call becomes an Op on
// a queue that one worker thread (the owner of the fabric's connections and cache) drains
// in batches; the caller waits for its Op. Requests waiting together are one batch, so
// throughput grows with the number of concurrent callers (and Fabric::apply queues a whole
// batch at once).
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "fabric/fabric.h"

namespace kos::fabric {

struct FabricOp {
  enum class Kind { kCreateLocal, kDeleteLocal, kCreateRemote, kDeleteRemote, kListLocal, kListRemote };
  Kind kind = Kind::kCreateLocal;
  LocalIfc local;
  RemoteIfc remote;
  std::optional<Error> error;      // set by the worker
  std::vector<LocalIfc> locals;    // kListLocal's answer
  std::vector<RemoteIfc> remotes;  // kListRemote's answer
  std::promise<void> done;         // set by the worker once it is answered

  bool is_local() const { return kind == Kind::kCreateLocal || kind == Kind::kDeleteLocal; }
  bool is_create() const { return kind == Kind::kCreateLocal || kind == Kind::kCreateRemote; }
  bool is_list() const { return kind == Kind::kListLocal || kind == Kind::kListRemote; }
  uint32_t vni() const { return is_local() ? local.vni : remote.vni; }

  static FabricOp of(Kind k, const LocalIfc& l = {}, const RemoteIfc& r = {});
};

// How a worker runs a batch it took: consecutive creates and deletes together through
// `mutate`, each list alone through `list`, a barrier (what was queued before it is applied
// before it reads); then answers every op.
void run_batch(const std::vector<FabricOp*>& batch, const std::function<void(const std::vector<FabricOp*>&)>& mutate,
               const std::function<void(FabricOp&)>& list);

// One op per change, in order; and the results of ops the worker has answered.
std::vector<FabricOp> ops_of(const std::vector<Change>& changes);
std::vector<Result<void>> results_of(std::vector<FabricOp>& ops);

class WorkerQueue {
 public:
  using Clock = std::chrono::steady_clock;
  explicit WorkerQueue(std::string who) : who_(std::move(who)) {}  // "the linux fabric", for errors
  ~WorkerQueue() { stop(); }

  // Starts the worker thread: init() runs on it first (enter a namespace, connect, adopt);
  // if that fails, start() returns its error and the thread ends; else loop() runs until
  // stop(). Returns once init() has finished.
  Result<void> start(std::function<Result<void>()> init, std::function<void()> loop);
  // Ends the worker (its loop sees take() return nullopt) and fails what is still queued
  // with kCancelled. Idempotent.
  void stop();

  // Queues all of them together (one batch for the worker), then waits for each.
  void submit_all(std::vector<FabricOp>& ops);
  Result<void> submit(FabricOp& op);

  // The worker's side: waits until something is queued or `until` passes (nullopt: no
  // limit), then takes everything queued (possibly nothing). nullopt once stopping.
  std::optional<std::vector<FabricOp*>> take(std::optional<Clock::time_point> until);
  // Makes the worker's take() return now (with what is queued, possibly nothing): e.g. a
  // connection dropped. Any thread.
  void wake();

 private:
  const std::string who_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<FabricOp*> queue_;
  bool stopping_ = false;
  bool woken_ = false;
  std::thread worker_;
};

// A Fabric whose create, delete, apply and list calls are Ops on its worker's queue: the
// calls of every fabric with a worker (linux, ovs), defined once. The worker answers them.
class QueuedFabric : public Fabric {
 public:
  Result<void> create_local(const LocalIfc& ifc) final;
  Result<void> delete_local(const LocalIfc& ifc) final;
  Result<void> create_remote(const RemoteIfc& ifc) final;
  Result<void> delete_remote(const RemoteIfc& ifc) final;
  // Queues every change at once, so the worker plans them together.
  std::vector<Result<void>> apply(const std::vector<Change>& changes) final;
  Result<std::vector<LocalIfc>> list_local() final;
  Result<std::vector<RemoteIfc>> list_remote() final;

 protected:
  virtual WorkerQueue& queue() = 0;
};

}  // namespace kos::fabric
