#include "client/leader_election.h"

#include <spdlog/spdlog.h>

namespace kos::client {
namespace json = boost::json;

namespace {

std::string now_micro(const Clock& c) {
  return api::format_micro_time(std::chrono::time_point_cast<std::chrono::microseconds>(c.now()));
}

std::string str(const json::object& o, std::string_view a, std::string_view b = {}) {
  const json::value* v = o.if_contains(a);
  if (v && !b.empty()) v = v->is_object() ? v->get_object().if_contains(b) : nullptr;
  return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

}  // namespace

LeaderElector::LeaderElector(std::shared_ptr<RestClient> client, LeaderElectionConfig config,
                             const Clock& clock)
    : client_(std::move(client)), cfg_(std::move(config)), clock_(clock) {}

LeaderElector::~LeaderElector() { stop(); }

void LeaderElector::start() {
  thread_ = std::thread([this] { run(); });
}

void LeaderElector::stop() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void LeaderElector::abandon() {
  {
    std::lock_guard lk(mu_);
    release_on_stop_ = false;
  }
  stop();
}

std::string LeaderElector::leader() const {
  std::lock_guard lk(mu_);
  return observed_holder_;
}

void LeaderElector::run() {
  std::unique_lock lk(mu_);
  while (!stopping_) {
    lk.unlock();
    bool held = try_acquire_or_renew();
    auto now = clock_.steady_now();
    if (held) {
      last_renew_ = now;
      if (!leader_.exchange(true)) {
        spdlog::info("leader election: became leader lease={}/{} identity={}", cfg_.ns, cfg_.name,
                     cfg_.identity);
        if (cfg_.on_started_leading) cfg_.on_started_leading();
      }
    } else if (leader_ && now - last_renew_ > cfg_.renew_deadline) {
      leader_ = false;
      spdlog::warn("leader election: could not renew within the deadline; stepping down lease={}/{}",
                   cfg_.ns, cfg_.name);
      if (cfg_.on_stopped_leading) cfg_.on_stopped_leading();
    }
    lk.lock();
    cv_.wait_for(lk, cfg_.retry_period, [&] { return stopping_; });
  }
  bool release_it = release_on_stop_ && leader_;
  lk.unlock();
  if (release_it) release();
  if (leader_.exchange(false) && cfg_.on_stopped_leading) cfg_.on_stopped_leading();
}

bool LeaderElector::try_acquire_or_renew() {
  const auto ref = ResourceRef::leases();
  const auto now = clock_.steady_now();
  const int64_t duration_s =
      std::max<int64_t>(1, std::chrono::duration_cast<std::chrono::seconds>(cfg_.lease_duration).count());
  auto cur = client_->get(ref, cfg_.ns, cfg_.name);
  if (!cur) {
    if (cur.error().code != Errc::kNotFound) return false;
    json::object lease{{"apiVersion", "coordination.k8s.io/v1"}, {"kind", "Lease"},
                       {"metadata", json::object{{"name", cfg_.name}, {"namespace", cfg_.ns}}},
                       {"spec", json::object{{"holderIdentity", cfg_.identity},
                                             {"leaseDurationSeconds", duration_s},
                                             {"acquireTime", now_micro(clock_)},
                                             {"renewTime", now_micro(clock_)},
                                             {"leaseTransitions", 0}}}};
    auto created = client_->create(ref, cfg_.ns, lease);
    if (!created) return false;
    {
      std::lock_guard lk(mu_);
      observed_holder_ = cfg_.identity;
      observed_rv_ = str(created->get_object(), "metadata", "resourceVersion");
      observed_at_ = now;
    }
    if (cfg_.on_new_leader) cfg_.on_new_leader(cfg_.identity);
    return true;
  }
  json::object obj = cur->get_object();
  std::string holder = str(obj, "spec", "holderIdentity");
  std::string rv = str(obj, "metadata", "resourceVersion");
  bool announce = false, held_by_other = false;
  {
    std::lock_guard lk(mu_);
    if (rv != observed_rv_) {  // the record changed: its holder is alive
      observed_rv_ = rv;
      observed_at_ = now;
      announce = holder != observed_holder_ && !holder.empty();
      observed_holder_ = holder;
    }
    // Someone else holds a lease that has not expired (by this candidate's clock).
    held_by_other = !holder.empty() && holder != cfg_.identity && now - observed_at_ < cfg_.lease_duration;
  }
  if (announce && cfg_.on_new_leader) cfg_.on_new_leader(holder);
  if (held_by_other) return false;
  auto& spec = obj["spec"].is_object() ? obj["spec"].get_object() : obj["spec"].emplace_object();
  int64_t transitions = spec.contains("leaseTransitions") && spec["leaseTransitions"].is_int64()
                            ? spec["leaseTransitions"].get_int64()
                            : 0;
  if (holder != cfg_.identity) {
    spec["acquireTime"] = now_micro(clock_);
    spec["leaseTransitions"] = transitions + 1;
  }
  spec["holderIdentity"] = cfg_.identity;
  spec["leaseDurationSeconds"] = duration_s;
  spec["renewTime"] = now_micro(clock_);
  // The resourceVersion in the body makes this a compare-and-swap: of two candidates
  // taking over at once, one gets a Conflict.
  auto updated = client_->update(ref, cfg_.ns, obj);
  if (!updated) return false;
  {
    std::lock_guard lk(mu_);
    announce = observed_holder_ != cfg_.identity;
    observed_holder_ = cfg_.identity;
    observed_rv_ = str(updated->get_object(), "metadata", "resourceVersion");
    observed_at_ = now;
  }
  if (announce && cfg_.on_new_leader) cfg_.on_new_leader(cfg_.identity);
  return true;
}

void LeaderElector::release() {
  const auto ref = ResourceRef::leases();
  auto cur = client_->get(ref, cfg_.ns, cfg_.name);
  if (!cur) return;
  json::object obj = cur->get_object();
  if (str(obj, "spec", "holderIdentity") != cfg_.identity) return;
  auto& spec = obj["spec"].get_object();
  spec["holderIdentity"] = "";
  spec["leaseDurationSeconds"] = 1;
  spec["renewTime"] = now_micro(clock_);
  if (auto r = client_->update(ref, cfg_.ns, obj); !r)
    spdlog::warn("leader election: could not release lease={}/{}: {}", cfg_.ns, cfg_.name,
                 r.error().message);
  else
    spdlog::info("leader election: released lease={}/{} identity={}", cfg_.ns, cfg_.name, cfg_.identity);
}

}  // namespace kos::client
