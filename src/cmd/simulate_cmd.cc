// kos simulate: N connection agents on the fake fabric in one process, as N simulated
// nodes PREFIX-0 .. PREFIX-(N-1) for scale tests and `kos driver`. Each agent has its own
// REST client (its own connections and transport thread, unless --transports shares a few
// among them) and its own informers, exactly as a `kos agent --fabric fake` process would.
#include <signal.h>
#include <sys/resource.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include "agent/agent.h"
#include "agent/implementation_log.h"
#include "api/cidr.h"
#include "api/names.h"
#include "apiserver/authorization.h"
#include "client/kubeconfig.h"
#include "pki/pki.h"
#include "client/rest_client.h"
#include "cmd/commands.h"
#include "cmd/metrics_listen.h"
#include "common/http_server.h"
#include "common/metrics.h"
#include "driver/plan.h"
#include "fabric/fake/fake_fabric.h"

namespace kos::cmd {
namespace {

struct Flags {
  std::string kubeconfig;
  int nodes = 0;
  std::string prefix = "sim";
  std::string host_ip_base = "10.255.0.1";
  int workers = 2;
  bool remotes_on_workers = false;
  std::string metrics_listen;
  std::string fake_latency = "0";
  std::string relevance_grace = "1s";
  std::string allowed_programs;
  size_t log_capacity = agent::ImplementationLog::kDefaultCapacity;
  int transports = 0;
  std::string node_credentials;  // a PKI dir: each node its own client certificate
};

// One simulated node.
struct Node {
  std::string name;
  std::unique_ptr<fabric::FakeFabric> fabric;
  std::shared_ptr<client::RestClient> client;
  std::unique_ptr<agent::Agent> agent;
};

// fn(i) for i in [0, n) on up to `threads` threads.
void parallel(int n, int threads, const std::function<void(int)>& fn) {
  std::atomic<int> next{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < std::min(n, threads); ++t)
    ts.emplace_back([&] {
      for (int i = next++; i < n; i = next++) fn(i);
    });
  for (auto& t : ts) t.join();
}

long proc_status(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field, 0) == 0) return std::atol(line.c_str() + std::strlen(field));
  return -1;
}

long open_fds() {
  std::error_code ec;
  long n = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec); !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) ++n;
  return n;
}

