// Three IPAM controllers at once (three `kos controller-manager --controllers ipam`
// processes, no leader election) and one subnet validator, on kAttachments attachments
// over kSubnets subnets, one of them a /24 loaded past its capacity. Checks: no address
// is ever held by two live attachments (continuously, at every revision the watcher sees,
// and in the final state); every attachment that can get an address has one, with its
// lock; the attachments of the full subnet that got none report the contention;
// `kos ipam-check` is clean; after all attachments are deleted no IPLock remains.
#include <gtest/gtest.h>

#include <map>

#include "api/cidr.h"
#include "api/names.h"
#include "test/controllers/harness.h"

namespace kos::ctltest {
namespace {

using namespace std::chrono_literals;

constexpr int kAttachments = 5000;
constexpr int kSubnets = 20;  // subnet 0 is the full one
constexpr int kFullSubnetAttachments = 300;
constexpr const char* kFullCidr = "10.200.0.0/24";  // 253 usable addresses
constexpr int kIpamControllers = 3;
constexpr int kWriterThreads = 8;
constexpr const char* kNoAddresses = "Referenced subnet has run out of IPs";

struct SubnetPlan {
  std::string ns, name, cidr;
  uint32_t vni;
};

// Subnet 0: the full /24 on its own VNI. Subnets 1..: /22s; two consecutive ones share a
// VNI (and a namespace), so one VNI's address space spans two subnets.
std::vector<SubnetPlan> plan_subnets() {
  std::vector<SubnetPlan> out;
  out.push_back({"race-0", "full", kFullCidr, 1000});
  for (int i = 1; i < kSubnets; ++i) {
    int pair = (i - 1) / 2;
    out.push_back({"race-" + std::to_string(pair % 4), "s" + std::to_string(i),
                   "10." + std::to_string(i) + ".0.0/22", static_cast<uint32_t>(2000 + pair)});
  }
  return out;
}

int subnet_of(int attachment) {
  return attachment < kFullSubnetAttachments ? 0 : 1 + (attachment - kFullSubnetAttachments) % (kSubnets - 1);
}

TEST(IpamRace, ThreeControllersFiveThousandAttachments) {
  ApiServer server;
  ASSERT_EQ(server.start(), "");
  auto c = server.client();
  auto subnets = plan_subnets();
  const uint32_t full_capacity = usable_addresses(kFullCidr);
  ASSERT_LT(full_capacity, static_cast<uint32_t>(kFullSubnetAttachments));

  auto ctl = start_controllers(server, kIpamControllers);
  auto& ipams = ctl.ipams;
  auto all_logs = [&] { return ctl.logs(server); };

  AddressWatcher watcher(server.client(), /*track_locks=*/true);
  ASSERT_TRUE(watcher.start());

  for (const auto& s : subnets) ASSERT_TRUE(c->create(make_subnet(s.ns, s.name, s.cidr, s.vni)));
  ASSERT_TRUE(poll_until(
      [&] {
        auto l = c->list<api::Subnet>("");
        if (!l) return false;
        int v = 0;
        for (const auto& s : *l) v += s.status.validated;
        return v == kSubnets;
      },
      30s))
      << "the subnets were not all validated" << all_logs();

  // Create the attachments as fast as kWriterThreads writers can, while the three
  // controllers race for the addresses.
  const auto t_create = Clock::now();
  std::atomic<int> create_failures{0};
  std::string first_failure;
  std::mutex fail_mu;
  parallel_for(kAttachments, kWriterThreads, [&](int i) {
    const auto& s = subnets[subnet_of(i)];
    auto r = with_retries([&] {
      return c->create(make_attachment(s.ns, "na-" + std::to_string(i), s.name,
                                       "node-" + std::to_string(i % 10)));
    });
    if (!r && r.error().code != Errc::kAlreadyExists) {
      if (create_failures++ == 0) {
        std::lock_guard lk(fail_mu);
        first_failure = r.error().to_string();
      }
    }
  });
  const double create_s = seconds_since(t_create);
  ASSERT_EQ(create_failures.load(), 0) << first_failure;

  // Converged: every attachment of the roomy subnets addressed, the full subnet's
  // capacity used exactly, the rest of it reporting contention.
  std::map<std::pair<std::string, std::string>, int> subnet_index;  // (ns, name) -> plan index
  for (int i = 0; i < kSubnets; ++i) subnet_index[{subnets[i].ns, subnets[i].name}] = i;
  const size_t roomy = kAttachments - kFullSubnetAttachments;
  std::string progress;
  auto converged = [&] {
    size_t roomy_addressed = 0, full_addressed = 0, full_contended = 0, total = 0;
    for (const auto& o : watcher.cached()) {
      const auto& na = std::get<api::NetworkAttachment>(*o);
      ++total;
      bool full = na.spec.subnet == "full";
      if (!na.status.ipv4.empty()) {
        ++(full ? full_addressed : roomy_addressed);
      } else if (full && na.status.address_contention && na.status.errors.ipam.size() == 1 &&
                 na.status.errors.ipam[0] == kNoAddresses) {
        ++full_contended;
      }
    }
    progress = std::to_string(total) + " attachments, " + std::to_string(roomy_addressed) + "/" +
               std::to_string(roomy) + " of the roomy subnets addressed, " +
               std::to_string(full_addressed) + "/" + std::to_string(full_capacity) +
               " of the full one addressed, " + std::to_string(full_contended) + "/" +
               std::to_string(kFullSubnetAttachments - full_capacity) + " reporting contention";
    return total == static_cast<size_t>(kAttachments) && roomy_addressed == roomy &&
           full_addressed == full_capacity &&
           full_contended == kFullSubnetAttachments - full_capacity;
  };
  ASSERT_TRUE(poll_until(converged, 180s, 200ms))
      << "not converged after 180 s: " << progress << "\n" << watcher.describe_violations() << all_logs();
  const double addressed_s = seconds_since(t_create);
  // Extra locks (one attachment holding two) are released by the controllers; wait
  // for the lock count to match.
  size_t lock_count = 0;
  EXPECT_TRUE(poll_until(
      [&] {
        auto l = c->list<api::IPLock>("");
        lock_count = l ? l->size() : 0;
        return l && lock_count == kAttachments - (kFullSubnetAttachments - full_capacity);
      },
      60s, 200ms))
      << lock_count << " locks for " << kAttachments - (kFullSubnetAttachments - full_capacity)
      << " addressed attachments";

  // The final state, from the server.
  auto nas = c->list<api::NetworkAttachment>("");
  auto locks = c->list<api::IPLock>("");
  ASSERT_TRUE(nas && locks);
  std::map<std::string, const api::IPLock*> lock_by_key;  // ns/name
  for (const auto& l : *locks) lock_by_key[l.metadata.namespace_ + "/" + l.metadata.name] = &l;
  std::map<std::pair<uint32_t, std::string>, std::vector<std::string>> by_address;
  int bad = 0;
  size_t full_addressed = 0;
  for (const auto& na : *nas) {
    const std::string key = na.metadata.namespace_ + "/" + na.metadata.name;
    const auto& s = subnets[subnet_index.at({na.metadata.namespace_, na.spec.subnet})];
    if (na.status.ipv4.empty()) {
      EXPECT_EQ(na.spec.subnet, "full") << key << " has no address";
      EXPECT_TRUE(na.status.address_contention) << key;
      EXPECT_EQ(na.status.errors.ipam, std::vector<std::string>{kNoAddresses}) << key;
      continue;
    }
    full_addressed += na.spec.subnet == "full";
    by_address[{na.status.address_vni, na.status.ipv4}].push_back(key);
    auto cidr = *api::parse_cidr(s.cidr);
    auto ip = api::parse_ipv4(na.status.ipv4);
    bool ok = ip && na.status.address_vni == s.vni && *ip >= cidr.first_usable() &&
              *ip <= cidr.last_usable() && na.status.errors.ipam.empty() && !na.status.address_contention;
    const api::IPLock* lock = nullptr;
    if (ip) {
      auto it = lock_by_key.find(na.metadata.namespace_ + "/" + api::format_iplock_name(s.vni, *ip));
      if (it != lock_by_key.end()) lock = it->second;
    }
    ok = ok && lock && lock->metadata.uid == na.status.lock_uid &&
         lock->metadata.owner_references.size() == 1 &&
         lock->metadata.owner_references[0].uid == na.metadata.uid;
    if (!ok && bad++ < 10)
      ADD_FAILURE() << key << " has a wrong address or lock: ipv4=" << na.status.ipv4
                    << " vni=" << na.status.address_vni << " lockUID=" << na.status.lock_uid
                    << " subnet " << s.cidr << " vni " << s.vni << (lock ? "" : " (no lock)");
  }
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(full_addressed, full_capacity);
  size_t duplicates = 0;
  for (const auto& [addr, holders] : by_address)
    if (holders.size() > 1 && duplicates++ < 10)
      ADD_FAILURE() << "vni " << addr.first << " ip " << addr.second << " held by " << holders[0]
                    << " and " << holders[1];
  EXPECT_EQ(duplicates, 0u);

  auto check = ipam_check(server);
  EXPECT_EQ(check.exit_code, 0) << describe(check);

  // Delete everything: every lock goes (released by IPAM or collected by the server).
  const auto t_delete = Clock::now();
  std::atomic<int> delete_failures{0};
  parallel_for(kAttachments, kWriterThreads, [&](int i) {
    const auto& s = subnets[subnet_of(i)];
    auto r = with_retries([&] { return c->remove<api::NetworkAttachment>(s.ns, "na-" + std::to_string(i)); });
    if (!r && r.error().code != Errc::kNotFound) ++delete_failures;
  });
  EXPECT_EQ(delete_failures.load(), 0);
  size_t left = 0;
  EXPECT_TRUE(poll_until(
      [&] {
        auto l = c->list<api::IPLock>("");
        left = l ? l->size() : SIZE_MAX;
        return left == 0;
      },
      60s, 200ms))
      << left << " IPLocks left 60 s after all attachments were deleted" << all_logs();
  const double release_s = seconds_since(t_delete);

  // Nothing was ever shared, at any revision the watcher saw.
  EXPECT_TRUE(watcher.violations().empty()) << watcher.describe_violations();
  EXPECT_EQ(watcher.lists(), 1u) << "the watcher re-listed: the continuous check has gaps";
  EXPECT_TRUE(ctl.validator->running()) << all_logs();
  for (auto& p : ipams) EXPECT_TRUE(p->running()) << p->name() << " exited" << all_logs();

  std::printf("[ race ] %d attachments over %d subnets, %d IPAM controllers: created in %.2f s, "
              "all addressable addressed %.2f s after the first create; locks released %.2f s after "
              "the deletes began; watcher saw %llu events, %llu re-addressings\n",
              kAttachments, kSubnets, kIpamControllers, create_s, addressed_s, release_s,
              static_cast<unsigned long long>(watcher.events()),
              static_cast<unsigned long long>(watcher.readdressed()));
  if (HasFailure()) std::printf("%s\n", all_logs().c_str());
}

}  // namespace
}  // namespace kos::ctltest
