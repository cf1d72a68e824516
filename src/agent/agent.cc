#include "agent/agent.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "api/cidr.h"
#include "common/metrics.h"

namespace kos::agent {

namespace {

constexpr const char* kRelevanceKey = "@relevance";
constexpr const char* kAddressVni = "address-vni";  // index of the local informer: domains
constexpr const char* kGroups = "groups";  // index of the local informer: "ns/group" of each group it is in
constexpr std::string_view kSetPrefix = "@set/";  // a member set's key: "@set/<name>"

// The domain an addressed attachment makes relevant on its node: its VNI ("V"), or for an
// attachment on a subnet of a VPC the VPC's routing VNI ("rR"): the node then learns every
// attachment of the VPC.
std::string domain_of(const api::NetworkAttachment& na) {
  if (na.status.routing_vni != 0) return "r" + std::to_string(na.status.routing_vni);
  return std::to_string(na.status.address_vni);
}

struct AgentMetrics {
  metrics::Family<metrics::Gauge>& locals = metrics::Registry::global().gauge(
      "kos_agent_local_attachments", "Attachments implemented on this node.");
  metrics::Family<metrics::Gauge>& remotes = metrics::Registry::global().gauge(
      "kos_agent_remote_attachments", "Remote attachments programmed on this node.");
  metrics::Family<metrics::Gauge>& vnis = metrics::Registry::global().gauge(
      "kos_agent_relevant_vnis", "VNIs with a local attachment (one informer each).");
  metrics::Family<metrics::Histogram>& fabric_ops = metrics::Registry::global().histogram(
      "kos_agent_fabric_op_seconds", "Fabric operation latency.", {"op"});
  metrics::Family<metrics::Histogram>& write_to_local = metrics::Registry::global().histogram(
      "kos_agent_write_to_local_ifc_seconds",
      "Time from the address being written to the local interface existing.");
  metrics::Family<metrics::Histogram>& write_to_remote = metrics::Registry::global().histogram(
      "kos_agent_write_to_remote_ifc_seconds",
      "Time from the remote attachment's implementation to its mapping here.");
  metrics::Family<metrics::Histogram>& write_to_status = metrics::Registry::global().histogram(
      "kos_agent_write_to_status_seconds",
      "Time from the address being written to this agent's status write (the attachment is ready).");
  metrics::Family<metrics::Histogram>& relevance = metrics::Registry::global().histogram(
      "kos_agent_vni_relevance_delay_seconds",
      "Time from a VNI's first local attachment being addressed to this node holding the VNI's "
      "remote attachments (its informer synced).");
  metrics::Family<metrics::Counter>& irrelevant = metrics::Registry::global().counter(
      "kos_agent_irrelevant_events_total",
      "Remote attachment events about a VNI not hosted here or an attachment of this node "
      "(must stay 0: a node learns only about the VNIs it hosts).");
  metrics::Family<metrics::Counter>& events = metrics::Registry::global().counter(
      "kos_agent_events_total", "Informer notifications received.", {"informer"});
  metrics::Family<metrics::Counter>& unchanged = metrics::Registry::global().counter(
      "kos_agent_remote_events_unchanged_total",
      "Remote attachment events that changed nothing programmed here (no reconcile queued).");
  metrics::Family<metrics::Counter>& local_unchanged = metrics::Registry::global().counter(
      "kos_agent_local_events_unchanged_total",
      "Local attachment events that left the interface and its status as they were (the echo of "
      "the agent's own status write; no reconcile queued).");
  metrics::Family<metrics::Counter>& irrelevant_members = metrics::Registry::global().counter(
      "kos_agent_irrelevant_member_events_total",
      "Security group member events about an attachment that is not a member of the watched group "
      "in the watched domain (must stay 0: a node learns only the members its rules use).");
  metrics::Family<metrics::Gauge>& member_watches = metrics::Registry::global().gauge(
      "kos_agent_member_watches", "Security group member watches (one per group and address domain used here).");
  metrics::Family<metrics::Histogram>& exec = metrics::Registry::global().histogram(
      "kos_agent_exec_seconds", "Duration of postCreateExec and postDeleteExec commands.", {"kind"});
};

AgentMetrics& agent_metrics() {
  static AgentMetrics m;
  return m;
}

template <class F>
auto timed(const char* op, F&& f) {
  auto t0 = std::chrono::steady_clock::now();
  auto r = f();
  agent_metrics().fabric_ops.with({op}).observe(std::chrono::steady_clock::now() - t0);
  return r;
}

api::MicroTime micro_now() {
  return std::chrono::time_point_cast<std::chrono::microseconds>(std::chrono::system_clock::now());
}

std::string expand(std::string s, const fabric::LocalIfc& ifc, const AgentOptions& opts) {
  auto replace = [&](const std::string& from, const std::string& to) {
    for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size()))
      s.replace(p, from.size(), to);
  };
  replace("${ifname}", ifc.name);
  replace("${ipv4}", api::format_ipv4(ifc.guest_ip));
  replace("${mac}", api::format_mac(ifc.mac));
  // Routed (a subnet of a VPC): the gateway; else empty.
  replace("${gateway}", ifc.routing.gateway ? api::format_ipv4(ifc.routing.gateway) : std::string());
  replace("${node}", opts.node);
  replace("${netns}", opts.netns);
  return s;
}

}  // namespace

Agent::Agent(std::shared_ptr<client::RestClient> client, fabric::Fabric& fabric, AgentOptions opts)
    : client_(client), fabric_(fabric), opts_(std::move(opts)),
      local_(client, [&] {
        client::InformerOptions o;
        o.field_selector = "spec.node=" + opts_.node;
        return o;
      }()),
      controller_("agent", opts_.workers, kMaxBatch,
                  [this](const std::vector<std::string>& keys) { return reconcile_batch(keys); },
                  metrics::Registry::global(), opts_.clock) {
  // Exported from the start (0 is the figure that matters for this one).
  agent_metrics().irrelevant.get();
  agent_metrics().irrelevant_members.get();
  agent_metrics().member_watches.get();
  // The VNIs of the addressed local attachments: what update_relevance wants, without a
  // walk over every local attachment on each local event (30% of the agents' CPU with
  // ~100 attachments per node).
  local_.indexer().add_index(kAddressVni, [](const api::AnyObject& o) {
    const auto& na = std::get<api::NetworkAttachment>(o);
    if (na.status.address_vni == 0 || na.status.ipv4.empty()) return std::vector<std::string>{};
    return std::vector<std::string>{domain_of(na)};
  });
  local_.indexer().add_index(kGroups, [](const api::AnyObject& o) {
    const auto& na = std::get<api::NetworkAttachment>(o);
    std::vector<std::string> out;
    for (const auto& g : na.spec.security_groups) out.push_back(na.metadata.namespace_ + "/" + g);
    return out;
  });
  local_.add_handlers(
      {[this](const client::ObjectPtr& o) { on_object(kLocal, &local_, o, true); },
       [this](const client::ObjectPtr& old, const client::ObjectPtr& o) { on_object(kLocal, &local_, o, true, old.get()); },
       [this](const client::ObjectPtr& o, bool) { on_object(kLocal, &local_, o, false, o.get()); }});
}

Agent::~Agent() { stop(); }

