// End to end on a simulated 3-node cluster (test/e2e/cluster.h): the API server and the
// controller-manager on loopback, one `kos agent --fabric linux --netns` per node, real
// kernel VXLAN between the node namespaces over an underlay bridge, guests in namespaces
// of their own made by the shipped postCreateExec script (scripts/kos-guest-netns).
// Needs root; every namespace, link and process goes when a test ends, failed or not.
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "test/support/skip.h"
#include "api/cidr.h"
#include "api/names.h"
#include "test/e2e/cluster.h"

namespace kos::e2e {
namespace {

using namespace std::chrono_literals;
using ctltest::make_attachment;
using ctltest::make_subnet;
using ctltest::poll_until;
using kos::testing::run;

constexpr uint32_t kBlueVni = 4101, kRedVni = 4102;
const std::string kCidr = "10.50.0.0/24";  // the same on both VNIs

class ThreeNodes : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) KOS_SKIP_UNLESS_CI() << "needs root (network namespaces)";
    cluster_ = std::make_unique<Cluster>(Cluster::Options{});
    if (auto e = cluster_->start(); !e.empty()) FAIL() << e << "\n" << cluster_->logs();
    client_ = cluster_->client();
    ASSERT_TRUE(client_->create(make_subnet("e2e-blue", "blue", kCidr, kBlueVni)));
    ASSERT_TRUE(client_->create(make_subnet("e2e-red", "red", kCidr, kRedVni)));
  }
  void TearDown() override {
    if (HasFailure() && cluster_) std::cerr << cluster_->logs();
  }

  static std::string ns_of(uint32_t vni) { return vni == kBlueVni ? "e2e-blue" : "e2e-red"; }
  static std::string subnet_of(uint32_t vni) { return vni == kBlueVni ? "blue" : "red"; }

  Result<api::NetworkAttachment> create(uint32_t vni, const std::string& name, int node, bool guest_ns) {
    auto na = make_attachment(ns_of(vni), name, subnet_of(vni), cluster_->node_name(node));
    if (guest_ns) {
      na.spec.post_create_exec = cluster_->post_create_exec(name, 24);
      na.spec.post_delete_exec = cluster_->post_delete_exec(name);
    }
    return ctltest::with_retries([&] { return client_->create(na); });
  }

  std::vector<api::NetworkAttachment> attachments() {
    auto l = client_->list<api::NetworkAttachment>("");
    return l ? *l : std::vector<api::NetworkAttachment>{};
  }

  // Every attachment addressed and implemented on its node (and its exec, if any, done).
  bool all_ready() {
    auto all = attachments();
    for (const auto& na : all) {
      if (na.status.ifc_name.empty() || na.status.host_ip.empty()) return false;
      if (!na.spec.post_create_exec.empty() && !na.status.post_create_exec_report) return false;
    }
    return true;
  }
  std::string statuses() {
    std::string out;
    for (const auto& na : attachments())
      out += na.metadata.namespace_ + "/" + na.metadata.name + " node=" + na.spec.node + " ip=" +
             na.status.ipv4 + " ifc=" + na.status.ifc_name + " host=" + na.status.host_ip +
             (na.status.errors.host.empty() ? "" : " error=" + na.status.errors.host[0]) +
             (na.status.post_create_exec_report
                  ? " exec=" + std::to_string(na.status.post_create_exec_report->exit_status) + " " +
                        na.status.post_create_exec_report->std_err
                  : "") +
             "\n";
    return out;
  }

  void delete_all_and_expect_no_kos_device() {
    for (const auto& na : attachments())
      EXPECT_TRUE(client_->remove<api::NetworkAttachment>(na.metadata.namespace_, na.metadata.name));
    auto clean = [&] {
      for (int i = 0; i < cluster_->nodes(); ++i)
        if (!(cluster_->kernel_state(i) == NodeKernelState{})) return false;
      return true;
    };
    EXPECT_TRUE(poll_until(clean, 30s));
    for (int i = 0; i < cluster_->nodes(); ++i)
      EXPECT_EQ(describe(cluster_->kernel_state(i)), describe(NodeKernelState{})) << cluster_->node_name(i);
    // postDeleteExec removed every guest namespace (it runs after the interface is gone, so
    // it may still be running when the kernel state is clean).
    kos::testing::RunResult r;
    EXPECT_TRUE(poll_until([&] {
      r = run({"ip", "netns", "list"});
      return r.out.find(cluster_->prefix() + "-g-") == std::string::npos;
    }, 30s)) << r.out;
  }

  std::unique_ptr<Cluster> cluster_;
  std::shared_ptr<client::RestClient> client_;
};

