#include "fabric/fake/fake_fabric.h"

#include <algorithm>
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
  return count(op, counter);
}

std::optional<Error> FakeFabric::count(Op op, uint64_t Counts::*counter) {
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
  return do_create_local(ifc);
}

Result<void> FakeFabric::do_create_local(const LocalIfc& ifc) {
  if (auto e = check(ifc)) return fail(*e);
  std::lock_guard lk(mu_);
  auto [it, inserted] = locals_.try_emplace({ifc.vni, ifc.mac}, ifc);
  if (inserted || it->second != ifc) {
    if (!inserted) unplug(ifc.vni, ifc.mac);  // replaced: a new pair, not in any namespace
    it->second = ifc;
    ++counts_.changes;
  }
  return {};
}

void FakeFabric::unplug(uint32_t vni, const api::MacAddress& mac) {
  std::erase_if(plugs_, [&](const auto& p) { return p.second.vni == vni && p.second.plugged.mac == mac; });
}

Result<Plugged> FakeFabric::plug(const LocalIfc& ifc, const Plug& plug) {
  if (auto e = begin(Op::kPlug, &Counts::plug)) return fail(*e);
  if (auto e = check(ifc)) return fail(*e);
  if (auto e = check(plug)) return fail(*e);
  std::lock_guard lk(mu_);
  auto it = locals_.find({ifc.vni, ifc.mac});
  if (it == locals_.end() || it->second.name != ifc.name)
    return fail(Errc::kNotFound, "interface " + ifc.name + " is not in this fabric");
  const std::pair key{plug.netns, plug.ifname};
  if (auto p = plugs_.find(key); p != plugs_.end() && (p->second.vni != ifc.vni || p->second.plugged.mac != ifc.mac))
    return fail(Errc::kConflict, "network namespace " + plug.netns + " already has an interface " + plug.ifname);
  unplug(ifc.vni, ifc.mac);  // a guest end is in one namespace at a time
  Plugged out;
  out.ifname = plug.ifname;
  out.ifindex = 2;  // after lo, as in a fresh namespace
  out.mac = ifc.mac;
  out.up = true;
  out.ipv4 = {{plug.ipv4, plug.prefix_len}};
  plugs_[key] = PlugState{ifc.vni, out};
  ++counts_.changes;
  return out;
}

Result<Plugged> FakeFabric::inspect(const std::string& netns, const std::string& ifname) {
  std::lock_guard lk(mu_);
  auto p = plugs_.find({netns, ifname});
  if (p == plugs_.end()) return fail(Errc::kNotFound, "network namespace " + netns + " has no interface " + ifname);
  return p->second.plugged;
}

Result<void> FakeFabric::delete_local(const LocalIfc& ifc) {
  if (auto e = begin(Op::kDeleteLocal, &Counts::delete_local)) return fail(*e);
  return do_delete_local(ifc);
}

Result<void> FakeFabric::do_delete_local(const LocalIfc& ifc) {
  if (auto e = check(ifc)) return fail(*e);
  std::lock_guard lk(mu_);
  if (auto it = locals_.find({ifc.vni, ifc.mac}); it != locals_.end()) {
    policies_.erase(it->second.name);
    locals_.erase(it);
    unplug(ifc.vni, ifc.mac);
    ++counts_.changes;
  }
  return {};
}

Result<void> FakeFabric::create_remote(const RemoteIfc& ifc) {
  if (auto e = begin(Op::kCreateRemote, &Counts::create_remote)) return fail(*e);
  return do_create_remote(ifc);
}

Result<void> FakeFabric::do_create_remote(const RemoteIfc& ifc) {
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
  return do_delete_remote(ifc);
}

Result<void> FakeFabric::do_delete_remote(const RemoteIfc& ifc) {
  if (auto e = check(ifc)) return fail(*e);
  std::lock_guard lk(mu_);
  auto it = remotes_.find({ifc.vni, ifc.guest_ip});
  if (it != remotes_.end() && it->second == ifc) {
    remotes_.erase(it);
    ++counts_.changes;
  }
  return {};
}

