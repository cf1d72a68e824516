// kos-bench-agent: the connection agent against a real `kos apiserver` (embedded store).
//
//   cold-start    For each count N (default 1,000, 2,500, 5,000, 10,000): the store holds
//                 one local attachment of this node and N remote attachments of its VNI on
//                 other nodes (written directly with their status, no controllers). An
//                 agent starts in-process on the linux fabric in a fresh network
//                 namespace and the time until all N remote mappings are in the kernel is
//                 measured (goal < 1 s at 10,000, linear in N). Then a second agent starts
//                 on the same namespace (a restart: everything is adopted, nothing
//                 re-programmed), and the same with the fake fabric (the control plane
//                 alone).
//   create-ready  The 3-node cluster of the end-to-end tests (test/e2e/cluster.h): API
//                 server, controller-manager and three `kos agent --fabric linux --netns`
//                 processes; attachments are created at a steady rate over two VNIs and
//                 the three nodes, and the time from the create call to status.ipv4
//                 (addressed) and to status.ifcName (ready) is measured by an informer.
//
// Needs root (network namespaces).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <thread>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "agent/agent.h"
#include "api/cidr.h"
#include "api/names.h"
#include "client/informer.h"
#include "fabric/fake/fake_fabric.h"
#include "fabric/linux/linux_fabric.h"
#include "test/e2e/cluster.h"
#include "test/support/netns.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using kos::api::NetworkAttachment;

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

using Netns = kos::testing::ScopedNetns;

// ---- cold start ------------------------------------------------------------------------

constexpr uint32_t kVni = 777;
const std::string kNs = "bench";
const std::string kNode = "bench-node";

// An attachment as its node's agent would have left it: addressed and implemented.
NetworkAttachment implemented(int i, const std::string& node, const std::string& host_ip) {
  auto na = kos::ctltest::make_attachment(kNs, "na-" + std::to_string(i), "s", node);
  uint32_t ip = *kos::api::parse_ipv4("10.64.0.0") + 2 + static_cast<uint32_t>(i);
  na.status.ipv4 = kos::api::format_ipv4(ip);
  na.status.address_vni = kVni;
  na.status.mac_address = kos::api::format_mac(kos::api::guest_mac(ip, kVni));
  na.status.ifc_name = kos::api::interface_name(kos::api::guest_mac(ip, kVni));
  na.status.host_ip = host_ip;
  return na;
}

// Creates attachments [from, to) with their status, on 16 threads.
bool populate(kos::client::RestClient& c, int from, int to) {
  std::atomic<int> failures{0};
  kos::ctltest::parallel_for(to - from, 16, [&](int k) {
    int i = from + k;
    bool local = i == 0;
    auto na = implemented(i, local ? kNode : "remote-" + std::to_string(i % 50),
                          local ? "10.99.0.1" : "10.99.1." + std::to_string(1 + i % 50));
    auto created = kos::ctltest::with_retries([&] { return c.create(na); });
    if (!created) {
      ++failures;
      return;
    }
    auto next = *created;
    next.status = na.status;
    if (!kos::ctltest::with_retries([&] { return c.update_status(next); })) ++failures;
  });
  return failures == 0;
}

struct StartResult {
  double start_s = 0;     // Agent::start(): informers synced, fabric read, adoption
  double converged_s = 0; // until every remote mapping is programmed (or adopted)
  size_t programmed = 0;  // remote mappings the fabric was asked to create
};

