// kill -9 of the IPAM controller at random moments (random delays of kMinKillDelay ..
// kMaxKillDelay between kills, restarted at once each time) while paced writers create
// kCreates attachments and delete about half of them (every kRecreateEvery-th deleted
// name is re-created at once, possibly on another subnet). Throughout the test an
// AddressWatcher checks, at every revision it sees, that no two live attachments hold the
// same (VNI, IPv4). At the end: the controller never exited by itself, every live
// attachment is addressed from its subnet with exactly one lock, held by it, and
// `kos ipam-check` is clean.
#include <gtest/gtest.h>

#include <random>
#include <thread>

#include "api/cidr.h"
#include "api/names.h"
#include "test/controllers/harness.h"

namespace kos::ctltest {
namespace {

using namespace std::chrono_literals;

constexpr int kCreates = 2000;      // attachment creates, re-creations included
constexpr int kRecreateEvery = 10;  // every 10th delete is followed by a create of the same name
constexpr int kSubnets = 5;         // /24s: 253 usable addresses each
constexpr int kWriterThreads = 4;
constexpr int kCreatesPerSecond = 200;  // paced, so the run spans many kills
constexpr int kDeleteLag = 8;           // a writer deletes the attachment it created 8 steps ago
constexpr auto kMinKillDelay = 50ms;
constexpr auto kMaxKillDelay = 500ms;

std::string subnet_name(int i) { return "s" + std::to_string(i); }

TEST(IpamCrash, KillNineDuringCreatesAndDeletes) {
  ApiServer server;
  ASSERT_EQ(server.start(), "");
  auto c = server.client();
  auto validator = controller_manager(server, "validator", "subnet-validator");
  auto ipam = controller_manager(server, "ipam", "ipam");
  auto all_logs = [&] { return logs({&server.process(), validator.get(), ipam.get()}); };
  validator->start();
  ipam->start();

  AddressWatcher watcher(server.client(), /*track_locks=*/true);
  ASSERT_TRUE(watcher.start());

  for (int i = 0; i < kSubnets; ++i)
    ASSERT_TRUE(c->create(make_subnet("crash", subnet_name(i), "10.50." + std::to_string(i) + ".0/24",
                                      static_cast<uint32_t>(500 + i))));
  ASSERT_TRUE(poll_until(
      [&] {
        auto l = c->list<api::Subnet>("crash");
        if (!l) return false;
        int v = 0;
        for (const auto& s : *l) v += s.status.validated;
        return v == kSubnets;
      },
      30s))
      << all_logs();

  // Writers: thread t owns the names a-t-<k>. Each step creates one attachment (paced to
  // kCreatesPerSecond in total) and, once kDeleteLag steps in, deletes every other one it
  // created kDeleteLag steps earlier; every kRecreateEvery-th delete is followed at once
  // by a create of the same name (which counts as one of the kCreates).
  std::atomic<int> creates{0}, deletes{0}, recreates{0}, failures{0};
  std::mutex mu;
  std::string first_failure;
  std::set<std::string> live;  // names of the attachments that should exist at the end
  std::map<std::string, int> subnet_of;  // name -> subnet index of its latest incarnation
  std::vector<int> live_per_subnet(kSubnets, 0);
  auto note_failure = [&](const std::string& what, const Error& e) {
    std::lock_guard lk(mu);
    if (failures++ == 0) first_failure = what + ": " + e.to_string();
  };
  std::atomic<bool> writers_done{false};
  const auto t0 = Clock::now();
  std::vector<std::thread> writers;
  for (int t = 0; t < kWriterThreads; ++t)
    writers.emplace_back([&, t] {
      const auto period = std::chrono::microseconds(1000000LL * kWriterThreads / kCreatesPerSecond);
      auto next = Clock::now();
      std::vector<std::string> mine;
      int del_count = 0;
      // Each create goes to the subnet with the fewest live attachments, so the subnets
      // fill evenly (none runs out: 5 x 253 addresses for about 1,050 live at the end).
      auto create = [&](const std::string& name) {
        int sub = 0;
        {
          std::lock_guard lk(mu);
          for (int i = 1; i < kSubnets; ++i)
            if (live_per_subnet[i] < live_per_subnet[sub]) sub = i;
          ++live_per_subnet[sub];
          subnet_of[name] = sub;
          live.insert(name);
        }
        auto r = with_retries([&] {
          return c->create(make_attachment("crash", name, subnet_name(sub), "node-" + std::to_string(t)));
        });
        if (!r && r.error().code != Errc::kAlreadyExists) return note_failure("create " + name, r.error());
      };
      for (int k = 0; creates.fetch_add(1) < kCreates; ++k) {
        std::this_thread::sleep_until(next);  // pacing the load, not synchronizing
        next += period;
        std::string name = "a-" + std::to_string(t) + "-" + std::to_string(k);
        create(name);
        mine.push_back(name);
        if (k >= kDeleteLag && (k - kDeleteLag) % 2 == 0) {
          const std::string& victim = mine[k - kDeleteLag];
          auto r = with_retries([&] { return c->remove<api::NetworkAttachment>("crash", victim); });
          if (!r && r.error().code != Errc::kNotFound) {
            note_failure("delete " + victim, r.error());
            continue;
          }
          ++deletes;
          {
            std::lock_guard lk(mu);
            live.erase(victim);
            --live_per_subnet[subnet_of[victim]];
          }
          // The new incarnation may be on another subnet than the old one.
          if (++del_count % kRecreateEvery == 0 && creates.fetch_add(1) < kCreates) {
            create(victim);
            ++recreates;
          }
        }
      }
    });

  // The chaos loop, on the main thread (the children's parent-death signal belongs to it).
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> delay_ms(kMinKillDelay.count(), kMaxKillDelay.count());
  int kills = 0, unexpected_exits = 0;
  std::string exit_log;
  std::thread joiner([&] {
    for (auto& w : writers) w.join();
    writers_done = true;
  });
  while (!writers_done) {
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));  // the random kill moment
    if (!ipam->running()) {  // it died by itself: a crash, not ours
      if (unexpected_exits++ == 0) exit_log = ipam->log_tail(6000);
    }
    ipam->kill9();
    ++kills;
    ipam->start();
  }
  joiner.join();
  const double load_s = seconds_since(t0);
  ASSERT_EQ(failures.load(), 0) << first_failure;
  EXPECT_EQ(unexpected_exits, 0) << "the IPAM controller exited by itself:\n" << exit_log;

