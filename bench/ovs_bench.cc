// kos-bench-ovs: the OVS fabric against the linux fabric, in the same run. Needs root.
//
//   program   Each fabric in a fresh namespace of its own (the OVS one with its own
//             ovsdb-server and userspace ovs-vswitchd, test/support/ovs.h): --remotes remote
//             attachments (two flows on OVS; an FDB and a neighbour entry on linux) created,
//             then deleted, through Fabric::apply in batches of --batch (the agent's batched
//             reconcile), then once more one call each from --threads threads (the agent's
//             per-key path); on OVS the same flows through `ovs-ofctl --bundle add-flows`,
//             one process per batch (the baseline the issue names); then --locals local
//             attachments (a veth each; on OVS also a port and three flows) created and
//             deleted in batches. Attachments per second for each, and OVS / linux.
//   series    (--series N) N locals created one call at a time on each fabric: p50/p99 per
//             group of 50, i.e. how a node's size changes the cost of one more.
//   one-vni   The shape of one busy network: --nodes namespace nodes (test/e2e/cluster.h:
//             API server, controller-manager, one agent per node on the fabric), one VNI,
//             --count attachments created one after another at --rate, round-robin over
//             the nodes, by `kos driver`, which reads create -> implemented on every node
//             from the agents' implementation logs; its --windows summary gives p50/p99 for
//             the first and the last group (growth). Linux first, then OVS.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include <CLI/CLI.hpp>

#include "api/cidr.h"
#include "fabric/linux/linux_fabric.h"
#include "fabric/ovs/flows.h"
#include "fabric/ovs/ovs_fabric.h"
#include "test/e2e/cluster.h"
#include "test/support/netns.h"
#include "test/support/ovs.h"
#include "test/support/process.h"

