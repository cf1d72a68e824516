// kos-bench-client: one process with many informers (each with its own spec.node field
// selector) on one connection pool, against a `kos apiserver` in its own process.
// Prints the memory per informer (RSS growth / informers, with and without cached
// objects) and the events per second the informers receive while a writer creates
// attachments as fast as it can.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <thread>

#include <CLI/CLI.hpp>

#include "client/informer.h"
#include "common/log.h"
#include "test/support/process.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

double rss_mib() {
  std::ifstream statm("/proc/self/statm");
  long size = 0, resident = 0;
  statm >> size >> resident;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1 << 20);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Measures informers: memory per informer and events per second delivered."};
  std::string kos;
  int informers = 1000, per_node = 10, events = 20000, writers = 16;
  app.add_option("--kos", kos, "path of the kos binary")->required();
  app.add_option("--informers", informers)->capture_default_str();
  app.add_option("--objects-per-informer", per_node)->capture_default_str();
  app.add_option("--events", events)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  (void)kos::log::init("warn");

  kos::testing::TempDir dir("kos-bench-client");
  kos::testing::ChildProcess server({kos, "--log-level", "warn", "apiserver", "--listen", "127.0.0.1:0",
                                     "--data-dir", dir.path().string(), "--write-kubeconfig",
                                     (dir.path() / "kubeconfig").string()},
                                    false);
  std::shared_ptr<kos::client::RestClient> client;
  for (auto deadline = Clock::now() + 30s; !client && Clock::now() < deadline;) {
    if (std::filesystem::exists(dir.path() / "kubeconfig")) {
      auto c = kos::client::RestClient::from_kubeconfig((dir.path() / "kubeconfig").string());
      if (c) client = *c;
    }
    if (!client) std::this_thread::sleep_for(20ms);  // waiting for the server to start
  }
  if (!client) {
    std::fprintf(stderr, "kos apiserver did not start\n");
    return 1;
  }
  auto writer_opts = kos::client::ClientOptions{};
  writer_opts.qps = 0;
  auto writer = std::make_shared<kos::client::RestClient>(client->transport(), writer_opts);

  auto create = [&](const std::string& name, int node) {
    kos::api::NetworkAttachment na;
    na.metadata.name = name;
    na.metadata.namespace_ = "bench";
    na.spec.node = "node-" + std::to_string(node);
    na.spec.subnet = "s1";
    return writer->create(na).has_value();
  };
  auto parallel = [&](int total, auto fn) {
    std::atomic<int> next{0};
    std::vector<std::thread> ts;
    for (int w = 0; w < writers; ++w)
      ts.emplace_back([&] {
        for (int i = next++; i < total; i = next++) fn(i);
      });
    for (auto& t : ts) t.join();
  };
  // Objects present before the informers start: per_node on each informer's node.
  parallel(informers * per_node, [&](int i) { create("pre-" + std::to_string(i), i % informers); });

  double rss0 = rss_mib();
  std::atomic<uint64_t> received{0};
  std::vector<std::unique_ptr<kos::client::Informer>> infs;
  auto t0 = Clock::now();
  for (int i = 0; i < informers; ++i) {
    kos::client::InformerOptions o;
    o.field_selector = "spec.node=node-" + std::to_string(i);
    infs.push_back(std::make_unique<kos::client::Informer>(client, o));
    infs.back()->add_handlers({[&](const kos::client::ObjectPtr&) { ++received; }, nullptr, nullptr});
    infs.back()->start();
  }
  for (auto& inf : infs) inf->wait_for_sync(60s);
  double sync_s = std::chrono::duration<double>(Clock::now() - t0).count();
  double rss1 = rss_mib();
  uint64_t initial = received.load();

  auto t1 = Clock::now();
  parallel(events, [&](int i) { create("ev-" + std::to_string(i), i % informers); });
  auto deadline = Clock::now() + 60s;
  while (received.load() < initial + static_cast<uint64_t>(events) && Clock::now() < deadline)
    std::this_thread::sleep_for(1ms);  // waiting for the last events to arrive
  double secs = std::chrono::duration<double>(Clock::now() - t1).count();
  double rss2 = rss_mib();
  uint64_t delivered = received.load() - initial;

  std::printf("KOS client benchmark: %d informers (distinct spec.node selectors), %d objects each at start\n",
              informers, per_node);
  std::printf("  start + initial list of all informers: %.2f s\n", sync_s);
  std::printf("  memory per informer: %.1f KiB (RSS %.1f -> %.1f MiB, incl. %d cached objects each)\n",
              (rss1 - rss0) * 1024 / informers, rss0, rss1, per_node);
  std::printf("  events delivered: %llu of %d in %.2f s = %.0f events/s (writer: %d threads, same process)\n",
              static_cast<unsigned long long>(delivered), events, secs, delivered / secs, writers);
  std::printf("  memory after the events: %.1f MiB (%.1f KiB per informer)\n", rss2,
              (rss2 - rss0) * 1024 / informers);
  for (auto& inf : infs) inf->stop();
  return delivered == static_cast<uint64_t>(events) ? 0 : 1;
}
