// kos controller-manager: the subnet validator and the IPAM controller.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <sstream>
#include <tuple>

#include <spdlog/spdlog.h>

#include "client/event_recorder.h"
#include "client/leader_election.h"
#include "cmd/commands.h"
#include "cmd/metrics_listen.h"
#include "common/duration.h"
#include "common/http_server.h"
#include "common/metrics.h"
#include "controllers/ipam/ipam.h"
#include "controllers/subnet_validator/validator.h"

namespace kos::cmd {
namespace {

struct Flags {
  std::string kubeconfig;
  std::string controllers = "subnet-validator,ipam";
  // Reconciles wait on the API server (three requests per attachment): on etcd, at a few
  // milliseconds each, 4 workers top out near 150 attachments/s. Workers are cheap.
  int workers = 16;
  bool leader_elect = false;
  std::string lease_duration = "15s", renew_deadline = "10s", retry_period = "2s";
  std::string metrics_listen;
  double qps = 5000;  // two writes per attachment: the default must not be the bottleneck
  int burst = 10000;
};

int run(const Flags& f) {
  bool want_validator = false, want_ipam = false;
  std::stringstream ss(f.controllers);
  for (std::string c; std::getline(ss, c, ',');) {
    if (c == "subnet-validator") want_validator = true;
    else if (c == "ipam") want_ipam = true;
    else if (!c.empty()) {
      std::fprintf(stderr, "kos controller-manager: unknown controller '%s' (known: subnet-validator, ipam)\n", c.c_str());
      return 2;
    }
  }
  if (!want_validator && !want_ipam) {
    std::fprintf(stderr, "kos controller-manager: --controllers names no controller\n");
    return 2;
  }
  // Leader election's timing, as kube-controller-manager's flags: a successor takes over
  // within the lease duration of the leader's last renewal.
  client::LeaderElectionConfig lc;
  for (auto [flag, text, out] : {std::tuple{"--leader-elect-lease-duration", &f.lease_duration, &lc.lease_duration},
                                 std::tuple{"--leader-elect-renew-deadline", &f.renew_deadline, &lc.renew_deadline},
                                 std::tuple{"--leader-elect-retry-period", &f.retry_period, &lc.retry_period}}) {
    auto d = parse_duration(*text);
    if (!d || d->count() <= 0) {
      std::fprintf(stderr, "kos controller-manager: %s %s: expected a positive duration like 15s\n", flag,
                   text->c_str());
      return 2;
    }
    *out = std::chrono::duration_cast<std::chrono::milliseconds>(*d);
  }
  if (lc.lease_duration <= lc.renew_deadline || lc.renew_deadline <= lc.retry_period) {
    std::fprintf(stderr,
                 "kos controller-manager: leader election needs --leader-elect-lease-duration > "
                 "--leader-elect-renew-deadline > --leader-elect-retry-period (got %s, %s, %s)\n",
                 f.lease_duration.c_str(), f.renew_deadline.c_str(), f.retry_period.c_str());
    return 2;
  }
  client::ClientOptions co;
  co.qps = f.qps;
  co.burst = f.burst;
  auto client = client::RestClient::from_kubeconfig(f.kubeconfig, co);
  if (!client) {
    std::fprintf(stderr, "kos controller-manager: %s\n", client.error().message.c_str());
    return 1;
  }
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  std::unique_ptr<http::Server> metrics_server;
  if (!f.metrics_listen.empty()) {
    auto addr = parse_metrics_listen(f.metrics_listen);
    auto m = addr ? serve_metrics(*addr) : fail(addr.error());
    if (!m) {
      std::fprintf(stderr, "kos controller-manager: %s\n", m.error().message.c_str());
      return 1;
    }
    metrics_server = std::move(*m);
    spdlog::info("controller-manager: metrics on port {}", metrics_server->port());
  }
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  client::EventRecorder events(*client, "kos-controller-manager", host);
  std::unique_ptr<controllers::SubnetValidator> validator;
  std::unique_ptr<controllers::Ipam> ipam;
  auto start_controllers = [&]() -> Result<void> {
    if (want_validator) {
      validator = std::make_unique<controllers::SubnetValidator>(
          *client, controllers::ValidatorOptions{std::max(1, f.workers / 2)}, &events);
      if (auto r = validator->start(); !r) return r;
    }
    if (want_ipam) {
      ipam = std::make_unique<controllers::Ipam>(*client, controllers::IpamOptions{f.workers}, &events);
      if (auto r = ipam->start(); !r) return r;
    }
    return {};
  };

  std::unique_ptr<client::LeaderElector> elector;
  std::atomic<bool> stopping{false};
  if (f.leader_elect) {
    lc.name = "kos-controller-manager";
    lc.identity = std::string(host) + "_" + std::to_string(getpid());
    lc.on_started_leading = [&] {
      if (auto r = start_controllers(); !r) spdlog::error("controller-manager: {}", r.error().message);
    };
    // Stepping down means someone else may lead now: stop at once (a supervisor restarts
    // this process as a fresh candidate).
    lc.on_stopped_leading = [&stopping] {
      if (stopping) return;  // we gave the lease up on SIGTERM
      spdlog::error("controller-manager: lost the lease; exiting");
      std::_Exit(1);
    };
    elector = std::make_unique<client::LeaderElector>(*client, lc);
    elector->start();
    spdlog::info("controller-manager: campaigning for lease kube-system/kos-controller-manager as {} "
                 "(lease {}, renew deadline {}, retry {})",
                 lc.identity, f.lease_duration, f.renew_deadline, f.retry_period);
  } else if (auto r = start_controllers(); !r) {
    std::fprintf(stderr, "kos controller-manager: %s\n", r.error().message.c_str());
    return 1;
  }
  spdlog::info("controller-manager: running controllers={} workers={}", f.controllers, f.workers);
  int sig = 0;
  sigwait(&sigs, &sig);
  spdlog::info("controller-manager: stopping signal={}", sig);
  stopping = true;
  if (ipam) ipam->stop();
  if (validator) validator->stop();
  if (elector) elector->stop();
  return 0;
}

}  // namespace

void add_controller_manager_command(CLI::App& app, std::function<int()>& run_fn) {
  auto f = std::make_shared<Flags>();
  auto* c = app.add_subcommand("controller-manager",
                               "Run the KOS controllers: the subnet validator and the IPAM controller");
  c->add_option("--kubeconfig", f->kubeconfig,
                "kubeconfig of the API server (default: $KUBECONFIG, then ~/.kube/config)");
  c->add_option("--controllers", f->controllers, "comma-separated: subnet-validator, ipam")
      ->capture_default_str();
  c->add_option("--workers", f->workers, "IPAM workers (the validator gets half, at least 1)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_flag("--leader-elect", f->leader_elect,
              "run the controllers only while holding the lease kube-system/kos-controller-manager "
              "(never needed for correctness: it avoids duplicate work)");
  c->add_option("--leader-elect-lease-duration", f->lease_duration,
                 "how long a candidate waits, after it last saw the lease renewed, before it takes "
                 "the lease over: the longest hand-over after a leader dies")
      ->capture_default_str();
  c->add_option("--leader-elect-renew-deadline", f->renew_deadline,
                "how long the leader keeps trying to renew before it steps down (and exits); "
                "shorter than the lease duration")
      ->capture_default_str();
  c->add_option("--leader-elect-retry-period", f->retry_period,
                "how often the leader renews and candidates try to take the lease")
      ->capture_default_str();
  c->add_option("--metrics-listen", f->metrics_listen, "serve /metrics and /healthz on HOST:PORT");
  c->add_option("--qps", f->qps, "client-side request rate limit")->capture_default_str();
  c->add_option("--burst", f->burst, "client-side request burst")->capture_default_str();
  c->callback([&run_fn, f] { run_fn = [f] { return run(*f); }; });
}

}  // namespace kos::cmd
