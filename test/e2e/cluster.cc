#include "test/e2e/cluster.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <set>
#include <sstream>

#include "api/cidr.h"
#include "api/names.h"
#include "cni/protocol.h"
#include "fabric/linux/linux_fabric.h"

namespace kos::e2e {

namespace json = boost::json;
using namespace std::chrono_literals;
using kos::testing::run;

namespace {

std::string join(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

std::string str(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

json::array json_of(const std::vector<std::string>& argv) {
  auto r = run(argv);
  if (r.exit_code != 0) return {};
  boost::system::error_code ec;
  auto v = json::parse(r.out, ec);
  if (ec || !v.is_array()) return {};
  return v.as_array();
}

std::optional<uint32_t> vni_suffix(const std::string& name, std::string_view prefix) {
  if (!name.starts_with(prefix)) return std::nullopt;
  auto v = api::parse_decimal(std::string_view(name).substr(prefix.size()), api::kMaxVni);
  if (!v) return std::nullopt;
  return *v;
}

bool is_guest_end(const std::string& name) {
  if (name.size() != 15 || !name.starts_with("kos")) return false;
  return name.find_first_not_of("0123456789abcdef", 3) == std::string::npos;
}

std::vector<std::string> list_netns() {
  std::vector<std::string> out;
  for (const auto& e : json_of({"ip", "-j", "netns", "list"}))
    if (e.is_object()) out.push_back(str(e.as_object(), "name"));
  return out;
}

// Namespaces of earlier test processes that died without cleaning up (kos-e2e-<pid>-...).
void remove_stale_namespaces() {
  for (const auto& ns : list_netns()) {
    if (!ns.starts_with("kos-e2e-")) continue;
    pid_t pid = std::atoi(ns.c_str() + 8);
    if (pid > 0 && pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH) run({"ip", "netns", "del", ns});
  }
}

}  // namespace

std::string must(const std::vector<std::string>& argv) {
  auto r = run(argv);
  if (r.exit_code == 0) return "";
  return join(argv) + " exited " + std::to_string(r.exit_code) + ": " + r.err;
}

bool ping(const std::string& from_ns, const std::string& to, int count) {
  return run({"ip", "netns", "exec", from_ns, "ping", "-n", "-q", "-c", std::to_string(count), "-i", "0.2",
              "-W", "1", to})
             .exit_code == 0;
}

Cluster::Cluster(Options o) : opts_(o), prefix_("kos-e2e-" + std::to_string(getpid())) {
  remove_stale_namespaces();
  underlay_ns_ = prefix_ + "-ul";
  for (int i = 0; i < opts_.nodes; ++i) nodes_.push_back(Node{prefix_ + "-n" + std::to_string(i), nullptr});
}

Cluster::~Cluster() {
  for (auto& n : nodes_) {
    if (n.agent) n.agent->kill9();
    n.ovs.reset();  // kills ovs-vswitchd and ovsdb-server
  }
  if (controllers_) controllers_->kill9();
  client_.reset();
  server_.reset();
  // Every namespace with our prefix: the nodes, the underlay and any guest namespace.
  for (const auto& ns : list_netns())
    if (ns.starts_with(prefix_ + "-")) run({"ip", "netns", "del", ns});
}

std::string Cluster::start() {
  if (geteuid() != 0) return "needs root (network namespaces)";
  auto add_ns = [&](const std::string& ns) -> std::string {
    if (auto e = must({"ip", "netns", "add", ns}); !e.empty()) return e;
    namespaces_.push_back(ns);
    return must({"ip", "-n", ns, "link", "set", "lo", "up"});
  };
  if (auto e = add_ns(underlay_ns_); !e.empty()) return e;
  for (const auto& step : std::vector<std::vector<std::string>>{
           {"ip", "-n", underlay_ns_, "link", "add", "ulbr", "type", "bridge"},
           {"ip", "-n", underlay_ns_, "link", "set", "ulbr", "up"}})
    if (auto e = must(step); !e.empty()) return e;
  for (int i = 0; i < nodes(); ++i) {
    const std::string& ns = node_ns(i);
    const std::string port = "p" + std::to_string(i);
    if (auto e = add_ns(ns); !e.empty()) return e;
    for (const auto& step : std::vector<std::vector<std::string>>{
             {"ip", "-n", underlay_ns_, "link", "add", port, "type", "veth", "peer", "name", "ul0", "netns", ns},
             {"ip", "-n", underlay_ns_, "link", "set", port, "master", "ulbr", "up"},
             {"ip", "-n", ns, "link", "set", "ul0", "up"}})
      if (auto e = must(step); !e.empty()) return e;
    std::string addr_dev = "ul0";
    if (opts_.fabric == "ovs") {
      auto& ovs = nodes_[static_cast<size_t>(i)].ovs;
      ovs = std::make_unique<kos::testing::OvsInstance>(ns);
      if (auto e = ovs->start(); !e.empty()) return node_name(i) + "'s OVS: " + e;
      auto r = ovs->vsctl({"add-br", "brul", "--", "set", "bridge", "brul", "datapath_type=netdev", "--", "add-port",
                           "brul", "ul0"});
      if (r.exit_code != 0) return "ovs-vsctl add-br brul: " + r.err;
      addr_dev = "brul";
    }
    for (const auto& step : std::vector<std::vector<std::string>>{
             {"ip", "-n", ns, "addr", "add", host_ip(i) + "/24", "dev", addr_dev},
             {"ip", "-n", ns, "link", "set", addr_dev, "up"}})
      if (auto e = must(step); !e.empty()) return e;
  }

  server_ = std::make_unique<ctltest::ApiServer>();
  if (auto e = server_->start(); !e.empty()) return "apiserver: " + e;
  client_ = server_->client();
  controllers_ = ctltest::controller_manager(*server_, "controller-manager", "subnet-validator,ipam");
  controllers_->start();
  for (int i = 0; i < nodes(); ++i) {
    std::vector<std::string> args = {"--log-level", opts_.agent_log_level, "agent",
                                     "--kubeconfig", server_->credential("node", node_name(i)).string(),
                                     "--node", node_name(i), "--host-ip", host_ip(i),
                                     "--fabric", opts_.fabric, "--netns", node_ns(i),
                                     "--allowed-programs", kGuestScript,
                                     "--workers", std::to_string(opts_.agent_workers),
                                     "--vni-linger", opts_.vni_linger,
                                     "--state-dir", (server_->dir() / ("agent-" + std::to_string(i))).string()};
    if (opts_.fabric == "ovs")
      args.insert(args.end(), {"--ovs-db", ovs(i).db(), "--ovs-datapath", "netdev"});
    if (opts_.agent_metrics) {
      const std::string at = "127.0.0.1:" + std::to_string(kos::testing::free_loopback_port());
      args.insert(args.end(), {"--metrics-listen", at});
      agent_endpoints_.push_back("http://" + at);
    }
    nodes_[static_cast<size_t>(i)].agent = std::make_unique<ctltest::KosProcess>(
        "agent-" + std::to_string(i), args, server_->dir() / ("agent-" + std::to_string(i) + ".log"));
    nodes_[static_cast<size_t>(i)].agent->start();
  }
  // Started: each agent serves its CNI socket once it has synced and adopted.
  for (int i = 0; i < nodes(); ++i) {
    if (!ctltest::poll_until([&] { return agent_serving(i); }, std::chrono::seconds(30)))
      return "agent " + std::to_string(i) + " does not serve " + cni_socket(i) + " after 30 s";
  }
  return "";
}

bool Cluster::agent_serving(int i) const {
  cni::Request status;
  status.op = "status";
  auto r = cni::call(cni_socket(i), status, std::chrono::seconds(5));
  return r && r->code == 0;
}

std::string Cluster::cni_socket(int i) const {
  return (server_->dir() / ("agent-" + std::to_string(i)) / "cni.sock").string();
}

int Cluster::node_index(const std::string& name) const {
  for (int i = 0; i < nodes(); ++i)
    if (node_name(i) == name) return i;
  return -1;
}

std::vector<std::string> Cluster::post_create_exec(const std::string& attachment, int prefix_len,
                                                   bool gateway) const {
  std::vector<std::string> out{kGuestScript, "add", "${ifname}", "${ipv4}/" + std::to_string(prefix_len),
                               guest_ns(attachment)};
  if (gateway) out.push_back("${gateway}");
  return out;
}

std::vector<std::string> Cluster::post_delete_exec(const std::string& attachment) const {
  return {kGuestScript, "del", guest_ns(attachment)};
}

NodeKernelState Cluster::kernel_state(int i) const {
  const std::string& ns = node_ns(i);
  NodeKernelState s;
  for (const auto& l : json_of({"ip", "-d", "-j", "-n", ns, "link", "show"})) {
    const auto& o = l.as_object();
    std::string name = str(o, "ifname");
    if (auto v = vni_suffix(name, "kosvx")) {
      s.vxlan_vnis.insert(*v);
      for (const auto& e : json_of({"bridge", "-j", "-n", ns, "fdb", "show", "dev", name})) {
        const auto& f = e.as_object();
        if (f.contains("dst")) s.fdb[*v][str(f, "mac")] = str(f, "dst");
      }
      for (const auto& e : json_of({"ip", "-j", "-n", ns, "neigh", "show", "dev", name})) {
        const auto& n = e.as_object();
        s.neigh[*v][str(n, "dst")] = str(n, "lladdr");
      }
    } else if (auto b = vni_suffix(name, "kosbr")) {
      s.bridge_vnis.insert(*b);
    } else if (name.starts_with("kh")) {
      std::string alias = str(o, "ifalias");
      std::istringstream in(alias);
      std::string tok, ip;
      uint32_t vni = 0;
      while (in >> tok) {
        if (tok.starts_with("vni=")) vni = static_cast<uint32_t>(std::stoul(tok.substr(4)));
        if (tok.starts_with("ip=")) ip = tok.substr(3);
      }
      s.locals.insert({vni, ip});
      s.local_ifindex[name] = static_cast<int>(o.at("ifindex").to_number<int64_t>());
    } else if (is_guest_end(name)) {
      s.guest_ends.insert(name);
    } else if (name.starts_with("kos")) {
      s.other_kos_links.insert(name);
    }
  }
  return s;
}

std::vector<NodeKernelState> Cluster::desired_state() const {
  std::vector<NodeKernelState> want(static_cast<size_t>(nodes()));
  auto nas = client_->list<api::NetworkAttachment>("");
  if (!nas) return want;
  for (const auto& na : *nas) {
    int home = node_index(na.spec.node);
    auto ip = api::parse_ipv4(na.status.ipv4);
    if (home < 0 || !ip || na.status.address_vni == 0) continue;
    uint32_t vni = na.status.address_vni;
    auto& h = want[static_cast<size_t>(home)];
    h.locals.insert({vni, na.status.ipv4});
    h.vxlan_vnis.insert(vni);
    h.bridge_vnis.insert(vni);
    if (na.spec.post_create_exec.empty()) h.guest_ends.insert(api::interface_name(api::guest_mac(*ip, vni)));
  }
  for (const auto& na : *nas) {
    int home = node_index(na.spec.node);
    auto ip = api::parse_ipv4(na.status.ipv4);
    if (home < 0 || !ip || na.status.address_vni == 0 || na.status.host_ip.empty()) continue;
    uint32_t vni = na.status.address_vni;
    std::string mac = api::format_mac(api::guest_mac(*ip, vni));
    for (int i = 0; i < nodes(); ++i) {
      auto& w = want[static_cast<size_t>(i)];
      if (i == home || !w.vxlan_vnis.count(vni)) continue;
      w.fdb[vni][mac] = na.status.host_ip;
      w.neigh[vni][na.status.ipv4] = mac;
    }
  }
  return want;
}

std::string describe(const NodeKernelState& s) {
  std::ostringstream o;
  o << "vxlan{";
  for (auto v : s.vxlan_vnis) o << v << " ";
  o << "} bridges{";
  for (auto v : s.bridge_vnis) o << v << " ";
  o << "} locals{";
  for (const auto& [v, ip] : s.locals) o << v << "/" << ip << " ";
  o << "} guest-ends{" << s.guest_ends.size() << "}";
  for (const auto& [v, m] : s.fdb) {
    o << " fdb" << v << "{";
    for (const auto& [mac, dst] : m) o << mac << "->" << dst << " ";
    o << "}";
  }
  for (const auto& [v, m] : s.neigh) {
    o << " neigh" << v << "{";
    for (const auto& [ip, mac] : m) o << ip << "->" << mac << " ";
    o << "}";
  }
  if (!s.other_kos_links.empty()) {
    o << " other{";
    for (const auto& n : s.other_kos_links) o << n << " ";
    o << "}";
  }
  return o.str();
}

std::string Cluster::compare_with_desired() const {
  auto want = desired_state();
  std::string out;
  for (int i = 0; i < nodes(); ++i) {
    auto have = kernel_state(i);
    have.local_ifindex.clear();
    // An empty per-VNI map and an absent one are the same state.
    std::erase_if(have.fdb, [](const auto& e) { return e.second.empty(); });
    std::erase_if(have.neigh, [](const auto& e) { return e.second.empty(); });
    if (have == want[static_cast<size_t>(i)]) continue;
    out += node_name(i) + ":\n  have " + describe(have) + "\n  want " + describe(want[static_cast<size_t>(i)]) + "\n";
  }
  return out;
}

std::vector<std::string> Cluster::desired_flows(int i) {
  auto nas = client_->list<api::NetworkAttachment>("");
  if (!nas) return {"cannot list attachments: " + nas.error().message};
  struct Ready {
    int home;
    uint32_t vni, ip;
    std::string host;
  };
  std::vector<Ready> ready;
  std::set<uint32_t> vnis_here;
  for (const auto& na : *nas) {
    auto ip = api::parse_ipv4(na.status.ipv4);
    const int home = node_index(na.spec.node);
    if (home < 0 || !ip || na.status.address_vni == 0 || na.status.host_ip.empty()) continue;
    ready.push_back({home, na.status.address_vni, *ip, na.status.host_ip});
    if (home == i) vnis_here.insert(na.status.address_vni);
  }
  auto ofport = [&](const std::string& iface) {
    auto r = ovs(i).vsctl({"get", "interface", iface, "ofport"});
    return r.exit_code == 0 ? std::atoi(r.out.c_str()) : -1;
  };
  std::vector<std::pair<fabric::LocalIfc, int>> locals;
  std::vector<fabric::RemoteIfc> remotes;
  for (const auto& r : ready) {
    const auto mac = api::guest_mac(r.ip, r.vni);
    if (r.home == i) {
      locals.emplace_back(fabric::LocalIfc{r.vni, mac, r.ip, api::interface_name(mac), {}, {}},
                          ofport(fabric::host_end_name(mac)));
    } else if (vnis_here.contains(r.vni)) {
      remotes.push_back(fabric::RemoteIfc{r.vni, mac, r.ip, *api::parse_ipv4(r.host)});
    }
  }
  return kos::testing::expected_flows(locals, remotes, ofport("vtep"));
}

std::string Cluster::compare_flows_with_desired() {
  std::string out;
  for (int i = 0; i < nodes(); ++i) {
    auto want = desired_flows(i);
    const auto have = ovs(i).flows_without_cookies("kos");
    if (have == want) continue;
    out += node_name(i) + ":\n";
    for (const auto& l : have)
      if (!std::binary_search(want.begin(), want.end(), l)) out += "  extra   " + l + "\n";
    for (const auto& l : want)
      if (!std::binary_search(have.begin(), have.end(), l)) out += "  missing " + l + "\n";
  }
  return out;
}

std::string Cluster::logs() const {
  std::string out;
  auto add = [&](const ctltest::KosProcess* p) {
    if (p) out += "---- " + p->name() + " ----\n" + p->log_tail(2500) + "\n";
  };
  if (server_) add(&server_->process());
  add(controllers_.get());
  for (const auto& n : nodes_) add(n.agent.get());
  return out;
}

}  // namespace kos::e2e