int run(const Flags& f) {
  auto fail_flag = [](const std::string& m) {
    std::fprintf(stderr, "kos simulate: %s\n", m.c_str());
    return 2;
  };
  if (f.nodes < 1 || f.nodes > 10000) return fail_flag("--nodes: 1..10000");
  if (f.workers < 1 || f.workers > 64) return fail_flag("--workers: 1..64");
  if (f.transports < 0 || f.transports > f.nodes) return fail_flag("--transports: 0 (one per agent) .. --nodes");
  if (auto e = api::dns1123_subdomain_error(f.prefix + "-" + std::to_string(f.nodes - 1)))
    return fail_flag("--prefix " + f.prefix + ": node names would be invalid: " + *e);
  auto base = api::parse_ipv4(f.host_ip_base);
  if (!base) return fail_flag("--host-ip-base " + f.host_ip_base + ": " + base.error().message);
  if (*base == 0 || uint64_t{*base} + static_cast<uint64_t>(f.nodes) - 1 > 0xFFFFFFFEull)
    return fail_flag("--host-ip-base: base + nodes - 1 must be a valid address");
  auto latency = driver::parse_duration(f.fake_latency);
  if (!latency) return fail_flag("--fake-latency: " + latency.error().message);
  auto grace = driver::parse_duration(f.relevance_grace);
  if (!grace) return fail_flag("--relevance-grace: " + grace.error().message);
  if (f.log_capacity < 1) return fail_flag("--implementation-log-capacity: at least 1");
  ListenAddress listen;
  if (!f.metrics_listen.empty()) {
    auto addr = parse_metrics_listen(f.metrics_listen);
    if (!addr) return fail_flag(addr.error().message);
    listen = *addr;
  }
  auto cfg = client::config_from_env_or_file(f.kubeconfig);
  if (!cfg) {
    std::fprintf(stderr, "kos simulate: %s\n", cfg.error().message.c_str());
    return 1;
  }
  // Every agent holds a watch per informer plus pooled connections: allow all the
  // descriptors the hard limit allows.
  if (rlimit rl; getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> allowed;
  std::stringstream ss(f.allowed_programs);
  for (std::string p; std::getline(ss, p, ',');)
    if (!p.empty()) allowed.push_back(p);

  // With --node-credentials, every simulated node authenticates as itself (kos:node:NAME),
  // as real agents do; its connections are its own then.
  std::optional<pki::CertKey> node_ca;
  if (!f.node_credentials.empty()) {
    if (f.transports > 0) return fail_flag("--node-credentials gives each node its own connections: drop --transports");
    auto ca = pki::load_ca(f.node_credentials);
    if (!ca) {
      std::fprintf(stderr, "kos simulate: --node-credentials: %s\n", ca.error().message.c_str());
      return 1;
    }
    if (!cfg->tls) return fail_flag("--node-credentials needs an https API server");
    node_ca = std::move(*ca);
  }
  std::vector<std::shared_ptr<client::Transport>> shared;
  for (int i = 0; i < f.transports; ++i) {
    auto t = client::Transport::create(*cfg);
    if (!t) {
      std::fprintf(stderr, "kos simulate: %s\n", t.error().message.c_str());
      return 1;
    }
    shared.push_back(*t);
  }
  agent::ImplementationLog log(f.log_capacity);
  std::vector<Node> nodes(static_cast<size_t>(f.nodes));
  for (int i = 0; i < f.nodes; ++i) {
    Node& n = nodes[static_cast<size_t>(i)];
    n.name = f.prefix + "-" + std::to_string(i);
    fabric::FakeFabricOptions fo;
    fo.latency = *latency;
    n.fabric = std::make_unique<fabric::FakeFabric>(fo);
    std::shared_ptr<client::Transport> t;
    if (!shared.empty()) t = shared[static_cast<size_t>(i) % shared.size()];
    else {
      client::RestConfig node_cfg = *cfg;
      if (node_ca) {
        auto user = apiserver::user_for_role("node", n.name);
        if (!user) return fail_flag("--prefix: " + user.error().message);
        pki::IssueOptions io;
        io.subject = {user->name, user->groups};
        auto cert = pki::issue(*node_ca, io);
        if (!cert) {
          std::fprintf(stderr, "kos simulate: %s\n", cert.error().message.c_str());
          return 1;
        }
        node_cfg.cert_pem = cert->cert_pem;
        node_cfg.key_pem = cert->key_pem;
        node_cfg.bearer_token.clear();
      }
      auto made = client::Transport::create(node_cfg);
      if (!made) {
        std::fprintf(stderr, "kos simulate: %s\n", made.error().message.c_str());
        return 1;
      }
      t = *made;
    }
    n.client = std::make_shared<client::RestClient>(t);
  }

  std::atomic<bool> started{false};
  std::unique_ptr<http::Server> server;
  if (!f.metrics_listen.empty()) {
    // The agents' gauges are process-wide; each agent adds its own share: they are sums.
    // /debug/fabric: what each simulated node has programmed, to compare with what the
    // API says it should have (tests of convergence).
    auto fabric_json = [&nodes] {
      boost::json::array out;
      for (const auto& n : nodes) {
        boost::json::array locals, remotes;
        for (const auto& l : n.fabric->locals())
          locals.push_back({{"vni", l.vni}, {"ip", api::format_ipv4(l.guest_ip)}, {"mac", api::format_mac(l.mac)}});
        for (const auto& r : n.fabric->remotes())
          remotes.push_back({{"vni", r.vni},
                             {"ip", api::format_ipv4(r.guest_ip)},
                             {"mac", api::format_mac(r.mac)},
                             {"hostIP", api::format_ipv4(r.host_ip)}});
        out.push_back({{"node", n.name}, {"locals", std::move(locals)}, {"remotes", std::move(remotes)}});
      }
      return boost::json::serialize(boost::json::object{{"nodes", std::move(out)}});
    };
    auto m = serve_metrics(listen, {.healthy = [&started] { return started.load(); },
                                    .log = &log,
                                    .json_pages = {{"/debug/fabric", fabric_json}}});
    if (!m) {
      std::fprintf(stderr, "kos simulate: --metrics-listen %s: %s\n", f.metrics_listen.c_str(), m.error().message.c_str());
      return 1;
    }
    server = std::move(*m);
  }

  // Start the agents a few at a time: each start waits for its informers' first lists.
  std::mutex err_mu;
  std::string first_error;
  parallel(f.nodes, 8, [&](int i) {
    Node& n = nodes[static_cast<size_t>(i)];
    agent::AgentOptions ao;
    ao.node = n.name;
    ao.host_ip = *base + static_cast<uint32_t>(i);
    ao.workers = f.workers;
    ao.remotes_inline = !f.remotes_on_workers;
    ao.relevance_grace = std::chrono::duration_cast<std::chrono::milliseconds>(*grace);
    ao.allowed_programs = allowed;
    if (server) ao.on_implemented = [&log](const agent::Implemented& r) { log.record(r); };
    auto a = std::make_unique<agent::Agent>(n.client, *n.fabric, ao);
    if (auto r = a->start(); !r) {
      std::lock_guard lk(err_mu);
      if (first_error.empty()) first_error = n.name + ": " + r.error().message;
      a->stop();
      return;
    }
    n.agent = std::move(a);
  });
  auto stop_all = [&] {
    parallel(f.nodes, 8, [&](int i) {
      if (auto& a = nodes[static_cast<size_t>(i)].agent) a->stop();
    });
  };
  if (!first_error.empty()) {
    std::fprintf(stderr, "kos simulate: an agent did not start: %s\n", first_error.c_str());
    stop_all();
    return 1;
  }
  started = true;
  const double start_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  spdlog::info("simulate: started nodes={} names={}-0..{}-{} host_ips={}..{} metrics={} transports={} "
               "workers_per_agent={} fake_latency={} start_seconds={:.2f} threads={} open_fds={}",
               f.nodes, f.prefix, f.prefix, f.nodes - 1, api::format_ipv4(*base),
               api::format_ipv4(*base + static_cast<uint32_t>(f.nodes - 1)),
               server ? listen.host + ":" + std::to_string(server->port()) : "off",
               f.transports ? std::to_string(f.transports) : "one per agent", f.workers,
               driver::format_duration(*latency), start_s, proc_status("Threads:"),
               open_fds());
  int sig = 0;
  sigwait(&sigs, &sig);
  const auto s0 = std::chrono::steady_clock::now();
  stop_all();
  server.reset();
  spdlog::info("simulate: stopped nodes={} signal={} stop_seconds={:.2f} implementations_logged={}", f.nodes, sig,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count(), log.next_seq());
  return 0;
}

}  // namespace

