// The subnet validator and the IPAM controller in process against a real API server.
#include <gtest/gtest.h>

#include "api/cidr.h"
#include "api/names.h"
#include "client/test_server.h"
#include "common/metrics.h"
#include "controllers/ipam/ipam.h"
#include "controllers/subnet_validator/validator.h"

namespace kos::controllers {
namespace {

using namespace std::chrono_literals;

class ControllersTest : public client::testing::ApiServerTest {
 protected:
  void SetUp() override {
    ApiServerTest::SetUp();
    c_ = client();
  }
  void TearDown() override {
    if (ipam_) ipam_->stop();
    if (validator_) validator_->stop();
    ApiServerTest::TearDown();
  }
  void start(IpamOptions opts = {}) {
    validator_ = std::make_unique<SubnetValidator>(c_);
    ASSERT_TRUE(validator_->start().has_value());
    ipam_ = std::make_unique<Ipam>(c_, opts);
    ASSERT_TRUE(ipam_->start().has_value());
  }
  api::Subnet subnet(const std::string& ns, const std::string& name, uint32_t vni, const std::string& cidr,
                     const std::string& vpc = {}) {
    api::Subnet s;
    s.metadata.namespace_ = ns;
    s.metadata.name = name;
    s.spec.vni = vni;
    s.spec.ipv4 = cidr;
    s.spec.vpc = vpc;
    auto r = c_->create(s);
    EXPECT_TRUE(r.has_value()) << r.error().message;
    return r ? *r : s;
  }
  api::NetworkAttachment na(const std::string& name, const std::string& subnet_name) {
    api::NetworkAttachment a;
    a.metadata.namespace_ = "ns";
    a.metadata.name = name;
    a.spec.node = "n1";
    a.spec.subnet = subnet_name;
    auto r = c_->create(a);
    EXPECT_TRUE(r.has_value()) << r.error().message;
    return r ? *r : a;
  }
  // Waits (bounded) for the attachment to satisfy pred.
  template <class P>
  std::optional<api::NetworkAttachment> wait_na(const std::string& name, P pred) {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      auto a = c_->get<api::NetworkAttachment>("ns", name);
      if (a && pred(*a)) return *a;
      std::this_thread::sleep_for(10ms);  // polling the controllers' effect
    }
    return std::nullopt;
  }

  // A Subnet written straight into the store, past admission (which would refuse a
  // conflict it can see): what reaches the controllers when admission races or misses.
  void subnet_in_store(const std::string& ns, const std::string& name, uint32_t vni,
                       const std::string& cidr) {
    std::string value =
        R"({"apiVersion":"network.example.com/v1alpha1","kind":"Subnet","metadata":{"name":")" + name +
        R"(","namespace":")" + ns + R"(","uid":"00000000-0000-4000-8000-)" +
        std::string(12 - std::min<size_t>(12, name.size()), '0') + name.substr(0, 12) +
        R"(","creationTimestamp":"2026-01-01T00:00:00Z","generation":1},"spec":{"vni":)" +
        std::to_string(vni) + R"(,"ipv4":")" + cidr + R"("},"status":{}})";
    auto r = store_->create("/registry/network.example.com/subnets/" + ns + "/" + name, value);
    ASSERT_TRUE(r.has_value()) << r.error().message;
  }
  template <class P>
  bool eventually(P pred, std::chrono::milliseconds timeout = 10s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred()) return true;
      std::this_thread::sleep_for(10ms);  // polling the controllers' effect
    }
    return pred();
  }

  std::shared_ptr<client::RestClient> c_;
  std::unique_ptr<SubnetValidator> validator_;
  std::unique_ptr<Ipam> ipam_;
};

