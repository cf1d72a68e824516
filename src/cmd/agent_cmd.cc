// kos agent: the connection agent of one node.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <sstream>

#include <spdlog/spdlog.h>

#include "agent/agent.h"
#include "agent/implementation_log.h"
#include "agent/local_api.h"
#include "api/cidr.h"
#include "cmd/commands.h"
#include "cmd/metrics_listen.h"
#include "common/duration.h"
#include "common/http_server.h"
#include "common/metrics.h"
#include "fabric/fake/fake_fabric.h"
#include "fabric/linux/linux_fabric.h"
#include "fabric/ovs/ovs_fabric.h"

namespace kos::cmd {
namespace {

struct Flags {
  std::string kubeconfig;
  std::string node;
  std::string host_ip;
  std::string fabric = "linux";
  std::string netns;
  std::string allowed_programs;
  int workers = 4;
  bool remotes_on_workers = false;
  std::string metrics_listen;
  std::string state_dir = "/var/lib/kos/agent";
  std::string cni_socket;  // default: <state dir>/cni.sock; "none": not served
  std::string vni_linger = "5s";
  std::string relevance_grace = "1s";
  fabric::OvsFabricOptions ovs;
};

int run(const Flags& f) {
  auto host = api::parse_ipv4(f.host_ip);
  if (!host) {
    std::fprintf(stderr, "kos agent: --host-ip %s: %s\n", f.host_ip.c_str(), host.error().message.c_str());
    return 2;
  }
  if (!api::is_dns1123_subdomain(f.node)) {
    std::fprintf(stderr, "kos agent: --node '%s' is not a valid node name\n", f.node.c_str());
    return 2;
  }
  // One agent per node: a lock in the state dir, held for the life of the process.
  std::error_code ec;
  std::filesystem::create_directories(f.state_dir, ec);
  std::string lock_path = f.state_dir + "/agent-" + f.node + ".lock";
  int lock_fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    std::fprintf(stderr, "kos agent: another agent for node %s is running (lock %s)\n", f.node.c_str(),
                 lock_path.c_str());
    return 1;
  }
  std::unique_ptr<fabric::Fabric> fab;
  if (f.fabric == "fake") {
    fab = std::make_unique<fabric::FakeFabric>();
  } else if (f.fabric == "linux") {
    fabric::LinuxFabricOptions lo;
    lo.host_ip = *host;
    lo.netns = f.netns;
    auto linger = parse_duration(f.vni_linger);
    if (!linger) {
      std::fprintf(stderr, "kos agent: --vni-linger %s: %s\n", f.vni_linger.c_str(), linger.error().message.c_str());
      return 2;
    }
    lo.vni_linger = std::chrono::duration_cast<std::chrono::milliseconds>(*linger);
    auto l = fabric::LinuxFabric::open(lo);
    if (!l) {
      std::fprintf(stderr, "kos agent: %s\n", l.error().message.c_str());
      return 1;
    }
    fab = std::move(*l);
  } else if (f.fabric == "ovs") {
    fabric::OvsFabricOptions oo = f.ovs;
    oo.netns = f.netns;
    auto o = fabric::OvsFabric::open(oo);
    if (!o) {
      std::fprintf(stderr, "kos agent: %s\n", o.error().message.c_str());
      return 1;
    }
    fab = std::move(*o);
  } else {
    std::fprintf(stderr, "kos agent: --fabric must be linux, ovs or fake, not \"%s\"\n", f.fabric.c_str());
    return 2;
  }
  auto client = client::RestClient::from_kubeconfig(f.kubeconfig);
  if (!client) {
    std::fprintf(stderr, "kos agent: %s\n", client.error().message.c_str());
    return 1;
  }
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  // With --metrics-listen, what this agent implements is also kept in the implementation
  // log, served next to /metrics (for `kos driver`).
  std::unique_ptr<agent::ImplementationLog> impl_log;
  std::unique_ptr<http::Server> metrics_server;
  if (!f.metrics_listen.empty()) {
    impl_log = std::make_unique<agent::ImplementationLog>();
    auto addr = parse_metrics_listen(f.metrics_listen);
    auto m = addr ? serve_metrics(*addr, {.log = impl_log.get()}) : fail(addr.error());
    if (!m) {
      std::fprintf(stderr, "kos agent: %s\n", m.error().message.c_str());
      return 1;
    }
    metrics_server = std::move(*m);
  }
  auto grace = parse_duration(f.relevance_grace);
  if (!grace) {
    std::fprintf(stderr, "kos agent: --relevance-grace %s: %s\n", f.relevance_grace.c_str(),
                 grace.error().message.c_str());
    return 2;
  }
  agent::AgentOptions ao;
  ao.relevance_grace = std::chrono::duration_cast<std::chrono::milliseconds>(*grace);
  ao.node = f.node;
  ao.host_ip = *host;
  ao.netns = f.netns;
  ao.workers = f.workers;
  ao.remotes_inline = !f.remotes_on_workers;
  if (impl_log) ao.on_implemented = [log = impl_log.get()](const agent::Implemented& i) { log->record(i); };
  std::stringstream ss(f.allowed_programs);
  for (std::string p; std::getline(ss, p, ',');)
    if (!p.empty()) ao.allowed_programs.push_back(p);
  agent::Agent a(*client, *fab, ao);
  if (auto r = a.start(); !r) {
    std::fprintf(stderr, "kos agent: %s\n", r.error().message.c_str());
    return 1;
  }
  // The local API for kos-cni, once the agent has adopted what exists (a plugin's ADD then
  // waits only for new work).
  std::unique_ptr<agent::LocalApi> local_api;
  if (f.cni_socket != "none") {
    agent::LocalApiOptions lo;
    lo.socket_path = f.cni_socket.empty() ? f.state_dir + "/cni.sock" : f.cni_socket;
    local_api = std::make_unique<agent::LocalApi>(*client, a, *fab, lo);
    if (auto r = local_api->start(); !r) {
      std::fprintf(stderr, "kos agent: --cni-socket: %s\n", r.error().message.c_str());
      a.stop();
      return 1;
    }
  }
  int sig = 0;
  sigwait(&sigs, &sig);
  spdlog::info("agent: stopping signal={}", sig);
  if (local_api) local_api->stop();
  a.stop();
  return 0;
}

}  // namespace