// The remote attachments of `vni` that this node maps: on other nodes, and implemented
// there (status.hostIP set: their node has written where they live). One addressed but not
// yet implemented cannot be mapped and is not sent here (under churn a fifth of the events
// a node received); its implementation arrives as its ADDED event. adopt() lists the same.
// A routed domain (a VPC) selects by the routing VNI instead: the attachments of all the
// VPC's subnets.
std::string Agent::remote_selector(uint32_t vni, bool routed) const {
  return std::string(routed ? "status.routingVNI=" : "status.addressVNI=") + std::to_string(vni) +
         ",spec.node!=" + opts_.node + ",status.hostIP!=";
}

namespace {

// Whether a local attachment's change (before: its state the last event showed, or null;
// after: its state now, or null when gone) leaves what it makes relevant as it was: the
// domain it is addressed in, and its security groups (their watches follow them).
bool same_relevance(const api::AnyObject* before, const api::AnyObject* after) {
  static const std::vector<std::string> kNoGroups;
  auto domain = [](const api::AnyObject* o) {
    const auto* na = o ? &std::get<api::NetworkAttachment>(*o) : nullptr;
    return na && na->status.address_vni != 0 && !na->status.ipv4.empty() ? domain_of(*na) : std::string();
  };
  auto groups = [](const api::AnyObject* o) -> const std::vector<std::string>& {
    return o ? std::get<api::NetworkAttachment>(*o).spec.security_groups : kNoGroups;
  };
  return domain(before) == domain(after) && groups(before) == groups(after);
}

}  // namespace

void Agent::on_object(uint32_t informer, const client::Informer* from, const client::ObjectPtr& obj,
                      bool present, const api::AnyObject* before) {
  std::string key = client::object_key(*obj);
  bool relevance_may_change = false, settled = false;
  {
    std::lock_guard lk(mu_);
    if (informer != kLocal) {
      // A VNI informer that has left vni_informers_ (the VNI stopped being relevant) may
      // still deliver until stop() returns: its events are stale, and a holder it added now
      // would never be removed.
      auto it = vni_informers_.find(informer);
      if (it == vni_informers_.end() || it->second.get() != from) return;
    }
    if (informer == kLocal) {
      const auto& na = std::get<api::NetworkAttachment>(*obj);
      relevance_may_change = !same_relevance(before, present ? obj.get() : nullptr);
      if (relevance_may_change) ++counts_.relevance_checks;
      // The echo of this agent's status write is what its worker made it: settled whether
      // or not the worker has finished.
      bool echo = false;
      if (auto e = status_echo_.find(key); e != status_echo_.end()) {
        echo = present && e->second.uid == na.metadata.uid && e->second.generation == na.metadata.generation &&
               e->second.status == na.status;
        status_echo_.erase(e);
      }
      if (present && !relevance_may_change && (echo || local_unchanged_locked(key, na))) {
        settled = true;
        ++counts_.local_unchanged;
      }
    }
    if (present) holders_[key].insert(informer);
    else if (auto it = holders_.find(key); it != holders_.end()) {
      it->second.erase(informer);
      if (it->second.empty()) holders_.erase(it);
    }
    if (informer == kLocal) {
      ++counts_.local_events;
      agent_metrics().events.with({"local"}).inc();
    } else {
      ++counts_.remote_events;
      ++counts_.remote_events_by_vni[informer];
      agent_metrics().events.with({"remote"}).inc();
      const auto& na = std::get<api::NetworkAttachment>(*obj);
      const bool routed = routed_domains_.contains(informer);
      if ((routed ? na.status.routing_vni : na.status.address_vni) != informer || na.spec.node == opts_.node) {
        ++counts_.irrelevant_events;
        agent_metrics().irrelevant.get().inc();
      }
      // An event about a remote attachment that changes nothing this node programs (its
      // readiness, conditions, labels) wakes no worker.
      if (remote_unchanged_locked(key, informer, present ? obj : nullptr)) {
        ++counts_.remote_unchanged;
        agent_metrics().unchanged.get().inc();
        return;
      }
    }
  }
  if (informer == kLocal) {
    if (relevance_may_change) controller_.enqueue(kRelevanceKey);  // informers start/stop on a worker
    if (settled) {
      agent_metrics().local_unchanged.get().inc();
      return;
    }
    controller_.enqueue(key);
  } else if (opts_.remotes_inline && from->has_synced()) {
    controller_.reconcile_now(key, [&] { return reconcile_remote_now(key); });
  } else {
    controller_.enqueue(key);  // an initial list: programmed in batches by the workers
  }
}

std::set<uint32_t> Agent::relevant_vnis() const {
  std::lock_guard lk(mu_);
  std::set<uint32_t> out;
  for (const auto& [v, _] : vni_informers_) out.insert(v);
  return out;
}

Agent::Counts Agent::counts() const {
  std::lock_guard lk(mu_);
  return counts_;
}

void Agent::update_relevance() {
  std::map<uint32_t, bool> want;  // domain -> routed
  for (const auto& v : local_.indexer().index_values(kAddressVni)) {
    const bool routed = v.starts_with('r');
    want[static_cast<uint32_t>(std::stoul(v.substr(routed ? 1 : 0)))] = routed;
  }
  std::vector<std::pair<uint32_t, client::Informer*>> started;
  std::vector<std::unique_ptr<client::Informer>> to_stop;
  std::vector<std::string> requeue;
  std::optional<std::chrono::steady_clock::duration> recheck;
  {
    std::lock_guard lk(mu_);
    const auto now = (opts_.clock ? *opts_.clock : RealClock::instance()).steady_now();
    for (auto it = vni_informers_.begin(); it != vni_informers_.end();) {
      if (want.count(it->first)) {
        leaving_.erase(it->first);
        ++it;
        continue;
      }
      uint32_t vni = it->first;
      // Hysteresis: the informer stays for the grace period; relevance is looked at again
      // when it ends.
      auto [l, fresh] = leaving_.try_emplace(vni, now + opts_.relevance_grace);
      if (now < l->second) {
        auto left = l->second - now;
        recheck = recheck ? std::min(*recheck, left) : left;
        ++it;
        continue;
      }
      leaving_.erase(l);
      for (const auto& o : it->second->indexer().list()) requeue.push_back(client::object_key(*o));
      for (auto h = holders_.begin(); h != holders_.end();) {
        h->second.erase(vni);
        h = h->second.empty() ? holders_.erase(h) : std::next(h);
      }
      to_stop.push_back(std::move(it->second));
      it = vni_informers_.erase(it);
      spdlog::info("agent: {} {} is no longer relevant on node {}", routed_domains_.contains(vni) ? "VPC" : "VNI",
                   vni, opts_.node);
      routed_domains_.erase(vni);
    }
    for (auto [vni, routed] : want) {
      if (vni_informers_.count(vni)) continue;
      client::InformerOptions o;
      o.field_selector = remote_selector(vni, routed);
      if (routed) routed_domains_.insert(vni);
      auto inf = std::make_unique<client::Informer>(client_, o);
      const client::Informer* p = inf.get();
      inf->add_handlers({[this, vni, p](const client::ObjectPtr& x) { on_object(vni, p, x, true); },
                         [this, vni, p](const client::ObjectPtr&, const client::ObjectPtr& x) { on_object(vni, p, x, true); },
                         [this, vni, p](const client::ObjectPtr& x, bool) { on_object(vni, p, x, false); }});
      inf->start();
      ++counts_.vni_informers_started;
      started.emplace_back(vni, inf.get());
      vni_informers_.emplace(vni, std::move(inf));
      spdlog::info("agent: {} {} is relevant on node {}", routed ? "VPC of routing VNI" : "VNI", vni, opts_.node);
    }
    publish_counts();
  }
  if (recheck)
    controller_.queue().add_after(kRelevanceKey,
                                  std::chrono::duration_cast<std::chrono::nanoseconds>(*recheck));
  for (auto& inf : to_stop) inf->stop();  // blocks on the transport: never under mu_
  for (const auto& k : requeue) controller_.enqueue(k);
  // The relevance delay ends when the new informers hold the VNIs' remote attachments. The
  // informers stay in vni_informers_ (and so alive) while this worker runs: only a worker
  // stops them, and relevance is one key, never on two workers at once.
  for (auto [vni, inf] : started) {
    if (!started_ || !inf->wait_for_sync(std::chrono::seconds(5))) continue;
    // From the VNI's first local attachment being addressed.
    std::optional<std::chrono::system_clock::time_point> first;
    const bool routed = want.contains(vni) && want.at(vni);
    for (const auto& o : local_.indexer().by_index(kAddressVni, (routed ? "r" : "") + std::to_string(vni)))
      if (auto t = std::get<api::NetworkAttachment>(*o).extended_metadata.write_time(api::section::kAddress))
        if (!first || *t < *first) first = *t;
    if (first) agent_metrics().relevance.get().observe(std::chrono::system_clock::now() - *first);
  }
  update_policy_relevance();
}