TEST_F(ControllersTest, AddressesComeFromTheSubnetRangeAndAreLocked) {
  start();
  subnet("ns", "s1", 7, "10.1.0.0/29");  // usable: .2 .. .6
  std::set<std::string> addrs;
  for (int i = 0; i < 5; ++i) {
    na("a" + std::to_string(i), "s1");
  }
  for (int i = 0; i < 5; ++i) {
    auto a = wait_na("a" + std::to_string(i), [](const auto& x) { return !x.status.ipv4.empty(); });
    ASSERT_TRUE(a.has_value());
    EXPECT_EQ(a->status.address_vni, 7u);
    auto ip = *api::parse_ipv4(a->status.ipv4);
    EXPECT_GE(ip, *api::parse_ipv4("10.1.0.2"));
    EXPECT_LE(ip, *api::parse_ipv4("10.1.0.6"));
    addrs.insert(a->status.ipv4);
    auto lock = c_->get<api::IPLock>("ns", api::format_iplock_name(7, ip));
    ASSERT_TRUE(lock.has_value());
    EXPECT_EQ(lock->metadata.uid, a->status.lock_uid);
    ASSERT_EQ(lock->metadata.owner_references.size(), 1u);
    EXPECT_EQ(lock->metadata.owner_references[0].uid, a->metadata.uid);
  }
  EXPECT_EQ(addrs.size(), 5u);
  // The subnet is full now.
  na("extra", "s1");
  auto full = wait_na("extra", [](const auto& x) { return x.status.address_contention; });
  ASSERT_TRUE(full.has_value());
  EXPECT_EQ(full->status.errors.ipam, std::vector<std::string>{"Referenced subnet has run out of IPs"});
  // Freeing one address hands it to the waiting attachment.
  ASSERT_TRUE(c_->remove<api::NetworkAttachment>("ns", "a0").has_value());
  auto got = wait_na("extra", [](const auto& x) { return !x.status.ipv4.empty(); });
  ASSERT_TRUE(got.has_value());
  EXPECT_FALSE(got->status.address_contention);
  EXPECT_TRUE(got->status.errors.ipam.empty());
}

TEST_F(ControllersTest, ConflictingSubnetsAreNotBothValidated) {
  start();
  auto a = subnet("ns", "a", 9, "10.2.0.0/24");
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline && !c_->get<api::Subnet>("ns", "a")->status.validated)
    std::this_thread::sleep_for(10ms);  // polling the validator
  ASSERT_TRUE(c_->get<api::Subnet>("ns", "a")->status.validated);
  // Admission rejects a visible overlap...
  api::Subnet b;
  b.metadata.namespace_ = "ns";
  b.metadata.name = "b";
  b.spec.vni = 9;
  b.spec.ipv4 = "10.2.0.128/25";
  auto rejected = c_->create(b);
  ASSERT_FALSE(rejected.has_value());
  EXPECT_EQ(rejected.error().code, Errc::kInvalid);
  // ...but admission is best effort: conflicting Subnets that reach the store past it
  // (an overlap on the same namespace, the same VNI in another) are examined by the
  // validator and refused.
  auto refused = [&](const std::string& ns, const std::string& name, const std::string& why) {
    return eventually([&] {
      auto s = c_->get<api::Subnet>(ns, name);
      if (!s || s->status.validated) return false;
      for (const auto& e : s->status.errors)
        if (e == why) return true;
      return false;
    });
  };
  subnet_in_store("ns", "b", 9, "10.2.0.128/25");
  EXPECT_TRUE(refused("ns", "b", "CIDR overlaps with ns/a's (10.2.0.0/24)"));
  // ...and a non-overlapping one on the same VNI and namespace is validated.
  subnet("ns", "c", 9, "10.3.0.0/24");
  EXPECT_TRUE(eventually([&] { return c_->get<api::Subnet>("ns", "c")->status.validated; }));
  subnet_in_store("elsewhere", "d", 9, "10.9.0.0/24");
  EXPECT_TRUE(refused("elsewhere", "d", "same VNI but different namespace wrt ns/a"));
  EXPECT_TRUE(c_->get<api::Subnet>("ns", "a")->status.validated);
  EXPECT_FALSE(c_->get<api::Subnet>("ns", "b")->status.validated);
}

