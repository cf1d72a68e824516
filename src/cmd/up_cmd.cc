// kos up: the whole system on one machine, under one parent process: the API server on the
// embedded store, the controller-manager, and N simulated nodes (network namespaces on an
// underlay bridge, one `kos agent --netns` each). kos down: removes what a kos up that did
// not stop cleanly left behind.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "client/rest_client.h"
#include "cmd/commands.h"
#include "up/credentials.h"
#include "up/examples.h"
#include "up/local_network.h"
#include "up/node_ovs.h"
#include "up/supervisor.h"

namespace kos::cmd {
namespace {

namespace fs = std::filesystem;
using up::LocalNetwork;

struct UpFlags {
  int nodes = 3;
  std::string data_dir = "kos-data";
  std::string listen = "127.0.0.1:6443";
  std::string fabric = "linux";
  bool examples = false;
  std::string examples_dir;
  std::string guest_script;
};

// Names of everything one data dir's kos up makes start with this: "kos" and 6 hex digits
// of the data dir's absolute path (FNV-1a), so two data dirs never share a namespace.
std::string prefix_of(const fs::path& data_dir) {
  uint32_t h = 2166136261u;
  for (unsigned char c : data_dir.string()) h = (h ^ c) * 16777619u;
  char buf[16];
  std::snprintf(buf, sizeof buf, "kos%06x", h & 0xffffffu);
  return buf;
}

fs::path absolute_dir(const std::string& d) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::absolute(d), ec);
  return ec ? fs::absolute(d) : p;
}

fs::path self_exe() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path("kos") : p;
}

// An installed file (<exe>/../<installed>) or, in a build tree, the source tree's.
std::string find_resource(const std::string& installed, const std::string& in_source) {
  std::error_code ec;
  for (const fs::path& p : {self_exe().parent_path().parent_path() / installed, fs::path(KOS_SOURCE_DIR) / in_source})
    if (fs::exists(p, ec)) return p.string();
  return {};
}

// "pid N" of the kos up holding `dir`, from its state file.
std::string holder_of(const fs::path& dir) {
  std::ifstream in(dir / "up.json");
  std::stringstream s;
  s << in.rdbuf();
  boost::system::error_code ec;
  auto v = boost::json::parse(s.str(), ec);
  if (ec || !v.is_object() || !v.as_object().contains("pid")) return "pid unknown";
  return "pid " + boost::json::serialize(v.as_object().at("pid"));
}

// Node i's socket for kos-cni (a plugin config's agentSocket).
std::string cni_socket(const fs::path& dir, int i) {
  return (fs::absolute(dir) / "agents" / (LocalNetwork::node_name(i) + ".cni.sock")).string();
}

void write_state(const fs::path& dir, const std::string& prefix, const std::vector<pid_t>& children) {
  boost::json::object o;
  o["pid"] = getpid();
  o["prefix"] = prefix;
  boost::json::array c;
  for (pid_t p : children) c.push_back(p);
  o["children"] = std::move(c);
  std::ofstream(dir / "up.json.tmp") << boost::json::serialize(o) << "\n";
  std::error_code ec;
  fs::rename(dir / "up.json.tmp", dir / "up.json", ec);
}

// Whether HOST:PORT can be bound now (it is free).
std::string port_problem(const std::string& listen) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) return "--listen " + listen + ": HOST:PORT expected";
  std::string host = listen.substr(0, colon);
  int port = 0;
  try {
    port = std::stoi(listen.substr(colon + 1));
  } catch (...) {
    port = -1;
  }
  if (port <= 0 || port > 65535) return "--listen " + listen + ": the port must be 1..65535";
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) return "--listen " + listen + ": an IPv4 address expected";
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  int r = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  int err = errno;
  close(fd);
  if (r == 0) return {};
  if (err == EADDRINUSE)
    return "--listen " + listen + ": the address is in use (another kos up or API server?); pick another with --listen";
  return "--listen " + listen + ": " + std::strerror(err);
}

bool stop_requested(const sigset_t& sigs, std::chrono::milliseconds wait) {
  timespec ts{static_cast<time_t>(wait.count() / 1000), static_cast<long>(wait.count() % 1000) * 1000000};
  return sigtimedwait(&sigs, nullptr, &ts) > 0;
}