std::string guest_mac_of(const api::NetworkAttachment& na) {
  return api::format_mac(api::guest_mac(*api::parse_ipv4(na.status.ipv4), na.status.address_vni));
}

// A throwaway veth in a node namespace, to make neighbour and FDB events on (it goes, with
// its entries, when this goes out of scope; the namespace's deletion removes it otherwise).
class ProbeLink {
 public:
  static constexpr const char* kName = "e2eprobe";  // no kos/kh prefix: not a KOS device
  explicit ProbeLink(std::string ns) : ns_(std::move(ns)) {
    error_ = must({"ip", "-n", ns_, "link", "add", kName, "type", "veth", "peer", "name", "e2eprobe-p"});
    if (error_.empty()) error_ = must({"ip", "-n", ns_, "link", "set", kName, "up"});
  }
  ~ProbeLink() { run({"ip", "-n", ns_, "link", "del", kName}); }
  const std::string& error() const { return error_; }
  std::vector<std::string> neigh_add() const {
    return {"ip", "-n", ns_, "neigh", "replace", "192.0.2.250", "lladdr", kMac, "dev", kName, "nud", "permanent"};
  }
  std::vector<std::string> neigh_del() const { return {"ip", "-n", ns_, "neigh", "del", "192.0.2.250", "dev", kName}; }
  std::vector<std::string> fdb_add() const {
    return {"bridge", "-n", ns_, "fdb", "replace", kMac, "dev", kName, "self", "permanent"};
  }
  std::vector<std::string> fdb_del() const { return {"bridge", "-n", ns_, "fdb", "del", kMac, "dev", kName, "self"}; }
  // Whether a monitor's line is about the probe link ("... dev e2eprobe ...").
  static bool about_probe(const std::string& line) {
    return line.find(std::string("dev ") + kName) != std::string::npos;
  }

 private:
  static constexpr const char* kMac = "02:e2:e2:00:00:fa";
  std::string ns_;
  std::string error_;
};

// `ip monitor` and `bridge monitor` print nothing until an event, and see only events
// after they have subscribed, so a monitor is ready once it reports a probe event: makes
// one (`add`, after `del` of the previous attempt's) every 200 ms until the monitor prints
// a line about the probe link. Other lines it printed meanwhile go to `other`. "" or why
// the monitor is not ready within `deadline`.
std::string await_monitor(kos::testing::ChildProcess& mon, const std::vector<std::string>& add,
                          const std::vector<std::string>& del, std::vector<std::string>& other,
                          std::chrono::milliseconds deadline = 10s) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  for (int attempt = 1; std::chrono::steady_clock::now() < end; ++attempt) {
    if (attempt > 1) run(del);
    if (auto e = must(add); !e.empty()) return "probe: " + e;
    const auto until = std::min(end, std::chrono::steady_clock::now() + 200ms);
    for (auto now = std::chrono::steady_clock::now(); now < until; now = std::chrono::steady_clock::now()) {
      auto line = mon.read_line(std::chrono::duration_cast<std::chrono::milliseconds>(until - now) + 1ms);
      if (!line) break;
      if (ProbeLink::about_probe(*line)) {
        run(del);
        return "";
      }
      other.push_back(*line);
    }
    if (!mon.running()) return "the monitor exited before reporting a probe event";
  }
  return "the monitor reported no probe event within " + std::to_string(deadline.count()) + " ms";
}