// VPCs: a subnet waits for its VPC; subnets of one VPC may not overlap or share a VNI, but
// different VPCs may reuse ranges; a VPC's VNI is its own; validated subnets carry the
// gateway and routes, and their attachments get them with the address (never the gateway).
TEST_F(ControllersTest, VpcSubnetsAreValidatedWithTheirVpcAndRouteThroughTheGateway) {
  start();
  auto vpc = [&](const std::string& name, uint32_t vni, std::vector<std::string> blocks = {}) {
    api::Vpc v;
    v.metadata.namespace_ = "ns";
    v.metadata.name = name;
    v.spec.vni = vni;
    v.spec.cidr_blocks = std::move(blocks);
    auto r = c_->create(v);
    EXPECT_TRUE(r.has_value()) << r.error().message;
  };
  auto has_error = [&](const std::string& name, const std::string& why) {
    return eventually([&] {
      auto s = c_->get<api::Subnet>("ns", name);
      if (!s || s->status.validated) return false;
      return std::ranges::find(s->status.errors, why) != s->status.errors.end();
    });
  };
  auto validated = [&](const std::string& name) {
    return eventually([&] { return c_->get<api::Subnet>("ns", name)->status.validated; });
  };

  // A subnet waits for its VPC, and is validated once the VPC is.
  subnet("ns", "a1", 101, "10.1.0.0/24", "a");
  EXPECT_TRUE(has_error("a1", "Vpc ns/a does not exist"));
  vpc("a", 100, {"10.0.0.0/8"});
  ASSERT_TRUE(validated("a1"));
  auto a1 = *c_->get<api::Subnet>("ns", "a1");
  EXPECT_EQ(a1.status.gateway, "10.1.0.1");
  EXPECT_EQ(a1.status.routes, std::vector<std::string>{"10.0.0.0/8"});
  EXPECT_EQ(a1.status.routing_vni, 100u);
  subnet("ns", "a2", 102, "10.2.0.0/24", "a");
  ASSERT_TRUE(validated("a2"));
  EXPECT_TRUE(eventually([&] { return c_->get<api::Vpc>("ns", "a")->status.subnet_count == 2; }));

  // Overlaps inside a VPC, ranges outside its blocks, shared and routing VNIs are refused.
  subnet("ns", "a3", 103, "10.1.0.128/25", "a");
  EXPECT_TRUE(has_error("a3", "CIDR overlaps with ns/a1's (10.1.0.0/24) in Vpc a"));
  subnet("ns", "a4", 104, "192.168.0.0/24", "a");
  EXPECT_TRUE(has_error("a4", "CIDR 192.168.0.0/24 is not inside the cidrBlocks of Vpc ns/a (10.0.0.0/8)"));
  subnet("ns", "a5", 100, "10.5.0.0/24", "a");
  EXPECT_TRUE(has_error("a5", "VNI 100 is the routing VNI of Vpc ns/a"));
  subnet("ns", "plain", 102, "10.8.0.0/24");
  EXPECT_TRUE(has_error("plain", "same VNI as ns/a2: a subnet of a VPC needs a VNI of its own"));

  // Another VPC may reuse A's ranges, not its VNI.
  vpc("b", 200);
  subnet("ns", "b1", 201, "10.1.0.0/24", "b");
  ASSERT_TRUE(validated("b1"));
  EXPECT_EQ(c_->get<api::Subnet>("ns", "b1")->status.routes, std::vector<std::string>{"0.0.0.0/0"});
  vpc("c", 100);
  EXPECT_TRUE(eventually([&] {
    auto c = c_->get<api::Vpc>("ns", "c");
    return c && !c->status.validated &&
           c->status.errors == std::vector<std::string>{"VNI 100 is also the routing VNI of Vpc ns/a",
                                                        "VNI 100 is used by Subnet ns/a5"};
  }));
  EXPECT_TRUE(c_->get<api::Vpc>("ns", "a")->status.validated);

  // Attachments on a VPC subnet get the routing with the address; the gateway is never theirs.
  auto x = na("x", "a1");
  auto got = wait_na("x", [](const auto& a) { return !a.status.ipv4.empty(); });
  ASSERT_TRUE(got.has_value());
  EXPECT_NE(got->status.ipv4, "10.1.0.1");
  EXPECT_EQ(got->status.gateway, "10.1.0.1");
  EXPECT_EQ(got->status.prefix_length, 24);
  EXPECT_EQ(got->status.routes, std::vector<std::string>{"10.0.0.0/8"});
  EXPECT_EQ(got->status.routing_vni, 100u);
  auto y = na("y", "plain-ok");
  subnet("ns", "plain-ok", 300, "10.9.0.0/24");
  auto plain = wait_na("y", [](const auto& a) { return !a.status.ipv4.empty(); });
  ASSERT_TRUE(plain.has_value());
  EXPECT_EQ(plain->status.gateway, "");
  EXPECT_EQ(plain->status.routing_vni, 0u);
}

