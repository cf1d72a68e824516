// kos-bench-fabric: how fast the linux fabric programs remote mappings (an FDB entry and
// a permanent neighbour entry each) into the kernel, in a network namespace it creates and
// removes. For each caller count T: N remote interfaces over V VNIs are created by T
// threads (the agent's workers), then created again (unchanged: served from the cache),
// listed (a full read of the kernel), and deleted: all but one entry per VNI, then those
// (teardown: each also deletes its VNI's VXLAN device and bridge, which costs the kernel
// tens of milliseconds of RCU grace periods per device). Then the same creates and deletes
// from one thread through Fabric::apply in batches of --batch (the agent's batch size):
// what the agent's batched reconcile costs, against the per-call rows above. Needs root.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include <CLI/CLI.hpp>

#include "api/cidr.h"
#include "fabric/linux/linux_fabric.h"
#include "test/support/netns.h"
#include "test/support/process.h"

namespace {

using Clock = std::chrono::steady_clock;
using kos::fabric::RemoteIfc;

struct Options {
  int remotes = 10000;
  int vnis = 10;
  std::vector<int> threads = {1, 8};
  size_t batch = 256;
};

using Netns = kos::testing::ScopedNetns;

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Runs fn(i) for i in [0, n) on `threads` threads, each taking the next index; returns the
// wall time and the number of failed calls.
template <class F>
std::pair<double, int> timed(int n, int threads, F fn) {
  std::atomic<int> next{0}, failures{0};
  auto t0 = Clock::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&] {
      for (int i; (i = next.fetch_add(1)) < n;)
        if (!fn(i)) failures.fetch_add(1);
    });
  for (auto& t : ts) t.join();
  return {seconds(Clock::now() - t0), failures.load()};
}

// The linux fabric in `ns` (null, with the reason printed, if it cannot open).
std::unique_ptr<kos::fabric::Fabric> open_fabric(const Netns& ns) {
  kos::fabric::LinuxFabricOptions fo;
  fo.host_ip = *kos::api::parse_ipv4("10.99.0.1");
  fo.netns = ns.name();
  auto opened = kos::fabric::LinuxFabric::open(fo);
  if (!opened) {
    std::fprintf(stderr, "kos-bench-fabric: %s\n", opened.error().message.c_str());
    return nullptr;
  }
  return std::move(*opened);
}

int run_once(const Options& o, int threads, int round) {
  Netns ns("kos-bench-" + std::to_string(getpid()) + "-" + std::to_string(round));
  auto opened = open_fabric(ns);
  if (!opened) return 1;
  auto& fabric = dynamic_cast<kos::fabric::LinuxFabric&>(*opened);
  std::vector<RemoteIfc> rs;
  const uint32_t base = *kos::api::parse_ipv4("10.64.0.0");
  const uint32_t hosts = *kos::api::parse_ipv4("10.99.1.0");
  for (int i = 0; i < o.remotes; ++i) {
    const uint32_t vni = 100 + static_cast<uint32_t>(i % o.vnis);
    const uint32_t g = base + static_cast<uint32_t>(i);
    rs.push_back(RemoteIfc{vni, kos::api::guest_mac(g, vni), g, hosts + 1 + static_cast<uint32_t>(i % 250)});
  }
  auto report = [&](const char* what, std::pair<double, int> r, const kos::fabric::LinuxFabricStats& before,
                    int n) {
    auto s = fabric.stats();
    const double calls = static_cast<double>(s.calls - before.calls);
    std::printf("  %-10s %8.3f s  %9.0f /s  failures %d  messages %llu in %llu sendmsg (%.1f/send), "
                "%.1f calls/batch\n",
                what, r.first, n / r.first, r.second,
                static_cast<unsigned long long>(s.messages - before.messages),
                static_cast<unsigned long long>(s.sends - before.sends),
                s.sends == before.sends ? 0.0 : double(s.messages - before.messages) / double(s.sends - before.sends),
                s.batches == before.batches ? 0.0 : calls / double(s.batches - before.batches));
    return r.second;
  };
  std::printf("threads=%d remotes=%d vnis=%d\n", threads, o.remotes, o.vnis);
  int failures = 0;
  auto s = fabric.stats();
  auto create = [&](int i) { return fabric.create_remote(rs[i]).has_value(); };
  failures += report("create", timed(o.remotes, threads, create), s, o.remotes);
  s = fabric.stats();
  failures += report("unchanged", timed(o.remotes, threads, create), s, o.remotes);
  auto t0 = Clock::now();
  auto listed = fabric.list_remote();
  const double list_s = seconds(Clock::now() - t0);
  std::printf("  %-10s %8.3f s  (%zu entries read back)\n", "list", list_s, listed ? listed->size() : 0);
  if (!listed || listed->size() != rs.size()) ++failures;
  // Entries first, keeping the first remote of each VNI (rs[0..vnis)), so that this rate is
  // of entries; then those last ones, each of which also takes its VNI's two devices.
  const int anchors = std::min(o.vnis, o.remotes);
  s = fabric.stats();
  failures += report("delete", timed(o.remotes - anchors, threads,
                                     [&](int i) { return fabric.delete_remote(rs[anchors + i]).has_value(); }),
                     s, o.remotes - anchors);
  s = fabric.stats();
  auto t1 = Clock::now();
  auto down = timed(anchors, threads, [&](int i) { return fabric.delete_remote(rs[i]).has_value(); });
  failures += down.second;
  std::printf("  %-10s %8.3f s  %9.1f ms per VNI (its last entry, VXLAN device and bridge), %llu VNIs deleted\n",
              "teardown", seconds(Clock::now() - t1), 1000 * down.first / anchors,
              static_cast<unsigned long long>(fabric.stats().vnis_deleted - s.vnis_deleted));
  auto after = fabric.list_remote();
  if (!after || !after->empty()) ++failures;
  return failures == 0 ? 0 : 1;
}

