// Several IPAM controllers at once (three `kos controller-manager --controllers ipam`
// processes) on a small, nearly full subnet under churn: paced writers keep creating
// attachments and deleting older ones, so every controller's cursor wraps around the
// subnet again and again and a freed address is handed out again at once. The
// AddressWatcher checks at every revision it sees that no two live attachments share an
// address, and counts live attachments whose address changed (which happens only when
// the lock of a live attachment's address is deleted under it); with track_locks it
// explains each shared address: whether each holder's status.lockUID named a lock that
// still existed at that revision. At the end: all addressed, one lock each, ipam-check
// clean, the controllers still running.
#include <gtest/gtest.h>

#include <deque>
#include <thread>

#include "test/controllers/harness.h"

namespace kos::ctltest {
namespace {

using namespace std::chrono_literals;

constexpr int kIpamControllers = 3;
constexpr const char* kCidr = "10.60.0.0/27";  // 29 usable addresses
constexpr int kWriterThreads = 4;
constexpr int kLivePerWriter = 6;  // 24 live of 29
constexpr int kCreatesPerWriter = 800;
constexpr int kCreatesPerSecond = 200;  // in total; each attachment lives about 0.12 s

TEST(IpamChurn, ControllersOnANearlyFullSubnet) {
  ApiServer server;
  ASSERT_EQ(server.start(), "");
  auto c = server.client();
  auto ctl = start_controllers(server, kIpamControllers);
  auto& ipams = ctl.ipams;
  auto all_logs = [&] { return ctl.logs(server); };
  AddressWatcher watcher(server.client(), /*track_locks=*/true);
  ASSERT_TRUE(watcher.start());
  ASSERT_TRUE(c->create(make_subnet("churn", "s", kCidr, 600)));

  std::atomic<int> failures{0};
  const auto t0 = Clock::now();
  std::vector<std::thread> writers;
  for (int t = 0; t < kWriterThreads; ++t)
    writers.emplace_back([&, t] {
      std::deque<std::string> mine;
      const auto period = std::chrono::microseconds(1000000LL * kWriterThreads / kCreatesPerSecond);
      auto next = Clock::now();
      for (int k = 0; k < kCreatesPerWriter; ++k) {
        std::this_thread::sleep_until(next);  // pacing the load, not synchronizing
        next += period;
        std::string name = "a-" + std::to_string(t) + "-" + std::to_string(k);
        auto r = with_retries([&] { return c->create(make_attachment("churn", name, "s")); });
        if (!r && r.error().code != Errc::kAlreadyExists) ++failures;
        mine.push_back(name);
        if (mine.size() > static_cast<size_t>(kLivePerWriter)) {
          auto d = with_retries([&] { return c->remove<api::NetworkAttachment>("churn", mine.front()); });
          if (!d && d.error().code != Errc::kNotFound) ++failures;
          mine.pop_front();
        }
      }
    });
  for (auto& w : writers) w.join();
  const double load_s = seconds_since(t0);
  EXPECT_EQ(failures.load(), 0);
  const size_t live = kWriterThreads * kLivePerWriter;
  std::string progress;
  EXPECT_TRUE(poll_until(
      [&] {
        auto locks = c->list<api::IPLock>("churn");
        progress = std::to_string(watcher.size()) + " attachments, " + std::to_string(watcher.addressed()) +
                   " addressed, " + std::to_string(locks ? locks->size() : 0) + " locks";
        return watcher.size() == live && watcher.addressed() == live && locks && locks->size() == live;
      },
      60s, 100ms))
      << progress << all_logs();
  auto check = ipam_check(server);
  EXPECT_EQ(check.exit_code, 0) << describe(check);
  EXPECT_TRUE(watcher.violations().empty()) << watcher.describe_violations();
  // The lock of a live attachment's address is never taken away from it, so its address
  // never changes.
  EXPECT_EQ(watcher.readdressed(), 0u) << "live attachments were moved to another address (their "
                                          "lock was deleted under them)";
  EXPECT_EQ(watcher.lists(), 1u);
  for (auto& p : ipams) EXPECT_TRUE(p->running()) << all_logs();
  std::printf("[ churn ] %d creates, %d deletes in %.1f s by %d writers on %s with %d IPAM controllers; "
              "watcher saw %llu events, %llu re-addressings\n",
              kWriterThreads * kCreatesPerWriter, kWriterThreads * (kCreatesPerWriter - kLivePerWriter), load_s,
              kWriterThreads, kCidr, kIpamControllers, static_cast<unsigned long long>(watcher.events()),
              static_cast<unsigned long long>(watcher.readdressed()));
  for (const auto& r : watcher.readdress_log()) std::printf("  re-addressed: %s\n", r.c_str());
}

}  // namespace
}  // namespace kos::ctltest
