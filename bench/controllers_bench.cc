// kos-bench-controllers: the IPAM controller against a `kos apiserver` on the embedded
// store, both as processes (`kos controller-manager`), on a fresh server per measurement.
//
//  1. Throughput: N attachments are created up front with no IPAM controller running
//     (their subnets already validated); then one `kos controller-manager --controllers
//     ipam --workers W` starts and the time until every attachment has status.ipv4 is
//     measured (start-up and informer sync included), for each W. Also shown: the rate
//     between the first and the last address write (server times).
//  2. Latency: attachments are created at a steady rate (open loop: creation i is due at
//     t0 + i/rate, whatever the earlier ones took) with the validator and IPAM running.
//     create -> addressed of each attachment is the server's own clock: the
//     extendedMetadata write time of `status.address` minus that of `spec` (the create),
//     so no client clock or client queueing is involved.
//
// Each measurement runs once with the controller-manager's default client rate limit
// (--qps 500 --burst 1000) and once with --qps 0 (no client-side limit), unless
// --qps-modes says otherwise.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <sstream>
#include <thread>

#include <CLI/CLI.hpp>

#include "client/informer.h"
#include "common/log.h"
#include "test/support/process.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;
using kos::testing::ChildProcess;
using kos::testing::TempDir;

struct Options {
  std::string kos;
  int attachments = 5000;
  int subnets = 10;
  std::vector<int> workers = {1, 4};
  double rate = 500;
  double seconds = 10;
  std::vector<std::string> qps_modes = {"default", "0"};
  int writers = 16;
};

// A server on a fresh store; the controller-manager processes it runs.
class Cluster {
 public:
  explicit Cluster(const Options& o) : o_(o) {
    server_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{o.kos, "--log-level", "warn", "apiserver", "--listen", "127.0.0.1:0",
                                 "--data-dir", (dir_.path() / "data").string(), "--write-kubeconfig",
                                 kubeconfig(), "--watch-cache-history", "100000"},
        false);
    for (auto deadline = Clock::now() + 30s; !client_ && Clock::now() < deadline;) {
      if (fs::exists(kubeconfig())) {
        kos::client::ClientOptions co;
        co.qps = 0;
        auto c = kos::client::RestClient::from_kubeconfig(kubeconfig(), co);
        if (c) client_ = *c;
      }
      if (!client_) std::this_thread::sleep_for(20ms);  // waiting for the server to start
    }
    if (!client_) throw std::runtime_error("kos apiserver did not start");
  }
  std::string kubeconfig() const { return (dir_.path() / "kubeconfig").string(); }
  std::shared_ptr<kos::client::RestClient> client() { return client_; }

  ChildProcess& controller_manager(const std::string& controllers, int workers, const std::string& qps) {
    std::vector<std::string> argv = {o_.kos, "--log-level", "warn", "controller-manager", "--kubeconfig",
                                     kubeconfig(), "--controllers", controllers, "--workers",
                                     std::to_string(workers)};
    if (qps != "default") argv.insert(argv.end(), {"--qps", qps});
    cms_.push_back(std::make_unique<ChildProcess>(argv, false));
    return *cms_.back();
  }

  // Subnets s0.. of namespace "bench", /20s (4,093 addresses each), validated.
  bool create_subnets(int n, const std::function<bool()>& validator_running) {
    for (int i = 0; i < n; ++i) {
      kos::api::Subnet s;
      s.metadata.namespace_ = "bench";
      s.metadata.name = "s" + std::to_string(i);
      s.spec.ipv4 = "10." + std::to_string(i) + ".0.0/20";
      s.spec.vni = static_cast<uint32_t>(100 + i);
      if (!client_->create(s)) return false;
    }
    for (auto deadline = Clock::now() + 30s; Clock::now() < deadline;) {
      auto l = client_->list<kos::api::Subnet>("bench");
      int v = 0;
      if (l)
        for (const auto& s : *l) v += s.status.validated;
      if (v == n) return true;
      if (!validator_running()) return false;
      std::this_thread::sleep_for(20ms);  // polling the validator's progress, bounded
    }
    return false;
  }

 private:
  const Options& o_;
  TempDir dir_{"kos-bench-controllers"};
  std::unique_ptr<ChildProcess> server_;
  std::shared_ptr<kos::client::RestClient> client_;
  std::vector<std::unique_ptr<ChildProcess>> cms_;
};

kos::api::NetworkAttachment attachment(int i, int subnets) {
  kos::api::NetworkAttachment na;
  na.metadata.namespace_ = "bench";
  na.metadata.name = "na-" + std::to_string(i);
  na.spec.subnet = "s" + std::to_string(i % subnets);
  na.spec.node = "node-" + std::to_string(i % 50);
  return na;
}