void Agent::update_policy_relevance() {
  // The groups of the local attachments: one informer each.
  std::set<std::string> want_groups;
  for (const auto& g : local_.indexer().index_values(kGroups)) want_groups.insert(g);
  std::vector<std::unique_ptr<client::Informer>> to_stop;
  std::vector<client::Informer*> started;
  {
    std::lock_guard lk(mu_);
    for (auto it = group_informers_.begin(); it != group_informers_.end();) {
      if (want_groups.contains(it->first)) {
        ++it;
        continue;
      }
      to_stop.push_back(std::move(it->second));
      it = group_informers_.erase(it);
    }
    for (const auto& gkey : want_groups) {
      if (group_informers_.contains(gkey)) continue;
      const auto slash = gkey.find('/');
      client::InformerOptions o;
      o.kind = api::Kind::kSecurityGroup;
      o.ns = gkey.substr(0, slash);
      o.field_selector = "metadata.name=" + gkey.substr(slash + 1);
      auto inf = std::make_unique<client::Informer>(client_, o);
      const client::Informer* p = inf.get();
      auto on = [this, gkey, p](const client::ObjectPtr&) { on_group(gkey, p); };
      inf->add_handlers({on, [on](const client::ObjectPtr&, const client::ObjectPtr& x) { on(x); },
                         [on](const client::ObjectPtr& x, bool) { on(x); }});
      inf->start();
      started.push_back(inf.get());
      group_informers_.emplace(gkey, std::move(inf));
    }
    counts_.group_informers = group_informers_.size();
  }
  for (auto& inf : to_stop) inf->stop();  // blocks on the transport: never under mu_
  to_stop.clear();
  // A new group's rules decide which member watches its attachments need.
  for (auto* inf : started) inf->wait_for_sync(std::chrono::seconds(5));

  // The member watches: for each addressed local attachment in domain D and each group G
  // it is in, the groups G's rules name, in D.
  struct Want {
    std::string ns, group, domain;
  };
  std::map<std::string, Want> want_sets;
  for (const auto& gkey : want_groups) {
    client::ObjectPtr gobj;
    {
      std::lock_guard lk(mu_);
      auto it = group_informers_.find(gkey);
      if (it != group_informers_.end()) gobj = it->second->indexer().get(gkey);
    }
    if (!gobj) continue;
    const auto refs = referenced_groups(std::get<api::SecurityGroup>(*gobj));
    if (refs.empty()) continue;
    const std::string ns = gkey.substr(0, gkey.find('/'));
    for (const auto& o : local_.indexer().by_index(kGroups, gkey)) {
      const auto& na = std::get<api::NetworkAttachment>(*o);
      if (na.status.ipv4.empty() || na.status.address_vni == 0) continue;
      const std::string domain = address_domain(na);
      for (const auto& ref : refs) want_sets.emplace(member_set_name(ns, ref, domain), Want{ns, ref, domain});
    }
  }
  std::vector<std::string> new_sets, gone_sets;
  {
    std::lock_guard lk(mu_);
    for (auto it = member_watches_.begin(); it != member_watches_.end();) {
      if (want_sets.contains(it->first)) {
        ++it;
        continue;
      }
      to_stop.push_back(std::move(it->second.informer));
      gone_sets.push_back(it->first);
      spdlog::info("agent: node {} no longer uses the members of group {}/{} in domain {}", opts_.node,
                   it->second.ns, it->second.group, it->second.domain);
      it = member_watches_.erase(it);
    }
    for (auto& [set, w] : want_sets) {
      if (member_watches_.contains(set)) continue;
      client::InformerOptions o;
      o.ns = w.ns;
      o.field_selector = member_selector(w.group, w.domain);
      auto inf = std::make_unique<client::Informer>(client_, o);
      const client::Informer* p = inf.get();
      const std::string name = set;
      inf->add_handlers({[this, name, p](const client::ObjectPtr& x) { on_member(name, p, x, true); },
                         [this, name, p](const client::ObjectPtr&, const client::ObjectPtr& x) { on_member(name, p, x, true); },
                         [this, name, p](const client::ObjectPtr& x, bool) { on_member(name, p, x, false); }});
      MemberWatch mw{w.ns, w.group, w.domain, std::move(inf), {}, {}, std::nullopt};
      if (auto a = adopted_sets_.find(set); a != adopted_sets_.end()) {
        mw.adopted = std::move(a->second);
        adopted_sets_.erase(a);
      }
      auto& placed = member_watches_.emplace(set, std::move(mw)).first->second;
      placed.informer->start();
      started.push_back(placed.informer.get());
      new_sets.push_back(set);
      spdlog::info("agent: node {} uses the members of group {}/{} in domain {} (set {})", opts_.node, w.ns,
                   w.group, w.domain, set);
    }
    counts_.member_watches = member_watches_.size();
    counts_.watched_groups.clear();
    for (const auto& [_, w] : member_watches_) counts_.watched_groups.insert(w.ns + "/" + w.group);
    agent_metrics().member_watches.get().inc(static_cast<double>(new_sets.size()) - static_cast<double>(gone_sets.size()));
  }
  for (auto& inf : to_stop) inf->stop();
  for (const auto& set : gone_sets) controller_.enqueue(std::string(kSetPrefix) + set);  // deleted once unused
  if (started.empty() && gone_sets.empty()) return;
  for (const auto& set : new_sets) {
    client::Informer* inf = nullptr;
    {
      std::lock_guard lk(mu_);
      if (auto it = member_watches_.find(set); it != member_watches_.end()) inf = it->second.informer.get();
    }
    // Only this worker stops member watches (relevance is one key), so inf stays alive.
    if (inf) inf->wait_for_sync(std::chrono::seconds(5));
    controller_.enqueue(std::string(kSetPrefix) + set);
  }
  // What is in force changed for the attachments of these groups.
  for (const auto& gkey : want_groups)
    for (const auto& o : local_.indexer().by_index(kGroups, gkey)) controller_.enqueue(client::object_key(*o));
}

