// kos-bench-cni: ADD and DEL latency of kos-cni, from the runtime's exec of the plugin to
// its exit, including the IPAM (an IPLock through the API server) and the node's agent
// implementing the attachment and moving its interface into the container, against the
// reference plugins (bridge + host-local from Debian's containernetworking-plugins) in the
// same run, on the same machine, rounds interleaved.
//
// Warm by default: one more container of the network stays on the node throughout, as on a
// node that already has the network; --cold: the network's only container, replaced.
//
// Setup: the 1-node cluster of the end-to-end tests (test/e2e/cluster.h: API server,
// controller-manager and `kos agent --fabric linux --netns <node>` as processes). Both
// plugins run in the node's network namespace (nsenter --net), where the reference bridge
// makes its bridge and veths; each round's container is a fresh network namespace, made
// and deleted outside the timed calls.
//
// Needs root. Prints p50/p90/p99/max per plugin and operation and the ratios kos/reference.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>

#include <CLI/CLI.hpp>
#include <boost/json.hpp>

#include "test/e2e/cluster.h"
#include "test/support/process.h"

namespace {

namespace json = boost::json;
using Clock = std::chrono::steady_clock;
using kos::testing::run;
using kos::testing::RunOptions;

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

struct Plugin {
  std::string label, binary, conf;
  std::vector<double> add_ms, del_ms;
};

// One exec of a plugin as a runtime does it; its duration in ms, or a message.
std::pair<double, std::string> exec(const std::string& node_ns, const Plugin& p, const std::string& command,
                                    const std::string& id, const std::string& netns) {
  RunOptions o;
  o.env = {{"CNI_COMMAND", command}, {"CNI_CONTAINERID", id}, {"CNI_IFNAME", "eth0"},
           {"CNI_NETNS", netns}, {"CNI_PATH", std::string(KOS_CNI_DIR) + ":/usr/lib/cni"}};
  o.stdin_data = p.conf;
  auto t0 = Clock::now();
  auto r = run({"nsenter", "--net=/var/run/netns/" + node_ns, p.binary}, o);
  double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  if (r.exit_code != 0) return {ms, p.label + " " + command + " exited " + std::to_string(r.exit_code) + ": " + r.out + r.err};
  return {ms, ""};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kos-bench-cni: ADD/DEL latency of kos-cni against bridge + host-local"};
  int rounds = 200;
  bool cold = false;
  app.add_option("--rounds", rounds, "ADD+DEL rounds per plugin")->capture_default_str();
  app.add_flag("--cold", cold, "no other container of the network on the node (each round replaces its only one)");
  CLI11_PARSE(app, argc, argv);
  if (geteuid() != 0) {
    std::fprintf(stderr, "kos-bench-cni: needs root (network namespaces)\n");
    return 2;
  }
  // The agent's defaults, --vni-linger 5s included.
  kos::e2e::Cluster cluster(
      kos::e2e::Cluster::Options{.nodes = 1, .agent_workers = 4, .agent_log_level = "warn", .vni_linger = "5s"});
  if (auto e = cluster.start(); !e.empty()) {
    std::fprintf(stderr, "kos-bench-cni: %s\n", e.c_str());
    return 1;
  }
  if (!cluster.client()->create(kos::ctltest::make_subnet("bench", "s", "10.71.0.0/16", 7101))) {
    std::fprintf(stderr, "kos-bench-cni: cannot create the subnet\n");
    return 1;
  }
  kos::testing::TempDir dir("kos-bench-cni");
  Plugin kos{"kos-cni", std::string(KOS_CNI_DIR) + "/kos-cni",
             json::serialize(json::object{{"cniVersion", "1.0.0"}, {"name", "bench"}, {"type", "kos-cni"},
                                          {"namespace", "bench"}, {"subnet", "s"},
                                          {"agentSocket", cluster.cni_socket(0)}})};
  Plugin ref{"bridge+host-local", "/usr/lib/cni/bridge",
             json::serialize(json::object{
                 {"cniVersion", "1.0.0"}, {"name", "ref"}, {"type", "bridge"}, {"bridge", "kosbenchbr0"},
                 {"ipam", json::object{{"type", "host-local"}, {"subnet", "10.72.0.0/16"},
                                       {"dataDir", (dir.path() / "host-local").string()}}}})};
  const std::string node_ns = cluster.node_ns(0);
  std::printf("kos-bench-cni: %d rounds per plugin, interleaved, 1 node (%s)%s\n", rounds, node_ns.c_str(),
              cold ? ", cold: the network's only container on the node" : "");
  // Warm (the default): the node already has a container on the network, as a node usually
  // does, so its VXLAN device and bridge exist (as the reference's bridge does). Cold: each
  // ADD is the network's only container on the node, and each DEL leaves the network
  // without one there (its devices then linger 5 s, --vni-linger; with 0 they would be
  // deleted and made again every round, ~75 + 12 ms of the kernel's time under its rtnl lock).
  const std::string resident = cluster.prefix() + "-res";
  if (!cold) {
    if (run({"ip", "netns", "add", resident}).exit_code != 0) return 1;
    if (auto [_, err] = exec(node_ns, kos, "ADD", "bench-resident", "/var/run/netns/" + resident); !err.empty()) {
      std::fprintf(stderr, "kos-bench-cni: %s\n", err.c_str());
      return 1;
    }
  }
  // A warm-up round each (the first kos ADD makes the VNI's bridge and VXLAN device).
  for (int i = -1; i < rounds; ++i) {
    for (Plugin* p : {&kos, &ref}) {
      const std::string id = "bench-" + std::to_string(p == &kos ? 0 : 1) + "-" + std::to_string(i + 1);
      const std::string ctr = cluster.prefix() + "-bc";
      if (run({"ip", "netns", "add", ctr}).exit_code != 0) {
        std::fprintf(stderr, "kos-bench-cni: cannot create namespace %s\n", ctr.c_str());
        return 1;
      }
      const std::string netns = "/var/run/netns/" + ctr;
      auto [add, add_err] = exec(node_ns, *p, "ADD", id, netns);
      auto [del, del_err] = exec(node_ns, *p, "DEL", id, netns);
      run({"ip", "netns", "del", ctr});
      if (!add_err.empty() || !del_err.empty()) {
        std::fprintf(stderr, "kos-bench-cni: %s%s\n", add_err.c_str(), del_err.c_str());
        return 1;
      }
      if (i >= 0) {
        p->add_ms.push_back(add);
        p->del_ms.push_back(del);
      }
    }
  }
  if (!cold) {
    exec(node_ns, kos, "DEL", "bench-resident", "/var/run/netns/" + resident);
    run({"ip", "netns", "del", resident});
  }
  std::printf("%-20s %-4s %9s %9s %9s %9s\n", "plugin", "op", "p50 ms", "p90 ms", "p99 ms", "max ms");
  for (const Plugin* p : {&kos, &ref})
    for (auto [op, v] : {std::pair{"ADD", &p->add_ms}, std::pair{"DEL", &p->del_ms}})
      std::printf("%-20s %-4s %9.2f %9.2f %9.2f %9.2f\n", p->label.c_str(), op, percentile(*v, 0.5),
                  percentile(*v, 0.9), percentile(*v, 0.99), percentile(*v, 1.0));
  std::printf("ratio kos-cni / reference: ADD p50 %.2f p99 %.2f (goal p99 <= 1.5); DEL p50 %.2f p99 %.2f\n",
              percentile(kos.add_ms, 0.5) / percentile(ref.add_ms, 0.5),
              percentile(kos.add_ms, 0.99) / percentile(ref.add_ms, 0.99),
              percentile(kos.del_ms, 0.5) / percentile(ref.del_ms, 0.5),
              percentile(kos.del_ms, 0.99) / percentile(ref.del_ms, 0.99));
  return 0;
}
