// Security groups in the agent, end to end on one machine: a `kos apiserver` and a
// controller-manager (subnet validator + IPAM) as processes, connection agents in this
// process on fake fabrics (the agent's work and its watches, not the kernel's; the linux
// fabric's nftables costs are src/fabric/linux's policy test). Prints:
//
//  1. create -> rules in force: attachments in group `servers` (whose rule names group
//     `clients`) created at --rate on --nodes agents; from the create call to the agent
//     reporting the policy in force (Implemented::kPolicy), beside create -> interface
//     made (kLocal) of the same attachments: what policy adds.
//  2. member update -> in force on every node that uses the group, for groups of each
//     --sizes members: --users agents hold one attachment each in a group whose rule
//     names `clients-M`; the M members live on a node without an agent (only IPAM
//     addresses them). Then --updates times: one member is created and the time until
//     every user node has its address in its set (Implemented::kMember) is measured from
//     the create call and from the address write (the member's status.address time).
//  3. agent memory per remote member: the process's RSS growth while the user agents load
//     the members of the largest group, per member per user agent.
//
// Usage: kos-bench-sg [--nodes 10] [--creates 300] [--rate 100] [--users 5]
//                     [--sizes 10,1000,10000] [--updates 30]
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "agent/agent.h"
#include "fabric/fake/fake_fabric.h"
#include "test/controllers/harness.h"

namespace {

using namespace std::chrono_literals;
using kos::ctltest::poll_until;
using SysTime = std::chrono::system_clock::time_point;
namespace api = kos::api;

struct Options {
  int nodes = 10;
  int creates = 300;
  double rate = 100;
  int users = 5;
  std::vector<int> sizes{10, 1000, 10000};
  int updates = 30;
};

// Every Implemented record, by (kind, key): node -> time.
class Recorder {
 public:
  void record(const kos::agent::Implemented& i) {
    std::lock_guard lk(mu_);
    auto& m = seen_[{static_cast<int>(i.kind), i.key}];
    m.emplace(i.node, i.at);
  }
  std::map<std::string, SysTime> of(kos::agent::Implemented::Kind k, const std::string& key) const {
    std::lock_guard lk(mu_);
    auto it = seen_.find({static_cast<int>(k), key});
    return it == seen_.end() ? std::map<std::string, SysTime>{} : it->second;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::pair<int, std::string>, std::map<std::string, SysTime>> seen_;
};

double ms(std::chrono::system_clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

std::string quantiles(std::vector<double> v) {
  if (v.empty()) return "no samples";
  std::sort(v.begin(), v.end());
  auto q = [&](double p) { return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))]; };
  char buf[160];
  std::snprintf(buf, sizeof buf, "p50 %7.1f ms  p99 %7.1f ms  max %7.1f ms  (n=%zu)", q(0.5), q(0.99), v.back(), v.size());
  return buf;
}

long rss_kib() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return 0;
}

api::SecurityGroup group(const std::string& ns, const std::string& name, const std::string& from) {
  api::SecurityGroup g;
  g.metadata.namespace_ = ns;
  g.metadata.name = name;
  if (!from.empty()) g.spec.ingress = {{"tcp", {"22", "443"}, {{"", from}}}};
  g.spec.egress = {{"any", {}, {{"0.0.0.0/0", ""}}}};
  return g;
}

api::NetworkAttachment member(const std::string& ns, const std::string& name, const std::string& node,
                              std::vector<std::string> groups) {
  auto na = kos::ctltest::make_attachment(ns, name, "net", node);
  na.spec.security_groups = std::move(groups);
  return na;
}

struct Bench {
  Options o;
  kos::ctltest::ApiServer server;
  std::unique_ptr<kos::ctltest::KosProcess> controllers;
  std::shared_ptr<kos::client::RestClient> c;
  Recorder rec;
  std::vector<std::unique_ptr<kos::fabric::FakeFabric>> fabrics;
  std::vector<std::unique_ptr<kos::agent::Agent>> agents;