void Agent::on_group(const std::string& gkey, const client::Informer* from) {
  {
    std::lock_guard lk(mu_);
    auto it = group_informers_.find(gkey);
    if (it == group_informers_.end() || it->second.get() != from) return;  // stopped meanwhile
    ++counts_.group_events;
  }
  agent_metrics().events.with({"group"}).inc();
  controller_.enqueue(kRelevanceKey);  // its rules may name other groups now
  for (const auto& o : local_.indexer().by_index(kGroups, gkey)) controller_.enqueue(client::object_key(*o));
}

void Agent::on_member(const std::string& set, const client::Informer* from, const client::ObjectPtr& obj,
                      bool present) {
  const std::string key = client::object_key(*obj);
  {
    std::lock_guard lk(mu_);
    auto it = member_watches_.find(set);
    if (it == member_watches_.end() || it->second.informer.get() != from) return;
    auto& w = it->second;
    ++counts_.member_events;
    agent_metrics().events.with({"member"}).inc();
    const auto& na = std::get<api::NetworkAttachment>(*obj);
    const bool member = na.metadata.namespace_ == w.ns &&
                        std::ranges::find(na.spec.security_groups, w.group) != na.spec.security_groups.end() &&
                        address_domain(na) == w.domain;
    // A DELETED event of one that left the group (or the domain) carries its new state,
    // which is not a member's: that news is relevant. Added and modified ones must be members.
    if (present && !member) {
      ++counts_.irrelevant_member_events;
      agent_metrics().irrelevant_members.get().inc();
    }
    w.dirty.insert(key);
  }
  controller_.enqueue(std::string(kSetPrefix) + set);
}

Result<controllers::Requeue> Agent::reconcile_set(const std::string& set) {
  MemberSet::Delta delta;
  std::vector<std::pair<std::string, std::optional<uint32_t>>> before;  // to undo on failure
  std::optional<std::set<uint32_t>> adopted;
  std::vector<client::ObjectPtr> added;
  bool remove = false;
  {
    std::lock_guard lk(mu_);
    auto it = member_watches_.find(set);
    if (it == member_watches_.end()) {
      remove = true;
    } else {
      auto& w = it->second;
      // The first sync of an adopted set needs all its members: wait for the list.
      if (w.adopted && !w.informer->has_synced()) return controllers::Requeue{false, std::chrono::milliseconds(100)};
      for (const auto& key : w.dirty) {
        auto obj = w.informer->indexer().get(key);
        std::optional<uint32_t> ip;
        if (obj)
          if (auto p = api::parse_ipv4(std::get<api::NetworkAttachment>(*obj).status.ipv4)) ip = *p;
        before.emplace_back(key, w.members.of(key));
        auto d = w.members.set(key, ip);
        if (!d.add.empty() && obj) added.push_back(obj);
        delta.add.insert(delta.add.end(), d.add.begin(), d.add.end());
        delta.remove.insert(delta.remove.end(), d.remove.begin(), d.remove.end());
      }
      w.dirty.clear();
      if (w.adopted) {
        adopted = std::move(w.adopted);
        w.adopted.reset();
        delta = w.members.against(*adopted);
      }
    }
  }
  if (remove) {
    auto r = timed("delete_set", [&] { return fabric_.delete_set(set); });
    // A policy still names it: the attachments' policies change first, then it goes.
    if (!r && r.error().code == Errc::kConflict) return controllers::Requeue{false, std::chrono::milliseconds(1000)};
    if (!r) return fail(r.error());
    std::lock_guard lk(mu_);
    adopted_sets_.erase(set);
    return controllers::Requeue{};
  }
  if (delta.empty()) return controllers::Requeue{};
  if (auto r = timed("update_set", [&] { return fabric_.update_set(set, delta.add, delta.remove); }); !r) {
    std::lock_guard lk(mu_);
    if (auto it = member_watches_.find(set); it != member_watches_.end()) {
      for (auto b = before.rbegin(); b != before.rend(); ++b) {
        it->second.members.restore(b->first, b->second);
        it->second.dirty.insert(b->first);
      }
      if (adopted) it->second.adopted = std::move(adopted);
    }
    return fail(r.error());
  }
  for (const auto& obj : added)
    implemented(Implemented::Kind::kMember, client::object_key(*obj), std::get<api::NetworkAttachment>(*obj));
  return controllers::Requeue{};
}

Agent::PolicyWant Agent::policy_want_locked(const api::NetworkAttachment& na) const {
  PolicyWant w;
  if (na.spec.security_groups.empty()) return w;
  const std::string& ns = na.metadata.namespace_;
  const std::string domain = address_domain(na);
  std::vector<client::ObjectPtr> keep;
  std::vector<const api::SecurityGroup*> groups;
  for (const auto& name : na.spec.security_groups) {
    const std::string gkey = ns + "/" + name;
    auto it = group_informers_.find(gkey);
    if (it == group_informers_.end() || !it->second->has_synced()) continue;  // unknown yet: allows nothing
    auto obj = it->second->indexer().get(gkey);
    if (!obj) {
      w.in_force.push_back({name, ""});  // no such group: it allows nothing
      continue;
    }
    const auto& g = std::get<api::SecurityGroup>(*obj);
    groups.push_back(&g);
    keep.push_back(obj);
    bool members_known = true;
    for (const auto& ref : referenced_groups(g)) {
      auto m = member_watches_.find(member_set_name(ns, ref, domain));
      if (m == member_watches_.end() || !m->second.informer->has_synced()) members_known = false;
    }
    if (members_known) w.in_force.push_back({name, g.metadata.resource_version});
  }
  w.policy = build_policy(groups, ns, domain);
  return w;
}

Result<void> Agent::ensure_policy(const std::string& key, const api::NetworkAttachment& na,
                                  const fabric::LocalIfc& ifc, std::vector<api::SecurityGroupRevision>& in_force) {
  PolicyWant want;
  std::optional<fabric::Policy> have;
  {
    std::lock_guard lk(mu_);
    want = policy_want_locked(na);
    if (auto it = policies_.find(key); it != policies_.end()) have = it->second;
  }
  if (have != want.policy) {
    if (auto r = timed("set_policy", [&] { return fabric_.set_policy(ifc, want.policy); }); !r) return r;
    std::lock_guard lk(mu_);
    if (want.policy) policies_[key] = *want.policy;
    else policies_.erase(key);
  }
  if (want.in_force.size() == na.spec.security_groups.size() && !want.in_force.empty() &&
      want.in_force != na.status.security_groups_in_force)
    implemented(Implemented::Kind::kPolicy, key, na);
  in_force = std::move(want.in_force);
  return {};
}