int run_up(const UpFlags& f) {
  auto err = [](const std::string& m) {
    std::fprintf(stderr, "kos up: %s\n", m.c_str());
    return 1;
  };
  if (f.nodes < 1 || f.nodes > LocalNetwork::kMaxNodes)
    return err("--nodes " + std::to_string(f.nodes) + ": between 1 and " + std::to_string(LocalNetwork::kMaxNodes));
  if (f.fabric != "linux" && f.fabric != "ovs" && f.fabric != "fake")
    return err("--fabric " + f.fabric + ": linux, ovs or fake");
  const bool real_fabric = f.fabric != "fake";  // linux or ovs: node namespaces, real interfaces
  if (real_fabric && geteuid() != 0)
    return err("the " + f.fabric + " fabric builds network namespaces, which needs root: run it as root (sudo), or use "
               "--fabric fake to run without (no kernel networking, no pings)");
  if (f.fabric == "ovs" && !up::ovs_installed())
    return err("--fabric ovs needs Open vSwitch's ovsdb-server, ovs-vswitchd and ovs-vsctl (Debian package "
               "openvswitch-switch; scripts/install-deps.sh installs it)");
  if (f.examples && f.nodes < 2) return err("--examples places attachments on node-0 and node-1: use --nodes 2 or more");

  const fs::path dir = absolute_dir(f.data_dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return err("cannot create data dir " + dir.string() + ": " + ec.message());
  int lock_fd = open((dir / "up.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd < 0) return err("cannot open " + (dir / "up.lock").string() + ": " + std::strerror(errno));
  if (flock(lock_fd, LOCK_EX | LOCK_NB) != 0)
    return err("data dir " + dir.string() + " is in use by another kos up (" + holder_of(dir) +
               "); stop it, or use another --data-dir");
  if (auto p = port_problem(f.listen); !p.empty()) return err(p);
  const std::string prefix = prefix_of(dir);
  if (auto left = LocalNetwork::existing(prefix); !left.empty())
    return err("network namespaces of an earlier kos up on " + dir.string() + " are still there (" + left[0] +
               (left.size() > 1 ? " and " + std::to_string(left.size() - 1) + " more" : "") +
               "): it did not stop cleanly. Remove them with: kos down --data-dir " + f.data_dir);

  std::vector<up::ExampleObject> examples;
  if (f.examples) {
    std::string edir = f.examples_dir.empty() ? find_resource("share/kos/examples", "examples") : f.examples_dir;
    if (edir.empty()) return err("no examples directory found; give one with --examples-dir");
    auto loaded = up::load_examples(edir);
    if (!loaded) return err(loaded.error().message);
    examples = std::move(*loaded);
  }
  std::string script = f.guest_script.empty() ? find_resource("lib/kos/kos-guest-netns", "scripts/kos-guest-netns")
                                              : absolute_dir(f.guest_script).string();
  if (real_fabric && (script.empty() || access(script.c_str(), X_OK) != 0))
    return err("kos-guest-netns not found or not executable (" + (script.empty() ? "searched" : script) +
               "); give it with --guest-script");

  // Stop signals are taken by sigtimedwait below; blocked before any thread starts.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  up::Supervisor sup;
  write_state(dir, prefix, {});
  auto cleanup = [&](int code) {
    sup.say("stopping");
    sup.stop_all(std::chrono::seconds(5));
    size_t n = LocalNetwork::existing(prefix).size();
    if (auto r = LocalNetwork::remove(prefix); !r) {
      sup.say("could not remove everything: " + r.error().message + "; run kos down --data-dir " + f.data_dir);
      code = code ? code : 1;
    }
    fs::remove(dir / "up.json", ec);
    sup.say("stopped: every process ended, " + std::to_string(n) + " network namespaces removed; the objects stay in " +
            dir.string());
    return code;
  };
  const auto nodes_made = std::chrono::system_clock::now();  // every guest interface is made after this
  if (real_fabric) {
    sup.say("making " + std::to_string(f.nodes) + " node namespaces " + LocalNetwork::node_ns(prefix, 0) +
            (f.nodes > 1 ? ".." + LocalNetwork::node_ns(prefix, f.nodes - 1) : "") + " on underlay " +
            LocalNetwork::underlay_ns(prefix));
    if (auto r = LocalNetwork::create(prefix, f.nodes); !r) {
      std::fprintf(stderr, "kos up: building the node namespaces: %s\n", r.error().message.c_str());
      return cleanup(1);
    }
  }

  const std::string exe = self_exe().string();
  const std::string kubeconfig = (dir / "kubeconfig").string();
  fs::remove(kubeconfig, ec);
  if (auto r = sup.spawn("apiserver", {exe, "apiserver", "--listen", f.listen, "--data-dir", dir.string(),
                                       "--write-kubeconfig", kubeconfig});
      !r) {
    sup.say(r.error().message);
    return cleanup(1);
  }
  // The server writes the kubeconfig once it serves.
  const auto t0 = std::chrono::steady_clock::now();
  while (!fs::exists(kubeconfig, ec)) {
    if (auto gone = sup.exited()) {
      sup.say(*gone + " before it served; see its lines above");
      return cleanup(1);
    }
    if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(60)) {
      sup.say("the API server did not start serving within 60 s");
      return cleanup(1);
    }
    if (stop_requested(sigs, std::chrono::milliseconds(50))) return cleanup(0);
  }
  // Each component its own credential: the controller-manager's, and one per node (a node
  // can change only its own attachments).
  const auto admin = client::load_kubeconfig(kubeconfig);
  if (!admin) {
    sup.say("cannot read " + kubeconfig + ": " + admin.error().message);
    return cleanup(1);
  }
  auto credential = [&](const std::string& role, const std::string& scope,
                        const std::string& path) -> bool {
    up::CredentialRequest cr;
    cr.pki_dir = (dir / "pki").string();
    cr.role = role;
    cr.scope = scope;
    cr.server = admin->server;
    if (auto w = up::write_credential_kubeconfig(cr, path); !w) {
      sup.say("issuing the " + role + (scope.empty() ? "" : " " + scope) + " credential: " + w.error().message);
      return false;
    }
    return true;
  };
  const std::string cm_kubeconfig = (dir / "credentials" / "controller-manager.kubeconfig").string();
  if (!credential("controller", "", cm_kubeconfig)) return cleanup(1);
  if (auto r = sup.spawn("controllers", {exe, "controller-manager", "--kubeconfig", cm_kubeconfig}); !r) {
    sup.say(r.error().message);
    return cleanup(1);
  }
  // With --fabric ovs, each node's own ovsdb-server and ovs-vswitchd, in its namespace.
  std::vector<std::string> ovs_dbs;
  if (f.fabric == "ovs") {
    for (int i = 0; i < f.nodes; ++i) {
      auto o = up::start_node_ovs(sup, LocalNetwork::node_name(i), LocalNetwork::node_ns(prefix, i),
                                  dir / "ovs" / LocalNetwork::node_name(i), LocalNetwork::host_ip(i) + "/24");
      if (!o) {
        sup.say("Open vSwitch of " + LocalNetwork::node_name(i) + ": " + o.error().message);
        return cleanup(1);
      }
      ovs_dbs.push_back(o->db);
    }
  }
  for (int i = 0; i < f.nodes; ++i) {
    const std::string node_kubeconfig =
        (dir / "credentials" / (LocalNetwork::node_name(i) + ".kubeconfig")).string();
    if (!credential("node", LocalNetwork::node_name(i), node_kubeconfig)) return cleanup(1);
    std::vector<std::string> argv = {exe, "agent", "--kubeconfig", node_kubeconfig, "--node", LocalNetwork::node_name(i),
                                     "--host-ip", LocalNetwork::host_ip(i), "--fabric", f.fabric,
                                     "--state-dir", (dir / "agents").string(),
                                     "--cni-socket", cni_socket(dir, i)};
    if (real_fabric) {
      argv.insert(argv.end(), {"--netns", LocalNetwork::node_ns(prefix, i), "--allowed-programs", script});
    }
    if (f.fabric == "ovs") argv.insert(argv.end(), {"--ovs-db", ovs_dbs[static_cast<size_t>(i)], "--ovs-datapath", "netdev"});
    if (auto r = sup.spawn("agent " + LocalNetwork::node_name(i), argv); !r) {
      sup.say(r.error().message);
      return cleanup(1);
    }
  }
  write_state(dir, prefix, sup.pids());

  std::ostringstream screen;
  screen << "\n  KOS is up: " << f.nodes << " node" << (f.nodes > 1 ? "s" : "") << " on the "
         << (f.fabric == "linux" ? "kernel VXLAN" : f.fabric == "ovs" ? "Open vSwitch" : "fake (in-memory)")
         << " fabric; data in " << dir.string() << "\n"
 << "    API server    " << admin->server << " (TLS, CA " << (dir / "pki" / "ca.crt").string() << "), embedded store " << (dir / "kos.db").string() << "\n"
         << "    controllers   subnet validator, IPAM\n";
  for (int i = 0; i < f.nodes; ++i)
    screen << "    " << LocalNetwork::node_name(i) << std::string(14 - LocalNetwork::node_name(i).size(), ' ')
           << "agent" << (real_fabric ? ", network namespace " + LocalNetwork::node_ns(prefix, i) +
                                             ", underlay " + LocalNetwork::host_ip(i)
                                       : ", fake fabric")
           << ", CNI socket " << cni_socket(dir, i) << "\n";
  screen << "\n  Try, in another shell:\n"
         << "    export KUBECONFIG=" << kubeconfig << "\n"
         << "    kubectl apply -f " << (f.examples_dir.empty() ? std::string("examples/") : f.examples_dir) << "\n"
         << "    kubectl get subnets,networkattachments -A\n"
         << "    kubectl get networkattachment na1 -n ns1 -o yaml\n\n"
         << "  Ctrl-C stops everything and removes the namespaces; the objects stay in the data dir.\n";
  {
    std::string s = screen.str();
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  }

  bool stop = false;
  int code = 0;
  if (f.examples) {
    auto c = client::RestClient::from_kubeconfig(kubeconfig);
    if (!c) {
      sup.say("cannot read " + kubeconfig + ": " + c.error().message);
      return cleanup(1);
    }
    auto made = up::apply_examples(**c, examples, !real_fabric);
    if (!made) {
      sup.say("applying the examples: " + made.error().message);
      return cleanup(1);
    }
    sup.say("examples: " + std::to_string(*made) + " objects created, " + std::to_string(examples.size() - static_cast<size_t>(*made)) +
            " were there already; waiting for the attachments to be ready");
    auto ready = up::wait_ready(**c, examples, real_fabric ? nodes_made : std::chrono::system_clock::time_point{},
                                std::chrono::seconds(120), [&] {
      if (auto gone = sup.exited()) {
        sup.say(*gone);
        code = 1;
        return true;
      }
      stop = stop || stop_requested(sigs, std::chrono::milliseconds(0));
      return stop;
    });
    if (!ready) {
      sup.say(ready.error().message);
      if (!stop && !code) code = 1;
      return cleanup(code);
    }
    sup.say("examples: all " + std::to_string(ready->size()) + " attachments are ready");
    if (real_fabric) {
      auto checks = up::plan_pings(*ready);
      up::run_pings(checks);
      size_t good = 0;
      for (const auto& ch : checks) good += ch.ok();
      std::string table = up::ping_table(checks);
      std::fwrite(table.data(), 1, table.size(), stdout);
      sup.say("examples: " + std::to_string(good) + " of " + std::to_string(checks.size()) + " ping checks as expected" +
              (good == checks.size() ? "" : " (FAILED)"));
    } else {
      sup.say("examples: no pings on the fake fabric (it makes no interfaces)");
    }
  }
  while (!stop) {
    if (auto gone = sup.exited()) {
      sup.say(*gone + "; stopping everything");
      return cleanup(1);
    }
    stop = stop_requested(sigs, std::chrono::milliseconds(500));
  }
  return cleanup(code);
}

struct DownFlags {
  std::string data_dir = "kos-data";
};

// Processes of the kos up on `dir`: any whose arguments name the data dir, a file in it, or
// one of its namespaces.
std::vector<pid_t> leftover_processes(const fs::path& dir, const std::string& prefix) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    pid_t pid = static_cast<pid_t>(std::stol(name));
    if (pid == getpid()) continue;
    std::ifstream in(e.path() / "cmdline");
    std::string arg;
    bool ours = false, is_kos = false, first = true;
    while (std::getline(in, arg, '\0')) {
      if (first) is_kos = fs::path(arg).filename() == "kos";
      first = false;
      if (arg == dir.string() || arg.starts_with(dir.string() + "/") || arg.starts_with(prefix + "-")) ours = true;
    }
    if (ours && is_kos) out.push_back(pid);
  }
  return out;
}