// Starts an agent and waits until it has programmed `expect` remote mappings; with expect
// 0 (a restart over a full kernel) converged is the end of start() (adoption), and a
// moment later the count of mappings programmed anyway is recorded (should be 0).
StartResult start_agent(const std::string& kubeconfig, kos::fabric::Fabric& fab, size_t expect) {
  kos::client::ClientOptions co;
  co.qps = 0;
  auto client = kos::client::RestClient::from_kubeconfig(kubeconfig, co);
  if (!client) throw std::runtime_error(client.error().message);
  std::atomic<size_t> programmed{0};
  kos::agent::AgentOptions ao;
  ao.node = kNode;
  ao.host_ip = *kos::api::parse_ipv4("10.99.0.1");
  ao.workers = 4;
  ao.on_implemented = [&](const kos::agent::Implemented& e) {
    if (e.kind == kos::agent::Implemented::Kind::kRemote) ++programmed;
  };
  StartResult r;
  auto t0 = Clock::now();
  kos::agent::Agent agent(*client, fab, ao);
  if (auto s = agent.start(); !s) throw std::runtime_error(s.error().message);
  r.start_s = seconds(Clock::now() - t0);
  if (expect == 0) {
    r.converged_s = r.start_s;
    std::this_thread::sleep_for(300ms);
  } else {
    while (programmed < expect) {
      if (Clock::now() - t0 > 120s) throw std::runtime_error("agent did not converge in 120 s");
      std::this_thread::sleep_for(200us);
    }
    r.converged_s = seconds(Clock::now() - t0);
  }
  r.programmed = programmed;
  agent.stop();
  return r;
}

int cold_start(const std::vector<int>& counts) {
  kos::ctltest::ApiServer server({}, "warn");
  if (auto e = server.start(); !e.empty()) {
    std::fprintf(stderr, "apiserver: %s\n", e.c_str());
    return 1;
  }
  auto c = server.client();
  if (!c->create(kos::ctltest::make_subnet(kNs, "s", "10.64.0.0/16", kVni))) return 1;
  std::printf("agent cold start: one local attachment, N remote attachments of its VNI in the store\n");
  std::printf("%8s %10s %12s %12s %12s %12s %12s %12s\n", "N", "fabric", "start s", "converged s",
              "us/mapping", "programmed", "restart s", "re-programmed");
  int have = 0;
  double per_mapping_first = 0, per_mapping_last = 0;
  for (int n : counts) {
    auto t0 = Clock::now();
    if (!populate(*c, have, n + 1)) {
      std::fprintf(stderr, "populating the store failed\n");
      return 1;
    }
    have = n + 1;
    std::fprintf(stderr, "(store: %d attachments, written in %.1f s)\n", n + 1, seconds(Clock::now() - t0));
    Netns ns("kos-bench-agent-" + std::to_string(getpid()) + "-" + std::to_string(n));
    kos::fabric::LinuxFabricOptions lo;
    lo.host_ip = *kos::api::parse_ipv4("10.99.0.1");
    lo.netns = ns.name();
    StartResult cold, warm;
    {
      auto fab = kos::fabric::LinuxFabric::open(lo);
      if (!fab) throw std::runtime_error(fab.error().message);
      cold = start_agent(server.kubeconfig().string(), **fab, static_cast<size_t>(n));
    }
    {
      auto fab = kos::fabric::LinuxFabric::open(lo);
      if (!fab) throw std::runtime_error(fab.error().message);
      warm = start_agent(server.kubeconfig().string(), **fab, 0);
      if (warm.programmed != 0) std::fprintf(stderr, "restart re-programmed %zu mappings\n", warm.programmed);
    }
    double us = cold.converged_s / n * 1e6;
    if (per_mapping_first == 0) per_mapping_first = us;
    per_mapping_last = us;
    std::printf("%8d %10s %12.3f %12.3f %12.1f %12zu %12.3f %12zu\n", n, "linux", cold.start_s, cold.converged_s, us,
                cold.programmed, warm.converged_s, warm.programmed);
    kos::fabric::FakeFabric fake;
    auto f = start_agent(server.kubeconfig().string(), fake, static_cast<size_t>(n));
    std::printf("%8d %10s %12.3f %12.3f %12.1f %12zu %12s %12s\n", n, "fake", f.start_s, f.converged_s,
                f.converged_s / n * 1e6, f.programmed, "-", "-");
    std::fflush(stdout);
  }
  std::printf("linearity: time per mapping at the largest N / at the smallest N = %.2f (1.0 = linear)\n",
              per_mapping_last / per_mapping_first);
  return 0;
}

// ---- create -> ready on 3 nodes ---------------------------------------------------------

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