// The guest's own neighbour entry for an IP (after a ping): the MAC it talked to.
std::string guest_neighbour(const std::string& guest_ns, const std::string& ip) {
  auto r = run({"ip", "-n", guest_ns, "neigh", "show", ip});
  // "10.50.0.3 dev kos... lladdr 0a:... REACHABLE"
  auto p = r.out.find("lladdr ");
  return p == std::string::npos ? "" : r.out.substr(p + 7, 17);
}

// Two VNIs with the same CIDR, guests spread over the nodes: every guest reaches every
// other guest of its VNI, across nodes; none reaches the other VNI although the addresses
// are the same. Deleting an attachment removes its interface and, on the other nodes, its
// FDB and neighbour entries. After all deletes no KOS device remains.
TEST_F(ThreeNodes, GuestsReachTheirVniOnlyAndDeletesCleanUp) {
  std::vector<std::string> blue = {"blue-0", "blue-1", "blue-2"};
  std::vector<std::string> red = {"red-0", "red-1", "red-2", "red-3"};  // one address blue lacks
  for (size_t i = 0; i < blue.size(); ++i) ASSERT_TRUE(create(kBlueVni, blue[i], static_cast<int>(i % 3), true));
  for (size_t i = 0; i < red.size(); ++i) ASSERT_TRUE(create(kRedVni, red[i], static_cast<int>(i % 3), true));
  ASSERT_TRUE(poll_until([&] { return all_ready(); }, 60s)) << statuses();

  std::map<std::string, api::NetworkAttachment> by_name;
  for (const auto& na : attachments()) {
    ASSERT_TRUE(na.status.post_create_exec_report) << na.metadata.name;
    EXPECT_EQ(na.status.post_create_exec_report->exit_status, 0)
        << na.metadata.name << ": " << na.status.post_create_exec_report->std_err;
    EXPECT_EQ(na.status.host_ip, cluster_->host_ip(cluster_->node_index(na.spec.node)));
    by_name[na.metadata.name] = na;
  }
  ASSERT_EQ(by_name.size(), blue.size() + red.size());
  EXPECT_EQ(cluster_->compare_with_desired(), "");
  if (std::getenv("KOS_E2E_VERBOSE"))
    for (int i = 0; i < 3; ++i) std::cerr << cluster_->node_name(i) << ": " << describe(cluster_->kernel_state(i)) << "\n";

  // Within each VNI: every ordered pair, across and within nodes.
  for (const auto* group : {&blue, &red})
    for (const auto& from : *group)
      for (const auto& to : *group) {
        if (from == to) continue;
        const auto& dst = by_name[to];
        EXPECT_TRUE(ping(cluster_->guest_ns(from), dst.status.ipv4) || ping(cluster_->guest_ns(from), dst.status.ipv4, 2))
            << from << " -> " << to << " (" << dst.status.ipv4 << ")";
        // The reply came from the guest of this VNI (each VNI has its own MACs).
        EXPECT_EQ(guest_neighbour(cluster_->guest_ns(from), dst.status.ipv4), guest_mac_of(dst)) << from << " -> " << to;
      }
  // Across VNIs: red-3's address is held by no blue guest; no blue guest reaches it.
  std::set<std::string> blue_ips;
  for (const auto& b : blue) blue_ips.insert(by_name[b].status.ipv4);
  std::string red_only;
  for (const auto& r : red)
    if (!blue_ips.count(by_name[r].status.ipv4)) red_only = by_name[r].status.ipv4;
  ASSERT_FALSE(red_only.empty());
  for (const auto& b : blue) EXPECT_FALSE(ping(cluster_->guest_ns(b), red_only)) << b << " reached red " << red_only;

  // Delete blue-1 (node-1): its interface goes on node-1 (and, as it was node-1's only
  // blue attachment, the VNI's devices), its entries go on node-0 and node-2.
  const auto gone = by_name["blue-1"];
  const std::string mac = guest_mac_of(gone);
  ASSERT_TRUE(client_->remove<api::NetworkAttachment>("e2e-blue", "blue-1"));
  EXPECT_TRUE(poll_until([&] { return cluster_->compare_with_desired().empty(); }, 30s))
      << cluster_->compare_with_desired();
  auto n1 = cluster_->kernel_state(1);
  EXPECT_FALSE(n1.locals.count({kBlueVni, gone.status.ipv4}));
  EXPECT_FALSE(n1.vxlan_vnis.count(kBlueVni));
  for (int i : {0, 2}) {
    auto s = cluster_->kernel_state(i);
    EXPECT_FALSE(s.fdb[kBlueVni].count(mac)) << cluster_->node_name(i);
    EXPECT_FALSE(s.neigh[kBlueVni].count(gone.status.ipv4)) << cluster_->node_name(i);
    EXPECT_TRUE(s.vxlan_vnis.count(kBlueVni)) << cluster_->node_name(i);  // blue-0 / blue-2 remain
  }
  EXPECT_TRUE(poll_until([&] { return run({"ip", "netns", "pids", cluster_->guest_ns("blue-1")}).exit_code != 0; }, 10s))
      << "postDeleteExec did not remove blue-1's namespace";
  EXPECT_FALSE(ping(cluster_->guest_ns("blue-0"), gone.status.ipv4));
  EXPECT_TRUE(ping(cluster_->guest_ns("blue-0"), by_name["blue-2"].status.ipv4, 2));

  delete_all_and_expect_no_kos_device();
}

