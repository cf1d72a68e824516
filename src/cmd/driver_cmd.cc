// kos driver: the attachment throughput driver (see driver/driver.h).
#include <signal.h>

#include <cstdio>
#include <thread>

#include <spdlog/spdlog.h>

#include "cmd/commands.h"
#include "driver/driver.h"
#include "driver/plan.h"

namespace kos::cmd {
namespace {

struct Flags {
  driver::DriverOptions o;
  std::string warmup = "0s", cruise = "30s", cooldown = "30s", lifetime = "0", poll_interval = "100ms",
              stage_timeout = "60s";
};

int run(Flags f) {
  struct {
    const char* flag;
    const std::string& text;
    std::chrono::microseconds& out;
  } durations[] = {{"--warmup", f.warmup, f.o.warmup},
                   {"--cruise", f.cruise, f.o.cruise},
                   {"--cooldown", f.cooldown, f.o.cooldown},
                   {"--lifetime", f.lifetime, f.o.lifetime},
                   {"--poll-interval", f.poll_interval, f.o.poll_interval},
                   {"--stage-timeout", f.stage_timeout, f.o.stage_timeout}};
  for (auto& d : durations) {
    auto v = driver::parse_duration(d.text);
    if (!v) {
      std::fprintf(stderr, "kos driver: %s: %s\n", d.flag, v.error().message.c_str());
      return 2;
    }
    d.out = *v;
  }
  if (auto v = driver::validate(f.o); !v) {
    std::fprintf(stderr, "kos driver: %s\n", v.error().message.c_str());
    return 2;
  }
  // SIGINT/SIGTERM: the first ends the creating phase (the cool-down, the reports and the
  // clean-up still run); a second one exits at once.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  static std::atomic<bool> stop{false};
  std::thread([sigs] {
    for (int n = 0;; ++n) {
      int sig = 0;
      sigwait(&sigs, &sig);
      if (n > 0) std::_Exit(128 + sig);
      std::fprintf(stderr, "\nkos driver: signal %d: stopping (again to exit at once)\n", sig);
      stop = true;
    }
  }).detach();

  auto report = driver::run(f.o, stop);
  if (!report) {
    std::fprintf(stderr, "kos driver: %s\n", report.error().message.c_str());
    return 1;
  }
  std::fputs(driver::summary_table(*report).c_str(), stdout);
  std::fflush(stdout);
  if (!f.o.report_html.empty()) std::fprintf(stderr, "kos driver: report written to %s\n", f.o.report_html.c_str());
  return driver::total_failures(*report) == 0 ? 0 : 1;
}

}  // namespace

void add_driver_command(CLI::App& app, std::function<int()>& run_fn) {
  auto f = std::make_shared<Flags>();
  auto& o = f->o;
  auto* c = app.add_subcommand(
      "driver",
      "Attachment throughput driver: creates subnets over many VNIs, then creates and deletes "
      "NetworkAttachments at a set rate and measures create -> addressed -> ready -> implemented on "
      "every relevant node (-> tested with --ping). Prints a summary table on stdout and a live "
      "progress line on stderr; exits 0 when every measured stage succeeded, 1 on failures or errors, "
      "2 on bad flags. Latencies are measured from the start of the create call on the driver's clock; "
      "implementation times come from the agents' clocks, so run it on the agents' machine (kos "
      "simulate) or with well-synchronised clocks.");
  c->add_option("--kubeconfig", o.kubeconfig, "kubeconfig of the API server (default: $KUBECONFIG, ~/.kube/config)");
  c->add_option("--namespace", o.namespaces,
                "namespace(s) of the run's objects, comma-separated; network i goes to namespace i mod n")
      ->delimiter(',')
      ->capture_default_str();
  c->add_option("--run-id", o.run_id,
                "identifier of the run: label kos-driver-run=ID on every object and prefix of their names "
                "(default: random, r + 6 hex digits)");
  // Networks.
  c->add_option("--vnis", o.vnis, "virtual networks (one Subnet each, on consecutive VNIs)")->capture_default_str();
  c->add_option("--vni-base", o.vni_base, "first VNI (default: random; pick one no other subnet uses)");
  c->add_option("--vpcs", o.vpcs,
                "0: isolated subnets. N > 0: N Vpcs (routing VNIs after the subnets'), network i a subnet "
                "of VPC i mod N; create -> implemented then waits for every node of the attachment's VPC")
      ->capture_default_str();
  c->add_option("--security-groups", o.security_groups,
                "0: no security groups. N > 0: N SecurityGroups per namespace (each takes tcp 22 from its "
                "own members), every attachment in one of them; measures create -> rules in force")
      ->capture_default_str();
  c->add_option("--cidr-base", o.cidr_base,
                "first address of the subnets, laid out upward, each sized for twice its slots")
      ->capture_default_str();
  c->add_option("--slots-top", o.slots_top, "slots of the largest network (network 1)")->capture_default_str();
  c->add_option("--slots-exponent", o.slots_exponent,
                "network i gets ceil(top / i^exponent) slots (at least 1); a slot holds one live attachment")
      ->capture_default_str();
  // Load.
  c->add_option("--rate", o.rate, "creates per second (open loop)")->capture_default_str();
  c->add_option("--arrivals", o.arrivals, "steady (evenly spaced) or poisson (exponential gaps)")
      ->check(CLI::IsMember({"steady", "poisson"}))
      ->capture_default_str();
  c->add_option("--seed", o.seed, "random seed for networks, nodes and arrivals (default: random)");
  c->add_option("--warmup", f->warmup, "duration of the warm-up: creates at the rate, not measured")->capture_default_str();
  auto* cruise = c->add_option("--cruise", f->cruise, "duration of the measured phase")->capture_default_str();
  auto* count = c->add_option("--count", o.count, "measured attachments to create (instead of --cruise)");
  cruise->excludes(count);
  c->add_option("--cooldown", f->cooldown,
                "after the last create, wait at most this long for the measured attachments to finish their "
                "stages; what is still open then counts as failed")
      ->capture_default_str();
  c->add_option("--max-live", o.max_live,
                "most live attachments; when reached, the oldest is deleted before each create (default: every slot)");
  c->add_option("--lifetime", f->lifetime, "delete attachments this long after their create (0: no limit)")
      ->capture_default_str();
  c->add_option("--threads", o.threads, "threads making the create and delete calls")->capture_default_str();
  // Nodes.
  c->add_option("--nodes", o.nodes, "nodes to put attachments on, comma-separated")->delimiter(',');
  c->add_option("--node-prefix", o.node_prefix, "nodes PREFIX-0 .. PREFIX-(N-1), as `kos simulate --prefix` names them");
  c->add_option("--node-count", o.node_count, "N for --node-prefix");
  c->add_option("--node-selector", o.node_selector,
                "label selector of core v1 Nodes to use (only where the API server serves Nodes; KOS does not)");
  c->add_flag("--round-robin", o.round_robin, "choose nodes in turn instead of at random");
  // Measurement.
  c->add_flag("--ping", o.ping,
              "give every attachment a postCreateExec: PROGRAM ${ifname} ${ipv4} ${mac} [IPv4 of a ready peer "
              "of its network], and measure create -> tested from status.postCreateExecReport (exit 0 = success)");
  c->add_option("--ping-program", o.ping_program, "absolute path of the --ping program (on the agents' allow-list)");
  c->add_option("--agent-endpoints", o.agent_endpoints,
                "http://HOST:PORT of agents' (or kos simulate's) --metrics-listen, comma-separated: their "
                "implementation logs give create -> implemented on every relevant node")
      ->delimiter(',');
  c->add_option("--poll-interval", f->poll_interval, "how often the implementation logs are read")->capture_default_str();
  c->add_option("--stage-timeout", f->stage_timeout, "a stage not reached this long after the create fails")
      ->capture_default_str();
  // Output.
  c->add_option("--report", o.report_html, "write an HTML report (latency CDFs, timeline, parameters) to FILE");
  c->add_option("--json", o.report_json, "write the summary as JSON to FILE");
  c->add_option("--marks", o.marks,
                "marks for the HTML report's timelines: FILE holds lines \"EPOCH_MILLISECONDS LABEL\" (e.g. "
                "`echo \"$(date +%s%3N) kill -9 etcd-0\" >> FILE` while the driver runs), read at the end");
  c->add_option("--ledger", o.ledger,
                "write every attachment create and delete call (the clean-up's too) and how it ended to FILE, a "
                "JSON line each "
                "({\"t_ms\", \"op\", \"namespace\", \"name\", \"ok\", \"code\", \"error\"}), as each ends; a "
                "failed call with code Unavailable or Timeout may have been applied");
  c->add_option("--windows", o.windows,
                "also report p50/p99 per stage for N equal groups of the measured attachments in "
                "creation order (more attachments exist for each group than for the one before: "
                "flatness)");
  c->add_flag("--keep", o.keep, "leave the run's subnets and attachments in place at the end");
  c->add_flag("!--no-progress", o.progress, "no progress line on stderr");
  c->footer(
      "Durations: a number and a unit (us, ms, s, m, h), e.g. 500ms, 30s, 2m.\n"
      "Example: kos simulate --kubeconfig K --nodes 10 --metrics-listen 127.0.0.1:9300 &\n"
      "         kos driver --kubeconfig K --node-prefix sim --node-count 10 --vnis 20 --rate 100 \\\n"
      "           --warmup 10s --cruise 60s --max-live 500 --agent-endpoints http://127.0.0.1:9300 --report run.html");
  c->callback([&run_fn, f] { run_fn = [f] { return run(*f); }; });
}

}  // namespace kos::cmd