int run_down(const DownFlags& f) {
  const fs::path dir = absolute_dir(f.data_dir);
  const std::string prefix = prefix_of(dir);
  std::error_code ec;
  if (fs::exists(dir / "up.lock", ec)) {
    int fd = open((dir / "up.lock").c_str(), O_RDWR | O_CLOEXEC);
    if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) != 0) {
      std::fprintf(stderr, "kos down: kos up (%s) is still running on %s: stop it with Ctrl-C or kill (it cleans up itself)\n",
                   holder_of(dir).c_str(), dir.string().c_str());
      close(fd);
      return 1;
    }
    if (fd >= 0) close(fd);
  }
  if (geteuid() != 0 && !LocalNetwork::existing(prefix).empty()) {
    std::fprintf(stderr, "kos down: removing network namespaces needs root: run it as root (sudo)\n");
    return 1;
  }
  auto procs = leftover_processes(dir, prefix);
  for (pid_t p : procs) kill(p, SIGKILL);
  for (int i = 0; i < 100 && !leftover_processes(dir, prefix).empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // waiting for the kills to land
  auto names = LocalNetwork::existing(prefix);
  auto removed = LocalNetwork::remove(prefix);
  fs::remove(dir / "up.json", ec);
  if (!removed) {
    std::fprintf(stderr, "kos down: %s\n", removed.error().message.c_str());
    return 1;
  }
  if (procs.empty() && names.empty())
    std::printf("kos down: nothing of a kos up on %s was left\n", dir.string().c_str());
  else
    std::printf("kos down: stopped %zu processes, removed %zu network namespaces (%s)\n", procs.size(), names.size(),
                names.empty() ? "none" : (prefix + "-*").c_str());
  return 0;
}

}  // namespace

