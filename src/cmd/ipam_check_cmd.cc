// kos ipam-check: reports IPAM inconsistencies (duplicate addresses, addresses without
// locks, orphan or misplaced locks) from one snapshot of the API; --repair deletes orphan
// locks. Exit status: 0 clean, 1 findings, 2 errors.
#include <chrono>
#include <cstdio>
#include <memory>

#include <boost/json/serialize.hpp>

#include "client/kubeconfig.h"
#include "client/rest_client.h"
#include "cmd/commands.h"
#include "controllers/ipam/check.h"

namespace kos::cmd {
namespace {

namespace ipam = controllers::ipam;

struct Flags {
  std::string kubeconfig;
  std::string ns;
  std::string output = "text";
  bool repair = false;
  double timeout_seconds = 10;
};

int fail_with(const std::string& server, const Error& e) {
  std::string msg = e.to_string();
  // Say which server could not be reached, unless the transport's message already does.
  if ((e.code == Errc::kUnavailable || e.code == Errc::kTimeout) &&
      msg.find(server) == std::string::npos)
    msg = "cannot reach the API server at " + server + ": " + msg;
  std::fprintf(stderr, "kos ipam-check: %s\n", msg.c_str());
  return 2;
}

void print_report(const ipam::IpamReport& r) {
  for (const auto& f : r.findings) std::printf("%s\n", f.message.c_str());
  std::printf("%s\n", ipam::format_summary(r).c_str());
}

int run_ipam_check(const Flags& f) {
  auto cfg = client::config_from_env_or_file(f.kubeconfig);
  if (!cfg) {
    std::fprintf(stderr, "kos ipam-check: %s\n", cfg.error().to_string().c_str());
    return 2;
  }
  auto transport = client::Transport::create(*cfg);
  if (!transport) return fail_with(cfg->server, transport.error());
  client::ClientOptions co;
  co.timeout = std::chrono::milliseconds(static_cast<int64_t>(f.timeout_seconds * 1000));
  // The transport already retries a request it could not send until the timeout; one
  // whose connection broke after sending fails the check (run it again) rather than
  // multiplying the time a dead server takes to report.
  co.read_retries = 0;
  client::RestClient c(std::move(*transport), co);
  const bool as_json = f.output == "json";

  auto report = ipam::check_ipam(c, f.ns);
  if (!report) return fail_with(cfg->server, report.error());
  if (!f.repair || report->count(ipam::FindingKind::kOrphanLock) == 0) {
    if (as_json) {
      std::printf("%s\n", boost::json::serialize(ipam::report_json(*report)).c_str());
    } else {
      print_report(*report);
      if (f.repair) std::printf("repair: no orphan locks to delete\n");
    }
    return report->clean() ? 0 : 1;
  }

  if (!as_json) print_report(*report);
  std::vector<ipam::RepairAction> actions;
  auto deleted = ipam::repair_orphan_locks(c, *report, &actions);
  if (!as_json) {
    for (const auto& a : actions) std::printf("repair: %s\n", a.message.c_str());
    if (deleted) std::printf("repair: deleted %d orphan lock%s\n", *deleted, *deleted == 1 ? "" : "s");
  }
  if (!deleted) return fail_with(cfg->server, deleted.error());
  // What is left: a fresh snapshot, so findings that appeared meanwhile count too.
  auto after = ipam::check_ipam(c, f.ns);
  if (!after) return fail_with(cfg->server, after.error());
  if (as_json) {
    boost::json::object o;
    o["check"] = ipam::report_json(*report);
    boost::json::array repairs;
    for (const auto& a : actions) repairs.push_back(ipam::repair_json(a));
    o["repairs"] = std::move(repairs);
    o["deleted"] = *deleted;
    o["afterRepair"] = ipam::report_json(*after);
    std::printf("%s\n", boost::json::serialize(o).c_str());
  } else {
    std::printf("after repair:\n");
    print_report(*after);
  }
  return after->clean() ? 0 : 1;
}

}  // namespace

void add_ipam_check_command(CLI::App& app, std::function<int()>& run) {
  auto f = std::make_shared<Flags>();
  auto* c = app.add_subcommand(
      "ipam-check",
      "Check IPAM consistency: duplicate addresses, attachments without their IPLock, orphan "
      "locks and locks outside their subnet. Exit status 0: clean, 1: findings, 2: error");
  c->add_option("--kubeconfig", f->kubeconfig,
                "kubeconfig of the API server (default: $KUBECONFIG, then ~/.kube/config)");
  c->add_option("-n,--namespace", f->ns, "check only this namespace (default: all)");
  c->add_flag("--repair", f->repair,
              "delete orphan IPLocks (owner gone), with UID and resourceVersion preconditions, "
              "then check again; exit 0 if nothing else remains");
  c->add_option("-o,--output", f->output, "text or json")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "json"}));
  c->add_option("--timeout", f->timeout_seconds, "seconds a request may take, retries of unsent requests included")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->callback([&run, f] { run = [f] { return run_ipam_check(*f); }; });
}

}  // namespace kos::cmd