// A Subnet deleted under addressed attachments leaves them their addresses (a node never
// implements an address nobody holds), and its VNI stays bound to their namespace: a Subnet
// on that VNI in another namespace is refused at admission and, if it gets past (written
// straight to the store) and is validated, its attachments get no address until the last
// address of the first namespace is released. Never two holders of one (VNI, address).
TEST_F(ControllersTest, DeletedSubnetKeepsItsVniBoundToItsNamespace) {
  start();
  subnet("ns", "s", 21, "10.21.0.0/24");
  for (int i = 0; i < 3; ++i) na("a" + std::to_string(i), "s");
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(wait_na("a" + std::to_string(i), [](const auto& x) { return !x.status.ipv4.empty(); }));
  ASSERT_TRUE(c_->remove<api::Subnet>("ns", "s").has_value());
  for (int i = 0; i < 3; ++i) {
    auto a = wait_na("a" + std::to_string(i), [](const auto& x) {
      return x.status.errors.ipam == std::vector<std::string>{"Subnet s does not exist"};
    });
    ASSERT_TRUE(a.has_value());
    EXPECT_FALSE(a->status.ipv4.empty()) << "the address stays held";
  }
  // Admission sees the held addresses.
  api::Subnet t;
  t.metadata.namespace_ = "other";
  t.metadata.name = "t";
  t.spec.vni = 21;
  t.spec.ipv4 = "10.21.0.0/24";
  auto refused = c_->create(t);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, Errc::kInvalid);
  EXPECT_NE(refused.error().message.find("VNI 21 is still in use in namespace ns"), std::string::npos)
      << refused.error().message;
  // Past admission, the validator passes it (no Subnet on VNI 21 is left), the IPAM holds
  // its attachments back.
  subnet_in_store("other", "t", 21, "10.21.0.0/24");
  ASSERT_TRUE(eventually([&] {
    auto s = c_->get<api::Subnet>("other", "t");
    return s && s->status.validated;
  }));
  api::NetworkAttachment b;
  b.metadata.namespace_ = "other";
  b.metadata.name = "b";
  b.spec.node = "n1";
  b.spec.subnet = "t";
  ASSERT_TRUE(c_->create(b).has_value());
  const std::string waiting = "VNI 21 is still in use in namespace ns by attachments of a deleted Subnet";
  ASSERT_TRUE(eventually([&] {
    auto x = c_->get<api::NetworkAttachment>("other", "b");
    return x && x->status.errors.ipam == std::vector<std::string>{waiting};
  }));
  EXPECT_TRUE(c_->get<api::NetworkAttachment>("other", "b")->status.ipv4.empty());
  // The first namespace lets go of its last address: the waiting attachment is addressed.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(c_->remove<api::NetworkAttachment>("ns", "a" + std::to_string(i)));
  ASSERT_TRUE(eventually([&] {
    auto x = c_->get<api::NetworkAttachment>("other", "b");
    return x && !x->status.ipv4.empty() && x->status.errors.ipam.empty();
  }));
  auto all_locks = c_->list<api::IPLock>("");
  ASSERT_TRUE(all_locks.has_value());
  for (const auto& l : *all_locks) EXPECT_EQ(l.metadata.namespace_, "other") << l.metadata.name;
}

