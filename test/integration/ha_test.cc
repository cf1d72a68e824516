// Several API servers and leader-elected controller-managers, as processes on a 3-member
// etcd cluster: three `kos apiserver` sharing a PKI, two `kos controller-manager
// --leader-elect`, and a client whose kubeconfig names every server (`kos credentials
// create --server A,B,C`). While attachments are being created, kill -9 an etcd member (and
// restart it), then two API servers in turn (the first comes back before the second dies),
// then the leading controller-manager. The clients move to another server (only requests
// that cannot have been applied are retried: a create that fails is looked up), the other
// controller-manager takes the lease within its duration, and every attachment whose
// create was acknowledged exists and is addressed, with an address no other holds
// (`kos ipam-check` clean). The fail-over times are printed.
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include "client/rest_client.h"
#include "test/integration/harness.h"
#include "test/integration/kos_cluster.h"
#include "test/support/on_exit.h"

namespace kos::testing {
namespace {

using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;
namespace json = boost::json;

constexpr char kNs[] = "ha";

double ms_since(Steady::time_point t) {
  return std::chrono::duration<double, std::milli>(Steady::now() - t).count();
}

class HaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(cluster_.start(), "");
    client_ = cluster_.client();
  }

  // Creates attachment `name`. A create whose answer was lost (its server died) may or may
  // not have been applied: it is looked up, and created again only if it is not there.
  bool create_attachment(const std::string& name) {
    json::value obj = {{"apiVersion", "network.example.com/v1alpha1"},
                       {"kind", "NetworkAttachment"},
                       {"metadata", {{"name", name}, {"namespace", kNs}}},
                       {"spec", {{"subnet", "s1"}, {"node", "node-" + std::to_string(name.size() % 3)}}}};
    const auto ref = client::ResourceRef::of(api::Kind::kNetworkAttachment);
    for (int attempt = 0; attempt < 5; ++attempt) {
      auto r = client_->create(ref, kNs, obj);
      if (r) return true;
      if (r.error().code == Errc::kAlreadyExists) return true;
      if (r.error().code != Errc::kUnavailable && r.error().code != Errc::kTimeout) {
        ADD_FAILURE() << "create " << name << ": " << r.error().message;
        return false;
      }
      ++ambiguous_;
      if (client_->get(ref, kNs, name)) return true;  // it had been applied
    }
    return false;
  }

  // Deletes attachment `name`; a delete whose answer was lost is looked up.
  bool delete_attachment(const std::string& name) {
    const auto ref = client::ResourceRef::of(api::Kind::kNetworkAttachment);
    for (int attempt = 0; attempt < 5; ++attempt) {
      auto r = client_->remove(ref, kNs, name);
      if (r || r.error().code == Errc::kNotFound) return true;
      if (r.error().code != Errc::kUnavailable && r.error().code != Errc::kTimeout) {
        ADD_FAILURE() << "delete " << name << ": " << r.error().message;
        return false;
      }
      ++ambiguous_;
      auto g = client_->get(ref, kNs, name);
      if (!g && g.error().code == Errc::kNotFound) return true;
    }
    return false;
  }

  // Addresses held twice in one consistent list of the namespace's attachments (one
  // subnet: one VNI), or -1 when the list failed.
  int duplicates_now() {
    auto l = client_->list(client::ResourceRef::of(api::Kind::kNetworkAttachment), kNs);
    if (!l) return -1;
    std::set<std::string> ips;
    int dup = 0;
    for (const auto& item : l->items) {
      auto ip = str_at(item, "status.ipv4");
      if (!ip.empty() && !ips.insert(ip).second) ++dup;
    }
    return dup;
  }

  KosCluster cluster_;
  std::shared_ptr<client::RestClient> client_;
  std::atomic<int> ambiguous_{0};
};