Result<void> Agent::start() {
  local_.start();
  if (!local_.wait_for_sync(std::chrono::minutes(2)))
    return fail(Errc::kUnavailable, "agent: the local attachment informer did not sync");
  update_relevance();
  std::vector<client::Informer*> infs;
  {
    std::lock_guard lk(mu_);
    for (auto& [_, inf] : vni_informers_) infs.push_back(inf.get());
  }
  for (auto* inf : infs)
    if (!inf->wait_for_sync(std::chrono::minutes(2)))
      return fail(Errc::kUnavailable, "agent: a VNI informer did not sync");
  if (auto r = adopt(); !r) return r;
  started_ = true;  // before the workers exist: they read it
  controller_.start();
  spdlog::info("agent: started node={} locals={} remotes={} vnis={}", opts_.node, locals_.size(),
               remotes_.size(), infs.size());
  return {};
}

// The gauges are process-wide and several agents may share a process (kos simulate):
// each agent adds the change of its own counts. mu_ held.
void Agent::publish_counts() {
  locals_changed_.notify_all();  // every change of locals_ ends here
  auto move = [](metrics::Family<metrics::Gauge>& g, double& published, size_t now) {
    g.get().inc(static_cast<double>(now) - published);
    published = static_cast<double>(now);
  };
  move(agent_metrics().locals, published_.locals, locals_.size());
  move(agent_metrics().remotes, published_.remotes, remotes_.size());
  move(agent_metrics().vnis, published_.vnis, vni_informers_.size());
}

void Agent::place_guest(const std::string& key, const std::string& netns, const std::string& ifname) {
  std::lock_guard lk(mu_);
  placements_[key] = {netns, ifname};
}

void Agent::forget_placement(const std::string& key) {
  std::lock_guard lk(mu_);
  placements_.erase(key);
}

std::optional<fabric::LocalIfc> Agent::local(const std::string& key, const std::string& uid) const {
  std::lock_guard lk(mu_);
  auto it = locals_.find(key);
  if (it == locals_.end() || it->second.uid != uid) return std::nullopt;
  return it->second.ifc;
}

Result<std::optional<fabric::LocalIfc>> Agent::wait_local(const std::string& key, const std::string& uid, bool gone,
                                                          std::chrono::steady_clock::time_point deadline,
                                                          const std::function<bool()>& cancelled) const {
  std::unique_lock lk(mu_);
  for (;;) {
    auto it = locals_.find(key);
    const bool have = it != locals_.end() && it->second.uid == uid;
    if (have != gone) return have ? std::optional<fabric::LocalIfc>(it->second.ifc) : std::nullopt;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return fail(Errc::kTimeout, "timed out");
    if (cancelled) {
      lk.unlock();
      const bool stop = cancelled();
      lk.lock();
      if (stop) return fail(Errc::kCancelled, "cancelled");
    }
    locals_changed_.wait_until(lk, std::min(deadline, now + std::chrono::milliseconds(50)));
  }
}

void Agent::stop() {
  controller_.stop();
  std::map<uint32_t, std::unique_ptr<client::Informer>> infs;
  {
    std::lock_guard lk(mu_);
    infs.swap(vni_informers_);
  }
  for (auto& [_, inf] : infs) inf->stop();
  std::vector<std::unique_ptr<client::Informer>> policy_infs;
  {
    std::lock_guard lk(mu_);
    for (auto& [_, inf] : group_informers_) policy_infs.push_back(std::move(inf));
    for (auto& [_, w] : member_watches_) policy_infs.push_back(std::move(w.informer));
    group_informers_.clear();
    agent_metrics().member_watches.get().dec(static_cast<double>(member_watches_.size()));
    member_watches_.clear();
  }
  for (auto& inf : policy_infs) inf->stop();
  local_.stop();
  std::lock_guard lk(mu_);
  // A stopped agent no longer counts (its fabric state stays as it is).
  agent_metrics().locals.get().dec(published_.locals);
  agent_metrics().remotes.get().dec(published_.remotes);
  agent_metrics().vnis.get().dec(published_.vnis);
  published_ = {};
}

// What the fabric has that matches an attachment is kept (never removed and re-created
// across a restart); the rest is an orphan and goes. Orphans are decided from consistent
// lists (resourceVersion unset: read from the store, not from a watch cache that may lag
// behind another API server), so a restart never deletes a live interface.
Result<void> Agent::adopt() {
  auto locals = fabric_.list_local();
  if (!locals) return fail(locals.error());
  auto remotes = fabric_.list_remote();
  if (!remotes) return fail(remotes.error());
  auto sets = fabric_.list_sets();
  if (!sets) return fail(sets.error());
  auto policies = fabric_.list_policies();
  if (!policies) return fail(policies.error());
  client::ListOptions lo;
  lo.field_selector = "spec.node=" + opts_.node;
  auto local_list = client_->list<api::NetworkAttachment>("", lo);
  if (!local_list) return fail(local_list.error());
  std::map<std::string, std::pair<std::string, const api::NetworkAttachment*>> want_local;  // ifc name -> key
  for (const auto& na : *local_list) {
    auto ip = api::parse_ipv4(na.status.ipv4);
    if (!ip || na.status.address_vni == 0) continue;
    want_local[api::interface_name(api::guest_mac(*ip, na.status.address_vni))] = {
        client::object_key(na.metadata.namespace_, na.metadata.name), &na};
  }
  std::vector<std::pair<uint32_t, bool>> domains;  // (VNI, routed)
  {
    std::lock_guard lk(mu_);
    for (const auto& [vni, _] : vni_informers_) domains.emplace_back(vni, routed_domains_.contains(vni));
  }
  struct WantRemote {
    std::string key;
    AdoptedFloor floor;
  };
  std::map<std::pair<uint32_t, uint32_t>, WantRemote> want_remote;  // (vni, ip) -> attachment
  for (auto [vni, routed] : domains) {
    client::ListOptions ro;
    ro.field_selector = remote_selector(vni, routed);
    auto list = client_->list<api::NetworkAttachment>("", ro);
    if (!list) return fail(list.error());
    for (const auto& na : *list)
      if (auto ip = api::parse_ipv4(na.status.ipv4))
        want_remote[{na.status.address_vni, *ip}] = {client::object_key(na.metadata.namespace_, na.metadata.name),
                                                      {vni, client::revision_of(na.metadata.resource_version)}};
  }
  std::vector<fabric::LocalIfc> orphan_locals;
  std::vector<fabric::RemoteIfc> orphan_remotes;
  {
    std::lock_guard lk(mu_);
    for (const auto& ifc : *locals) {
      auto it = want_local.find(ifc.name);
      if (it == want_local.end()) {
        orphan_locals.push_back(ifc);
        continue;
      }
      const auto& na = *it->second.second;
      locals_[it->second.first] = LocalState{ifc, na.metadata.uid, na.spec.post_delete_exec};
      adopted_floor_[it->second.first] = {kLocal, client::revision_of(na.metadata.resource_version)};
      if (auto p = policies->find(ifc.name); p != policies->end()) policies_[it->second.first] = p->second;
      if (na.status.post_create_exec_report) execs_done_.insert(na.metadata.uid + "/" + ifc.name);
    }
    for (const auto& r : *remotes) {
      auto it = want_remote.find({r.vni, r.guest_ip});
      if (it == want_remote.end()) {
        orphan_remotes.push_back(r);
      } else {
        remotes_[it->second.key] = r;
        adopted_floor_[it->second.key] = it->second.floor;
      }
    }
    publish_counts();
    // Sets: a watched one is made exactly its members at its first sync; the others go
    // once no policy names them.
    for (auto& [name, elems] : *sets) {
      std::set<uint32_t> have(elems.begin(), elems.end());
      if (auto w = member_watches_.find(name); w != member_watches_.end()) {
        w->second.adopted = std::move(have);
        controller_.enqueue(std::string(kSetPrefix) + name);
      } else {
        adopted_sets_[name] = std::move(have);
      }
    }
  }
  for (const auto& [name, _] : adopted_sets_) controller_.enqueue(std::string(kSetPrefix) + name);
  // Fabric calls never under mu_ (informer handlers take it on the transport thread).
  for (const auto& ifc : orphan_locals) {
    spdlog::info("agent: removing orphan local interface {} (vni {})", ifc.name, ifc.vni);
    if (auto r = timed("delete_local", [&] { return fabric_.delete_local(ifc); }); !r) return r;
  }
  for (const auto& r : orphan_remotes) {
    spdlog::info("agent: removing orphan remote mapping vni={} ip={}", r.vni, api::format_ipv4(r.guest_ip));
    if (auto d = timed("delete_remote", [&] { return fabric_.delete_remote(r); }); !d) return d;
  }
  return {};
}