TEST_F(ControllersTest, MissingSubnetAndRecreatedAttachment) {
  start();
  na("lost", "nosuch");
  auto lost = wait_na("lost", [](const auto& x) { return !x.status.errors.ipam.empty(); });
  ASSERT_TRUE(lost.has_value());
  EXPECT_EQ(lost->status.errors.ipam, std::vector<std::string>{"Subnet nosuch does not exist"});
  // The subnet arrives: the attachment gets an address.
  subnet("ns", "nosuch", 11, "10.4.0.0/24");
  auto found = wait_na("lost", [](const auto& x) { return !x.status.ipv4.empty(); });
  ASSERT_TRUE(found.has_value());
  EXPECT_TRUE(found->status.errors.ipam.empty());
  // Re-created under the same name: a new incarnation, a lock of its own, the old one freed.
  std::string old_uid = found->metadata.uid;
  ASSERT_TRUE(c_->remove<api::NetworkAttachment>("ns", "lost").has_value());
  na("lost", "nosuch");
  auto again = wait_na("lost", [&](const auto& x) { return !x.status.ipv4.empty() && x.metadata.uid != old_uid; });
  ASSERT_TRUE(again.has_value());
  auto deadline = std::chrono::steady_clock::now() + 10s;
  bool old_lock_gone = false;
  while (!old_lock_gone && std::chrono::steady_clock::now() < deadline) {
    auto locks = c_->list<api::IPLock>("ns");
    ASSERT_TRUE(locks.has_value());
    old_lock_gone = true;
    for (const auto& l : *locks)
      for (const auto& r : l.metadata.owner_references)
        if (r.uid == old_uid) old_lock_gone = false;
    if (!old_lock_gone) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(old_lock_gone);
}

}  // namespace
}  // namespace kos::controllers

namespace kos::controllers {
namespace {

// The store under the API server refuses writes now and then, loses the reply of some
// lock creates after committing them (the IPAM cannot know they happened), and its watches
// lag: the IPAM still gives every attachment one address with exactly one lock, no two
// attachments share one, and no lock is left without its attachment's status naming it.
TEST_F(ControllersTest, IpamConvergesThroughStoreFaults) {
  start();
  subnet("ns", "s1", 9, "10.9.0.0/26");  // 61 usable
  const std::string locks = "/registry/network.example.com/iplocks/";
  const std::string nas = "/registry/network.example.com/networkattachments/";
  const Error down{Errc::kUnavailable, "injected: store unavailable", {}};
  faults().inject({store::StoreOp::kCreate, locks, 5, 0ms, down, false});
  faults().inject({store::StoreOp::kCreate, locks, 5, 0ms, down, true});  // committed, reply lost
  faults().inject({store::StoreOp::kUpdate, nas, 5, 20ms, down, false});
  faults().set_watch_delay(100ms);
  constexpr int kCount = 40;
  for (int i = 0; i < kCount; ++i) na("f" + std::to_string(i), "s1");
  std::set<std::string> addrs;
  for (int i = 0; i < kCount; ++i) {
    std::optional<api::NetworkAttachment> got;
    ASSERT_TRUE(eventually([&] {
      got = c_->get<api::NetworkAttachment>("ns", "f" + std::to_string(i)).value_or(api::NetworkAttachment{});
      return !got->status.ipv4.empty();
    }, 60s)) << "f" << i << " got no address";
    EXPECT_TRUE(addrs.insert(got->status.ipv4).second) << got->status.ipv4 << " twice";
    auto lock = c_->get<api::IPLock>("ns", api::format_iplock_name(9, *api::parse_ipv4(got->status.ipv4)));
    ASSERT_TRUE(lock.has_value()) << got->status.ipv4;
    EXPECT_EQ(lock->metadata.uid, got->status.lock_uid);
    ASSERT_EQ(lock->metadata.owner_references.size(), 1u);
    EXPECT_EQ(lock->metadata.owner_references[0].uid, got->metadata.uid);
  }
  EXPECT_GE(faults().fired(), 15u);
  // Locks whose create reply was lost are released: one lock per attachment in the end.
  size_t n = 0;
  EXPECT_TRUE(eventually([&] {
    auto l = c_->list<api::IPLock>("ns");
    n = l ? l->size() : 0;
    return n == static_cast<size_t>(kCount);
  }, 30s)) << n << " locks for " << kCount << " attachments";
}

}  // namespace
}  // namespace kos::controllers