void add_agent_command(CLI::App& app, std::function<int()>& run_fn) {
  auto f = std::make_shared<Flags>();
  auto* c = app.add_subcommand("agent", "Run the connection agent of one node");
  c->add_option("--kubeconfig", f->kubeconfig, "kubeconfig of the API server");
  c->add_option("--node", f->node, "this node's name (attachments with spec.node = NAME)")->required();
  c->add_option("--host-ip", f->host_ip, "this node's underlay IPv4 address (VXLAN endpoint)")->required();
  c->add_option("--fabric", f->fabric,
                "linux (kernel VXLAN devices and bridges), ovs (Open vSwitch: bridge, ports and OpenFlow "
                "flows) or fake (in memory)")
      ->capture_default_str();
  c->add_option("--ovs-db", f->ovs.db, "ovs fabric: ovsdb-server's socket, unix:PATH")->capture_default_str();
  c->add_option("--ovs-bridge", f->ovs.bridge, "ovs fabric: the bridge KOS owns (made if missing)")->capture_default_str();
  c->add_option("--ovs-datapath", f->ovs.datapath_type,
                "ovs fabric: the bridge's datapath, system (kernel module) or netdev (userspace); default: "
                "system where the openvswitch module is loaded, else netdev")
      ->check(CLI::IsMember({"system", "netdev"}));
  c->add_option("--ovs-rundir", f->ovs.rundir,
                "ovs fabric: ovs-vswitchd's run dir, where it makes BRIDGE.mgmt (default: the --ovs-db socket's folder)");
  c->add_option("--netns", f->netns, "do all kernel work (interfaces, execs) in network namespace NAME");
  c->add_option("--allowed-programs", f->allowed_programs,
                "comma-separated absolute paths that postCreateExec/postDeleteExec may run");
  c->add_option("--workers", f->workers, "reconcile workers")->capture_default_str();
  c->add_flag("--remotes-on-workers", f->remotes_on_workers, kRemotesOnWorkersHelp);
  c->add_option("--vni-linger", f->vni_linger,
                "linux fabric: keep a VNI's VXLAN device and bridge this long after its last attachment "
                "(0: delete them at once)")
      ->capture_default_str();
  c->add_option("--relevance-grace", f->relevance_grace,
                "keep watching a VNI this long after this node's last attachment on it goes, so an "
                "attachment recreated at once (a restarting pod) is not relisted; meanwhile the node "
                "still hears about that VNI (0: stop at once)")
      ->capture_default_str();
  c->add_option("--metrics-listen", f->metrics_listen, "serve /metrics, /healthz and /debug/implementations on HOST:PORT");
  c->add_option("--state-dir", f->state_dir, "directory of the one-agent-per-node lock and the CNI socket")
      ->capture_default_str();
  c->add_option("--cni-socket", f->cni_socket,
                "unix socket of the local API that kos-cni calls (mode 0600; default STATE_DIR/cni.sock; "
                "\"none\": not served)");
  c->callback([&run_fn, f] { run_fn = [f] { return run(*f); }; });
}

}  // namespace kos::cmd