// Creates and deletes all remotes from one thread, `o.batch` changes per Fabric::apply.
int run_batched(const Options& o, int round) {
  Netns ns("kos-bench-" + std::to_string(getpid()) + "-" + std::to_string(round));
  auto opened = open_fabric(ns);
  if (!opened) return 1;
  auto& fabric = dynamic_cast<kos::fabric::LinuxFabric&>(*opened);
  std::vector<kos::fabric::Change> creates, deletes;
  const uint32_t base = *kos::api::parse_ipv4("10.64.0.0");
  const uint32_t hosts = *kos::api::parse_ipv4("10.99.1.0");
  for (int i = 0; i < o.remotes; ++i) {
    const uint32_t vni = 100 + static_cast<uint32_t>(i % o.vnis);
    const uint32_t g = base + static_cast<uint32_t>(i);
    RemoteIfc r{vni, kos::api::guest_mac(g, vni), g, hosts + 1 + static_cast<uint32_t>(i % 250)};
    creates.push_back(kos::fabric::Change::create(r));
    deletes.push_back(kos::fabric::Change::remove(r));
  }
  std::printf("batched: 1 thread, %zu changes per apply, remotes=%d vnis=%d\n", o.batch, o.remotes, o.vnis);
  int failures = 0;
  auto run = [&](const char* what, const std::vector<kos::fabric::Change>& all) {
    auto before = fabric.stats();
    auto t0 = Clock::now();
    for (size_t at = 0; at < all.size(); at += o.batch) {
      std::vector<kos::fabric::Change> chunk(all.begin() + static_cast<long>(at),
                                             all.begin() + static_cast<long>(std::min(all.size(), at + o.batch)));
      for (const auto& r : fabric.apply(chunk)) failures += !r;
    }
    const double t = seconds(Clock::now() - t0);
    auto s = fabric.stats();
    std::printf("  %-10s %8.3f s  %9.0f /s  failures %d  messages %llu in %llu sendmsg (%.1f/send), "
                "%.1f calls/batch\n",
                what, t, static_cast<double>(all.size()) / t, failures,
                static_cast<unsigned long long>(s.messages - before.messages),
                static_cast<unsigned long long>(s.sends - before.sends),
                s.sends == before.sends ? 0.0 : double(s.messages - before.messages) / double(s.sends - before.sends),
                s.batches == before.batches ? 0.0 : double(s.calls - before.calls) / double(s.batches - before.batches));
  };
  run("create", creates);
  run("unchanged", creates);
  run("delete", deletes);
  auto after = fabric.list_remote();
  if (!after || !after->empty()) ++failures;
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"kos-bench-fabric: linux fabric remote mappings per second (needs root)"};
  app.add_option("--remotes", o.remotes, "remote interfaces")->capture_default_str();
  app.add_option("--vnis", o.vnis, "VNIs they are spread over")->capture_default_str();
  app.add_option("--threads", o.threads, "caller thread counts to measure")->capture_default_str();
  app.add_option("--batch", o.batch, "changes per Fabric::apply in the batched run (0: skip it)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (geteuid() != 0) {
    std::fprintf(stderr, "kos-bench-fabric: needs root (it creates a network namespace)\n");
    return 2;
  }
  int rc = 0;
  int round = 0;
  for (int t : o.threads) {
    try {
      rc |= run_once(o, t, round++);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kos-bench-fabric: %s\n", e.what());
      return 1;
    }
  }
  if (o.batch > 0) {
    try {
      rc |= run_batched(o, round++);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kos-bench-fabric: %s\n", e.what());
      return 1;
    }
  }
  return rc;
}