TEST_F(HaTest, KillsOfAnEtcdMemberApiServersAndTheLeaderLoseNothing) {
  const auto subnets = client::ResourceRef::of(api::Kind::kSubnet);
  auto s = client_->create(subnets, kNs,
                           json::value{{"apiVersion", "network.example.com/v1alpha1"},
                                       {"kind", "Subnet"},
                                       {"metadata", {{"name", "s1"}, {"namespace", kNs}}},
                                       {"spec", {{"vni", 77}, {"ipv4", "10.77.0.0/16"}}}});
  ASSERT_TRUE(s) << s.error().message;
  ASSERT_TRUE(eventually([&] { return cluster_.leader() >= 0; }, 20s)) << "no controller-manager took the lease";

  // A creator keeps creating attachments, one after another, and deletes every third one
  // five creates later, while the servers and the leader are killed; each
  // acknowledgement's time is kept. A sampler lists the attachments (a consistent read)
  // every 100 ms and counts addresses held twice.
  std::mutex mu;
  std::vector<std::string> acknowledged;
  std::set<std::string> deleted;
  std::vector<Steady::time_point> acked_at;
  std::atomic<bool> done{false};
  std::thread creator([&] {
    for (int next = 0; !done; ++next) {
      std::string name = "na-" + std::to_string(next);
      if (!create_attachment(name)) continue;
      std::string victim;
      {
        std::lock_guard lk(mu);
        acknowledged.push_back(name);
        acked_at.push_back(Steady::now());
        if (next % 3 == 0 && acknowledged.size() > 5) victim = acknowledged[acknowledged.size() - 6];
      }
      if (!victim.empty() && !deleted.count(victim) && delete_attachment(victim)) {
        std::lock_guard lk(mu);
        deleted.insert(victim);
      }
    }
  });
  std::atomic<int> samples{0}, duplicated{0}, failed_samples{0};
  std::thread sampler([&] {
    while (!done) {
      int d = duplicates_now();
      if (d < 0) ++failed_samples;
      else {
        ++samples;
        duplicated += d;
      }
      std::this_thread::sleep_for(100ms);
    }
  });
  // Whatever fails below, the threads end before the objects they use.
  kos::testing::OnExit join_threads([&] {
    done = true;
    if (creator.joinable()) creator.join();
    if (sampler.joinable()) sampler.join();
  });
  // The gap from `t` to the first acknowledgement after it.
  auto first_ack_after = [&](Steady::time_point t) {
    std::lock_guard lk(mu);
    for (auto a : acked_at)
      if (a > t) return std::chrono::duration<double, std::milli>(a - t).count();
    return -1.0;
  };
  auto acks = [&] {
    std::lock_guard lk(mu);
    return acknowledged.size();
  };

  // Kill -9 an etcd member (the API servers use all three), and bring it back.
  {
    const size_t before = acks();
    ASSERT_TRUE(eventually([&] { return acks() >= before + 20; }, 20s)) << "creates stalled";
  }
  const auto t_etcd = Steady::now();
  cluster_.etcd().member(0).kill9();
  ASSERT_TRUE(eventually([&] { return first_ack_after(t_etcd) >= 0; }, 20s))
      << "no create succeeded after etcd member 0 died";
  const double etcd_gap_ms = first_ack_after(t_etcd);
  {
    const size_t before = acks();
    ASSERT_TRUE(eventually([&] { return acks() >= before + 20; }, 20s)) << "creates stalled without member 0";
  }
  cluster_.etcd().member(0).restart();

  // Kill -9 two API servers in turn (the clients are on one of them, chosen at random),
  // bringing the first back before the second dies.
  double api_gap_ms[2] = {-1, -1};
  for (int victim = 0; victim < 2; ++victim) {
    const size_t before = acks();
    ASSERT_TRUE(eventually([&] { return acks() >= before + 20; }, 20s)) << "creates stalled";
    const auto t_api = Steady::now();
    cluster_.kill_apiserver(victim);
    ASSERT_TRUE(eventually([&] { return first_ack_after(t_api) >= 0; }, 20s))
        << "no create succeeded after API server " << victim << " died";
    api_gap_ms[victim] = first_ack_after(t_api);
    if (victim == 0) {
      ASSERT_EQ(cluster_.restart_apiserver(0), "");
    }
  }

  // Kill -9 the leading controller-manager: the other takes the lease once it has not
  // seen it renewed for the lease duration (2 s).
  const int old_leader = cluster_.leader();
  ASSERT_GE(old_leader, 0);
  const auto t_cm = Steady::now();
  cluster_.kill_controller_manager(old_leader);
  ASSERT_TRUE(eventually([&] { return cluster_.leader() == 1 - old_leader; }, 15s))
      << "the other controller-manager did not take the lease (holder " << cluster_.lease_holder() << ")";
  const double handover_ms = ms_since(t_cm);
  const size_t at_handover = acks();
  ASSERT_TRUE(eventually([&] { return acks() >= at_handover + 20; }, 20s)) << "creates stalled";
  done = true;
  creator.join();
  sampler.join();

  // Every acknowledged attachment not deleted exists and gets an address, no deleted one
  // remains, and no address is held twice.
  std::map<std::string, std::string> ip_of;
  std::set<std::string> present;
  const size_t expected = acknowledged.size() - deleted.size();
  ASSERT_TRUE(eventually(
      [&] {
        auto l = client_->list(client::ResourceRef::of(api::Kind::kNetworkAttachment), kNs);
        if (!l) return false;
        ip_of.clear();
        present.clear();
        for (const auto& item : l->items) {
          present.insert(str_at(item, "metadata.name"));
          auto ip = str_at(item, "status.ipv4");
          if (!ip.empty()) ip_of[str_at(item, "metadata.name")] = ip;
        }
        return ip_of.size() >= expected && present.size() == expected;
      },
      30s))
      << ip_of.size() << " addressed and " << present.size() << " present of " << expected << " expected";
  for (const auto& name : acknowledged) {
    if (deleted.count(name)) EXPECT_FALSE(present.count(name)) << name << " deleted but still there";
    else EXPECT_TRUE(ip_of.count(name)) << name << " lost or never addressed";
  }
  std::set<std::string> ips;
  for (const auto& [name, ip] : ip_of) EXPECT_TRUE(ips.insert(ip).second) << ip << " held twice";
  EXPECT_EQ(duplicated.load(), 0) << "addresses held twice in sampled lists";
  EXPECT_GT(samples.load(), 10);
  auto check = run({KOS_BINARY, "ipam-check", "--kubeconfig", cluster_.admin_kubeconfig().string()});
  EXPECT_EQ(check.exit_code, 0) << describe(check);

  std::printf("fail-over: first create acknowledged %.0f ms after etcd member 0 was killed, "
              "%.0f / %.0f ms after API server 0 / 1 was killed; "
              "lease taken over %.0f ms after the leader was killed (lease duration 2 s); "
              "%zu attachments acknowledged, %zu of them deleted, %d writes answered ambiguously and looked "
              "up; %d consistent lists sampled (%d failed), %d addresses held twice in them\n",
              etcd_gap_ms, api_gap_ms[0], api_gap_ms[1], handover_ms, acknowledged.size(), deleted.size(), ambiguous_.load(), samples.load(),
              failed_samples.load(), duplicated.load());
  EXPECT_LT(handover_ms, 2000 + 4 * 250 + 2000);  // lease + a few retry periods + slack

  // A leader stopped by SIGTERM gives the lease up and exits cleanly.
  const int status = cluster_.stop_controller_manager(1 - old_leader);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "wait status " << status;
  EXPECT_EQ(cluster_.lease_holder(), "") << "the lease was not given up";
}

}  // namespace
}  // namespace kos::testing