void parallel(int n, int threads, const std::function<void(int)>& fn) {
  std::atomic<int> next{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&] {
      for (int i = next++; i < n; i = next++) fn(i);
    });
  for (auto& t : ts) t.join();
}

// Counts the attachments with status.ipv4 set, from an informer; wakes waiters.
class AddressedCounter {
 public:
  explicit AddressedCounter(std::shared_ptr<kos::client::RestClient> c) : inf_(c, opts()) {
    auto addressed = [](const kos::client::ObjectPtr& o) {
      return !std::get<kos::api::NetworkAttachment>(*o).status.ipv4.empty();
    };
    inf_.add_handlers({[=, this](const kos::client::ObjectPtr& o) { bump(addressed(o)); },
                       [=, this](const kos::client::ObjectPtr& a, const kos::client::ObjectPtr& b) {
                         bump(addressed(b) && !addressed(a));
                       },
                       nullptr});
    inf_.start();
    inf_.wait_for_sync(60s);
  }
  // Waits until `n` are addressed; false after `timeout`.
  bool wait(size_t n, std::chrono::seconds timeout) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, timeout, [&] { return count_ >= n; });
  }
  size_t count() {
    std::lock_guard lk(mu_);
    return count_;
  }

 private:
  static kos::client::InformerOptions opts() {
    kos::client::InformerOptions o;
    o.kind = kos::api::Kind::kNetworkAttachment;
    o.ns = "bench";
    return o;
  }
  void bump(bool yes) {
    if (!yes) return;
    std::lock_guard lk(mu_);
    ++count_;
    cv_.notify_all();
  }
  kos::client::Informer inf_;
  std::mutex mu_;
  std::condition_variable cv_;
  size_t count_ = 0;
};

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// Server-side create -> addressed (ms) of every addressed attachment, and the span of
// the address writes (first, last).
struct ServerTimes {
  std::vector<double> latency_ms;
  kos::api::MicroTime first_address{}, last_address{};
};
ServerTimes server_times(kos::client::RestClient& c) {
  ServerTimes st;
  auto nas = c.list<kos::api::NetworkAttachment>("bench");
  if (!nas) return st;
  for (const auto& na : *nas) {
    if (na.metadata.name == "warmup") continue;
    auto spec = na.extended_metadata.write_time(kos::api::section::kSpec);
    auto addr = na.extended_metadata.write_time(kos::api::section::kAddress);
    if (!spec || !addr) continue;
    st.latency_ms.push_back(std::chrono::duration<double, std::milli>(*addr - *spec).count());
    if (st.first_address == kos::api::MicroTime{} || *addr < st.first_address) st.first_address = *addr;
    if (*addr > st.last_address) st.last_address = *addr;
  }
  return st;
}

std::string qps_label(const std::string& q) { return q == "default" ? "default (5000)" : q == "0" ? "unlimited" : q; }

struct ThroughputRow {
  int workers;
  std::string qps;
  bool ok;
  double wall_s, rate, server_rate;
};

ThroughputRow throughput(const Options& o, int workers, const std::string& qps) {
  Cluster cl(o);
  auto& validator = cl.controller_manager("subnet-validator", 2, "default");
  if (!cl.create_subnets(o.subnets, [&] { return validator.running(); }))
    throw std::runtime_error("subnets were not validated");
  auto c = cl.client();
  std::atomic<int> failed{0};
  parallel(o.attachments, o.writers, [&](int i) { failed += !c->create(attachment(i, o.subnets)).has_value(); });
  if (failed) throw std::runtime_error(std::to_string(failed.load()) + " creates failed");
  AddressedCounter counter(c);
  const auto t0 = Clock::now();
  auto& ipam = cl.controller_manager("ipam", workers, qps);
  bool ok = counter.wait(o.attachments, 600s);
  double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  ipam.stop();
  auto st = server_times(*c);
  double span = std::chrono::duration<double>(st.last_address - st.first_address).count();
  return {workers, qps, ok, wall, counter.count() / wall,
          span > 0 ? static_cast<double>(st.latency_ms.size()) / span : 0};
}

struct LatencyRow {
  std::string qps;
  int created;
  double achieved_rate;
  size_t addressed;
  double p50, p90, p99, max;
};

