#include "fabric/fake/fake_fabric.h"

#include <thread>

namespace kos::fabric {

FakeFabric::FakeFabric(FakeFabricOptions opts) : latency_us_(opts.latency.count()) {}

void FakeFabric::fail_next(Op op, Error error, int times) {
  std::lock_guard lk(mu_);
  if (times <= 0) failures_.erase(op);
  else failures_[op] = {times, std::move(error)};
}

std::optional<Error> FakeFabric::begin(Op op, uint64_t Counts::*counter) {
  if (int64_t us = latency_us_.load(); us > 0) std::this_thread::sleep_for(std::chrono::microseconds(us));
  std::lock_guard lk(mu_);
  ++(counts_.*counter);
  auto it = failures_.find(op);
  if (it == failures_.end()) return std::nullopt;
  Error e = it->second.second;
  if (--it->second.first <= 0) failures_.erase(it);
  return e;
}

Result<void> FakeFabric::create_local(const LocalIfc& ifc) {
  if (auto e = begin(Op::kCreateLocal, &Counts::create_local)) return fail(*e);
  if (auto e = check(ifc)) return fail(*e);
  std::lock_guard lk(mu_);
  auto [it, inserted] = locals_.try_emplace({ifc.vni, ifc.mac}, ifc);
  if (inserted || it->second != ifc) {
    it->second = ifc;
    ++counts_.changes;
  }
  return {};
}

Result<void> FakeFabric::delete_local(const LocalIfc& ifc) {
  if (auto e = begin(Op::kDeleteLocal, &Counts::delete_local)) return fail(*e);
  if (auto e = check(ifc)) return fail(*e);
  std::lock_guard lk(mu_);
  if (locals_.erase({ifc.vni, ifc.mac}) > 0) ++counts_.changes;
  return {};
}

Result<void> FakeFabric::create_remote(const RemoteIfc& ifc) {
  if (auto e = begin(Op::kCreateRemote, &Counts::create_remote)) return fail(*e);
  if (auto e = check(ifc)) return fail(*e);
  std::lock_guard lk(mu_);
  auto [it, inserted] = remotes_.try_emplace({ifc.vni, ifc.guest_ip}, ifc);
  if (inserted || it->second != ifc) {
    it->second = ifc;
    ++counts_.changes;
  }
  return {};
}

Result<void> FakeFabric::delete_remote(const RemoteIfc& ifc) {
  if (auto e = begin(Op::kDeleteRemote, &Counts::delete_remote)) return fail(*e);
  if (auto e = check(ifc)) return fail(*e);
  std::lock_guard lk(mu_);
  auto it = remotes_.find({ifc.vni, ifc.guest_ip});
  if (it != remotes_.end() && it->second == ifc) {
    remotes_.erase(it);
    ++counts_.changes;
  }
  return {};
}

Result<std::vector<LocalIfc>> FakeFabric::list_local() {
  if (auto e = begin(Op::kListLocal, &Counts::list_local)) return fail(*e);
  return locals();
}

Result<std::vector<RemoteIfc>> FakeFabric::list_remote() {
  if (auto e = begin(Op::kListRemote, &Counts::list_remote)) return fail(*e);
  return remotes();
}

FakeFabric::Counts FakeFabric::counts() const {
  std::lock_guard lk(mu_);
  return counts_;
}

std::vector<LocalIfc> FakeFabric::locals() const {
  std::lock_guard lk(mu_);
  std::vector<LocalIfc> out;
  out.reserve(locals_.size());
  for (const auto& [_, ifc] : locals_) out.push_back(ifc);
  return out;
}

std::vector<RemoteIfc> FakeFabric::remotes() const {
  std::lock_guard lk(mu_);
  std::vector<RemoteIfc> out;
  out.reserve(remotes_.size());
  for (const auto& [_, ifc] : remotes_) out.push_back(ifc);
  return out;
}

}  // namespace kos::fabric
