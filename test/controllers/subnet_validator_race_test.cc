// Two subnet validators (two `kos controller-manager --controllers subnet-validator`
// processes) while kWriterThreads writers create kSubnets subnets, among them pairs that
// conflict (overlapping CIDRs on one VNI in one namespace; one VNI in two namespaces).
// The two members of each pair are created at the same moment by two threads, so that
// some race past the API server's admission check (it reads the watch cache, which lags
// the store); the admission rejects the others with 422. For half of the pairs the second
// create follows the first by a random 0..3 ms, so that the validators sometimes decide
// on the first before the second is stored. Over what got stored: no two
// conflicting subnets are both validated; every subnet that conflicts with no stored
// subnet is validated; every subnet not validated says why, naming a subnet it conflicts
// with.
#include <gtest/gtest.h>

#include <barrier>
#include <map>
#include <random>
#include <thread>

#include "api/cidr.h"
#include "test/controllers/harness.h"

namespace kos::ctltest {
namespace {

using namespace std::chrono_literals;

constexpr int kSubnets = 500;
constexpr int kOverlapPairs = 50;    // same namespace, same VNI, overlapping CIDRs
constexpr int kCrossNsPairs = 50;    // same VNI, two namespaces, disjoint CIDRs
constexpr int kWriterThreads = 8;    // kWriterThreads / 2 pairs of threads
constexpr int kCleanPerVni = 6;      // clean subnets share a VNI (same namespace, disjoint CIDRs)
constexpr int kNamespaces = 4;
constexpr int kMaxStaggerUs = 3000;

struct Planned {
  std::string ns, name, cidr;
  uint32_t vni;
};

// The subnets as items of two, each item created by a pair of threads at one moment.
std::vector<std::array<Planned, 2>> plan() {
  std::vector<std::array<Planned, 2>> items;
  int block = 0;  // a fresh /24 per item: 10.<block/256>.<block%256>.0/24
  auto slash24 = [](int b) { return "10." + std::to_string(b / 256) + "." + std::to_string(b % 256); };
  auto ns = [](int i) { return "vr-" + std::to_string(i % kNamespaces); };
  for (int p = 0; p < kOverlapPairs; ++p, ++block) {
    uint32_t vni = 100 + p;
    items.push_back({Planned{ns(p), "ov-" + std::to_string(p) + "-a", slash24(block) + ".0/24", vni},
                     Planned{ns(p), "ov-" + std::to_string(p) + "-b", slash24(block) + ".128/25", vni}});
  }
  for (int p = 0; p < kCrossNsPairs; ++p, block += 2) {
    uint32_t vni = 300 + p;
    items.push_back({Planned{ns(p), "xn-" + std::to_string(p) + "-a", slash24(block) + ".0/24", vni},
                     Planned{ns(p + 1), "xn-" + std::to_string(p) + "-b", slash24(block + 1) + ".0/24", vni}});
  }
  const int clean = kSubnets - 2 * (kOverlapPairs + kCrossNsPairs);
  for (int i = 0; i < clean; i += 2, block += 2) {
    uint32_t vni = 1000 + i / kCleanPerVni;
    items.push_back({Planned{ns(vni), "ok-" + std::to_string(i), slash24(block) + ".0/24", vni},
                     Planned{ns(vni), "ok-" + std::to_string(i + 1), slash24(block + 1) + ".0/24", vni}});
  }
  std::mt19937 rng(42);
  std::shuffle(items.begin(), items.end(), rng);
  return items;
}

bool conflict(const api::Subnet& a, const api::Subnet& b) {
  if (a.spec.vni != b.spec.vni) return false;
  if (a.metadata.namespace_ != b.metadata.namespace_) return true;
  auto ca = api::parse_cidr(a.spec.ipv4), cb = api::parse_cidr(b.spec.ipv4);
  return ca && cb && ca->overlaps(*cb);
}

std::string key(const api::Subnet& s) { return s.metadata.namespace_ + "/" + s.metadata.name; }

TEST(SubnetValidatorRace, TwoValidatorsFiveHundredSubnets) {
  ApiServer server;
  ASSERT_EQ(server.start(), "");
  auto v1 = controller_manager(server, "validator-1", "subnet-validator");
  auto v2 = controller_manager(server, "validator-2", "subnet-validator");
  auto all_logs = [&] { return logs({&server.process(), v1.get(), v2.get()}); };
  v1->start();
  v2->start();
  auto items = plan();
  ASSERT_EQ(items.size() * 2, static_cast<size_t>(kSubnets));

  // Thread pair q creates items q, q + P, q + 2P, ...; before each item both threads of
  // the pair meet at a barrier, then each creates its side at once.
  constexpr int kPairs = kWriterThreads / 2;
  std::vector<std::unique_ptr<std::barrier<>>> barriers;
  for (int q = 0; q < kPairs; ++q) barriers.push_back(std::make_unique<std::barrier<>>(2));
  std::vector<std::shared_ptr<client::RestClient>> clients;
  for (int t = 0; t < kWriterThreads; ++t) clients.push_back(server.client());
  std::atomic<int> created{0}, rejected{0}, failures{0};
  std::mutex mu;
  std::string first_failure;
  std::vector<std::string> rejections;
  const auto t0 = Clock::now();
  std::vector<std::thread> writers;
  for (int t = 0; t < kWriterThreads; ++t)
    writers.emplace_back([&, t] {
      const int q = t / 2, side = t % 2;
      std::mt19937 rng(1000 + t);
      std::uniform_int_distribution<int> stagger_us(0, kMaxStaggerUs);
      for (size_t i = q; i < items.size(); i += kPairs) {
        const auto& p = items[i][side];
        barriers[q]->arrive_and_wait();
        // Half of the items: the second side follows the first by a random few hundred
        // microseconds, so that the validators sometimes decide on the first before the
        // second is stored (and admission sometimes misses the first).
        if (side == 1 && i % 2 == 1) std::this_thread::sleep_for(std::chrono::microseconds(stagger_us(rng)));
        auto r = with_retries([&] { return clients[t]->create(make_subnet(p.ns, p.name, p.cidr, p.vni)); });
        std::lock_guard lk(mu);
        if (r) {
          ++created;
        } else if (r.error().code == Errc::kInvalid) {  // 422 from the admission check
          ++rejected;
          rejections.push_back(p.ns + "/" + p.name + ": " + r.error().message);
        } else if (r.error().code != Errc::kAlreadyExists && failures++ == 0) {
          first_failure = p.ns + "/" + p.name + ": " + r.error().to_string();
        }
      }
    });
  for (auto& w : writers) w.join();
  const double create_s = seconds_since(t0);
  ASSERT_EQ(failures.load(), 0) << first_failure;
  // Only conflicting subnets may be rejected.
  for (const auto& r : rejections)
    EXPECT_TRUE(r.find("/ov-") != std::string::npos || r.find("/xn-") != std::string::npos) << r;

  // Wait until every stored subnet has been examined (validated, or errors say why not).
  auto c = server.client();
  std::vector<api::Subnet> stored;
  size_t pending = 0;
  ASSERT_TRUE(poll_until(
      [&] {
        auto l = c->list<api::Subnet>("");
        if (!l) return false;
        stored = std::move(*l);
        pending = 0;
        for (const auto& s : stored) pending += !s.status.validated && s.status.errors.empty();
        return pending == 0;
      },
      60s, 200ms))
      << pending << " subnets still unexamined after 60 s" << all_logs();
  const double examined_s = seconds_since(t0);
  EXPECT_EQ(stored.size(), static_cast<size_t>(created.load()));

  // The invariant over what is stored.
  std::map<uint32_t, std::vector<const api::Subnet*>> by_vni;
  for (const auto& s : stored) by_vni[s.spec.vni].push_back(&s);
  size_t conflicting_pairs = 0, overlap_pairs = 0, cross_ns_pairs = 0, both_validated = 0,
         neither_validated = 0, one_validated = 0;
  std::set<std::string> conflicted;
  for (const auto& [vni, group] : by_vni)
    for (size_t i = 0; i < group.size(); ++i)
      for (size_t j = i + 1; j < group.size(); ++j) {
        const auto& a = *group[i];
        const auto& b = *group[j];
        if (!conflict(a, b)) continue;
        ++conflicting_pairs;
        ++(a.metadata.namespace_ != b.metadata.namespace_ ? cross_ns_pairs : overlap_pairs);
        conflicted.insert(key(a));
        conflicted.insert(key(b));
        if (a.status.validated && b.status.validated) {
          ++both_validated;
          ADD_FAILURE() << "conflicting subnets both validated: " << key(a) << " (" << a.spec.ipv4
                        << ") and " << key(b) << " (" << b.spec.ipv4 << ") on VNI " << vni;
        }
        neither_validated += !a.status.validated && !b.status.validated;
        one_validated += a.status.validated != b.status.validated;
        // The one not validated names the other (or another subnet it conflicts with).
        for (const auto* s : {&a, &b}) {
          if (s->status.validated) continue;
          const auto* other = s == &a ? &b : &a;
          bool named = false;
          for (const auto& e : s->status.errors) named = named || e.find(key(*other)) != std::string::npos;
          bool names_any = false;
          for (const auto& e : s->status.errors)
            for (const auto* g : group)
              names_any = names_any || (g != s && conflict(*g, *s) && e.find(key(*g)) != std::string::npos);
          EXPECT_TRUE(named || names_any) << key(*s) << " is not validated but its errors name no "
                                          << "subnet it conflicts with: "
                                          << (s->status.errors.empty() ? "" : s->status.errors[0]);
        }
      }
  size_t clean_validated = 0, clean_total = 0;
  for (const auto& s : stored) {
    if (conflicted.count(key(s))) continue;
    ++clean_total;
    clean_validated += s.status.validated;
    EXPECT_TRUE(s.status.validated) << key(s) << " (" << s.spec.ipv4 << ", VNI " << s.spec.vni
                                    << ") conflicts with nothing stored but is not validated: "
                                    << (s.status.errors.empty() ? "" : s.status.errors[0]);
  }
  EXPECT_EQ(both_validated, 0u);
  // The test means something only if conflicts got past the admission check.
  EXPECT_GT(conflicting_pairs, 0u) << "admission rejected every conflicting create: the test "
                                      "checked no stored conflict";
  EXPECT_TRUE(v1->running()) << all_logs();
  EXPECT_TRUE(v2->running()) << all_logs();

  std::printf("[ validator race ] %d subnets attempted by %d writers in %.2f s: %d stored, %d rejected "
              "by admission (422); stored conflicting pairs: %zu (%zu overlapping, %zu cross-namespace), "
              "%zu with one validated, %zu with neither; %zu/%zu non-conflicting subnets validated; all examined "
              "%.2f s after the first create\n",
              kSubnets, kWriterThreads, create_s, created.load(), rejected.load(), conflicting_pairs,
              overlap_pairs, cross_ns_pairs, one_validated, neither_validated, clean_validated, clean_total, examined_s);
  if (HasFailure()) std::printf("%s\n", all_logs().c_str());
}

}  // namespace
}  // namespace kos::ctltest
