// Bad input for the controllers (one `kos controller-manager` process with both
// controllers, as deployed): each case ends with a clear status error or a correct new
// address, and the controller process is still running at the end.
#include <gtest/gtest.h>

#include "api/cidr.h"
#include "api/names.h"
#include "test/controllers/harness.h"

namespace kos::ctltest {
namespace {

using namespace std::chrono_literals;

constexpr auto kWait = 30s;

class ControllersBadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(server_.start(), "");
    c_ = server_.client();
    cm_ = controller_manager(server_, "controller-manager", "subnet-validator,ipam");
    cm_->start();
  }
  void TearDown() override {
    // The controllers survived whatever the test fed them.
    EXPECT_TRUE(cm_->running()) << "kos controller-manager exited: status "
                                << cm_->exit_status().value_or(-1) << logs();
    EXPECT_TRUE(server_.process().running()) << logs();
    if (HasFailure()) std::printf("%s\n", logs().c_str());
  }
  std::string logs() { return ctltest::logs({&server_.process(), cm_.get()}); }

  api::NetworkAttachment get_na(const std::string& ns, const std::string& name) {
    auto r = c_->get<api::NetworkAttachment>(ns, name);
    return r ? *r : api::NetworkAttachment{};
  }
  // Polls the attachment until `pred` holds; returns the last state seen.
  std::pair<bool, api::NetworkAttachment> wait_na(const std::string& ns, const std::string& name,
                                                  const std::function<bool(const api::NetworkAttachment&)>& pred) {
    api::NetworkAttachment last;
    bool ok = poll_until(
        [&] {
          last = get_na(ns, name);
          return pred(last);
        },
        kWait, 50ms);
    return {ok, last};
  }
  bool wait_validated(const std::string& ns, const std::string& name) {
    return poll_until(
        [&] {
          auto s = c_->get<api::Subnet>(ns, name);
          return s && s->status.validated;
        },
        kWait, 50ms);
  }
  // An attachment correctly addressed from `cidr` on `vni`, holding its lock.
  ::testing::AssertionResult addressed_in(const api::NetworkAttachment& na, const std::string& cidr,
                                          uint32_t vni) {
    auto c = *api::parse_cidr(cidr);
    auto ip = api::parse_ipv4(na.status.ipv4);
    if (!ip || na.status.address_vni != vni || *ip < c.first_usable() || *ip > c.last_usable())
      return ::testing::AssertionFailure() << na.metadata.name << " ipv4=" << na.status.ipv4 << " vni="
                                           << na.status.address_vni << ", wanted an address of " << cidr
                                           << " on VNI " << vni;
    if (!na.status.errors.ipam.empty() || na.status.address_contention)
      return ::testing::AssertionFailure() << na.metadata.name << " still reports "
                                           << (na.status.errors.ipam.empty() ? "contention" : na.status.errors.ipam[0]);
    auto lock = c_->get<api::IPLock>(na.metadata.namespace_, api::format_iplock_name(vni, *ip));
    if (!lock) return ::testing::AssertionFailure() << "no lock for " << na.metadata.name;
    if (lock->metadata.uid != na.status.lock_uid || lock->metadata.owner_references.size() != 1 ||
        lock->metadata.owner_references[0].uid != na.metadata.uid)
      return ::testing::AssertionFailure() << "the lock of " << na.metadata.name << " is not its own";
    return ::testing::AssertionSuccess();
  }
  std::vector<api::IPLock> locks(const std::string& ns) {
    auto l = c_->list<api::IPLock>(ns);
    return l ? *l : std::vector<api::IPLock>{};
  }

  ApiServer server_;
  std::shared_ptr<client::RestClient> c_;
  std::unique_ptr<KosProcess> cm_;
};

// An attachment naming a subnet that does not exist says so; once the subnet is created
// (and validated) the attachment gets an address from it.
TEST_F(ControllersBadInput, AttachmentOnMissingSubnet) {
  ASSERT_TRUE(c_->create(make_attachment("bad", "lost", "nosuch")));
  auto [ok, na] = wait_na("bad", "lost", [](const auto& na) { return !na.status.errors.ipam.empty(); });
  ASSERT_TRUE(ok) << "no status error on an attachment of a missing subnet";
  EXPECT_EQ(na.status.errors.ipam, std::vector<std::string>{"Subnet nosuch does not exist"});
  EXPECT_EQ(na.status.ipv4, "");
  EXPECT_TRUE(locks("bad").empty());

  ASSERT_TRUE(c_->create(make_subnet("bad", "nosuch", "10.9.0.0/24", 9)));
  auto [ok2, na2] = wait_na("bad", "lost", [](const auto& na) { return !na.status.ipv4.empty(); });
  ASSERT_TRUE(ok2) << "not addressed after its subnet appeared; errors: "
                   << (na2.status.errors.ipam.empty() ? "" : na2.status.errors.ipam[0]);
  EXPECT_TRUE(addressed_in(na2, "10.9.0.0/24", 9));
  auto check = ipam_check(server_);
  EXPECT_EQ(check.exit_code, 0) << describe(check);
}