namespace {

using Clock = std::chrono::steady_clock;
using kos::fabric::Change;
using kos::fabric::LocalIfc;
using kos::fabric::RemoteIfc;

struct Options {
  int locals = 500;
  int remotes = 10000;
  size_t batch = 256;
  int threads = 8;
  int nodes = 8;
  int count = 300;
  double rate = 10;
  int windows = 6;
  int series = 0;
  std::string kos = KOS_BINARY;
};

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct Figures {
  double local_create = 0, local_delete = 0, remote_create = 0, remote_delete = 0, remote_calls = 0;
  double ofctl_create = 0, ofctl_delete = 0;  // ovs only: the same flows through ovs-ofctl --bundle
  int failures = 0;
};

std::unique_ptr<kos::fabric::Fabric> open(const std::string& fabric, const std::string& ns,
                                          kos::testing::OvsInstance* ovs) {
  if (fabric == "linux") {
    kos::fabric::LinuxFabricOptions o;
    o.host_ip = *kos::api::parse_ipv4("10.99.0.1");
    o.netns = ns;
    auto f = kos::fabric::LinuxFabric::open(o);
    if (!f) std::fprintf(stderr, "kos-bench-ovs: %s\n", f.error().message.c_str());
    return f ? std::move(*f) : nullptr;
  }
  kos::fabric::OvsFabricOptions o;
  o.db = ovs->db();
  o.netns = ns;
  o.datapath_type = "netdev";
  o.timeout = std::chrono::seconds(60);
  auto f = kos::fabric::OvsFabric::open(o);
  if (!f) std::fprintf(stderr, "kos-bench-ovs: %s\n", f.error().message.c_str());
  return f ? std::move(*f) : nullptr;
}

// Applies `all` in chunks of `batch`; attachments per second.
double applied(kos::fabric::Fabric& f, const std::vector<Change>& all, size_t batch, int& failures) {
  const auto t0 = Clock::now();
  for (size_t at = 0; at < all.size(); at += batch) {
    std::vector<Change> chunk(all.begin() + static_cast<long>(at), all.begin() + static_cast<long>(std::min(all.size(), at + batch)));
    for (const auto& r : f.apply(chunk))
      if (!r) {
        if (failures++ == 0) std::fprintf(stderr, "kos-bench-ovs: %s\n", r.error().message.c_str());
      }
  }
  return static_cast<double>(all.size()) / seconds(Clock::now() - t0);
}

Figures program(const Options& o, const std::string& fabric) {
  Figures out;
  kos::testing::ScopedNetns ns("kos-bovs-" + std::to_string(getpid()) + "-" + fabric);
  std::unique_ptr<kos::testing::OvsInstance> ovs;
  if (fabric == "ovs") {
    ovs = std::make_unique<kos::testing::OvsInstance>(ns.name());
    if (auto e = ovs->start(); !e.empty()) {
      std::fprintf(stderr, "kos-bench-ovs: %s\n", e.c_str());
      out.failures = 1;
      return out;
    }
  }
  auto f = open(fabric, ns.name(), ovs.get());
  if (!f) {
    out.failures = 1;
    return out;
  }
  const uint32_t vni = 100, base = *kos::api::parse_ipv4("10.64.0.0"), hosts = *kos::api::parse_ipv4("10.99.1.0");
  std::vector<Change> lc, ld, rc, rd;
  for (int i = 0; i < o.locals; ++i) {
    const uint32_t g = base + static_cast<uint32_t>(i);
    const auto mac = kos::api::guest_mac(g, vni);
    LocalIfc l{vni, mac, g, kos::api::interface_name(mac), {}, {}};
    lc.push_back(Change::create(l));
    ld.push_back(Change::remove(l));
  }
  std::vector<RemoteIfc> rs;
  for (int i = 0; i < o.remotes; ++i) {
    const uint32_t g = base + static_cast<uint32_t>(o.locals + i);
    rs.push_back(RemoteIfc{vni, kos::api::guest_mac(g, vni), g, hosts + 1 + static_cast<uint32_t>(i % 250)});
    rc.push_back(Change::create(rs.back()));
    rd.push_back(Change::remove(rs.back()));
  }
  // Remotes first, on a bridge without other ports (an OVS userspace datapath polls every
  // port from its main thread, so many ports slow everything it does; the series shows it).
  out.remote_create = applied(*f, rc, o.batch, out.failures);
  out.remote_delete = applied(*f, rd, o.batch, out.failures);
  // The remotes again, one call each from o.threads threads (then deleted in batches).
  std::atomic<int> next{0}, failed{0};
  const auto t0 = Clock::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < o.threads; ++t)
    ts.emplace_back([&] {
      for (int i; (i = next.fetch_add(1)) < o.remotes;)
        if (!f->create_remote(rs[static_cast<size_t>(i)])) failed.fetch_add(1);
    });
  for (auto& t : ts) t.join();
  out.remote_calls = o.remotes / seconds(Clock::now() - t0);
  out.failures += failed.load();
  (void)applied(*f, rd, o.batch, out.failures);
  auto left = f->list_remote();
  if (!left || !left->empty()) ++out.failures;
  if (ovs) {
    // The baseline the issue names: the same remotes' flows through `ovs-ofctl --bundle
    // add-flows` (one process per batch, its flow mods in a file), on the same bridge.
    const int vtep = std::atoi(ovs->vsctl({"get", "interface", "vtep", "ofport"}).out.c_str());
    kos::testing::TempDir dir("kos-bench-ofctl");
    auto batches = [&](bool add) {
      const auto t0 = Clock::now();
      for (size_t at = 0; at < rs.size(); at += o.batch) {
        const auto file = dir.path() / "flows";
        std::FILE* fp = std::fopen(file.c_str(), "w");
        for (size_t i = at; i < std::min(rs.size(), at + o.batch); ++i) {
          const auto& r = rs[i];
          const unsigned long long c = kos::fabric::ovs::remote_cookie(r);
          if (!add) {
            std::fprintf(fp, "delete cookie=0x%llx/-1\n", c);
            continue;
          }
          const std::string to = ",actions=set_field:" + kos::api::format_ipv4(r.host_ip) + "->tun_dst,output:" + std::to_string(vtep);
          std::fprintf(fp, "add cookie=0x%llx,table=1,priority=100,tun_id=%u,dl_dst=%s%s\n", c, r.vni,
                       kos::api::format_mac(r.mac).c_str(), to.c_str());
          std::fprintf(fp, "add cookie=0x%llx,table=1,priority=100,arp,tun_id=%u,arp_tpa=%s%s\n", c, r.vni,
                       kos::api::format_ipv4(r.guest_ip).c_str(), to.c_str());
        }
        std::fclose(fp);
        auto res = ovs->ofctl({"--bundle", "add-flows", ovs->mgmt("kos"), file.string()});
        if (res.exit_code != 0 && out.failures++ == 0) std::fprintf(stderr, "kos-bench-ovs: ovs-ofctl: %s\n", res.err.c_str());
      }
      return static_cast<double>(rs.size()) / seconds(Clock::now() - t0);
    };
    out.ofctl_create = batches(true);
    const size_t flows = ovs->flows("kos").size();
    if (flows != 2 * rs.size() + 2) {
      std::fprintf(stderr, "kos-bench-ovs: ovs-ofctl left %zu flows, not %zu\n", flows, 2 * rs.size() + 2);
      ++out.failures;
    }
    out.ofctl_delete = batches(false);
  }
  out.local_create = applied(*f, lc, o.batch, out.failures);
  out.local_delete = applied(*f, ld, o.batch, out.failures);
  return out;
}