namespace kos::controllers {
namespace {

// Events that need no work (the IPAM's own status write and lock coming back, an agent's
// status write) are decided on the caches on the informer's thread: no worker is woken.
TEST_F(ControllersTest, EventsOfAnAddressedAttachmentAreSettledWithoutAWorker) {
  start();
  auto& inlined = metrics::Registry::global()
                      .counter("kos_controller_inline_reconciles_total", "", {"controller"})
                      .with({"ipam"});
  subnet("ns", "s1", 21, "10.21.0.0/28");
  na("a", "s1");
  auto addressed = wait_na("a", [](const auto& x) { return !x.status.ipv4.empty(); });
  ASSERT_TRUE(addressed.has_value());
  const std::string key = "ns/a";
  // What the caches show once they have the status write: addressed, nothing to do.
  ASSERT_TRUE(eventually([&] {
    auto r = ipam_->reconcile_cached(key);
    return r && r->has_value();
  }));
  // An agent's status write: its event is settled inline.
  const double before = inlined.value();
  auto now = c_->get<api::NetworkAttachment>("ns", "a");
  ASSERT_TRUE(now.has_value());
  now->status.host_ip = "192.0.2.1";
  ASSERT_TRUE(c_->update_status(*now).has_value());
  EXPECT_TRUE(eventually([&] { return inlined.value() > before; }));
  auto after = c_->get<api::NetworkAttachment>("ns", "a");
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->status.ipv4, addressed->status.ipv4);
  EXPECT_EQ(after->status.lock_uid, addressed->status.lock_uid);