Result<controllers::Requeue> Agent::reconcile(const std::string& key) {
  if (key == kRelevanceKey) {
    update_relevance();
    return controllers::Requeue{};
  }
  if (key.starts_with(kSetPrefix)) return reconcile_set(key.substr(kSetPrefix.size()));
  client::ObjectPtr obj;
  uint32_t where = kLocal;
  {
    std::lock_guard lk(mu_);
    if (auto f = adopted_floor_.find(key); f != adopted_floor_.end()) {
      const client::Informer* inf = nullptr;
      if (f->second.informer == kLocal) inf = &local_;
      else if (auto v = vni_informers_.find(f->second.informer); v != vni_informers_.end()) inf = v->second.get();
      // Its informer shows an older state than adoption read: look again once it caught up.
      if (inf && client::revision_of(inf->resource_version()) < f->second.revision)
        return controllers::Requeue{false, std::chrono::milliseconds(50)};
      adopted_floor_.erase(f);
    }
    auto h = holders_.find(key);
    if (h != holders_.end() && h->second.size() > 1) return controllers::Requeue{};  // transient
    if (h != holders_.end()) {
      where = *h->second.begin();
      if (where == kLocal) obj = local_.indexer().get(key);
      else if (auto inf = vni_informers_.find(where); inf != vni_informers_.end())
        obj = inf->second->indexer().get(key);
    }
  }
  if (!obj) {
    forget_placement(key);  // deleted (a placement outlives only its attachment's unaddressed start)
    if (auto r = remove_local(key); !r) return fail(r.error());
    if (auto r = program_remote(key, nullptr); !r) return fail(r.error());
    return controllers::Requeue{};
  }
  if (where == kLocal) {
    if (auto r = program_remote(key, nullptr); !r) return fail(r.error());
    return ensure_local(key, std::get<api::NetworkAttachment>(*obj));
  }
  forget_placement(key);  // on another node now
  if (auto r = remove_local(key); !r) return fail(r.error());
  if (auto r = program_remote(key, obj); !r) return fail(r.error());
  return controllers::Requeue{};
}

namespace {

// How the attachment's VNI is routed (api: the status IPAM wrote from its Subnet).
fabric::Routing routing_of(const api::NetworkAttachment& na) {
  auto gw = api::parse_ipv4(na.status.gateway);
  if (na.status.routing_vni == 0 || !gw) return {};
  return fabric::Routing{na.status.routing_vni, *gw, na.status.prefix_length};
}

// The interface a local attachment wants (without a CNI placement), if it is addressed.
std::optional<fabric::LocalIfc> local_want(const api::NetworkAttachment& na) {
  auto ip = api::parse_ipv4(na.status.ipv4);
  if (!ip || na.status.address_vni == 0) return std::nullopt;
  fabric::LocalIfc want;
  want.vni = na.status.address_vni;
  want.guest_ip = *ip;
  want.mac = api::guest_mac(*ip, want.vni);
  want.name = api::interface_name(want.mac);
  want.routing = routing_of(na);
  return want;
}

// The mapping a remote attachment wants in the fabric, if any.
std::optional<fabric::RemoteIfc> remote_want(const client::ObjectPtr& obj) {
  if (!obj) return std::nullopt;
  const auto& na = std::get<api::NetworkAttachment>(*obj);
  auto ip = api::parse_ipv4(na.status.ipv4);
  auto host = api::parse_ipv4(na.status.host_ip);
  // Without an address and a host IP its node has not implemented it yet: no mapping.
  if (!ip || !host || na.status.address_vni == 0) return std::nullopt;
  return fabric::RemoteIfc{na.status.address_vni, api::guest_mac(*ip, na.status.address_vni), *ip, *host,
                           routing_of(na)};
}

}  // namespace

bool Agent::remote_unchanged_locked(const std::string& key, uint32_t informer, const client::ObjectPtr& obj) {
  if (locals_.count(key) || placements_.count(key)) return false;
  auto h = holders_.find(key);
  if (obj ? (h == holders_.end() || h->second.size() != 1 || *h->second.begin() != informer)
          : h != holders_.end())
    return false;
  auto want = remote_want(obj);
  auto r = remotes_.find(key);
  if (r == remotes_.end() ? want.has_value() : (!want || !(r->second == *want))) return false;
  // A worker holding the key may have read an older state (and taken its entry out of
  // remotes_): it must run again.
  return !controller_.queue().is_processing(key);
}

std::optional<Agent::RemoteWork> Agent::take_remote(const std::string& key, client::ObjectPtr obj) {
  RemoteWork w{key, remote_want(obj), std::nullopt, std::move(obj)};
  if (auto r = remotes_.find(key); r != remotes_.end()) {
    if (w.want && r->second == *w.want) return std::nullopt;  // as wanted
    w.old = r->second;
    // The entry is this worker's while it holds the key (the queue never gives a key to
    // two workers) until apply_remotes writes it back; mu_ is never held across a fabric
    // call (informer handlers take it on the client transport's thread).
    remotes_.erase(r);
  }
  if (!w.want && !w.old) return std::nullopt;
  return w;
}

Result<void> Agent::program_remote(const std::string& key, client::ObjectPtr obj) {
  std::vector<RemoteWork> work;
  {
    std::lock_guard lk(mu_);
    if (auto w = take_remote(key, std::move(obj))) work.push_back(std::move(*w));
    else return {};
    publish_counts();
  }
  return std::move(apply_remotes(work)[0]);
}

Agent::Plan Agent::plan_locked(const std::string& key, std::optional<RemoteWork>& work) {
  if (key.starts_with('@') || locals_.count(key)) return Plan::kGeneral;  // relevance, member sets, locals
  auto h = holders_.find(key);
  if (h != holders_.end() && h->second.size() > 1) return Plan::kNone;  // transient
  client::ObjectPtr obj;
  if (h != holders_.end()) {
    if (*h->second.begin() == kLocal) return Plan::kGeneral;
    if (auto inf = vni_informers_.find(*h->second.begin()); inf != vni_informers_.end())
      obj = inf->second->indexer().get(key);
  }
  work = take_remote(key, std::move(obj));
  return work ? Plan::kRemote : Plan::kNone;
}