int run_program(const Options& o) {
  std::printf("program: %d locals and %d remotes on one VNI, Fabric::apply in batches of %zu; remotes also one "
              "call each from %d threads\n",
              o.locals, o.remotes, o.batch, o.threads);
  const Figures lx = program(o, "linux");
  const Figures ov = program(o, "ovs");
  auto row = [](const char* what, double l, double v) {
    std::printf("  %-28s %10.0f /s %10.0f /s   %5.2f\n", what, l, v, v / l);
  };
  std::printf("  %-28s %13s %13s   %5s\n", "", "linux", "ovs", "ovs/linux");
  row("locals created (batched)", lx.local_create, ov.local_create);
  row("locals deleted (batched)", lx.local_delete, ov.local_delete);
  row("remotes created (batched)", lx.remote_create, ov.remote_create);
  row("remotes deleted (batched)", lx.remote_delete, ov.remote_delete);
  row("remotes created (per call)", lx.remote_calls, ov.remote_calls);
  std::printf("  baseline on the same OVS: the remotes' flows through `ovs-ofctl --bundle add-flows`, one process per "
              "batch of %zu:\n", o.batch);
  std::printf("  %-28s %10.0f /s  (the fabric's connection: %.0f /s, %.2fx)\n", "remotes created (ovs-ofctl)",
              ov.ofctl_create, ov.remote_create, ov.remote_create / ov.ofctl_create);
  std::printf("  %-28s %10.0f /s  (the fabric's connection: %.0f /s, %.2fx)\n", "remotes deleted (ovs-ofctl)",
              ov.ofctl_delete, ov.remote_delete, ov.remote_delete / ov.ofctl_delete);
  std::printf("  failures: linux %d, ovs %d\n", lx.failures, ov.failures);
  return lx.failures + ov.failures == 0 ? 0 : 1;
}

// Locals created one call at a time, as a node's agent sees a stream of attachments: the
// latency of each, p50/p99 per group of 50 in creation order (growth with the node's size).
int run_series(const Options& o, const std::string& fabric) {
  kos::testing::ScopedNetns ns("kos-bovs-" + std::to_string(getpid()) + "-s" + fabric);
  std::unique_ptr<kos::testing::OvsInstance> ovs;
  if (fabric == "ovs") {
    ovs = std::make_unique<kos::testing::OvsInstance>(ns.name());
    if (auto e = ovs->start(); !e.empty()) return 1;
  }
  auto f = open(fabric, ns.name(), ovs.get());
  if (!f) return 1;
  const uint32_t vni = 100, base = *kos::api::parse_ipv4("10.64.0.0");
  std::vector<double> ms;
  int failures = 0;
  for (int i = 0; i < o.series; ++i) {
    const uint32_t g = base + static_cast<uint32_t>(i);
    const auto mac = kos::api::guest_mac(g, vni);
    const auto t0 = Clock::now();
    failures += !f->create_local(LocalIfc{vni, mac, g, kos::api::interface_name(mac), {}, {}});
    ms.push_back(1000 * seconds(Clock::now() - t0));
  }
  std::printf("series on %s: %d locals, one create_local at a time (p50 / p99 ms per 50)\n", fabric.c_str(), o.series);
  for (size_t at = 0; at < ms.size(); at += 50) {
    std::vector<double> g(ms.begin() + static_cast<long>(at), ms.begin() + static_cast<long>(std::min(ms.size(), at + 50)));
    std::sort(g.begin(), g.end());
    std::printf("  %4zu-%-4zu %7.2f / %7.2f\n", at, at + g.size(), g[g.size() / 2], g[std::min(g.size() - 1, g.size() * 99 / 100)]);
  }
  return failures == 0 ? 0 : 1;
}