  // Converge: every live attachment addressed, one lock each.
  std::string progress;
  const auto t_converge = Clock::now();
  bool converged = poll_until(
      [&] {
        size_t addressed = watcher.addressed(), total = watcher.size();
        auto locks = c->list<api::IPLock>("crash");
        size_t nlocks = locks ? locks->size() : 0;
        progress = std::to_string(total) + " attachments (expected " + std::to_string(live.size()) +
                   "), " + std::to_string(addressed) + " addressed, " + std::to_string(nlocks) + " locks";
        return total == live.size() && addressed == total && locks && nlocks == total;
      },
      120s, 200ms);
  EXPECT_TRUE(converged) << "not converged 120 s after the last kill: " << progress << all_logs();
  const double converge_s = seconds_since(t_converge);

  auto check = ipam_check(server);
  EXPECT_EQ(check.exit_code, 0) << describe(check);

  // The final state agrees with the watcher: addressed, inside the subnet, lock held.
  auto nas = c->list<api::NetworkAttachment>("crash");
  auto locks = c->list<api::IPLock>("crash");
  ASSERT_TRUE(nas && locks);
  std::map<std::string, const api::IPLock*> lock_by_name;
  for (const auto& l : *locks) lock_by_name[l.metadata.name] = &l;
  std::map<std::pair<uint32_t, std::string>, int> seen;
  int bad = 0;
  for (const auto& na : *nas) {
    auto ip = api::parse_ipv4(na.status.ipv4);
    int k = std::stoi(na.spec.subnet.substr(1));
    auto cidr = *api::parse_cidr("10.50." + std::to_string(k) + ".0/24");
    bool ok = ip && na.status.address_vni == static_cast<uint32_t>(500 + k) && cidr.contains(*ip) &&
              ++seen[{na.status.address_vni, na.status.ipv4}] == 1;
    auto it = ip ? lock_by_name.find(api::format_iplock_name(na.status.address_vni, *ip)) : lock_by_name.end();
    ok = ok && it != lock_by_name.end() && it->second->metadata.uid == na.status.lock_uid &&
         !it->second->metadata.owner_references.empty() &&
         it->second->metadata.owner_references[0].uid == na.metadata.uid;
    if (!ok && bad++ < 10)
      ADD_FAILURE() << "crash/" << na.metadata.name << ": ipv4=" << na.status.ipv4
                    << " vni=" << na.status.address_vni << " lockUID=" << na.status.lock_uid
                    << " errors.ipam=" << (na.status.errors.ipam.empty() ? "" : na.status.errors.ipam[0]);
  }
  EXPECT_EQ(bad, 0);

  EXPECT_TRUE(watcher.violations().empty()) << watcher.describe_violations();
  EXPECT_EQ(watcher.lists(), 1u) << "the watcher re-listed: the continuous check has gaps";
  EXPECT_TRUE(ipam->running()) << all_logs();
  EXPECT_TRUE(validator->running()) << all_logs();
  EXPECT_TRUE(server.process().running());

  std::printf("[ crash ] %d creates (%d re-creations of a deleted name), %d deletes in %.1f s with "
              "%d kill -9s of the IPAM controller; converged %.2f s after the last restart; "
              "%zu live attachments; watcher saw %llu events, %llu re-addressings\n",
              creates.load() > kCreates ? kCreates : creates.load(), recreates.load(), deletes.load(),
              load_s, kills, converge_s, nas->size(), static_cast<unsigned long long>(watcher.events()),
              static_cast<unsigned long long>(watcher.readdressed()));
  if (HasFailure()) std::printf("%s\n", all_logs().c_str());
}

}  // namespace
}  // namespace kos::ctltest