std::optional<Result<controllers::Requeue>> Agent::reconcile_remote_now(const std::string& key) {
  std::vector<RemoteWork> work;
  {
    std::lock_guard lk(mu_);
    std::optional<RemoteWork> w;
    const Plan plan = plan_locked(key, w);
    if (plan == Plan::kGeneral) return std::nullopt;
    ++counts_.remote_inline;
    if (plan == Plan::kNone) return controllers::Requeue{};
    work.push_back(std::move(*w));
    publish_counts();
  }
  if (auto r = apply_remotes(work)[0]; !r) return fail(r.error());
  return controllers::Requeue{};
}

std::vector<Result<controllers::Requeue>> Agent::reconcile_batch(const std::vector<std::string>& keys) {
  std::vector<Result<controllers::Requeue>> out(keys.size(), controllers::Requeue{});
  std::vector<RemoteWork> work;
  std::vector<size_t> work_of;  // work[n] is keys[work_of[n]]'s
  std::vector<size_t> singles;  // keys for reconcile()
  {
    std::lock_guard lk(mu_);
    for (size_t i = 0; i < keys.size(); ++i) {
      std::optional<RemoteWork> w;
      switch (plan_locked(keys[i], w)) {
        case Plan::kGeneral: singles.push_back(i); break;
        case Plan::kNone: break;
        case Plan::kRemote:
          work.push_back(std::move(*w));
          work_of.push_back(i);
          break;
      }
    }
    if (!work.empty()) publish_counts();
  }
  for (size_t i : singles) out[i] = reconcile(keys[i]);
  if (work.empty()) return out;
  auto rs = apply_remotes(work);
  for (size_t n = 0; n < work.size(); ++n)
    if (!rs[n]) out[work_of[n]] = fail(rs[n].error());
  return out;
}

// Deletes first (an old mapping that a create would not replace: another guest IP or
// VNI), then creates, one Fabric::apply each.
std::vector<Result<void>> Agent::apply_remotes(const std::vector<RemoteWork>& work) {
  std::vector<Result<void>> out(work.size());
  std::vector<fabric::Change> deletes;
  std::vector<size_t> delete_of;
  auto replaced_by_create = [](const RemoteWork& w) {
    return w.want && w.old && w.want->vni == w.old->vni && w.want->guest_ip == w.old->guest_ip;
  };
  for (size_t n = 0; n < work.size(); ++n)
    if (work[n].old && !replaced_by_create(work[n])) {
      deletes.push_back(fabric::Change::remove(*work[n].old));
      delete_of.push_back(n);
    }
  std::vector<bool> delete_failed(work.size(), false);
  if (!deletes.empty()) {
    auto rs = timed("delete_remote", [&] { return fabric_.apply(deletes); });
    for (size_t d = 0; d < rs.size(); ++d)
      if (!rs[d]) {
        delete_failed[delete_of[d]] = true;
        out[delete_of[d]] = fail(rs[d].error());
      }
  }
  std::vector<fabric::Change> creates;
  std::vector<size_t> create_of;
  for (size_t n = 0; n < work.size(); ++n)
    if (!delete_failed[n] && work[n].want) {
      creates.push_back(fabric::Change::create(*work[n].want));
      create_of.push_back(n);
    }
  std::vector<bool> created(work.size(), false);
  if (!creates.empty()) {
    auto rs = timed("create_remote", [&] { return fabric_.apply(creates); });
    for (size_t c = 0; c < rs.size(); ++c) {
      if (rs[c]) created[create_of[c]] = true;
      else out[create_of[c]] = fail(rs[c].error());
    }
  }
  {
    std::lock_guard lk(mu_);
    for (size_t n = 0; n < work.size(); ++n) {
      const RemoteWork& w = work[n];
      if (created[n]) remotes_[w.key] = *w.want;
      else if (delete_failed[n] || replaced_by_create(w)) remotes_[w.key] = *w.old;  // still there: tried again later
    }
    publish_counts();
  }
  for (size_t n = 0; n < work.size(); ++n) {
    if (!created[n]) continue;
    const auto& na = std::get<api::NetworkAttachment>(*work[n].obj);
    if (auto t = na.extended_metadata.write_time(api::section::kImpl))
      agent_metrics().write_to_remote.get().observe(std::chrono::system_clock::now() - *t);
    implemented(Implemented::Kind::kRemote, work[n].key, na);
  }
  return out;
}

bool Agent::local_unchanged_locked(const std::string& key, const api::NetworkAttachment& na) {
  auto l = locals_.find(key);
  if (l == locals_.end() || l->second.uid != na.metadata.uid || placements_.count(key) ||
      adopted_floor_.count(key) || l->second.post_delete_exec != na.spec.post_delete_exec)
    return false;
  auto want = local_want(na);
  if (!want || l->second.ifc != *want) return false;
  // What ensure_local would write into the status, and its policy and exec.
  const auto& st = na.status;
  if (st.mac_address != api::format_mac(want->mac) || st.ifc_name != want->name ||
      st.host_ip != api::format_ipv4(opts_.host_ip) || !st.errors.host.empty())
    return false;
  auto pw = policy_want_locked(na);
  auto p = policies_.find(key);
  if ((p == policies_.end() ? std::optional<fabric::Policy>() : std::optional<fabric::Policy>(p->second)) != pw.policy ||
      pw.in_force != st.security_groups_in_force)
    return false;
  if (!na.spec.post_create_exec.empty() && !execs_done_.count(na.metadata.uid + "/" + want->name) &&
      !st.post_create_exec_report)
    return false;
  return !controller_.queue().is_processing(key);
}