// A subnet on a VNI that another namespace uses: admission rejects it (422); if it is
// stored anyway it is not validated, with an error naming the other subnet, and an
// attachment on it says the subnet has not passed validation. The first subnet and its
// attachment are unaffected.
TEST_F(ControllersBadInput, VniUsedInAnotherNamespace) {
  ASSERT_TRUE(c_->create(make_subnet("ns-a", "first", "10.1.0.0/24", 77)));
  ASSERT_TRUE(wait_validated("ns-a", "first"));
  ASSERT_TRUE(c_->create(make_attachment("ns-a", "na-a", "first")));

  auto second = c_->create(make_subnet("ns-b", "second", "10.2.0.0/24", 77));
  if (!second) {
    EXPECT_EQ(second.error().code, Errc::kInvalid) << second.error().to_string();
    EXPECT_EQ(second.error().http_status(), 422);
    EXPECT_NE(second.error().message.find("ns-a/first"), std::string::npos) << second.error().message;
  } else {
    // Stored past admission: the validator must refuse it.
    ASSERT_TRUE(poll_until(
        [&] {
          auto s = c_->get<api::Subnet>("ns-b", "second");
          return s && !s->status.errors.empty();
        },
        kWait, 50ms));
    auto s = *c_->get<api::Subnet>("ns-b", "second");
    EXPECT_FALSE(s.status.validated);
    ASSERT_FALSE(s.status.errors.empty());
    EXPECT_NE(s.status.errors[0].find("ns-a/first"), std::string::npos) << s.status.errors[0];
    ASSERT_TRUE(c_->create(make_attachment("ns-b", "na-b", "second")));
    auto [ok, na] = wait_na("ns-b", "na-b", [](const auto& na) { return !na.status.errors.ipam.empty(); });
    ASSERT_TRUE(ok);
    EXPECT_EQ(na.status.errors.ipam, std::vector<std::string>{"Subnet second has not passed validation"});
    EXPECT_EQ(na.status.ipv4, "");
  }
  auto [ok, na] = wait_na("ns-a", "na-a", [](const auto& na) { return !na.status.ipv4.empty(); });
  ASSERT_TRUE(ok);
  EXPECT_TRUE(addressed_in(na, "10.1.0.0/24", 77));
  auto first = c_->get<api::Subnet>("ns-a", "first");
  ASSERT_TRUE(first);
  EXPECT_TRUE(first->status.validated);
}

// A subnet deleted under live attachments: they end with "Subnet s does not exist" and
// nothing crashes. Re-created (on another CIDR and VNI) and validated, the attachments get
// addresses from it again, and the locks of the old addresses go.
TEST_F(ControllersBadInput, SubnetDeletedUnderLiveAttachments) {
  constexpr int kAttachments = 5;
  ASSERT_TRUE(c_->create(make_subnet("del", "s", "10.3.0.0/24", 30)));
  for (int i = 0; i < kAttachments; ++i)
    ASSERT_TRUE(c_->create(make_attachment("del", "na-" + std::to_string(i), "s")));
  for (int i = 0; i < kAttachments; ++i) {
    auto [ok, na] = wait_na("del", "na-" + std::to_string(i), [](const auto& na) { return !na.status.ipv4.empty(); });
    ASSERT_TRUE(ok);
    EXPECT_TRUE(addressed_in(na, "10.3.0.0/24", 30));
  }

  ASSERT_TRUE(c_->remove<api::Subnet>("del", "s"));
  int kept_address = 0;
  for (int i = 0; i < kAttachments; ++i) {
    auto [ok, na] = wait_na("del", "na-" + std::to_string(i), [](const auto& na) {
      return na.status.errors.ipam == std::vector<std::string>{"Subnet s does not exist"};
    });
    EXPECT_TRUE(ok) << "na-" << i << " errors.ipam: "
                    << (na.status.errors.ipam.empty() ? "(none)" : na.status.errors.ipam[0]);
    kept_address += !na.status.ipv4.empty();
  }
  // Reported, not required: what the attachments and ipam-check show while the subnet is gone.
  auto gone_check = ipam_check(server_);
  std::printf("[ bad input ] with their subnet deleted, %d of %d attachments still show their old "
              "address; %zu locks remain; ipam-check exits %d: %s\n",
              kept_address, kAttachments, locks("del").size(), gone_check.exit_code,
              gone_check.out.substr(gone_check.out.rfind('\n', gone_check.out.size() - 2) + 1).c_str());
  EXPECT_TRUE(cm_->running());

  ASSERT_TRUE(c_->create(make_subnet("del", "s", "10.4.0.0/24", 31)));
  ASSERT_TRUE(wait_validated("del", "s"));
  for (int i = 0; i < kAttachments; ++i) {
    auto [ok, na] = wait_na("del", "na-" + std::to_string(i), [](const auto& na) {
      return na.status.address_vni == 31 && !na.status.ipv4.empty() && na.status.errors.ipam.empty();
    });
    EXPECT_TRUE(ok) << "na-" << i << " not re-addressed: ipv4=" << na.status.ipv4
                    << " vni=" << na.status.address_vni;
    EXPECT_TRUE(addressed_in(na, "10.4.0.0/24", 31));
  }
  // The old addresses' locks are released: one lock per attachment, all on VNI 31.
  std::string lock_names;
  EXPECT_TRUE(poll_until(
      [&] {
        auto l = locks("del");
        lock_names.clear();
        bool all_new = true;
        for (const auto& k : l) {
          lock_names += k.metadata.name + " ";
          all_new = all_new && k.metadata.name.starts_with("v1-31-");
        }
        return l.size() == kAttachments && all_new;
      },
      kWait, 50ms))
      << "locks: " << lock_names;
  auto check = ipam_check(server_);
  EXPECT_EQ(check.exit_code, 0) << describe(check);
}

