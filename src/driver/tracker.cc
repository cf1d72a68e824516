#include "driver/tracker.h"

#include <algorithm>
#include <cstdio>

namespace kos::driver {

namespace {

constexpr size_t kMaxSamples = 10;

double seconds(TimePoint from, TimePoint to) { return std::chrono::duration<double>(to - from).count(); }

std::string join(const std::set<std::string>& s) {
  std::string out;
  for (const auto& x : s) out += (out.empty() ? "" : ",") + x;
  return out;
}

}  // namespace

const char* stage_label(Stage s) {
  switch (s) {
    case Stage::kCreate: return "create call";
    case Stage::kAddressed: return "create -> addressed";
    case Stage::kReady: return "create -> ready";
    case Stage::kImplemented: return "create -> implemented (all nodes)";
    case Stage::kTested: return "create -> tested";
    case Stage::kInForce: return "create -> rules in force";
    case Stage::kMember: return "create -> member (all users)";
    case Stage::kDelete: return "delete call";
  }
  return "?";
}

const char* stage_id(Stage s) {
  switch (s) {
    case Stage::kCreate: return "create";
    case Stage::kAddressed: return "addressed";
    case Stage::kReady: return "ready";
    case Stage::kImplemented: return "implemented";
    case Stage::kTested: return "tested";
    case Stage::kInForce: return "in-force";
    case Stage::kMember: return "member";
    case Stage::kDelete: return "delete";
  }
  return "?";
}

std::set<std::string> relevant_nodes(const std::map<std::string, int>& live_per_node, const std::string& own_node) {
  std::set<std::string> out;
  for (const auto& [node, n] : live_per_node)
    if (n > 0 && node != own_node) out.insert(node);
  return out;
}

Tracker::Tracker(TrackerOptions opts) : opts_(opts) {}

bool Tracker::open(const Att& a) const {
  if (!a.measured) return false;
  for (Stage s : {Stage::kCreate, Stage::kAddressed, Stage::kReady, Stage::kImplemented, Stage::kTested, Stage::kInForce,
                  Stage::kMember}) {
    if (s == Stage::kImplemented && !opts_.measure_implemented) continue;
    if (s == Stage::kTested && !opts_.measure_tested) continue;
    if (s == Stage::kInForce && !opts_.measure_policy) continue;
    if (s == Stage::kMember && !measure_member()) continue;
    if (!a.settled[static_cast<size_t>(s)]) return true;
  }
  return false;
}

void Tracker::settle(const std::string& key, Att& a, Stage s, std::optional<TimePoint> at, const std::string& why) {
  auto i = static_cast<size_t>(s);
  if (a.settled[i]) return;
  a.settled[i] = true;
  if (a.measured) {
    auto& r = stages_[i];
    if (at) {
      r.seconds.push_back(seconds(a.create_start, *at));
      r.order.push_back(a.seq);
    } else {
      ++r.failures;
      ++progress_.failures;
      if (r.failure_samples.size() < kMaxSamples) r.failure_samples.push_back(key + ": " + why);
    }
  }
  if (!open(a)) open_.erase(key);
}

void Tracker::set_live(Att& a, bool live) {
  if (a.live == live) return;
  a.live = live;
  int& n = live_[a.vni][a.node];
  n += live ? 1 : -1;
  if (!a.group.empty()) live_groups_[{a.vni, a.group}][a.node] += live ? 1 : -1;
  live ? ++progress_.live : --progress_.live;
}

void Tracker::begin_create(const std::string& key, uint32_t vni, const std::string& node, bool measured,
                           TimePoint start, const std::string& group) {
  std::lock_guard lk(mu_);
  Att a;
  a.vni = vni;
  a.node = node;
  a.measured = measured;
  a.live = false;
  a.create_start = start;
  a.required = relevant_nodes(live_[vni], node);
  a.waiting = a.required;
  a.group = group;
  if (!opts_.measure_implemented) a.settled[static_cast<size_t>(Stage::kImplemented)] = true;
  if (!opts_.measure_tested) a.settled[static_cast<size_t>(Stage::kTested)] = true;
  if (!opts_.measure_policy) a.settled[static_cast<size_t>(Stage::kInForce)] = true;
  if (!measure_member() || group.empty()) a.settled[static_cast<size_t>(Stage::kMember)] = true;
  a.settled[static_cast<size_t>(Stage::kDelete)] = true;  // deletes are counted per call
  auto& slot = atts_[key] = std::move(a);
  set_live(slot, true);
  if (!slot.group.empty())  // its own node too: the node's set holds its own members
    for (const auto& [n, count] : live_groups_[{vni, slot.group}])
      if (count > 0) slot.member_waiting.insert(n);
  if (measured) {
    slot.seq = measured_;
    ++measured_;
    if (opts_.measure_implemented) relevance_.required += slot.required.size();
    open_.insert(key);
  }
}

void Tracker::create_done(const std::string& key, TimePoint end, const Result<std::string>& uid) {
  std::lock_guard lk(mu_);
  auto it = atts_.find(key);
  if (it == atts_.end()) return;
  Att& a = it->second;
  if (uid) {
    a.uid = *uid;
    ++progress_.created;
    settle(key, a, Stage::kCreate, end, {});
    return;
  }
  ++progress_.create_failures;
  a.create_failed = true;
  set_live(a, false);
  settle(key, a, Stage::kCreate, std::nullopt, "create failed: " + uid.error().message);
  // The later stages of an attachment that was never created are not counted at all.
  for (auto& s : a.settled) s = true;
  open_.erase(key);
}

void Tracker::begin_delete(const std::string& key) {
  std::lock_guard lk(mu_);
  auto it = atts_.find(key);
  if (it == atts_.end()) return;
  Att& a = it->second;
  set_live(a, false);
  for (size_t i = 0; i < kStageCount; ++i) {
    if (a.settled[i]) continue;
    a.settled[i] = true;
    if (a.measured) ++stages_[i].cancelled;
  }
  open_.erase(key);
  // Nothing more is learnt about a deleted attachment: keep only its times (a long run
  // deletes far more attachments than are live at once).
  if (a.measured && !a.create_failed) retired_.push_back({a.create_start, a.ready, a.implemented_all});
  atts_.erase(it);
}

void Tracker::delete_done(const std::string& key, bool measured, TimePoint start, TimePoint end,
                          const Result<void>& r) {
  std::lock_guard lk(mu_);
  ++progress_.deleted;
  if (!measured) return;
  auto& s = stages_[static_cast<size_t>(Stage::kDelete)];
  if (r || r.error().code == Errc::kNotFound) {
    s.seconds.push_back(seconds(start, end));
    return;
  }
  ++s.failures;
  ++progress_.failures;
  if (s.failure_samples.size() < kMaxSamples) s.failure_samples.push_back(key + ": delete failed: " + r.error().message);
}

void Tracker::observe(const api::NetworkAttachment& na, TimePoint now) {
  std::lock_guard lk(mu_);
  std::string key = na.metadata.namespace_ + "/" + na.metadata.name;
  auto it = atts_.find(key);
  if (it == atts_.end()) return;
  Att& a = it->second;
  if (!a.uid.empty() && na.metadata.uid != a.uid) return;  // not this incarnation
  const auto& st = na.status;
  if (!st.ipv4.empty() && !a.addressed) {
    a.addressed = now;
    ++progress_.addressed;
    settle(key, a, Stage::kAddressed, now, {});
  }
  if (!st.ifc_name.empty() && !a.ready) {
    a.ready = now;
    ++progress_.ready;
    settle(key, a, Stage::kReady, now, {});
  }
  if (!na.spec.security_groups.empty() && st.security_groups_in_force.size() == na.spec.security_groups.size() &&
      !a.in_force) {
    a.in_force = now;
    settle(key, a, Stage::kInForce, now, {});
  }
  if (st.post_create_exec_report && !a.tested) {
    a.tested = now;
    ++progress_.tested;
    const auto& rep = *st.post_create_exec_report;
    if (rep.exit_status == 0) settle(key, a, Stage::kTested, now, {});
    else
      settle(key, a, Stage::kTested, std::nullopt,
             "postCreateExec exited " + std::to_string(rep.exit_status) + ": " + rep.std_err.substr(0, 200));
  }
  if ((!st.errors.ipam.empty() || !st.errors.host.empty()) && !a.errors_seen) {
    a.errors_seen = true;
    if (a.measured) {
      ++status_errors_;
      std::string msg = key + ": " + (st.errors.ipam.empty() ? "host: " + st.errors.host.front() : "ipam: " + st.errors.ipam.front());
      if (status_error_samples_.size() < kMaxSamples) status_error_samples_.push_back(msg);
    }
  }
}

void Tracker::implemented(const agent::Implemented& rec) {
  std::lock_guard lk(mu_);
  auto it = atts_.find(rec.key);
  if (it == atts_.end()) return;
  Att& a = it->second;
  if (!a.uid.empty() && rec.uid != a.uid) return;
  if (rec.kind == agent::Implemented::Kind::kPolicy) return;  // the status says it (kInForce)
  if (rec.kind == agent::Implemented::Kind::kMember) {
    if (a.group.empty() || !a.member_at.emplace(rec.node, rec.at).second) return;
    a.member_waiting.erase(rec.node);
    try_member(rec.key, a);
    return;
  }
  if (rec.kind == agent::Implemented::Kind::kLocal) {
    if (rec.node != a.node || a.local_impl) return;
    a.local_impl = rec.at;
  } else {
    if (rec.node == a.node) return;
    if (!a.remote_impl.emplace(rec.node, rec.at).second) return;
    if (a.waiting.erase(rec.node) && a.measured && !a.settled[static_cast<size_t>(Stage::kImplemented)])
      ++relevance_.programmed;
  }
  try_implemented(rec.key, a);
}

void Tracker::try_implemented(const std::string& key, Att& a) {
  const auto i = static_cast<size_t>(Stage::kImplemented);
  if (a.settled[i]) return;
  auto& live = live_[a.vni];
  for (auto n = a.waiting.begin(); n != a.waiting.end();) {
    auto l = live.find(*n);
    if (l != live.end() && l->second > 0) {
      ++n;
      continue;
    }
    if (a.measured) ++relevance_.dropped;
    a.required.erase(*n);
    n = a.waiting.erase(n);
  }
  if (!a.waiting.empty() || !a.local_impl) return;
  TimePoint t = *a.local_impl;
  for (const auto& n : a.required) t = std::max(t, a.remote_impl.at(n));
  a.implemented_all = t;
  ++progress_.implemented;
  settle(key, a, Stage::kImplemented, t, {});
}

// Settles kMember once every node that used the group at the create (and still does) has
// the address in its set; a node whose last attachment of the group went is not waited for.
void Tracker::try_member(const std::string& key, Att& a) {
  const auto i = static_cast<size_t>(Stage::kMember);
  if (a.settled[i]) return;
  auto& live = live_groups_[{a.vni, a.group}];
  for (auto n = a.member_waiting.begin(); n != a.member_waiting.end();) {
    auto l = live.find(*n);
    n = l != live.end() && l->second > 0 ? std::next(n) : a.member_waiting.erase(n);
  }
  if (!a.member_waiting.empty() || a.member_at.empty()) return;
  TimePoint t{};
  for (const auto& [_, at] : a.member_at) t = std::max(t, at);
  settle(key, a, Stage::kMember, t, {});
}

void Tracker::evaluate(TimePoint now) {
  std::lock_guard lk(mu_);
  std::vector<std::string> keys(open_.begin(), open_.end());
  for (const auto& key : keys) {
    Att& a = atts_.at(key);
    try_implemented(key, a);
    try_member(key, a);
    if (now - a.create_start < opts_.stage_timeout) continue;
    char buf[64];
    std::snprintf(buf, sizeof buf, "timed out after %g s", static_cast<double>(opts_.stage_timeout.count()) / 1000.0);
    const std::string after = buf;
    for (Stage s : {Stage::kCreate, Stage::kAddressed, Stage::kReady, Stage::kImplemented, Stage::kTested}) {
      if (a.settled[static_cast<size_t>(s)]) continue;
      std::string why = after;
      if (s == Stage::kImplemented)
        why += !a.local_impl ? " (no local implementation on " + a.node + ")"
                             : " (not programmed on " + join(a.waiting) + ")";
      settle(key, a, s, std::nullopt, why);
    }
  }
}

void Tracker::finish() {
  std::lock_guard lk(mu_);
  std::vector<std::string> keys(open_.begin(), open_.end());
  for (const auto& key : keys) {
    Att& a = atts_.at(key);
    for (Stage s : {Stage::kCreate, Stage::kAddressed, Stage::kReady, Stage::kImplemented, Stage::kTested}) {
      if (a.settled[static_cast<size_t>(s)]) continue;
      std::string why = "not reached by the end of the run";
      if (s == Stage::kImplemented)
        why += !a.local_impl ? " (no local implementation on " + a.node + ")"
                             : " (not programmed on " + join(a.waiting) + ")";
      settle(key, a, s, std::nullopt, why);
    }
  }
}

bool Tracker::settled() const {
  std::lock_guard lk(mu_);
  return open_.empty();
}

std::map<std::string, int> Tracker::live_nodes(uint32_t vni) const {
  std::lock_guard lk(mu_);
  auto it = live_.find(vni);
  return it == live_.end() ? std::map<std::string, int>{} : it->second;
}

Tracker::Progress Tracker::progress() const {
  std::lock_guard lk(mu_);
  return progress_;
}

Tracker::Results Tracker::results(TimePoint origin) const {
  std::lock_guard lk(mu_);
  Results r;
  r.stages = stages_;
  r.relevance = relevance_;
  r.measured = measured_;
  r.status_errors = status_errors_;
  r.status_error_samples = status_error_samples_;
  auto add = [&](const Times& t) {
    r.create_times.push_back(seconds(origin, t.create));
    if (t.ready) r.ready_times.push_back(seconds(origin, *t.ready));
    if (t.implemented) r.implemented_times.push_back(seconds(origin, *t.implemented));
    if (auto last = t.implemented ? t.implemented : t.ready)
      r.latency_by_time.push_back({seconds(origin, t.create), seconds(t.create, *last)});
  };
  for (const auto& t : retired_) add(t);
  for (const auto& [_, a] : atts_)
    if (a.measured && !a.create_failed) add({a.create_start, a.ready, a.implemented_all});
  std::sort(r.create_times.begin(), r.create_times.end());
  std::sort(r.ready_times.begin(), r.ready_times.end());
  std::sort(r.implemented_times.begin(), r.implemented_times.end());
  std::sort(r.latency_by_time.begin(), r.latency_by_time.end());
  return r;
}

}  // namespace kos::driver