LatencyRow latency(const Options& o, const std::string& qps) {
  Cluster cl(o);
  auto& validator = cl.controller_manager("subnet-validator", 2, "default");
  if (!cl.create_subnets(o.subnets, [&] { return validator.running(); }))
    throw std::runtime_error("subnets were not validated");
  auto c = cl.client();
  auto& ipam = cl.controller_manager("ipam", 4, qps);
  AddressedCounter counter(c);
  // Let the IPAM controller finish starting (its informers synced) before the clock runs:
  // one attachment through end to end.
  auto warmup = attachment(0, o.subnets);
  warmup.metadata.name = "warmup";
  if (!c->create(warmup) || !counter.wait(1, 60s))
    throw std::runtime_error("the IPAM controller did not start");
  const int n = static_cast<int>(o.rate * o.seconds);
  const auto period = std::chrono::duration<double>(1.0 / o.rate);
  std::atomic<int> failed{0};
  const auto t0 = Clock::now() + 50ms;
  parallel(n, o.writers, [&](int i) {
    std::this_thread::sleep_until(t0 + std::chrono::duration_cast<Clock::duration>(period * i));  // the schedule
    failed += !c->create(attachment(i, o.subnets)).has_value();
  });
  double send_s = std::chrono::duration<double>(Clock::now() - t0).count();
  bool ok = counter.wait(static_cast<size_t>(n + 1), 300s);
  (void)ok;
  ipam.stop();
  auto st = server_times(*c);
  return {qps, n - failed.load(), n / send_s, st.latency_ms.size(),
          pct(st.latency_ms, 50), pct(st.latency_ms, 90), pct(st.latency_ms, 99),
          st.latency_ms.empty() ? 0 : *std::max_element(st.latency_ms.begin(), st.latency_ms.end())};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Measures the IPAM controller: attachments addressed per second and create->addressed latency."};
  Options o;
  app.add_option("--kos", o.kos, "path of the kos binary")->required();
  app.add_option("--attachments", o.attachments, "attachments created up front for the throughput runs")
      ->capture_default_str();
  app.add_option("--subnets", o.subnets, "subnets (/20s) the attachments are spread over")->capture_default_str();
  app.add_option("--workers", o.workers, "IPAM worker counts to measure")->capture_default_str();
  app.add_option("--rate", o.rate, "creates per second of the latency run")->capture_default_str();
  app.add_option("--seconds", o.seconds, "length of the latency run")->capture_default_str();
  app.add_option("--qps-modes", o.qps_modes,
                 "controller-manager --qps values to run with ('default': flag not given)")
      ->capture_default_str();
  app.add_option("--writers", o.writers, "client threads creating attachments")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  (void)kos::log::init("warn");

  try {
    std::vector<ThroughputRow> tput;
    for (const auto& q : o.qps_modes)
      for (int w : o.workers) {
        tput.push_back(throughput(o, w, q));
        std::fprintf(stderr, "throughput workers=%d qps=%s done\n", w, q.c_str());
      }
    std::vector<LatencyRow> lat;
    for (const auto& q : o.qps_modes) {
      lat.push_back(latency(o, q));
      std::fprintf(stderr, "latency qps=%s done\n", q.c_str());
    }

    std::printf("\nKOS controllers benchmark (embedded store; apiserver, validator and IPAM as separate processes; %u cores)\n",
                std::thread::hardware_concurrency());
    std::printf("\n1. Addressing throughput: %d attachments created up front over %d subnets, then one IPAM controller started\n",
                o.attachments, o.subnets);
    std::printf("   %-8s | %-14s | %-22s | %-14s | %-24s | %s\n", "workers", "client qps", "start -> all addressed",
                "addressed/s", "first->last address write", "goal >= 1,000/s");
    for (const auto& r : tput)
      std::printf("   %-8d | %-14s | %20.2f s | %14.0f | %22.0f/s | %s\n", r.workers, qps_label(r.qps).c_str(),
                  r.wall_s, r.rate, r.server_rate, !r.ok ? "INCOMPLETE" : r.rate >= 1000 ? "met" : "missed");
    std::printf("\n2. create -> addressed at a steady %.0f creates/s for %.0f s (4 IPAM workers; server times: status.address - spec)\n",
                o.rate, o.seconds);
    std::printf("   %-14s | %-8s | %-10s | %-9s | %-9s | %-9s | %-9s | %-9s | %s\n", "client qps", "created",
                "achieved/s", "addressed", "p50 ms", "p90 ms", "p99 ms", "max ms", "goal p99 < 50 ms");
    for (const auto& r : lat)
      std::printf("   %-14s | %8d | %10.0f | %9zu | %9.1f | %9.1f | %9.1f | %9.1f | %s\n", qps_label(r.qps).c_str(),
                  r.created, r.achieved_rate, r.addressed, r.p50, r.p90, r.p99, r.max,
                  r.p99 < 50 ? "met" : "missed");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kos-bench-controllers: %s\n", e.what());
    return 1;
  }
  return 0;
}