int create_ready(int count, double rate) {
  kos::e2e::Cluster cluster(kos::e2e::Cluster::Options{});
  if (auto e = cluster.start(); !e.empty()) {
    std::fprintf(stderr, "cluster: %s\n", e.c_str());
    return 1;
  }
  auto c = cluster.client();
  const uint32_t vnis[2] = {5101, 5102};
  for (int v = 0; v < 2; ++v)
    if (!c->create(kos::ctltest::make_subnet("bench-" + std::to_string(v), "s", "10.70.0.0/20", vnis[v]))) return 1;

  std::mutex mu;
  std::map<std::string, Clock::time_point> started;  // ns/name -> create call start
  std::map<std::string, double> addressed, ready;
  kos::client::Informer informer(c, {});
  auto seen = [&](const kos::client::ObjectPtr& o) {
    const auto& na = std::get<NetworkAttachment>(*o);
    auto now = Clock::now();
    std::lock_guard lk(mu);
    auto key = na.metadata.namespace_ + "/" + na.metadata.name;
    auto it = started.find(key);
    if (it == started.end()) return;
    if (!na.status.ipv4.empty() && !addressed.count(key)) addressed[key] = seconds(now - it->second);
    if (!na.status.ifc_name.empty() && !ready.count(key)) ready[key] = seconds(now - it->second);
  };
  informer.add_handlers({seen, [&](const kos::client::ObjectPtr&, const kos::client::ObjectPtr& o) { seen(o); }, {}});
  informer.start();
  if (!informer.wait_for_sync(30s)) return 1;

  std::vector<double> create_s;
  auto t_begin = Clock::now();
  for (int i = 0; i < count; ++i) {
    auto due = t_begin + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(i / rate));
    std::this_thread::sleep_until(due);
    int v = i % 2;
    auto na = kos::ctltest::make_attachment("bench-" + std::to_string(v), "na-" + std::to_string(i), "s",
                                            cluster.node_name((i / 2) % 3));
    auto t0 = Clock::now();
    {
      std::lock_guard lk(mu);
      started[na.metadata.namespace_ + "/" + na.metadata.name] = t0;
    }
    if (!c->create(na)) {
      std::fprintf(stderr, "create failed\n");
      return 1;
    }
    create_s.push_back(seconds(Clock::now() - t0));
  }
  auto deadline = Clock::now() + 60s;
  while (Clock::now() < deadline) {
    {
      std::lock_guard lk(mu);
      if (static_cast<int>(ready.size()) == count) break;
    }
    std::this_thread::sleep_for(10ms);
  }
  informer.stop();
  std::vector<double> a, r;
  {
    std::lock_guard lk(mu);
    for (auto& [_, s] : addressed) a.push_back(s);
    for (auto& [_, s] : ready) r.push_back(s);
  }
  std::printf("create->ready on 3 nodes (linux fabric, kernel VXLAN in namespaces): %d attachments at %.0f/s over "
              "2 VNIs\n",
              count, rate);
  std::printf("%-22s %8s %10s %10s %10s %10s\n", "stage", "count", "p50 ms", "p90 ms", "p99 ms", "max ms");
  auto row = [](const char* name, const std::vector<double>& v) {
    std::printf("%-22s %8zu %10.2f %10.2f %10.2f %10.2f\n", name, v.size(), percentile(v, 0.5) * 1e3,
                percentile(v, 0.9) * 1e3, percentile(v, 0.99) * 1e3, percentile(v, 1.0) * 1e3);
  };
  row("create call", create_s);
  row("create->addressed", a);
  row("create->ready", r);
  return static_cast<int>(r.size()) == count ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kos-bench-agent: the connection agent's cold start and create->ready latency (root)"};
  app.require_subcommand(1);
  std::vector<int> counts = {1000, 2500, 5000, 10000};
  auto* cs = app.add_subcommand("cold-start", "agent start with N remote mappings in the store");
  cs->add_option("--counts", counts, "remote attachment counts")->delimiter(',')->capture_default_str();
  int count = 300;
  double rate = 50;
  auto* cr = app.add_subcommand("create-ready", "create->ready on the 3-node namespace cluster");
  cr->add_option("--count", count, "attachments to create")->capture_default_str();
  cr->add_option("--rate", rate, "creates per second")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (geteuid() != 0) {
    std::fprintf(stderr, "kos-bench-agent needs root (network namespaces)\n");
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  try {
    if (cs->parsed()) return cold_start(counts);
    return create_ready(count, rate);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kos-bench-agent: %s\n", e.what());
    return 1;
  }
}
