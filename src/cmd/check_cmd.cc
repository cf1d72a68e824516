// kos check -f FILE: connectivity tests as code (check/check.h). Each expectation is probed
// from inside its source guest by the agent of the guest's node. Exit status: 0 every
// check got what it expected, 1 a mismatch, 2 a bad file or a check that could not run.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include <boost/json/serialize.hpp>

#include "check/check.h"
#include "client/kubeconfig.h"
#include "client/rest_client.h"
#include "cmd/commands.h"

namespace kos::cmd {
namespace {

namespace fs = std::filesystem;

struct Flags {
  std::string file;
  std::string kubeconfig;
  std::string ns;
  std::vector<std::string> agent_sockets;
  std::string data_dir;
  int parallel = 4;
  std::string output = "text";
  double request_timeout = 10;
};

constexpr char kDefaultUpDir[] = "kos-data";  // kos up's default --data-dir

int error(const std::string& msg) {
  std::fprintf(stderr, "kos check: %s\n", msg.c_str());
  return 2;
}

Result<std::string> read_file(const std::string& path) {
  std::stringstream s;
  if (path == "-") {
    s << std::cin.rdbuf();
    return s.str();
  }
  std::ifstream in(path);
  if (!in) return fail(Errc::kNotFound, "cannot read " + path + ": " + std::strerror(errno));
  s << in.rdbuf();
  return s.str();
}

int run_check(const Flags& f) {
  auto text = read_file(f.file);
  if (!text) return error(text.error().message);
  auto file = check::parse_check_file(*text, f.file == "-" ? "<stdin>" : f.file, f.ns);
  if (!file) {
    std::fprintf(stderr, "%s\n", file.error().message.c_str());
    return 2;
  }

  // A kos up on this machine: its data dir has the agents' sockets and the admin kubeconfig.
  std::error_code ec;
  std::string up_dir;
  if (!f.data_dir.empty()) {
    if (!fs::is_directory(f.data_dir, ec)) return error("--data-dir " + f.data_dir + ": no such directory");
    up_dir = fs::absolute(f.data_dir).string();
  } else if (fs::exists(fs::path(kDefaultUpDir) / "up.json", ec)) {
    up_dir = fs::absolute(kDefaultUpDir).string();
  }
  check::AgentSockets sockets;
  sockets.up_dir = up_dir;
  for (const auto& s : f.agent_sockets)
    if (auto r = sockets.add_flag(s); !r) return error(r.error().message);

  std::string kubeconfig = f.kubeconfig;
  const char* env = std::getenv("KUBECONFIG");
  if (kubeconfig.empty() && (!env || !*env) && !up_dir.empty() && fs::exists(up_dir + "/kubeconfig", ec))
    kubeconfig = up_dir + "/kubeconfig";
  auto cfg = client::config_from_env_or_file(kubeconfig);
  if (!cfg)
    return error(cfg.error().to_string() +
                 (kubeconfig.empty() ? " (give one with --kubeconfig, or --data-dir for a kos up's)" : ""));
  auto transport = client::Transport::create(*cfg);
  if (!transport) return error("cannot reach the API server at " + cfg->server + ": " + transport.error().message);
  client::ClientOptions co;
  co.timeout = std::chrono::milliseconds(static_cast<int64_t>(f.request_timeout * 1000));
  auto c = std::make_shared<client::RestClient>(std::move(*transport), co);

  check::AgentCluster cluster(c, sockets);
  auto report = check::run_checks(*file, cluster, f.parallel);
  if (f.output == "json") {
    std::printf("%s\n", boost::json::serialize(check::report_json(report)).c_str());
  } else {
    const std::string table = check::format_table(report);
    std::fwrite(table.data(), 1, table.size(), stdout);
  }
  return report.exit_code();
}

}  // namespace

void add_check_command(CLI::App& app, std::function<int()>& run) {
  auto f = std::make_shared<Flags>();
  auto* c = app.add_subcommand(
      "check",
      "Connectivity tests as code: probe each expectation of FILE from inside its source guest (through the agent "
      "of the guest's node: a TCP connect, a UDP datagram or an ICMP echo, with a short timeout) and print a table. "
      "Exit status 0: every check got what it expected, 1: a mismatch, 2: a bad file or a check that could not run");
  c->add_option("-f,--file", f->file, "the checks: a YAML or JSON file (\"-\": stdin); format below")->required();
  c->add_option("--kubeconfig", f->kubeconfig,
                "kubeconfig of the API server (default: $KUBECONFIG, then a kos up data dir's, then ~/.kube/config)");
  c->add_option("-n,--namespace", f->ns, "namespace of the attachments named without one (replaces the file's)");
  c->add_option("--agent-socket", f->agent_sockets,
                "the local API socket of the agents: PATH for every node, or NODE=PATH (repeatable); default: a kos "
                "up data dir's DIR/agents/NODE.cni.sock, else /var/lib/kos/agent/cni.sock. The sockets are root's");
  c->add_option("--data-dir", f->data_dir,
                "the data dir of a kos up on this machine, for its agents' sockets and its kubeconfig (default: "
                "kos-data if a kos up runs there)");
  c->add_option("--parallel", f->parallel, "probes at once")->capture_default_str()->check(CLI::Range(1, 64));
  c->add_option("-o,--output", f->output, "text or json")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "json"}));
  c->add_option("--request-timeout", f->request_timeout, "seconds an API request may take")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->footer(
      "FILE:\n"
      "  namespace: demo          # default namespace of the attachments (default \"default\")\n"
      "  timeout: 1s              # per probe (100ms..10s; default 1s)\n"
      "  checks:\n"
      "  - name: sftp over ssh    # optional label\n"
      "    from: client           # a NetworkAttachment (NAME or NAMESPACE/NAME): addressed and implemented\n"
      "    to: server             # a NetworkAttachment (its status.ipv4) or an IPv4 address\n"
      "    protocol: tcp          # tcp | udp | icmp\n"
      "    port: 22               # tcp and udp only\n"
      "    expect: allow          # allow | deny\n"
      "    timeout: 500ms         # optional, this check's\n"
      "allow: the network delivered the probe (TCP connected or refused with a reset, a UDP answer or port\n"
      "unreachable, an ICMP echo reply); deny: no answer within the timeout, or unreachable.");
  c->callback([&run, f] { run = [f] { return run_check(*f); }; });
}

}  // namespace kos::cmd