  bool start() {
    if (auto e = server.start(); !e.empty()) {
      std::fprintf(stderr, "kos-bench-sg: apiserver: %s\n", e.c_str());
      return false;
    }
    c = server.client();
    controllers = kos::ctltest::controller_manager(server, "controller-manager", "subnet-validator,ipam");
    controllers->start();
    return true;
  }
  kos::agent::Agent* add_agent(const std::string& node, uint32_t host_ip) {
    fabrics.push_back(std::make_unique<kos::fabric::FakeFabric>());
    kos::agent::AgentOptions ao;
    ao.node = node;
    ao.host_ip = host_ip;
    ao.workers = 2;
    ao.on_implemented = [this](const kos::agent::Implemented& i) { rec.record(i); };
    agents.push_back(std::make_unique<kos::agent::Agent>(server.client(), *fabrics.back(), ao));
    if (auto r = agents.back()->start(); !r) {
      std::fprintf(stderr, "kos-bench-sg: agent %s: %s\n", node.c_str(), r.error().message.c_str());
      return nullptr;
    }
    return agents.back().get();
  }
  bool subnet(const std::string& ns, const std::string& cidr, uint32_t vni) {
    if (!c->create(kos::ctltest::make_subnet(ns, "net", cidr, vni))) return false;
    return poll_until([&] {
      auto s = c->get<api::Subnet>(ns, "net");
      return s && s->status.validated;
    }, 30s);
  }
};

int create_to_in_force(Bench& b) {
  const std::string ns = "sg-create";
  if (!b.subnet(ns, "10.20.0.0/16", 4100)) return 1;
  if (!b.c->create(group(ns, "servers", "clients")) || !b.c->create(group(ns, "clients", ""))) return 1;
  const size_t first_agent = b.agents.size();
  for (int n = 0; n < b.o.nodes; ++n)
    if (!b.add_agent("c-node" + std::to_string(n), 0x0a640000u + static_cast<uint32_t>(n) + 1)) return 1;
  std::map<std::string, SysTime> created;
  const auto gap = std::chrono::duration<double>(1.0 / b.o.rate);
  auto next = std::chrono::steady_clock::now();
  for (int i = 0; i < b.o.creates; ++i) {
    std::this_thread::sleep_until(next);
    next += std::chrono::duration_cast<std::chrono::steady_clock::duration>(gap);
    const std::string name = "srv-" + std::to_string(i);
    const auto t0 = std::chrono::system_clock::now();
    if (!kos::ctltest::with_retries([&] {
          return b.c->create(member(ns, name, "c-node" + std::to_string(i % b.o.nodes), {"servers"}));
        }))
      return 1;
    created[ns + "/" + name] = t0;
  }
  std::vector<double> policy, local;
  poll_until([&] {
    for (const auto& [key, _] : created)
      if (b.rec.of(kos::agent::Implemented::Kind::kPolicy, key).empty()) return false;
    return true;
  }, 60s);
  for (const auto& [key, t0] : created) {
    auto p = b.rec.of(kos::agent::Implemented::Kind::kPolicy, key);
    auto l = b.rec.of(kos::agent::Implemented::Kind::kLocal, key);
    if (!p.empty()) policy.push_back(ms(p.begin()->second - t0));
    if (!l.empty()) local.push_back(ms(l.begin()->second - t0));
  }
  std::printf("\n1. create -> in force: %d attachments in group servers (its rule names group clients), %.0f/s on %d agents\n",
              b.o.creates, b.o.rate, b.o.nodes);
  std::printf("   create -> interface made    %s\n", quantiles(local).c_str());
  std::printf("   create -> rules in force    %s\n", quantiles(policy).c_str());
  uint64_t irrelevant = 0;
  for (size_t i = first_agent; i < b.agents.size(); ++i) irrelevant += b.agents[i]->counts().irrelevant_member_events;
  std::printf("   irrelevant member events: %llu\n", static_cast<unsigned long long>(irrelevant));
  return policy.size() == created.size() ? 0 : 1;
}

