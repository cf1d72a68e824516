// kos-bench-vpc: what routing the subnets of a VPC costs, against isolated subnets in the
// same run. Needs root.
//
//   program   The linux fabric in a fresh namespace: --vnis VNIs with one local attachment
//             each, created then deleted in one Fabric::apply, first as isolated subnets,
//             then as subnets of one VPC (each routed VNI also gets its gateway port into
//             the VPC's router namespace, with the gateway's connected route there: the
//             routes of a VPC on a node); then --remotes remote attachments on one VNI,
//             isolated and routed (a routed remote costs the same FDB and neighbour entries:
//             the router reaches it through the VXLAN device's ARP proxy). Per second, and
//             routed / isolated.
//   cluster   --nodes namespace nodes (test/e2e/cluster.h: API server, controller-manager,
//             one agent per node on the linux fabric); `kos driver` creates --count
//             attachments at --rate round-robin over the nodes on --vnis subnets, first
//             isolated, then (new VNIs) subnets of one VPC, and reads create -> implemented
//             on every relevant node (for a VPC: every node of the VPC) from the agents'
//             implementation logs. Both summaries, and the ratio of their p50 and p99.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <regex>

#include <CLI/CLI.hpp>

#include "api/cidr.h"
#include "api/names.h"
#include "fabric/linux/linux_fabric.h"
#include "fabric/linux/router.h"
#include "test/e2e/cluster.h"
#include "test/support/netns.h"
#include "test/support/process.h"

