#include "fabric/worker_queue.h"

namespace kos::fabric {

FabricOp FabricOp::of(Kind k, const LocalIfc& l, const RemoteIfc& r) {
  FabricOp op;
  op.kind = k;
  op.local = l;
  op.remote = r;
  return op;
}

void run_batch(const std::vector<FabricOp*>& batch, const std::function<void(const std::vector<FabricOp*>&)>& mutate,
               const std::function<void(FabricOp&)>& list) {
  std::vector<FabricOp*> group;
  auto flush = [&] {
    if (group.empty()) return;
    mutate(group);
    for (FabricOp* op : group) op->done.set_value();
    group.clear();
  };
  for (FabricOp* op : batch) {
    if (!op->is_list()) {
      group.push_back(op);
      continue;
    }
    flush();
    list(*op);
    op->done.set_value();
  }
  flush();
}

std::vector<FabricOp> ops_of(const std::vector<Change>& changes) {
  std::vector<FabricOp> ops(changes.size());
  for (size_t i = 0; i < changes.size(); ++i) {
    const Change& c = changes[i];
    switch (c.op) {
      case Change::Op::kCreateLocal: ops[i].kind = FabricOp::Kind::kCreateLocal; break;
      case Change::Op::kDeleteLocal: ops[i].kind = FabricOp::Kind::kDeleteLocal; break;
      case Change::Op::kCreateRemote: ops[i].kind = FabricOp::Kind::kCreateRemote; break;
      case Change::Op::kDeleteRemote: ops[i].kind = FabricOp::Kind::kDeleteRemote; break;
    }
    ops[i].local = c.local;
    ops[i].remote = c.remote;
  }
  return ops;
}

std::vector<Result<void>> results_of(std::vector<FabricOp>& ops) {
  std::vector<Result<void>> out;
  out.reserve(ops.size());
  for (auto& op : ops) {
    if (op.error) out.push_back(fail(*op.error));
    else out.push_back({});
  }
  return out;
}

Result<void> WorkerQueue::start(std::function<Result<void>()> init, std::function<void()> loop) {
  std::promise<Result<void>> ready;
  auto f = ready.get_future();
  worker_ = std::thread([&ready, init = std::move(init), loop = std::move(loop)] {
    auto r = init();
    const bool ok = r.has_value();
    ready.set_value(std::move(r));  // `ready` is not touched after this
    if (ok) loop();
  });
  auto r = f.get();
  if (!r) {
    worker_.join();
    return r;
  }
  return {};
}

void WorkerQueue::stop() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  std::deque<FabricOp*> left;
  {
    std::lock_guard lk(mu_);
    left.swap(queue_);
  }
  for (FabricOp* op : left) {
    op->error = Error{Errc::kCancelled, who_ + " is shutting down", {}};
    op->done.set_value();
  }
}

void WorkerQueue::submit_all(std::vector<FabricOp>& ops) {
  std::vector<std::future<void>> fs;
  fs.reserve(ops.size());
  for (auto& op : ops) fs.push_back(op.done.get_future());
  {
    std::lock_guard lk(mu_);
    if (stopping_) {
      for (auto& op : ops) op.error = Error{Errc::kCancelled, who_ + " is shutting down", {}};
      return;
    }
    for (auto& op : ops) queue_.push_back(&op);
  }
  cv_.notify_one();
  for (auto& f : fs) f.wait();
}

Result<void> WorkerQueue::submit(FabricOp& op) {
  auto f = op.done.get_future();
  {
    std::lock_guard lk(mu_);
    if (stopping_) return fail(Errc::kCancelled, who_ + " is shutting down");
    queue_.push_back(&op);
  }
  cv_.notify_one();
  f.wait();
  if (op.error) return fail(*op.error);
  return {};
}

void WorkerQueue::wake() {
  {
    std::lock_guard lk(mu_);
    woken_ = true;
  }
  cv_.notify_all();
}

std::optional<std::vector<FabricOp*>> WorkerQueue::take(std::optional<Clock::time_point> until) {
  std::unique_lock lk(mu_);
  auto ready = [&] { return stopping_ || woken_ || !queue_.empty(); };
  if (until) cv_.wait_until(lk, *until, ready);
  else cv_.wait(lk, ready);
  if (stopping_) return std::nullopt;
  woken_ = false;
  std::vector<FabricOp*> batch(queue_.begin(), queue_.end());
  queue_.clear();
  return batch;
}

using Kind = FabricOp::Kind;

Result<void> QueuedFabric::create_local(const LocalIfc& ifc) {
  auto op = FabricOp::of(Kind::kCreateLocal, ifc);
  return queue().submit(op);
}

Result<void> QueuedFabric::delete_local(const LocalIfc& ifc) {
  auto op = FabricOp::of(Kind::kDeleteLocal, ifc);
  return queue().submit(op);
}

Result<void> QueuedFabric::create_remote(const RemoteIfc& ifc) {
  auto op = FabricOp::of(Kind::kCreateRemote, {}, ifc);
  return queue().submit(op);
}

Result<void> QueuedFabric::delete_remote(const RemoteIfc& ifc) {
  auto op = FabricOp::of(Kind::kDeleteRemote, {}, ifc);
  return queue().submit(op);
}

std::vector<Result<void>> QueuedFabric::apply(const std::vector<Change>& changes) {
  auto ops = ops_of(changes);
  queue().submit_all(ops);
  return results_of(ops);
}

Result<std::vector<LocalIfc>> QueuedFabric::list_local() {
  auto op = FabricOp::of(Kind::kListLocal);
  if (auto r = queue().submit(op); !r) return fail(r.error());
  return std::move(op.locals);
}

Result<std::vector<RemoteIfc>> QueuedFabric::list_remote() {
  auto op = FabricOp::of(Kind::kListRemote);
  if (auto r = queue().submit(op); !r) return fail(r.error());
  return std::move(op.remotes);
}

}  // namespace kos::fabric