  // What the caches cannot decide goes to a worker: an attachment its full subnet could
  // not address...
  subnet("ns", "s2", 22, "10.22.0.0/29");  // usable: .2 .. .6
  for (int i = 0; i < 6; ++i) na("b" + std::to_string(i), "s2");
  std::string waiting;
  ASSERT_TRUE(eventually([&] {
    for (int i = 0; i < 6; ++i)
      if (auto x = c_->get<api::NetworkAttachment>("ns", "b" + std::to_string(i)); x && x->status.address_contention) {
        waiting = "ns/b" + std::to_string(i);
        return true;
      }
    return false;
  }));
  EXPECT_FALSE(ipam_->reconcile_cached(waiting).has_value());
  // ... and one whose Subnet does not exist.
  na("e", "nosuch");
  ASSERT_TRUE(eventually([&] { return c_->get<api::NetworkAttachment>("ns", "e")->status.errors.ipam.size() == 1; }));
  EXPECT_FALSE(ipam_->reconcile_cached("ns/e").has_value());
  // An attachment that is gone and holds no lock: nothing to release.
  auto gone = ipam_->reconcile_cached("ns/gone");
  ASSERT_TRUE(gone.has_value());
  EXPECT_TRUE(gone->has_value());
}

// release_all (an attachment left the IPAM's cache) must not delete a lock of the
// attachment's next incarnation. The window: its live GET answers "not found", but the
// answer is slow; meanwhile the attachment is created again and another IPAM locks an
// address for it. Reading the lock index after that GET (as release_all did) finds the new
// lock and deletes it; reading it before the GET cannot.
TEST_F(ControllersTest, ReleaseAllKeepsTheLockOfTheNextIncarnation) {
  IpamOptions opts;
  opts.release_grace = 0ms;  // release_all at once, racing the collector as it would after the grace
  start(opts);
  subnet("ns", "s1", 11, "10.11.0.0/26");  // usable .1 .. .62
  na("x", "s1");
  auto first = wait_na("x", [](const auto& a) { return !a.status.ipv4.empty(); });
  ASSERT_TRUE(first.has_value());
  const std::string key = "/registry/network.example.com/networkattachments/ns/x";
  // The next GETs of x answer what the store has, 1.5 s late.
  faults().inject({store::StoreOp::kGet, key, 3, 1500ms, std::nullopt, false, true});
  ASSERT_TRUE(c_->remove<api::NetworkAttachment>("ns", "x").has_value());
  // The IPAM's slow GET of x is in flight (release_all comes when its cache shows the
  // delete). The API server reads nothing of x: the delete starts from its watch cache, and
  // the collector takes a cache past the lock's revision without x as x's absence.
  ASSERT_TRUE(eventually([&] { return faults().delaying() >= 1; }));
  auto second = c_->create(api::NetworkAttachment{[] {
    api::NetworkAttachment a;
    a.metadata.namespace_ = "ns";
    a.metadata.name = "x";
    a.spec.node = "n1";
    a.spec.subnet = "s1";
    return a;
  }()});
  ASSERT_TRUE(second.has_value()) << second.error().message;
  // "Another IPAM" locks the last address of the range for the new incarnation.
  const uint32_t ip = *api::parse_ipv4("10.11.0.62");
  api::IPLock lock;
  lock.metadata.namespace_ = "ns";
  lock.metadata.name = api::format_iplock_name(11, ip);
  lock.metadata.owner_references.push_back(
      api::OwnerReference{std::string(api::kApiVersion), "NetworkAttachment", "x", second->metadata.uid, true, true});
  lock.spec.subnet_name = "s1";
  auto made = c_->create(lock);
  ASSERT_TRUE(made.has_value()) << made.error().message;
  // The new incarnation ends up with that lock (the IPAM adopts a usable lock it holds).
  auto got = wait_na("x", [&](const auto& a) {
    return a.metadata.uid == second->metadata.uid && !a.status.ipv4.empty();
  });
  ASSERT_TRUE(got.has_value());
  // The slow answers have all come back; release_all acts on its at once (a delete).
  ASSERT_TRUE(eventually([&] { return faults().delaying() == 0; }));
  for (int i = 0; i < 20; ++i) {  // 200 ms in which the lock must stay
    ASSERT_TRUE(c_->get<api::IPLock>("ns", lock.metadata.name).has_value()) << "the next incarnation's lock was deleted";
    std::this_thread::sleep_for(10ms);
  }
  auto still = c_->get<api::IPLock>("ns", lock.metadata.name);
  ASSERT_TRUE(still.has_value()) << "the next incarnation's lock was deleted";
  EXPECT_EQ(still->metadata.uid, made->metadata.uid);
  auto now = c_->get<api::NetworkAttachment>("ns", "x");
  ASSERT_TRUE(now.has_value());
  EXPECT_EQ(now->status.ipv4, "10.11.0.62");
  EXPECT_EQ(now->status.lock_uid, made->metadata.uid);
}

}  // namespace
}  // namespace kos::controllers