// An agent is killed with SIGKILL while attachments come and go on every node, and
// restarted a moment later. Once things settle every node's kernel holds exactly the
// desired state (what was deleted meanwhile is gone, what was created is there), and the
// restarted agent never removed a live entry: its interfaces keep their ifindex and no
// neighbour or FDB entry of a stable attachment was deleted at any moment.
TEST_F(ThreeNodes, KillAndRestartOfAnAgentDuringChurnLeavesExactlyTheDesiredState) {
  for (int n = 0; n < 3; ++n) {
    ASSERT_TRUE(create(kBlueVni, "stable-b" + std::to_string(n), n, false));
    ASSERT_TRUE(create(kRedVni, "stable-r" + std::to_string(n), n, false));
  }
  ASSERT_TRUE(poll_until([&] { return all_ready(); }, 60s)) << statuses();
  ASSERT_TRUE(poll_until([&] { return cluster_->compare_with_desired().empty(); }, 30s))
      << cluster_->compare_with_desired();

  const int victim = 1;
  const std::string vns = cluster_->node_ns(victim);
  auto before = cluster_->kernel_state(victim);
  // Watch node-1's neighbour and FDB tables for deletions through the restart, from the
  // moment each monitor is seen reporting a probe event.
  kos::testing::ChildProcess neigh_mon({"ip", "-n", vns, "monitor", "neigh"});
  kos::testing::ChildProcess fdb_mon({"bridge", "-n", vns, "monitor", "fdb"});
  std::vector<std::string> early;  // what the monitors printed before their probe's event
  {
    ProbeLink probe(vns);
    ASSERT_EQ(probe.error(), "");
    ASSERT_EQ(await_monitor(neigh_mon, probe.neigh_add(), probe.neigh_del(), early), "") << "ip monitor neigh";
    ASSERT_EQ(await_monitor(fdb_mon, probe.fdb_add(), probe.fdb_del(), early), "") << "bridge monitor fdb";
  }

  std::atomic<bool> stop{false};
  std::atomic<int> created{0}, deleted{0}, errors{0};
  std::thread churn([&] {
    std::mt19937 rng(7);
    std::vector<std::pair<uint32_t, std::string>> live;
    for (int k = 0; !stop; ++k) {
      if (live.size() < 6 || (live.size() < 30 && rng() % 3 != 0)) {
        uint32_t vni = rng() % 2 ? kBlueVni : kRedVni;
        std::string name = "churn-" + std::to_string(k);
        if (create(vni, name, static_cast<int>(rng() % 3), false)) {
          live.emplace_back(vni, name);
          ++created;
        } else {
          ++errors;
        }
      } else {
        size_t i = rng() % live.size();
        auto [vni, name] = live[i];
        live.erase(live.begin() + static_cast<long>(i));
        if (client_->remove<api::NetworkAttachment>(ns_of(vni), name)) ++deleted;
        else ++errors;
      }
      std::this_thread::sleep_for(40ms);
    }
  });
  std::this_thread::sleep_for(1500ms);
  cluster_->agent(victim).kill9();
  std::this_thread::sleep_for(2000ms);
  cluster_->agent(victim).start();
  std::this_thread::sleep_for(2000ms);
  stop = true;
  churn.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GT(created.load(), 40);
  EXPECT_GT(deleted.load(), 10);

  ASSERT_TRUE(poll_until([&] { return all_ready(); }, 60s)) << statuses();
  EXPECT_TRUE(poll_until([&] { return cluster_->compare_with_desired().empty(); }, 30s))
      << cluster_->compare_with_desired();

  // Node-1's stable interfaces are the same kernel objects as before the kill.
  auto after = cluster_->kernel_state(victim);
  for (const auto& [name, ifindex] : before.local_ifindex) {
    ASSERT_TRUE(after.local_ifindex.count(name)) << name << " is gone";
    EXPECT_EQ(after.local_ifindex[name], ifindex) << name << " was re-created";
  }
  // No entry of a stable attachment was deleted on node-1 at any moment.
  neigh_mon.signal(SIGTERM);
  fdb_mon.signal(SIGTERM);
  std::vector<std::string> deletions;
  for (const auto& line : early)
    if (line.starts_with("Deleted")) deletions.push_back(line);
  for (auto* mon : {&neigh_mon, &fdb_mon})
    while (auto line = mon->read_line(1s))
      if (line->starts_with("Deleted") && !ProbeLink::about_probe(*line)) deletions.push_back(*line);
  // The monitors work: churn on the other nodes deleted entries on node-1.
  EXPECT_FALSE(deletions.empty()) << "the monitors saw no deletion at all";
  if (std::getenv("KOS_E2E_VERBOSE"))
    for (const auto& d : deletions) std::cerr << "monitor: " << d << "\n";
  int stable_deletions = 0;
  for (const auto& [vni, entries] : before.fdb)
    for (const auto& [mac, _] : entries)
      for (const auto& d : deletions)
        if (d.find(mac) != std::string::npos) {
          ++stable_deletions;
          ADD_FAILURE() << "a stable FDB entry was deleted: " << d;
        }
  for (const auto& [vni, entries] : before.neigh)
    for (const auto& [ip, _] : entries)
      for (const auto& d : deletions)
        if (d.starts_with("Deleted " + ip + " dev kosvx" + std::to_string(vni) + " ")) {
          ++stable_deletions;
          ADD_FAILURE() << "a stable neighbour entry was deleted: " << d;
        }
  EXPECT_EQ(stable_deletions, 0);
  EXPECT_GE(cluster_->agent(victim).starts(), 2);

  delete_all_and_expect_no_kos_device();
}

// The shipped script refuses bad arguments with exit 2 and a message (which the agent
// puts in status.postCreateExecReport), before touching anything.
TEST(GuestScript, RefusesBadArguments) {
  const std::vector<std::vector<std::string>> bad = {
      {},
      {"frobnicate"},
      {"add", "kos0a0b0c0d0e0f", "10.1.0.2/24"},           // no namespace
      {"add", "kos0a0b0c0d0e0f", "10.1.0.2", "g"},          // no prefix length
      {"add", "bad name", "10.1.0.2/24", "g"},              // interface name
      {"add", "abcdefghijklmnop", "10.1.0.2/24", "g"},      // 16 characters
      {"add", "kos0a0b0c0d0e0f", "10.1.0.2/24", "../etc"},  // namespace name
      {"del", "a/b"},
      {"del"},
  };
  for (const auto& args : bad) {
    std::vector<std::string> argv = {kGuestScript};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = run(argv);
    EXPECT_EQ(r.exit_code, 2) << ::testing::PrintToString(args) << ": " << r.err;
    EXPECT_FALSE(r.err.empty()) << ::testing::PrintToString(args);
  }
}

}  // namespace
}  // namespace kos::e2e