Result<controllers::Requeue> Agent::ensure_local(const std::string& key, const api::NetworkAttachment& na) {
  auto local = local_want(na);
  if (!local) {
    if (auto r = remove_local(key); !r) return fail(r.error());
    return controllers::Requeue{};
  }
  fabric::LocalIfc want = std::move(*local);
  {
    // A CNI ADD in progress for it: the guest end is made in the container's namespace.
    std::lock_guard lk(mu_);
    if (auto p = placements_.find(key); p != placements_.end()) {
      want.guest_netns = p->second.first;
      want.guest_ifname = p->second.second;
    }
  }
  // Only the worker holding `key` changes locals_[key] (the queue never gives a key to two
  // workers), so the entry can be read, the fabric called without mu_, and the entry
  // written back. No mutex is held across a fabric or an API call: informer handlers take
  // mu_ on the client transport's thread, which those calls may need.
  std::optional<LocalState> old;
  bool have = false;  // the interface exists as wanted
  {
    std::lock_guard lk(mu_);
    auto it = locals_.find(key);
    if (it != locals_.end() && (it->second.ifc != want || it->second.uid != na.metadata.uid)) {
      // The address (or the incarnation) changed: the old interface goes first.
      old = it->second;
      locals_.erase(it);
      publish_counts();
    } else if (it != locals_.end()) {
      it->second.post_delete_exec = na.spec.post_delete_exec;  // mutable in the spec
      have = true;
    }
  }
  if (old) {
    if (auto r = timed("delete_local", [&] { return fabric_.delete_local(old->ifc); }); !r) {
      std::lock_guard lk(mu_);
      locals_[key] = *old;  // still there: try again later
      publish_counts();
      return fail(r.error());
    }
    std::lock_guard lk(mu_);
    policies_.erase(key);
  }
  if (!have) {
    if (auto r = timed("create_local", [&] { return fabric_.create_local(want); }); !r) {
      api::NetworkAttachment next = na;
      next.status.errors.host = {"cannot create interface " + want.name + ": " + r.error().message};
      if (next.status != na.status) (void)client_->update_status(next);
      return fail(r.error());
    }
    {
      std::lock_guard lk(mu_);
      locals_[key] = LocalState{want, na.metadata.uid, na.spec.post_delete_exec};
      publish_counts();
    }
    if (auto t = na.extended_metadata.write_time(api::section::kAddress))
      agent_metrics().write_to_local.get().observe(std::chrono::system_clock::now() - *t);
    implemented(Implemented::Kind::kLocal, key, na);
  }

  // Security groups: in force before the guest is told it is ready (and before its
  // postCreateExec, which may start it).
  std::vector<api::SecurityGroupRevision> in_force;
  if (auto r = ensure_policy(key, na, want, in_force); !r) {
    api::NetworkAttachment next = na;
    next.status.errors.host = {"cannot enforce security groups on " + want.name + ": " + r.error().message};
    if (next.status != na.status) (void)client_->update_status(next);
    return fail(r.error());
  }

  api::NetworkAttachment next = na;
  next.status.security_groups_in_force = std::move(in_force);
  next.status.mac_address = api::format_mac(want.mac);
  next.status.ifc_name = want.name;
  next.status.host_ip = api::format_ipv4(opts_.host_ip);
  next.status.errors.host.clear();
  std::string exec_key = na.metadata.uid + "/" + want.name;
  bool run = false;
  {
    // Once per interface: an interface this agent has just created (again, after a node
    // lost it) gets its postCreateExec again, even if the status reports an earlier run.
    std::lock_guard lk(mu_);
    if (!have) execs_done_.erase(exec_key);
    run = !na.spec.post_create_exec.empty() && !execs_done_.count(exec_key) &&
          (!have || !na.status.post_create_exec_report);
  }
  if (run) {
    next.status.post_create_exec_report = run_exec("postCreateExec", na.spec.post_create_exec, want);
    std::lock_guard lk(mu_);
    execs_done_.insert(exec_key);
  }
  if (next.status == na.status) return controllers::Requeue{};
  {
    // Its event may come back before the write's answer does.
    std::lock_guard lk(mu_);
    status_echo_[key] = StatusEcho{na.metadata.uid, na.metadata.generation, next.status};
  }
  auto w = client_->update_status(next);
  if (!w) {
    std::lock_guard lk(mu_);
    status_echo_.erase(key);
  }
  if (w)
    if (auto t = na.extended_metadata.write_time(api::section::kAddress); t && na.status.ifc_name.empty())
      agent_metrics().write_to_status.get().observe(std::chrono::system_clock::now() - *t);
  if (!w && w.error().code != Errc::kNotFound) {
    // The report must not be lost: run again is prevented, so keep it for the retry.
    if (run) {
      std::lock_guard lk(mu_);
      execs_done_.erase(exec_key);
    }
    return fail(w.error());
  }
  return controllers::Requeue{};
}

void Agent::implemented(Implemented::Kind kind, const std::string& key, const api::NetworkAttachment& na) {
  if (!opts_.on_implemented) return;
  opts_.on_implemented(Implemented{kind, opts_.node, key, na.metadata.uid, na.status.address_vni,
                                   std::chrono::system_clock::now()});
}

Result<void> Agent::remove_local(const std::string& key) {
  LocalState st;
  {
    std::lock_guard lk(mu_);
    auto it = locals_.find(key);
    if (it == locals_.end()) return {};
    st = it->second;
    locals_.erase(it);
    publish_counts();
  }
  if (auto r = timed("delete_local", [&] { return fabric_.delete_local(st.ifc); }); !r) {
    std::lock_guard lk(mu_);
    locals_[key] = st;  // try again later
    return r;
  }
  {
    std::lock_guard lk(mu_);
    policies_.erase(key);  // the policy went with the interface
  }
  if (!st.post_delete_exec.empty()) {
    auto report = run_exec("postDeleteExec", st.post_delete_exec, st.ifc);
    spdlog::info("agent: postDeleteExec for {} exited {}", key, report.exit_status);
  }
  return {};
}

// Runs an allow-listed program (in the node's network namespace when --netns is set) with
// ${ifname}, ${ipv4}, ${mac}, ${gateway}, ${node} and ${netns} expanded; never through a shell. A
// program named without a '/' is the allow-listed program of that file name.
api::ExecReport Agent::run_exec(const char* kind, const std::vector<std::string>& command,
                                const fabric::LocalIfc& ifc) {
  api::ExecReport rep;
  for (const auto& a : command) rep.command.push_back(expand(a, ifc, opts_));
  rep.start_time = micro_now();
  auto finish = [&](int status, std::string err) {
    rep.exit_status = status;
    rep.std_err = std::move(err);
    rep.stop_time = micro_now();
    agent_metrics().exec.with({kind}).observe(
            std::chrono::duration<double>(rep.stop_time - rep.start_time).count());
    return rep;
  };
  if (rep.command.empty()) return finish(-1, "empty command");
  std::string program;
  for (const auto& allowed : opts_.allowed_programs)
    if (allowed == rep.command[0] ||
        (rep.command[0].find('/') == std::string::npos && std::filesystem::path(allowed).filename() == rep.command[0]))
      program = allowed;
  if (program.empty()) return finish(-1, "program " + rep.command[0] + " is not on this agent's allow-list");
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0) return finish(-1, "pipe failed");
  if (pipe2(err, O_CLOEXEC) != 0) {
    close(out[0]);
    close(out[1]);
    return finish(-1, "pipe failed");
  }
  std::vector<std::string> args = rep.command;
  args[0] = program;
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::string netns_path = opts_.netns.empty() ? "" : "/var/run/netns/" + opts_.netns;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    if (!netns_path.empty()) {
      int fd = open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) _exit(126);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  if (pid < 0) {
    close(out[0]);
    close(err[0]);
    return finish(-1, "fork failed");
  }
  std::string so, se;
  auto deadline = std::chrono::steady_clock::now() + opts_.exec_timeout;
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  int open_fds = 2;
  bool timed_out = false;
  while (open_fds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    if (poll(fds, 2, static_cast<int>(left.count())) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      char buf[4096];
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        fds[i].fd = -1;
        --open_fds;
        continue;
      }
      std::string& dst = i == 0 ? so : se;
      if (dst.size() < 4096) dst.append(buf, static_cast<size_t>(std::min<ssize_t>(n, 4096 - static_cast<ssize_t>(dst.size()))));
    }
  }
  close(out[0]);
  close(err[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  rep.std_out = so;
  if (timed_out) return finish(-1, se + "\nkilled after " + std::to_string(opts_.exec_timeout.count()) + " s");
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  if (code == 127) se += (se.empty() ? "" : "\n") + std::string("cannot execute ") + rep.command[0];
  if (code == 126 && !netns_path.empty()) se += (se.empty() ? "" : "\n") + std::string("cannot enter network namespace ") + opts_.netns;
  return finish(code, se);
}

}  // namespace kos::agent