int run_one_vni(const Options& o, const std::string& fabric) {
  kos::e2e::Cluster::Options co;
  co.nodes = o.nodes;
  co.fabric = fabric;
  co.agent_metrics = true;
  co.agent_log_level = "warn";
  kos::e2e::Cluster cluster(co);
  if (auto e = cluster.start(); !e.empty()) {
    std::fprintf(stderr, "kos-bench-ovs: cluster on %s: %s\n%s", fabric.c_str(), e.c_str(), cluster.logs().c_str());
    return 1;
  }
  std::string nodes, endpoints;
  for (int i = 0; i < o.nodes; ++i) nodes += (i ? "," : "") + cluster.node_name(i);
  for (const auto& e : cluster.agent_endpoints()) endpoints += (endpoints.empty() ? "" : ",") + e;
  std::printf("\none-vni on %s: %d nodes, %d attachments at %.0f/s round-robin, one VNI\n", fabric.c_str(), o.nodes,
              o.count, o.rate);
  std::fflush(stdout);
  auto r = kos::testing::run({o.kos, "--log-level", "warn", "driver", "--kubeconfig", cluster.server().kubeconfig().string(),
                              "--vnis", "1", "--slots-top", std::to_string(o.count), "--count", std::to_string(o.count),
                              "--rate", std::to_string(o.rate), "--nodes", nodes, "--round-robin", "--agent-endpoints",
                              endpoints, "--windows", std::to_string(o.windows), "--warmup", "0s", "--cooldown", "60s",
                              "--no-progress"});
  std::fputs(r.out.c_str(), stdout);
  if (r.exit_code != 0) std::fprintf(stderr, "kos-bench-ovs: kos driver exited %d: %s\n", r.exit_code, r.err.c_str());
  return r.exit_code == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"kos-bench-ovs: the OVS fabric against the linux fabric in the same run (needs root)"};
  app.add_option("--locals", o.locals, "program: local attachments")->capture_default_str();
  app.add_option("--remotes", o.remotes, "program: remote attachments")->capture_default_str();
  app.add_option("--batch", o.batch, "program: changes per Fabric::apply")->capture_default_str();
  app.add_option("--threads", o.threads, "program: caller threads of the per-call run")->capture_default_str();
  app.add_option("--nodes", o.nodes, "one-vni: namespace nodes")->capture_default_str();
  app.add_option("--count", o.count, "one-vni: attachments")->capture_default_str();
  app.add_option("--rate", o.rate, "one-vni: creates per second")->capture_default_str();
  app.add_option("--windows", o.windows, "one-vni: groups of creation order in the driver's summary")->capture_default_str();
  app.add_option("--kos", o.kos, "the kos binary")->capture_default_str();
  app.add_option("--series", o.series, "series: locals created one call at a time on each fabric (0: skip)")
      ->capture_default_str();
  bool only_program = false, only_one_vni = false;
  app.add_flag("--only-program", only_program, "run the program part only");
  app.add_flag("--only-one-vni", only_one_vni, "run the one-vni part only");
  CLI11_PARSE(app, argc, argv);
  if (geteuid() != 0) {
    std::fprintf(stderr, "kos-bench-ovs: needs root (network namespaces, ovs-vswitchd)\n");
    return 2;
  }
  if (!kos::testing::ovs_installed()) {
    std::fprintf(stderr, "kos-bench-ovs: needs openvswitch-switch\n");
    return 2;
  }
  int rc = 0;
  try {
    if (o.series > 0) {
      rc |= run_series(o, "linux");
      rc |= run_series(o, "ovs");
    }
    if (!only_one_vni) rc |= run_program(o);
    if (!only_program) {
      rc |= run_one_vni(o, "linux");
      rc |= run_one_vni(o, "ovs");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kos-bench-ovs: %s\n", e.what());
    return 1;
  }
  return rc;
}