std::vector<Result<void>> FakeFabric::apply(const std::vector<Change>& changes) {
  if (int64_t us = latency_us_.load(); us > 0) std::this_thread::sleep_for(std::chrono::microseconds(us));
  {
    std::lock_guard lk(mu_);
    ++counts_.batches;
  }
  std::vector<Result<void>> out;
  out.reserve(changes.size());
  auto one = [&](Op op, uint64_t Counts::*counter, auto&& act) {
    if (auto e = count(op, counter)) out.push_back(fail(*e));
    else out.push_back(act());
  };
  for (const auto& c : changes) {
    switch (c.op) {
      case Change::Op::kCreateLocal:
        one(Op::kCreateLocal, &Counts::create_local, [&] { return do_create_local(c.local); });
        break;
      case Change::Op::kDeleteLocal:
        one(Op::kDeleteLocal, &Counts::delete_local, [&] { return do_delete_local(c.local); });
        break;
      case Change::Op::kCreateRemote:
        one(Op::kCreateRemote, &Counts::create_remote, [&] { return do_create_remote(c.remote); });
        break;
      case Change::Op::kDeleteRemote:
        one(Op::kDeleteRemote, &Counts::delete_remote, [&] { return do_delete_remote(c.remote); });
        break;
    }
  }
  return out;
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

bool FakeFabric::set_in_use(const std::string& name) const {
  for (const auto& [_, p] : policies_)
    for (const auto* rules : {&p.ingress, &p.egress})
      for (const auto& r : *rules)
        if (std::find(r.sets.begin(), r.sets.end(), name) != r.sets.end()) return true;
  return false;
}

Result<void> FakeFabric::set_policy(const LocalIfc& ifc, const std::optional<Policy>& policy) {
  if (auto e = begin(Op::kSetPolicy, &Counts::set_policy)) return fail(*e);
  if (auto e = check(ifc)) return fail(*e);
  if (policy)
    if (auto e = check(*policy)) return fail(*e);
  std::lock_guard lk(mu_);
  if (!policy) {  // removing what is absent succeeds
    if (policies_.erase(ifc.name) > 0) ++counts_.changes;
    return {};
  }
  if (!locals_.contains({ifc.vni, ifc.mac})) return fail(Errc::kNotFound, "no local interface " + ifc.name);
  for (const auto* rules : {&policy->ingress, &policy->egress})
    for (const auto& r : *rules)
      for (const auto& s : r.sets) sets_.try_emplace(s);
  auto& p = policies_[ifc.name];
  if (!(p == *policy)) {
    p = *policy;
    ++counts_.changes;
  }
  return {};
}

Result<void> FakeFabric::update_set(const std::string& name, const std::vector<uint32_t>& add,
                                    const std::vector<uint32_t>& remove) {
  if (auto e = begin(Op::kUpdateSet, &Counts::update_set)) return fail(*e);
  if (auto e = check_set_name(name)) return fail(*e);
  std::lock_guard lk(mu_);
  auto& s = sets_[name];
  for (uint32_t ip : remove) counts_.set_elements_changed += s.erase(ip);
  for (uint32_t ip : add) counts_.set_elements_changed += s.insert(ip).second ? 1 : 0;
  return {};
}

Result<void> FakeFabric::delete_set(const std::string& name) {
  if (auto e = check_set_name(name)) return fail(*e);
  std::lock_guard lk(mu_);
  if (set_in_use(name)) return fail(Errc::kConflict, "address set " + name + " is named by a policy");
  sets_.erase(name);
  return {};
}

Result<std::map<std::string, std::vector<uint32_t>>> FakeFabric::list_sets() {
  std::lock_guard lk(mu_);
  std::map<std::string, std::vector<uint32_t>> out;
  for (const auto& [n, s] : sets_) out[n] = std::vector<uint32_t>(s.begin(), s.end());
  return out;
}

Result<std::map<std::string, Policy>> FakeFabric::list_policies() {
  std::lock_guard lk(mu_);
  return policies_;
}

std::map<std::string, Policy> FakeFabric::policies() const {
  std::lock_guard lk(mu_);
  return policies_;
}

std::map<std::string, std::set<uint32_t>> FakeFabric::sets() const {
  std::lock_guard lk(mu_);
  return sets_;
}

}  // namespace kos::fabric