namespace {

using Clock = std::chrono::steady_clock;
using kos::fabric::Change;
using kos::fabric::LocalIfc;
using kos::fabric::RemoteIfc;
using kos::fabric::Routing;

struct Options {
  int vnis = 100;
  int remotes = 5000;
  int nodes = 10;
  int count = 300;
  double rate = 20;
  int subnets = 10;
  int windows = 4;
  std::string kos = KOS_BINARY;
};

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Per second: created and deleted.
struct Rates {
  double create = 0, del = 0;
  int failures = 0;
};

Rates timed_apply(kos::fabric::Fabric& f, const std::vector<Change>& creates, const std::vector<Change>& deletes) {
  Rates r;
  auto t0 = Clock::now();
  for (const auto& x : f.apply(creates)) r.failures += !x;
  auto t1 = Clock::now();
  for (const auto& x : f.apply(deletes)) r.failures += !x;
  auto t2 = Clock::now();
  r.create = static_cast<double>(creates.size()) / seconds(t1 - t0);
  r.del = static_cast<double>(deletes.size()) / seconds(t2 - t1);
  return r;
}

// Isolated, then routed: `make(i, routed)` gives change i's interface.
template <class Make>
std::pair<Rates, Rates> both(kos::fabric::Fabric& f, int n, Make make) {
  std::pair<Rates, Rates> out;
  for (bool routed : {false, true}) {
    std::vector<Change> creates, deletes;
    for (int i = 0; i < n; ++i) {
      auto ifc = make(i, routed);
      creates.push_back(Change::create(ifc));
      deletes.push_back(Change::remove(ifc));
    }
    (routed ? out.second : out.first) = timed_apply(f, creates, deletes);
  }
  return out;
}

int run_program(const Options& o) {
  const std::string name = "kos-bvpc-" + std::to_string(getpid());
  kos::testing::ScopedNetns ns(name);
  kos::fabric::LinuxFabricOptions fo;
  fo.host_ip = *kos::api::parse_ipv4("10.252.0.1");
  fo.netns = ns.name();
  auto opened = kos::fabric::LinuxFabric::open(fo);
  if (!opened) {
    std::fprintf(stderr, "kos-bench-vpc: %s\n", opened.error().message.c_str());
    return 1;
  }
  auto& f = **opened;
  const uint32_t vpc = 2000;
  std::printf("program: %d VNIs with one local each (routed: subnets of one VPC, a gateway each), and %d remotes "
              "on one VNI\n", o.vnis, o.remotes);
  auto [plain_vnis, routed_vnis] = both(f, o.vnis, [&](int i, bool routed) {
    const uint32_t vni = 100 + static_cast<uint32_t>(i);
    const uint32_t net = *kos::api::parse_ipv4("10.0.0.0") + (static_cast<uint32_t>(i) << 8);
    LocalIfc l;
    l.vni = vni;
    l.guest_ip = net + 2;
    l.mac = kos::api::guest_mac(l.guest_ip, vni);
    l.name = kos::api::interface_name(l.mac);
    if (routed) l.routing = Routing{vpc, net + 1, 24};
    return l;
  });
  auto [plain_remotes, routed_remotes] = both(f, o.remotes, [&](int i, bool routed) {
    RemoteIfc r;
    r.vni = 50;
    r.guest_ip = *kos::api::parse_ipv4("10.200.0.2") + static_cast<uint32_t>(i);
    r.mac = kos::api::guest_mac(r.guest_ip, r.vni);
    r.host_ip = *kos::api::parse_ipv4("10.252.0.2") + static_cast<uint32_t>(i % 50);
    if (routed) r.routing = Routing{vpc, *kos::api::parse_ipv4("10.200.0.1"), 16};
    return r;
  });
  auto row = [](const char* what, double plain, double routed) {
    std::printf("  %-34s %10.0f /s %10.0f /s   %5.2f\n", what, plain, routed, routed / plain);
  };
  std::printf("  %-34s %13s %13s   %5s\n", "", "isolated", "routed", "routed/isolated");
  row("VNIs created (with a local)", plain_vnis.create, routed_vnis.create);
  row("VNIs deleted", plain_vnis.del, routed_vnis.del);
  row("remotes created (batched)", plain_remotes.create, routed_remotes.create);
  row("remotes deleted (batched)", plain_remotes.del, routed_remotes.del);
  std::printf("  routes programmed per second (gateways with their connected route): %.0f /s\n", routed_vnis.create);
  const int failures = plain_vnis.failures + routed_vnis.failures + plain_remotes.failures + routed_remotes.failures;
  std::printf("  failures: %d\n", failures);
  for (const auto& n : kos::fabric::nl::named_netns())
    if (kos::fabric::parse_router_netns_name(ns.name(), n)) {
      std::printf("  router namespace %s left behind\n", n.c_str());
      (void)kos::fabric::nl::delete_named_netns(n);
      return 1;
    }
  return failures == 0 ? 0 : 1;
}

// "p50 X ms p99 Y ms" of the implemented stage in a driver summary, or {-1, -1}.
std::pair<double, double> implemented(const std::string& summary) {
  std::smatch m;
  static const std::regex line(
      R"(\ncreate -> implemented \(all nodes\)\s+\d+\s+\d+\s+\d+\s+([0-9.]+)\s+[0-9.]+\s+([0-9.]+))");
  if (std::regex_search(summary, m, line)) return {std::stod(m[1]), std::stod(m[2])};
  return {-1, -1};
}

int run_cluster(const Options& o) {
  kos::e2e::Cluster::Options co;
  co.nodes = o.nodes;
  co.agent_metrics = true;
  co.agent_log_level = "warn";
  kos::e2e::Cluster cluster(co);
  if (auto e = cluster.start(); !e.empty()) {
    std::fprintf(stderr, "kos-bench-vpc: cluster: %s\n%s", e.c_str(), cluster.logs().c_str());
    return 1;
  }
  std::string nodes, endpoints;
  for (int i = 0; i < o.nodes; ++i) nodes += (i ? "," : "") + cluster.node_name(i);
  for (const auto& e : cluster.agent_endpoints()) endpoints += (endpoints.empty() ? "" : ",") + e;
  int rc = 0;
  std::map<bool, std::pair<double, double>> figures;
  for (bool routed : {false, true}) {
    // Each run starts on quiet nodes: the previous run's clean-up deletes its devices, and
    // the kernel's deletions (~75 ms each under its rtnl lock) would delay the next run's.
    const auto quiet = kos::testing::poll_until([&] {
      for (int i = 0; i < cluster.nodes(); ++i)
        if (!(cluster.kernel_state(i) == kos::e2e::NodeKernelState{})) return false;
      return true;
    }, std::chrono::seconds(60));
    if (!quiet) std::fprintf(stderr, "kos-bench-vpc: the nodes still hold devices of the previous run\n");
    std::printf("\ncluster, %s: %d nodes, %d subnets%s, %d attachments at %.0f/s round-robin\n",
                routed ? "routed" : "isolated", o.nodes, o.subnets, routed ? " of one VPC" : "", o.count, o.rate);
    std::fflush(stdout);
    const int slots = (o.count + o.subnets - 1) / o.subnets;
    auto r = kos::testing::run({o.kos, "--log-level", "warn", "driver", "--kubeconfig",
                                cluster.server().kubeconfig().string(), "--vnis", std::to_string(o.subnets),
                                "--vni-base", routed ? "7000" : "6000", "--vpcs", routed ? "1" : "0",
                                "--cidr-base", routed ? "10.80.0.0" : "10.70.0.0", "--slots-top",
                                std::to_string(slots), "--slots-exponent", "0", "--count", std::to_string(o.count),
                                "--rate", std::to_string(o.rate), "--nodes", nodes, "--round-robin",
                                "--agent-endpoints", endpoints, "--warmup", "0s", "--cooldown", "60s",
                                "--windows", std::to_string(o.windows), "--no-progress"});
    std::fputs(r.out.c_str(), stdout);
    if (r.exit_code != 0) {
      std::fprintf(stderr, "kos-bench-vpc: kos driver exited %d: %s\n", r.exit_code, r.err.c_str());
      rc = 1;
    }
    figures[routed] = implemented(r.out);
  }
  const auto [p50i, p99i] = figures[false];
  const auto [p50r, p99r] = figures[true];
  if (p50i > 0 && p50r > 0)
    std::printf("\ncreate -> implemented on every relevant node: isolated p50 %.1f / p99 %.1f ms, routed p50 %.1f / "
                "p99 %.1f ms; routed/isolated %.2f / %.2f\n",
                p50i, p99i, p50r, p99r, p50r / p50i, p99r / p99i);
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"kos-bench-vpc: routed (VPC) against isolated subnets in the same run (needs root)"};
  app.add_option("--vnis", o.vnis, "program: VNIs (one local each)")->capture_default_str();
  app.add_option("--remotes", o.remotes, "program: remote attachments on one VNI")->capture_default_str();
  app.add_option("--nodes", o.nodes, "cluster: namespace nodes")->capture_default_str();
  app.add_option("--subnets", o.subnets, "cluster: subnets (of one VPC when routed)")->capture_default_str();
  app.add_option("--count", o.count, "cluster: attachments per run")->capture_default_str();
  app.add_option("--rate", o.rate, "cluster: creates per second")->capture_default_str();
  app.add_option("--windows", o.windows, "cluster: groups of creation order in the driver's summaries")
      ->capture_default_str();
  app.add_option("--kos", o.kos, "the kos binary")->capture_default_str();
  bool only_program = false, only_cluster = false;
  app.add_flag("--only-program", only_program, "run the program part only");
  app.add_flag("--only-cluster", only_cluster, "run the cluster part only");
  CLI11_PARSE(app, argc, argv);
  if (geteuid() != 0) {
    std::fprintf(stderr, "kos-bench-vpc: needs root (network namespaces)\n");
    return 2;
  }
  int rc = 0;
  try {
    if (!only_cluster) rc |= run_program(o);
    if (!only_program) rc |= run_cluster(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kos-bench-vpc: %s\n", e.what());
    return 1;
  }
  return rc;
}