int member_updates(Bench& b) {
  std::printf("\n2. member added -> in the set of every node that uses the group (%d user nodes, %d updates per size)\n",
              b.o.users, b.o.updates);
  int rc = 0;
  uint32_t vni = 4200;
  for (int size : b.o.sizes) {
    const std::string ns = "sg-m" + std::to_string(size), clients = "clients";
    if (!b.subnet(ns, "10.64.0.0/16", vni++)) return 1;
    if (!b.c->create(group(ns, "servers", clients)) || !b.c->create(group(ns, clients, ""))) return 1;
    // The members, on a node without an agent: IPAM addresses them, nobody implements them.
    std::atomic<int> failed{0};
    kos::ctltest::parallel_for(size, 8, [&](int i) {
      if (!kos::ctltest::with_retries([&] { return b.c->create(member(ns, "m-" + std::to_string(i), "elsewhere", {clients})); }))
        ++failed;
    });
    if (failed > 0) return 1;
    if (!poll_until([&] {
          kos::client::ListOptions lo;
          lo.field_selector = "status.ipv4!=";
          auto l = b.c->list<api::NetworkAttachment>(ns, lo);
          return l && static_cast<int>(l->size()) == size;
        }, 300s)) {
      std::fprintf(stderr, "kos-bench-sg: the %d members were not all addressed\n", size);
      return 1;
    }
    // The users: one agent each, one attachment in servers.
    const long rss0 = rss_kib();
    std::vector<kos::fabric::FakeFabric*> users;
    for (int u = 0; u < b.o.users; ++u) {
      const std::string node = ns + "-u" + std::to_string(u);
      if (!b.add_agent(node, 0x0a650000u + static_cast<uint32_t>(size) * 16 + static_cast<uint32_t>(u) + 1)) return 1;
      users.push_back(b.fabrics.back().get());
      if (!b.c->create(member(ns, "user-" + std::to_string(u), node, {"servers"}))) return 1;
    }
    const auto loaded = [&](size_t want) {
      for (auto* f : users) {
        auto sets = f->sets();
        if (sets.size() != 1 || sets.begin()->second.size() != want) return false;
      }
      return true;
    };
    if (!poll_until([&] { return loaded(static_cast<size_t>(size)); }, 120s)) {
      std::fprintf(stderr, "kos-bench-sg: the user nodes did not load the %d members\n", size);
      return 1;
    }
    const long rss1 = rss_kib();
    std::vector<double> from_create, from_address;
    for (int k = 0; k < b.o.updates; ++k) {
      const std::string name = "new-" + std::to_string(k), key = ns + "/" + name;
      const auto t0 = std::chrono::system_clock::now();
      if (!b.c->create(member(ns, name, "elsewhere", {clients}))) return 1;
      const bool all = poll_until([&] {
        auto seen = b.rec.of(kos::agent::Implemented::Kind::kMember, key);
        size_t n = 0;
        for (int u = 0; u < b.o.users; ++u) n += seen.count(ns + "-u" + std::to_string(u));
        return n == static_cast<size_t>(b.o.users);
      }, 30s, 1ms);
      if (!all) {
        ++rc;
        continue;
      }
      auto seen = b.rec.of(kos::agent::Implemented::Kind::kMember, key);
      SysTime last{};
      for (int u = 0; u < b.o.users; ++u) last = std::max(last, seen.at(ns + "-u" + std::to_string(u)));
      from_create.push_back(ms(last - t0));
      auto na = b.c->get<api::NetworkAttachment>(ns, name);
      if (na)
        if (auto t = na->extended_metadata.write_time(api::section::kAddress)) from_address.push_back(ms(last - *t));
    }
    std::printf("   group of %5d: from create  %s\n", size, quantiles(from_create).c_str());
    std::printf("   group of %5d: from address %s\n", size, quantiles(from_address).c_str());
    if (size == b.o.sizes.back() && size >= 1000)
      std::printf("   agent memory per remote member: %.0f bytes (RSS +%ld KiB for %d members on %d agents)\n",
                  static_cast<double>(rss1 - rss0) * 1024.0 / (static_cast<double>(size) * b.o.users), rss1 - rss0, size,
                  b.o.users);
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"kos-bench-sg: security groups in the agent: create -> rules in force, member update -> in force "
               "on every node using the group (by group size), agent memory per remote member"};
  app.add_option("--nodes", o.nodes, "agents for the create -> in force part")->capture_default_str();
  app.add_option("--creates", o.creates, "attachments created in that part")->capture_default_str();
  app.add_option("--rate", o.rate, "their creates per second")->capture_default_str();
  app.add_option("--users", o.users, "agents that use each group in the member part")->capture_default_str();
  app.add_option("--sizes", o.sizes, "group sizes (members) of the member part")->delimiter(',')->capture_default_str();
  app.add_option("--updates", o.updates, "members added per size")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  Bench b;
  b.o = o;
  if (!b.start()) return 1;
  int rc = create_to_in_force(b);
  rc |= member_updates(b);
  for (auto& a : b.agents) a->stop();
  return rc == 0 ? 0 : 1;
}
