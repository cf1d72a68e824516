// The distributed test: KOS as it runs when users outgrow one machine, under load, while
// its parts are killed. A 3-member etcd cluster (Debian's etcd on loopback ports), three
// API servers on it, two controller-managers with leader election, `kos simulate` agents
// (each its own credential and client, spread over the API servers at random) and `kos
// driver` creating and deleting attachments. During the load: kill -9 the etcd leader (then
// restart it), kill -9 an API server, kill -9 the leading controller-manager. Then:
//   - every create the driver saw acknowledged exists, or the driver deleted it (its ledger);
//   - no (VNI, address) was held twice in any consistent list sampled during the run;
//   - every simulated node's fabric equals what the API says it should program;
//   - `kos ipam-check` is clean;
//   - a witness watch, started on the API server that dies and resumed from its last
//     resourceVersion on another, delivered exactly the events of a watch from the same
//     revision through a server that never died (no gap, no duplicate);
//   - no informer saw an event out of order (kos_informer_out_of_order_events_total,
//     summed over the agents and the surviving controller-manager).
// It prints the driver's summary, the kill marks (seconds since the driver started) and
// the fail-over times; the driver's HTML report (KOS_DISTRIBUTED_REPORT=FILE keeps a copy)
// shows the latency by create time with the marks.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <tuple>

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include "test/integration/harness.h"
#include "test/integration/kos_cluster.h"
#include "test/support/on_exit.h"

namespace kos::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::system_clock;
namespace json = boost::json;

constexpr int kNodes = 12;
constexpr char kNs[] = "kos-driver";

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
}

// A plain-HTTP GET on loopback (simulate's and the controller-manager's --metrics-listen).
std::string http_get(int port, const std::string& path) {
  auto r = run({"/usr/bin/curl", "-sf", "--max-time", "5", "http://127.0.0.1:" + std::to_string(port) + path});
  return r.exit_code == 0 ? r.out : "";
}

// (vni, ip, mac) of a local interface; (vni, ip, mac, host) of a remote mapping.
using Local = std::tuple<int64_t, std::string, std::string>;
using Remote = std::tuple<int64_t, std::string, std::string, std::string>;
struct NodeFabric {
  std::set<Local> locals;
  std::set<Remote> remotes;
  bool operator==(const NodeFabric&) const = default;
};

std::string show(const NodeFabric& f) {
  std::string out = std::to_string(f.locals.size()) + " locals, " + std::to_string(f.remotes.size()) + " remotes";
  return out;
}

// What the API says each node should have programmed: its addressed attachments as
// locals; on every node that hosts a VNI, the other nodes' implemented attachments of it.
std::map<std::string, NodeFabric> desired(const std::vector<json::value>& items) {
  std::map<std::string, NodeFabric> out;
  std::map<int64_t, std::set<std::string>> hosts;  // vni -> nodes
  for (int i = 0; i < kNodes; ++i) out["sim-" + std::to_string(i)];
  for (const auto& a : items) {
    if (!str_at(a, "metadata.deletionTimestamp").empty()) continue;
    const auto vni = int_at(a, "status.addressVNI");
    const auto ip = str_at(a, "status.ipv4");
    if (ip.empty() || vni <= 0) continue;
    const auto node = str_at(a, "spec.node");
    out[node].locals.insert({vni, ip, str_at(a, "status.macAddress")});
    hosts[vni].insert(node);
  }
  for (const auto& a : items) {
    if (!str_at(a, "metadata.deletionTimestamp").empty()) continue;
    const auto vni = int_at(a, "status.addressVNI");
    const auto host = str_at(a, "status.hostIP");
    if (host.empty() || str_at(a, "status.ipv4").empty()) continue;
    for (const auto& n : hosts[vni])
      if (n != str_at(a, "spec.node"))
        out[n].remotes.insert({vni, str_at(a, "status.ipv4"), str_at(a, "status.macAddress"), host});
  }
  return out;
}