void add_up_commands(CLI::App& app, std::function<int()>& run) {
  auto f = std::make_shared<UpFlags>();
  auto* c = app.add_subcommand(
      "up",
      "Run the whole system on this machine in the foreground: the API server on the embedded store, the "
      "controllers, and N simulated nodes (network namespaces on an underlay bridge, one agent each). Ctrl-C "
      "stops it and removes what it made; the objects stay in the data dir");
  c->add_option("--nodes", f->nodes, "simulated nodes, 1..64")->capture_default_str();
  c->add_option("--data-dir", f->data_dir, "the store, kubeconfig and state of this cluster")->capture_default_str();
  c->add_option("--listen", f->listen, "the API server's HOST:PORT")->capture_default_str();
  c->add_option("--fabric", f->fabric,
                "linux (kernel VXLAN in network namespaces; root), ovs (Open vSwitch in network namespaces, each "
                "node its own ovsdb-server and userspace ovs-vswitchd; root) or fake (in memory)")
      ->capture_default_str();
  c->add_flag("--examples", f->examples,
              "apply the examples (a seed Subnet, two tenants with the same CIDR), wait until they are ready, "
              "and ping between their guests");
  c->add_option("--examples-dir", f->examples_dir, "where the example YAML files are (default: the installed ones)");
  c->add_option("--guest-script", f->guest_script,
                "the kos-guest-netns program the agents may run (default: the installed one)");
  c->callback([&run, f] { run = [f] { return run_up(*f); }; });

  auto d = std::make_shared<DownFlags>();
  auto* down = app.add_subcommand(
      "down", "Remove what a kos up that did not stop cleanly (killed, crashed) left: its processes and namespaces");
  down->add_option("--data-dir", d->data_dir, "the data dir of that kos up")->capture_default_str();
  down->callback([&run, d] { run = [d] { return run_down(*d); }; });
}

}  // namespace kos::cmd