// An attachment deleted and re-created with the same name, again and again (sometimes
// after it got its address, sometimes at once): the final incarnation gets a correct
// address, and no lock owned by an earlier incarnation remains.
TEST_F(ControllersBadInput, AttachmentRecreatedWithSameName) {
  constexpr int kCycles = 20;
  ASSERT_TRUE(c_->create(make_subnet("re", "s", "10.5.0.0/24", 50)));
  ASSERT_TRUE(wait_validated("re", "s"));
  std::vector<std::string> old_uids;
  std::string current;
  for (int cycle = 0; cycle < kCycles; ++cycle) {
    auto created = c_->create(make_attachment("re", "same", "s"));
    ASSERT_TRUE(created) << created.error().to_string();
    if (!current.empty()) old_uids.push_back(current);
    current = created->metadata.uid;
    if (cycle % 2 == 0) {  // let this incarnation get its address first
      auto [ok, na] = wait_na("re", "same", [&](const auto& na) {
        return na.metadata.uid == current && !na.status.ipv4.empty();
      });
      ASSERT_TRUE(ok) << "incarnation " << cycle << " not addressed";
      EXPECT_TRUE(addressed_in(na, "10.5.0.0/24", 50));
    }
    if (cycle + 1 < kCycles) {
      ASSERT_TRUE(c_->remove<api::NetworkAttachment>("re", "same"));
    }
  }
  auto [ok, na] = wait_na("re", "same", [&](const auto& na) {
    return na.metadata.uid == current && !na.status.ipv4.empty();
  });
  ASSERT_TRUE(ok) << "the last incarnation was not addressed";
  EXPECT_TRUE(addressed_in(na, "10.5.0.0/24", 50));

  std::string held;
  EXPECT_TRUE(poll_until(
      [&] {
        auto l = locks("re");
        held.clear();
        for (const auto& k : l)
          for (const auto& o : k.metadata.owner_references) held += k.metadata.name + " owner " + o.uid + "; ";
        return l.size() == 1 && l[0].metadata.owner_references.size() == 1 &&
               l[0].metadata.owner_references[0].uid == current;
      },
      kWait, 50ms))
      << "locks left: " << held << " (current incarnation " << current << ")";
  auto check = ipam_check(server_);
  EXPECT_EQ(check.exit_code, 0) << describe(check);
}

}  // namespace
}  // namespace kos::ctltest

namespace kos::ctltest {
namespace {

// Bad flags of the controller-manager get exit status 2 and a message naming them, before
// it connects anywhere.
TEST(ControllerManagerFlags, BadLeaderElectionTimingIsRefused) {
  struct Case {
    std::vector<std::string> flags;
    std::string message;
  } cases[] = {
      {{"--leader-elect-lease-duration", "soon"}, "--leader-elect-lease-duration soon: expected a positive duration"},
      {{"--leader-elect-retry-period", "0"}, "--leader-elect-retry-period 0: expected a positive duration"},
      {{"--leader-elect-lease-duration", "5s", "--leader-elect-renew-deadline", "10s"},
       "needs --leader-elect-lease-duration > --leader-elect-renew-deadline > --leader-elect-retry-period"},
      {{"--leader-elect-renew-deadline", "1s", "--leader-elect-retry-period", "2s"},
       "(got 15s, 1s, 2s)"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> argv = {kKos, "controller-manager", "--kubeconfig", "/nonexistent", "--leader-elect"};
    argv.insert(argv.end(), c.flags.begin(), c.flags.end());
    auto r = testing::run(argv);
    EXPECT_EQ(r.exit_code, 2) << describe(r);
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace kos::ctltest