std::map<std::string, NodeFabric> programmed(const std::string& body) {
  std::map<std::string, NodeFabric> out;
  auto v = parse_json(body);
  const auto* nodes = at(v, "nodes");
  if (!nodes || !nodes->is_array()) return out;
  for (const auto& n : nodes->as_array()) {
    auto& f = out[str_at(n, "node")];
    for (const auto& l : n.at("locals").as_array())
      f.locals.insert({int_at(l, "vni"), str_at(l, "ip"), str_at(l, "mac")});
    for (const auto& r : n.at("remotes").as_array())
      f.remotes.insert({int_at(r, "vni"), str_at(r, "ip"), str_at(r, "mac"), str_at(r, "hostIP")});
  }
  return out;
}

// A watch of the driver's attachments through a client's transport (which moves to another
// API server when its own dies), resumed from its last resourceVersion after every break,
// as an informer resumes: every event it delivered, (type, name, resourceVersion).
class Witness {
 public:
  using Event = std::tuple<std::string, std::string, std::string>;
  Witness(std::shared_ptr<client::RestClient> c, std::string from_rv) : client_(std::move(c)), rv_(std::move(from_rv)) {}
  ~Witness() { stop(); }

  void start() {
    thread_ = std::thread([this] { run(); });
  }
  void stop() {
    {
      std::lock_guard lk(mu_);
      stopping_ = true;
      cv_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
  }
  // Waits until no event has come for `quiet` (false if that takes longer than `limit`).
  bool settle(std::chrono::milliseconds quiet, std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    std::unique_lock lk(mu_);
    while (std::chrono::steady_clock::now() < deadline) {
      const size_t n = events_.size();
      cv_.wait_for(lk, quiet, [&] { return events_.size() != n; });
      if (events_.size() == n) return true;
    }
    return false;
  }
  std::vector<Event> events() {
    std::lock_guard lk(mu_);
    return events_;
  }
  int resumes() {
    std::lock_guard lk(mu_);
    return resumes_;
  }
  std::string error() {
    std::lock_guard lk(mu_);
    return error_;
  }

 private:
  void run() {
    const auto ref = client::ResourceRef::of(api::Kind::kNetworkAttachment);
    std::unique_lock lk(mu_);
    while (!stopping_) {
      client::ListOptions lo;
      lo.resource_version = rv_;
      bool ended = false;
      lk.unlock();
      auto stream = client_->transport()->stream(
          client::HttpRequest{"GET", ref.path(kNs) + lo.query(true), "", "application/json", "application/json", 10s},
          [this](unsigned status, const std::string& body) {
            if (status == 200) return;
            std::lock_guard g(mu_);
            error_ = "watch answered " + std::to_string(status) + ": " + body;
          },
          [this](std::string_view line) {
            auto v = parse_json(std::string(line));
            const std::string type = str_at(v, "type"), name = str_at(v, "object.metadata.name"),
                              rv = str_at(v, "object.metadata.resourceVersion");
            std::lock_guard g(mu_);
            if (type == "ERROR") {
              error_ = "watch error: " + std::string(line);
              return;
            }
            events_.emplace_back(type, name, rv);
            rv_ = rv;
            cv_.notify_all();
          },
          [this, &ended](Result<void>) {
            std::lock_guard g(mu_);
            ended = true;
            cv_.notify_all();
          });
      lk.lock();
      cv_.wait(lk, [&] { return ended || stopping_; });
      if (!ended) {
        lk.unlock();
        stream->cancel();
        lk.lock();
        break;
      }
      if (!error_.empty()) break;
      ++resumes_;
      cv_.wait_for(lk, 100ms, [&] { return stopping_; });  // a pause before resuming
    }
  }

  std::shared_ptr<client::RestClient> client_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string rv_;
  std::vector<Event> events_;
  int resumes_ = 0;
  std::string error_;
  bool stopping_ = false;
  std::thread thread_;
};

TEST(Distributed, KillsOfAnEtcdMemberAnApiServerAndTheLeaderUnderLoadLoseNothing) {
  KosCluster cluster;
  ASSERT_EQ(cluster.start(), "");
  auto client = cluster.client();
  ASSERT_TRUE(eventually([&] { return cluster.leader() >= 0; }, 20s)) << "no controller-manager took the lease";

  // The agents: one process of simulated nodes, each with its own certificate and client
  // (which starts on one of the three API servers at random).
  const int sim_port = free_loopback_port();
  ChildProcess sim({KOS_BINARY, "--log-level", "warn", "simulate", "--kubeconfig", cluster.admin_kubeconfig().string(),
                    "--nodes", std::to_string(kNodes), "--node-credentials", cluster.pki_dir().string(),
                    "--metrics-listen", "127.0.0.1:" + std::to_string(sim_port)});
  ASSERT_TRUE(eventually([&] { return !http_get(sim_port, "/healthz").empty(); }, 60s)) << "kos simulate did not start";

  // The witness watch, from the revision before the load, on its own client: every server
  // in its kubeconfig, starting on API server 0, which dies during the load.
  std::string start_rv;
  {
    auto l = client->list(client::ResourceRef::of(api::Kind::kNetworkAttachment), kNs);
    ASSERT_TRUE(l);
    start_rv = l->resource_version;
  }
  auto witness_config = client::load_kubeconfig(cluster.admin_kubeconfig().string());
  ASSERT_TRUE(witness_config) << witness_config.error().message;
  ASSERT_EQ(witness_config->endpoints.size(), 3u);
  client::TransportOptions wto;
  wto.first_endpoint = 0;
  auto witness_transport = client::Transport::create(*witness_config, wto);
  ASSERT_TRUE(witness_transport);
  Witness witness(std::make_shared<client::RestClient>(*witness_transport), start_rv);
  witness.start();

  // The load: creates at 40/s on 30 VNIs of power-law sizes, at most 200 live (the oldest
  // deleted before each create past that), for 28 s.
  const auto ledger = cluster.dir() / "ledger.jsonl", report = cluster.dir() / "report.html",
             summary = cluster.dir() / "summary.json", marks_file = cluster.dir() / "marks";
  RunResult driver;
  const int64_t driver_start = now_ms();
  std::thread load([&] {
    RunOptions o;
    o.timeout = 180s;
    driver = run({KOS_BINARY, "--log-level", "warn", "driver", "--kubeconfig", cluster.admin_kubeconfig().string(),
                  "--node-prefix", "sim", "--node-count", std::to_string(kNodes), "--vnis", "30", "--slots-top", "30",
                  "--slots-exponent", "0.7", "--rate", "40", "--cruise", "28s", "--max-live", "200", "--cooldown",
                  "20s", "--stage-timeout", "30s", "--threads", "8", "--agent-endpoints",
                  "http://127.0.0.1:" + std::to_string(sim_port), "--ledger", ledger.string(), "--marks", marks_file.string(), "--report",
                  report.string(), "--json", summary.string(), "--keep", "--no-progress", "--seed", "17"},
                 o);
  });

  // A sampler: consistent lists of the attachments; a (VNI, address) held twice in one is
  // a broken guarantee.
  std::atomic<bool> done{false};
  std::atomic<int> samples{0}, duplicated{0};
  std::thread sampler([&] {
    while (!done) {
      auto l = client->list(client::ResourceRef::of(api::Kind::kNetworkAttachment), kNs);
      if (l) {
        std::set<std::pair<int64_t, std::string>> held;
        for (const auto& a : l->items) {
          auto ip = str_at(a, "status.ipv4");
          if (!ip.empty() && !held.insert({int_at(a, "status.addressVNI"), ip}).second) ++duplicated;
        }
        ++samples;
      }
      std::this_thread::sleep_for(250ms);
    }
  });
  // Whatever fails below, the threads end before the objects they use.
  kos::testing::OnExit join_threads([&] {
    done = true;
    if (load.joinable()) load.join();
    if (sampler.joinable()) sampler.join();
  });

  // The kills, on the driver's timeline (its report draws the marks).
  auto mark = [&](const std::string& what) {
    const int64_t t = now_ms();
    std::ofstream(marks_file, std::ios::app) << t << " " << what << "\n";
    std::printf("mark %.1f s: %s\n", (t - driver_start) / 1000.0, what.c_str());
  };
  auto sleep_until = [&](double s) {
    while ((now_ms() - driver_start) / 1000.0 < s) std::this_thread::sleep_for(50ms);
  };
  // The etcd member that leads (the worst case: writes in flight wait for etcd's own
  // request timeout, and the others elect a leader).
  sleep_until(5);
  const int etcd_victim = cluster.etcd().leader();
  ASSERT_GE(etcd_victim, 0) << "no etcd leader";
  const int64_t t_etcd = now_ms();
  cluster.etcd().member(etcd_victim).kill9();
  mark("kill -9 etcd member " + std::to_string(etcd_victim) + " (the leader)");
  sleep_until(12);
  cluster.etcd().member(etcd_victim).restart();
  mark("etcd member " + std::to_string(etcd_victim) + " restarted");
  sleep_until(14);
  const int64_t t_api = now_ms();
  cluster.kill_apiserver(0);
  mark("kill -9 API server 0");
  sleep_until(18);
  const int old_leader = cluster.leader();
  ASSERT_GE(old_leader, 0);
  const int64_t t_cm = now_ms();
  cluster.kill_controller_manager(old_leader);
  mark("kill -9 the leading controller-manager");
  ASSERT_TRUE(eventually([&] { return cluster.leader() == 1 - old_leader; }, 15s))
      << "the other controller-manager did not take the lease";
  const double handover_s = (now_ms() - t_cm) / 1000.0;
  mark("the other controller-manager holds the lease");
  load.join();
  done = true;
  sampler.join();
  std::printf("%s\n", driver.out.c_str());
  // Stage failures during the kills make the driver exit 1; what matters is below.
  ASSERT_TRUE(driver.exit_code == 0 || driver.exit_code == 1) << describe(driver);

  // The ledger: each name's last acknowledged call says whether it must exist.
  std::map<std::string, std::string> last_ok;  // name -> "create" | "delete"
  std::set<std::string> unsure;                // a call failed after its last acknowledged one
  int64_t first_ok_after_etcd = 0, first_ok_after_api = 0;
  size_t acknowledged_creates = 0, failed_calls = 0;
  {
    std::ifstream in(ledger);
    for (std::string line; std::getline(in, line);) {
      auto l = parse_json(line);
      const std::string op = str_at(l, "op"), name = str_at(l, "name");
      const bool ok = at(l, "ok") && at(l, "ok")->as_bool();
      const int64_t t = int_at(l, "t_ms");
      if (ok) {
        last_ok[name] = op;
        unsure.erase(name);
        acknowledged_creates += op == "create";
        if (!first_ok_after_etcd && t > t_etcd) first_ok_after_etcd = t;
        if (!first_ok_after_api && t > t_api) first_ok_after_api = t;
      } else {
        unsure.insert(name);
        ++failed_calls;
      }
    }
  }
  ASSERT_GT(acknowledged_creates, 300u);  // 960 at the rate; a loaded machine and the kills take some
  auto list = client->list(client::ResourceRef::of(api::Kind::kNetworkAttachment), kNs);
  ASSERT_TRUE(list) << list.error().message;
  std::set<std::string> present;
  for (const auto& a : list->items) present.insert(str_at(a, "metadata.name"));
  size_t lost = 0, resurrected = 0;
  for (const auto& [name, op] : last_ok) {
    if (unsure.count(name)) continue;
    if (op == "create" && !present.count(name)) {
      ++lost;
      ADD_FAILURE() << name << ": acknowledged, then lost";
    }
    if (op == "delete" && present.count(name)) {
      ++resurrected;
      ADD_FAILURE() << name << ": deleted, yet there";
    }
  }

  // Every node's fabric converges to what the API says.
  std::map<std::string, NodeFabric> want, got;
  const bool converged = eventually(
      [&] {
        auto l = client->list(client::ResourceRef::of(api::Kind::kNetworkAttachment), kNs);
        if (!l) return false;
        want = desired(l->items);
        got = programmed(http_get(sim_port, "/debug/fabric"));
        return want == got;
      },
      30s);
  EXPECT_TRUE(converged);
  if (!converged)
    for (const auto& [node, f] : want)
      if (got[node] != f) ADD_FAILURE() << node << ": wants " << show(f) << ", has " << show(got[node]);

  // The witness delivered every event of the run once, in order, through the kills: the
  // same sequence as a watch from the same revision through a server that never died.
  EXPECT_TRUE(witness.settle(2s, 30s)) << "the witness's events did not stop coming";
  witness.stop();
  EXPECT_EQ(witness.error(), "");
  Witness reference(client, start_rv);
  reference.start();
  EXPECT_TRUE(reference.settle(2s, 30s)) << reference.error();
  reference.stop();
  const auto got_events = witness.events(), want_events = reference.events();
  EXPECT_EQ(reference.error(), "");
  EXPECT_EQ(got_events.size(), want_events.size());
  size_t first_diff = 0;
  while (first_diff < std::min(got_events.size(), want_events.size()) && got_events[first_diff] == want_events[first_diff])
    ++first_diff;
  EXPECT_EQ(first_diff, want_events.size()) << "the witness's events differ from event " << first_diff;
  EXPECT_GE(witness.resumes(), 1) << "the witness's server did not die under it";

  auto check = run({KOS_BINARY, "ipam-check", "--kubeconfig", cluster.admin_kubeconfig().string()});
  EXPECT_EQ(check.exit_code, 0) << describe(check);
  EXPECT_EQ(duplicated.load(), 0) << "addresses held twice in sampled lists";
  const double out_of_order =
      metric_sum(http_get(sim_port, "/metrics"), "kos_informer_out_of_order_events_total") +
      metric_sum(http_get(cluster.controller_manager_metrics_port(1 - old_leader), "/metrics"),
             "kos_informer_out_of_order_events_total");
  EXPECT_EQ(out_of_order, 0);

  std::printf("distributed: %zu creates acknowledged, %zu calls failed (a kill in flight), %zu attachments at the "
              "end; lost %zu, deleted-yet-there %zu; %d consistent lists sampled, %d (VNI, address) duplicates; "
              "fabrics of %d nodes %s; out-of-order watch events %.0f; a watch through the kills delivered "
              "%zu events with %d resumes, %zu equal to a reference watch's\n",
              acknowledged_creates, failed_calls, present.size(), lost, resurrected, samples.load(),
              duplicated.load(), kNodes, converged ? "converged" : "NOT converged", out_of_order, got_events.size(),
              witness.resumes(), first_diff);
  std::printf("fail-over: first acknowledged call %.0f ms after the etcd leader's kill, %.0f ms after the API "
              "server's; lease taken over %.2f s after the leading controller-manager's kill (lease duration 2 s)\n",
              first_ok_after_etcd ? double(first_ok_after_etcd - t_etcd) : -1.0,
              first_ok_after_api ? double(first_ok_after_api - t_api) : -1.0, handover_s);
  EXPECT_NE(read_file(report).find("kill -9 API server 0"), std::string::npos) << "the report shows no marks";
  if (const char* keep = std::getenv("KOS_DISTRIBUTED_REPORT"); keep && *keep) {
    std::filesystem::copy_file(report, keep, std::filesystem::copy_options::overwrite_existing);
    std::printf("report: %s\n", keep);
  }
  sim.stop();
}

}  // namespace
}  // namespace kos::testing