namespace kos::controllers {
namespace {

// An IPAM took a lock for an attachment, then the attachment's Subnet was deleted before
// the status write that names the lock (or the write failed, and the retry found no
// Subnet). The lock is here created by hand, as that IPAM left it. It holds an address,
// and the VNI with it, so the status must show it (it did not: the VNI stayed bound for as
// long as the attachment lived, with no attachment showing why); a second such lock goes.
// Deleting the attachment then frees the VNI.
TEST_F(ControllersTest, WithoutItsSubnetAnAttachmentShowsTheLockItHolds) {
  start();
  auto x = na("x", "gone");
  ASSERT_TRUE(wait_na("x", [](const auto& a) {
    return a.status.errors.ipam == std::vector<std::string>{"Subnet gone does not exist"};
  }));
  auto make_lock = [&](const std::string& ip) {
    api::IPLock lock;
    lock.metadata.namespace_ = "ns";
    lock.metadata.name = api::format_iplock_name(31, *api::parse_ipv4(ip));
    lock.metadata.owner_references.push_back(
        api::OwnerReference{std::string(api::kApiVersion), "NetworkAttachment", "x", x.metadata.uid, true, true});
    lock.spec.subnet_name = "gone";
    auto made = c_->create(lock);
    EXPECT_TRUE(made.has_value()) << made.error().message;
    return made.value_or(lock);
  };
  auto first = make_lock("10.31.0.7");
  auto shown = wait_na("x", [](const auto& a) { return !a.status.ipv4.empty(); });
  ASSERT_TRUE(shown.has_value()) << "a lock nobody's status shows is held";
  EXPECT_EQ(shown->status.ipv4, "10.31.0.7");
  EXPECT_EQ(shown->status.address_vni, 31u);
  EXPECT_EQ(shown->status.lock_uid, first.metadata.uid);
  EXPECT_EQ(shown->status.errors.ipam, std::vector<std::string>{"Subnet gone does not exist"});
  // A second lock of the same incarnation: the status names the first, the second goes.
  auto second = make_lock("10.31.0.8");
  EXPECT_TRUE(eventually([&] {
    auto l = c_->get<api::IPLock>("ns", second.metadata.name);
    return !l && l.error().code == Errc::kNotFound;
  })) << "the lock the status does not name is still held";
  EXPECT_EQ(c_->get<api::NetworkAttachment>("ns", "x")->status.lock_uid, first.metadata.uid);
  // The attachment goes: so do its lock and the VNI's binding.
  ASSERT_TRUE(c_->remove<api::NetworkAttachment>("ns", "x").has_value());
  EXPECT_TRUE(eventually([&] {
    auto l = c_->get<api::IPLock>("ns", first.metadata.name);
    return !l && l.error().code == Errc::kNotFound;
  }));
  api::Subnet t;
  t.metadata.namespace_ = "other";
  t.metadata.name = "t";
  t.spec.vni = 31;
  t.spec.ipv4 = "10.31.0.0/24";
  auto admitted = c_->create(t);
  EXPECT_TRUE(admitted.has_value()) << admitted.error().message;
}

// The other half: an attachment of a deleted Subnet whose status names an address it
// holds no lock for (its lock was released while a lagging IPAM wrote it into the status).
// Nobody holds that address, so no node may implement it: it leaves the status.
TEST_F(ControllersTest, WithoutItsSubnetAnAddressWhoseLockIsGoneLeavesTheStatus) {
  start();
  na("y", "gone");
  auto y = wait_na("y", [](const auto& a) { return !a.status.errors.ipam.empty(); });
  ASSERT_TRUE(y.has_value());
  y->status.ipv4 = "10.32.0.9";
  y->status.address_vni = 32;
  y->status.lock_uid = "00000000-0000-4000-8000-000000000032";
  ASSERT_TRUE(c_->update_status(*y).has_value());
  auto cleared = wait_na("y", [](const auto& a) { return a.status.ipv4.empty() && a.status.lock_uid.empty(); });
  ASSERT_TRUE(cleared.has_value()) << "the status still names an address nobody holds";
  EXPECT_EQ(cleared->status.address_vni, 0u);
  EXPECT_EQ(cleared->status.errors.ipam, std::vector<std::string>{"Subnet gone does not exist"});
}

}  // namespace
}  // namespace kos::controllers