void add_simulate_command(CLI::App& app, std::function<int()>& run_fn) {
  auto f = std::make_shared<Flags>();
  auto* c = app.add_subcommand(
      "simulate",
      "Run N connection agents on the fake (in-memory) fabric in one process: simulated nodes "
      "PREFIX-0 .. PREFIX-(N-1) for scale tests and `kos driver`. Stops cleanly on SIGINT/SIGTERM.");
  c->add_option("--kubeconfig", f->kubeconfig, "kubeconfig of the API server (default: $KUBECONFIG, ~/.kube/config)");
  c->add_option("--nodes", f->nodes, "number of simulated nodes (agents)")->required();
  c->add_option("--prefix", f->prefix, "node names are PREFIX-0 .. PREFIX-(N-1)")->capture_default_str();
  c->add_option("--host-ip-base", f->host_ip_base, "host (underlay) IP of node 0; node i gets base + i")
      ->capture_default_str();
  c->add_option("--workers", f->workers, "reconcile workers per agent")->capture_default_str();
  c->add_flag("--remotes-on-workers", f->remotes_on_workers, kRemotesOnWorkersHelp);
  c->add_option("--metrics-listen", f->metrics_listen,
                "serve /metrics (the kos_agent_* families over all agents), /healthz (200 once every agent has "
                "started), /debug/implementations (the agents' implementation log) and /debug/fabric (each node's "
                "programmed local and remote interfaces, JSON) on HOST:PORT (port 0: any)");
  c->add_option("--fake-latency", f->fake_latency, "time every fake fabric call takes, e.g. 1ms")->capture_default_str();
  c->add_option("--relevance-grace", f->relevance_grace,
                "keep a VNI's watch this long after the node's last attachment on it goes (as kos agent)")
      ->capture_default_str();
  c->add_option("--allowed-programs", f->allowed_programs,
                "comma-separated absolute paths that postCreateExec/postDeleteExec may run (on this host)");
  c->add_option("--implementation-log-capacity", f->log_capacity,
                "records kept by the implementation log (shared by all agents)")
      ->capture_default_str();
  c->add_option("--transports", f->transports,
                "share this many client transports (connection pools, each with one I/O thread) among the "
                "agents instead of one per agent (0)")
      ->capture_default_str();
  c->add_option("--node-credentials", f->node_credentials,
                "the cluster PKI dir (DATA_DIR/pki): each simulated node authenticates with a client "
                "certificate of its own (user kos:node:NAME), issued at start, as real agents do");
  c->callback([&run_fn, f] { run_fn = [f] { return run(*f); }; });
}

}  // namespace kos::cmd
