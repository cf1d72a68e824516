// The IPAM check: the analysis on tables of in-memory object sets (every kind of finding,
// including those the API server's garbage collector would not let exist for long), and
// the snapshot read plus repair against a real API server in process.
#include "controllers/ipam/check.h"

#include <algorithm>
#include <set>

#include <gtest/gtest.h>

#include "api/cidr.h"
#include "api/names.h"
#include "client/test_server.h"

namespace kos::controllers::ipam {
namespace {

using Keys = std::vector<std::string>;
struct Expected {
  FindingKind kind;
  Keys objects;  // namespace/name of Finding::objects, in order
  bool operator==(const Expected&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Expected& e) {
  os << finding_kind_name(e.kind) << "{";
  for (const auto& k : e.objects) os << k << ";";
  return os << "}";
}

std::vector<Expected> summarize(const IpamReport& r) {
  std::vector<Expected> out;
  for (const auto& f : r.findings) {
    Keys keys;
    for (const auto& o : f.objects) keys.push_back(o.key());
    out.push_back({f.kind, keys});
  }
  return out;
}

std::string messages(const IpamReport& r) {
  std::string s;
  for (const auto& f : r.findings) s += f.message + "\n";
  return s;
}

uint32_t ip(const std::string& s) { return *api::parse_ipv4(s); }

api::Subnet subnet(const std::string& ns, const std::string& name, uint32_t vni,
                   const std::string& cidr) {
  api::Subnet s;
  s.metadata.namespace_ = ns;
  s.metadata.name = name;
  s.metadata.uid = "uid-subnet-" + ns + "-" + name;
  s.spec.vni = vni;
  s.spec.ipv4 = cidr;
  return s;
}

api::NetworkAttachment na(const std::string& ns, const std::string& name, uint32_t vni = 0,
                          const std::string& addr = "", const std::string& uid = "") {
  api::NetworkAttachment a;
  a.metadata.namespace_ = ns;
  a.metadata.name = name;
  a.metadata.uid = uid.empty() ? "uid-" + ns + "-" + name : uid;
  a.spec.node = "node1";
  a.spec.subnet = "s1";
  a.status.address_vni = vni;
  a.status.ipv4 = addr;
  return a;
}

api::OwnerReference owner(const std::string& name, const std::string& uid, bool controller = true) {
  return {std::string(api::kApiVersion), "NetworkAttachment", name, uid, controller, true};
}

// A lock on (vni, addr) in `ns`, controlled by the attachment `owner_name` of uid
// "uid-<ns>-<owner_name>" (what na() gives) unless owner_uid says otherwise.
api::IPLock iplock(const std::string& ns, uint32_t vni, const std::string& addr,
                 const std::string& owner_name, const std::string& subnet_name = "s1",
                 const std::string& owner_uid = "") {
  api::IPLock l;
  l.metadata.namespace_ = ns;
  l.metadata.name = api::format_iplock_name(vni, ip(addr));
  l.metadata.uid = "uid-lock-" + l.metadata.name;
  if (!owner_name.empty())
    l.metadata.owner_references.push_back(
        owner(owner_name, owner_uid.empty() ? "uid-" + ns + "-" + owner_name : owner_uid));
  l.spec.subnet_name = subnet_name;
  return l;
}

std::string lk(const std::string& ns, uint32_t vni, const std::string& addr) {
  return ns + "/" + api::format_iplock_name(vni, ip(addr));
}

struct Case {
  std::string name;
  std::vector<api::NetworkAttachment> nas;
  std::vector<api::IPLock> locks;
  std::vector<api::Subnet> subnets;
  std::vector<Expected> want;
};

std::vector<Case> cases() {
  const auto s1 = subnet("ns", "s1", 7, "10.0.0.0/24");
  std::vector<Case> cs;
  cs.push_back({"clean",
                {na("ns", "a", 7, "10.0.0.2"), na("ns", "b", 7, "10.0.0.254"), na("ns", "c")},
                {iplock("ns", 7, "10.0.0.2", "a"), iplock("ns", 7, "10.0.0.254", "b")},
                {s1},
                {}});
  cs.push_back({"empty", {}, {}, {}, {}});
  cs.push_back({"duplicate address; the second holder has no lock of its own",
                {na("ns", "b", 7, "10.0.0.5"), na("ns", "a", 7, "10.0.0.5")},
                {iplock("ns", 7, "10.0.0.5", "a")},
                {s1},
                {{FindingKind::kDuplicateAddress, {"ns/a", "ns/b"}},
                 {FindingKind::kLockHeldByOther, {"ns/b", lk("ns", 7, "10.0.0.5")}}}});
  cs.push_back({"duplicate address across namespaces (same VNI), each with its lock",
                {na("ns1", "a", 7, "10.0.0.5"), na("ns2", "b", 7, "10.0.0.5")},
                {iplock("ns1", 7, "10.0.0.5", "a"), iplock("ns2", 7, "10.0.0.5", "b")},
                {subnet("ns1", "s1", 7, "10.0.0.0/24"), subnet("ns2", "s1", 7, "10.0.0.0/24")},
                {{FindingKind::kDuplicateAddress, {"ns1/a", "ns2/b"}}}});
  cs.push_back({"three holders of one address",
                {na("ns", "a", 7, "10.0.0.5"), na("ns", "b", 7, "10.0.0.5"),
                 na("ns", "c", 7, "10.0.0.5")},
                {iplock("ns", 7, "10.0.0.5", "b")},
                {s1},
                {{FindingKind::kDuplicateAddress, {"ns/a", "ns/b", "ns/c"}},
                 {FindingKind::kLockHeldByOther, {"ns/a", lk("ns", 7, "10.0.0.5")}},
                 {FindingKind::kLockHeldByOther, {"ns/c", lk("ns", 7, "10.0.0.5")}}}});
  cs.push_back({"one address on two VNIs is no duplicate",
                {na("ns", "a", 7, "10.0.0.5"), na("ns", "b", 8, "10.0.0.5")},
                {iplock("ns", 7, "10.0.0.5", "a"), iplock("ns", 8, "10.0.0.5", "b", "s2")},
                {s1, subnet("ns", "s2", 8, "10.0.0.0/24")},
                {}});
  cs.push_back({"address without lock",
                {na("ns", "a", 7, "10.0.0.5"), na("ns", "b", 7, "10.0.0.6")},
                {iplock("ns", 7, "10.0.0.6", "b")},
                {s1},
                {{FindingKind::kAddressWithoutLock, {"ns/a"}}}});
  cs.push_back({"the lock of the address is in another namespace",
                {na("ns1", "a", 7, "10.0.0.5")},
                {iplock("ns2", 7, "10.0.0.5", "a", "s1", "uid-ns1-a")},
                {subnet("ns1", "s1", 7, "10.0.0.0/24"), subnet("ns2", "s1", 7, "10.0.0.0/24")},
                {{FindingKind::kAddressWithoutLock, {"ns1/a"}},
                 {FindingKind::kOrphanLock, {lk("ns2", 7, "10.0.0.5")}}}});
  cs.push_back({"lock of an earlier incarnation of the attachment",
                {na("ns", "a", 7, "10.0.0.5", "uid-new")},
                {iplock("ns", 7, "10.0.0.5", "a", "s1", "uid-old")},
                {s1},
                {{FindingKind::kLockHeldByOther, {"ns/a", lk("ns", 7, "10.0.0.5")}},
                 {FindingKind::kOrphanLock, {lk("ns", 7, "10.0.0.5")}}}});
  {
    auto l = iplock("ns", 7, "10.0.0.5", "");
    l.metadata.owner_references.push_back(owner("a", "uid-ns-a", /*controller=*/false));
    cs.push_back({"lock without a controller reference (a plain owner reference only)",
                  {na("ns", "a", 7, "10.0.0.5")},
                  {l, iplock("ns", 7, "10.0.0.6", "")},
                  {s1},
                  {{FindingKind::kLockHeldByOther, {"ns/a", lk("ns", 7, "10.0.0.5")}},
                   {FindingKind::kUnownedLock, {lk("ns", 7, "10.0.0.5")}},
                   {FindingKind::kUnownedLock, {lk("ns", 7, "10.0.0.6")}}}});
  }
  {
    auto bad_ip = na("ns", "a", 7, "10.0.0");
    auto bad_vni = na("ns", "b", 0, "10.0.0.6");
    auto big_vni = na("ns", "c", api::kMaxVni + 1, "10.0.0.7");
    cs.push_back({"invalid addresses",
                  {bad_ip, bad_vni, big_vni},
                  {},
                  {s1},
                  {{FindingKind::kInvalidAddress, {"ns/a"}},
                   {FindingKind::kInvalidAddress, {"ns/b"}},
                   {FindingKind::kInvalidAddress, {"ns/c"}}}});
  }
  cs.push_back({"orphan lock: no attachment of that name",
                {na("ns", "a", 7, "10.0.0.2")},
                {iplock("ns", 7, "10.0.0.2", "a"), iplock("ns", 7, "10.0.0.3", "gone")},
                {s1},
                {{FindingKind::kOrphanLock, {lk("ns", 7, "10.0.0.3")}}}});
  cs.push_back({"an attachment of the owner's name in another namespace does not own it",
                {na("ns2", "a")},
                {iplock("ns", 7, "10.0.0.3", "a", "s1", "uid-ns2-a")},
                {s1},
                {{FindingKind::kOrphanLock, {lk("ns", 7, "10.0.0.3")}}}});
  {
    auto l = iplock("ns", 7, "10.0.0.3", "");
    l.metadata.owner_references.push_back({"apps/v1", "ReplicaSet", "rs", "uid-rs", true, {}});
    auto l2 = iplock("ns", 7, "10.0.0.4", "");  // the right kind of another version
    l2.metadata.owner_references.push_back(
        {"network.example.com/v1", "NetworkAttachment", "a", "uid-ns-a", true, {}});
    cs.push_back({"controller of another kind",
                  {na("ns", "a")},
                  {l, l2},
                  {s1},
                  {{FindingKind::kForeignOwner, {lk("ns", 7, "10.0.0.3")}},
                   {FindingKind::kForeignOwner, {lk("ns", 7, "10.0.0.4")}}}});
  }
  {
    auto l = iplock("ns", 7, "10.0.0.3", "a");
    l.metadata.name = "v1-7-10-0-0-03";
    auto l2 = iplock("ns", 7, "10.0.0.4", "a", "nope");
    l2.metadata.name = "lock";
    cs.push_back({"name does not parse",
                  {na("ns", "a")},
                  {l, l2},
                  {s1},
                  {{FindingKind::kBadLockName, {"ns/lock"}},
                   {FindingKind::kBadLockName, {"ns/v1-7-10-0-0-03"}},
                   {FindingKind::kSubnetMissing, {"ns/lock"}}}});
  }
  cs.push_back({"subnet missing (or in another namespace)",
                {na("ns", "a", 7, "10.0.0.2"), na("ns2", "b", 7, "10.0.0.3")},
                {iplock("ns", 7, "10.0.0.2", "a", "nope"), iplock("ns2", 7, "10.0.0.3", "b")},
                {s1},
                {{FindingKind::kSubnetMissing, {lk("ns", 7, "10.0.0.2")}},
                 {FindingKind::kSubnetMissing, {lk("ns2", 7, "10.0.0.3")}}}});
  cs.push_back({"subnet with an invalid CIDR",
                {na("ns", "a", 7, "10.0.0.2")},
                {iplock("ns", 7, "10.0.0.2", "a", "bad")},
                {s1, subnet("ns", "bad", 7, "10.0.0.1/24")},
                {{FindingKind::kSubnetMissing, {lk("ns", 7, "10.0.0.2"), "ns/bad"}}}});
  cs.push_back({"VNI differs from the subnet's",
                {na("ns", "a", 8, "10.0.0.2")},
                {iplock("ns", 8, "10.0.0.2", "a")},
                {s1},
                {{FindingKind::kVniMismatch, {lk("ns", 8, "10.0.0.2"), "ns/s1"}}}});
  cs.push_back({"outside the subnet's CIDR",
                {na("ns", "a", 7, "10.0.1.2")},
                {iplock("ns", 7, "10.0.1.2", "a")},
                {s1},
                {{FindingKind::kOutsideSubnet, {lk("ns", 7, "10.0.1.2"), "ns/s1"}}}});
  cs.push_back({"wrong VNI and outside the CIDR: both",
                {na("ns", "a", 9, "10.9.0.2")},
                {iplock("ns", 9, "10.9.0.2", "a")},
                {s1},
                {{FindingKind::kVniMismatch, {lk("ns", 9, "10.9.0.2"), "ns/s1"}},
                 {FindingKind::kOutsideSubnet, {lk("ns", 9, "10.9.0.2"), "ns/s1"}}}});
  cs.push_back({"network, gateway and broadcast addresses are outside the usable range",
                {na("ns", "a", 7, "10.0.0.0"), na("ns", "b", 7, "10.0.0.1"),
                 na("ns", "c", 7, "10.0.0.255"), na("ns", "d", 7, "10.0.0.2")},
                {iplock("ns", 7, "10.0.0.0", "a"), iplock("ns", 7, "10.0.0.1", "b"),
                 iplock("ns", 7, "10.0.0.255", "c"), iplock("ns", 7, "10.0.0.2", "d")},
                {s1},
                {{FindingKind::kOutsideRange, {lk("ns", 7, "10.0.0.0"), "ns/s1"}},
                 {FindingKind::kOutsideRange, {lk("ns", 7, "10.0.0.1"), "ns/s1"}},
                 {FindingKind::kOutsideRange, {lk("ns", 7, "10.0.0.255"), "ns/s1"}}}});
  cs.push_back({"blocks of fewer than 5 addresses use them all",
                {na("ns", "a", 7, "10.0.0.0"), na("ns", "b", 7, "10.0.0.3"),
                 na("ns", "c", 7, "10.0.0.8")},
                {iplock("ns", 7, "10.0.0.0", "a"), iplock("ns", 7, "10.0.0.3", "b"),
                 iplock("ns", 7, "10.0.0.8", "c", "s3")},
                {subnet("ns", "s1", 7, "10.0.0.0/30"), subnet("ns", "s3", 7, "10.0.0.8/32")},
                {}});
  cs.push_back({"/29: base+2 .. last-1",
                {na("ns", "a", 7, "10.0.0.2"), na("ns", "b", 7, "10.0.0.6"),
                 na("ns", "c", 7, "10.0.0.7")},
                {iplock("ns", 7, "10.0.0.2", "a"), iplock("ns", 7, "10.0.0.6", "b"),
                 iplock("ns", 7, "10.0.0.7", "c")},
                {subnet("ns", "s1", 7, "10.0.0.0/29")},
                {{FindingKind::kOutsideRange, {lk("ns", 7, "10.0.0.7"), "ns/s1"}}}});
  cs.push_back({"findings come ordered by kind, then by key",
                {na("ns", "z", 7, "10.0.0.9"), na("ns", "a", 7, "10.0.0.1")},
                {iplock("ns", 7, "10.0.0.1", "a"), iplock("ns", 7, "10.0.0.3", "gone")},
                {s1},
                {{FindingKind::kAddressWithoutLock, {"ns/z"}},
                 {FindingKind::kOrphanLock, {lk("ns", 7, "10.0.0.3")}},
                 {FindingKind::kOutsideRange, {lk("ns", 7, "10.0.0.1"), "ns/s1"}}}});
  return cs;
}

TEST(IpamAnalyze, Table) {
  for (const auto& c : cases()) {
    SCOPED_TRACE(c.name);
    auto rep = analyze(c.nas, c.locks, c.subnets);
    EXPECT_EQ(summarize(rep), c.want) << messages(rep);
    EXPECT_EQ(rep.attachments, c.nas.size());
    EXPECT_EQ(rep.locks, c.locks.size());
    EXPECT_EQ(rep.subnets, c.subnets.size());
    EXPECT_EQ(rep.clean(), c.want.empty());
    // Every finding is one line naming its objects.
    for (const auto& f : rep.findings) {
      EXPECT_EQ(f.message.find('\n'), std::string::npos);
      for (const auto& o : f.objects)
        if (o.kind != "Subnet") {
          EXPECT_NE(f.message.find(o.key()), std::string::npos) << f.message;
        }
    }
    // The input order does not matter.
    auto nas = c.nas;
    auto locks = c.locks;
    std::reverse(nas.begin(), nas.end());
    std::reverse(locks.begin(), locks.end());
    EXPECT_EQ(summarize(analyze(nas, locks, c.subnets)), c.want);
  }
}

TEST(IpamAnalyze, MessagesAndSummary) {
  auto s1 = subnet("ns", "s1", 7, "10.0.0.0/24");
  auto rep = analyze({na("ns", "a", 7, "10.0.0.5"), na("ns", "b", 7, "10.0.0.5"), na("ns", "c")},
                     {iplock("ns", 7, "10.0.0.5", "a"), iplock("ns", 7, "10.0.0.1", "gone"),
                      iplock("ns", 8, "10.0.1.1", "gone", "s1", "uid-x")},
                     {s1});
  EXPECT_EQ(rep.addressed, 2u);
  ASSERT_EQ(rep.count(FindingKind::kDuplicateAddress), 1u);
  EXPECT_EQ(rep.findings[0].message, "duplicate address 10.0.0.5 on VNI 7: ns/a, ns/b");
  EXPECT_EQ(rep.findings[1].message,
            "attachment ns/b has address 10.0.0.5 on VNI 7 but IPLock ns/v1-7-10-0-0-5 is held by "
            "NetworkAttachment ns/a (uid uid-ns-a)");
  EXPECT_EQ(rep.findings[2].message,
            "orphan IPLock ns/v1-7-10-0-0-1: its owner NetworkAttachment ns/gone (uid uid-ns-gone) "
            "is gone");
  EXPECT_EQ(rep.count(FindingKind::kOrphanLock), 2u);
  EXPECT_EQ(rep.count(FindingKind::kOutsideRange), 1u);
  EXPECT_EQ(rep.count(FindingKind::kVniMismatch), 1u);
  EXPECT_EQ(rep.count(FindingKind::kOutsideSubnet), 1u);
  EXPECT_EQ(format_summary(rep),
            "3 attachments (2 addressed), 3 locks, 1 subnet checked in all namespaces: "
            "1 duplicate address, 1 address locked by another owner, 2 orphan locks, "
            "1 lock with the wrong VNI, 1 lock outside its subnet, 1 lock outside the usable "
            "range (7 findings)");
  rep.resource_version = "42";
  rep.ns = "ns";
  rep.findings.clear();
  EXPECT_EQ(format_summary(rep),
            "3 attachments (2 addressed), 3 locks, 1 subnet checked at resourceVersion 42 in "
            "namespace ns: no findings");
}

TEST(IpamAnalyze, Json) {
  auto rep = analyze({na("ns", "a", 7, "10.0.0.5")}, {}, {subnet("ns", "s1", 7, "10.0.0.0/24")});
  rep.resource_version = "9";
  auto j = report_json(rep);
  EXPECT_EQ(j.at("resourceVersion").as_string(), "9");
  EXPECT_EQ(j.at("attachments").to_number<int>(), 1);
  ASSERT_EQ(j.at("findings").as_array().size(), 1u);
  const auto& f = j.at("findings").as_array()[0].as_object();
  EXPECT_EQ(f.at("kind").as_string(), "addressWithoutLock");
  EXPECT_EQ(f.at("category").to_number<int>(), 2);
  EXPECT_EQ(f.at("objects").as_array()[0].at("name").as_string(), "a");
  EXPECT_EQ(f.at("objects").as_array()[0].at("uid").as_string(), "uid-ns-a");
  EXPECT_EQ(j.at("counts").at("addressWithoutLock").to_number<int>(), 1);
  EXPECT_EQ(j.at("counts").at("orphanLock").to_number<int>(), 0);
  EXPECT_EQ(j.at("counts").as_object().size(), static_cast<size_t>(kFindingKinds));
}

TEST(IpamAnalyze, KindNamesAreDistinct) {
  std::set<std::string_view> names, labels;
  for (int k = 0; k < kFindingKinds; ++k) {
    auto kind = static_cast<FindingKind>(k);
    names.insert(finding_kind_name(kind));
    labels.insert(finding_kind_label(kind, 1));
    labels.insert(finding_kind_label(kind, 2));
    EXPECT_GE(finding_category(kind), 1);
    EXPECT_LE(finding_category(kind), 4);
  }
  EXPECT_EQ(names.size(), static_cast<size_t>(kFindingKinds));
  EXPECT_EQ(labels.size(), 2u * kFindingKinds);
}

// ---- against a real API server -------------------------------------------------------

class IpamCheckServerTest : public client::testing::ApiServerTest {
 protected:
  void SetUp() override {
    ApiServerTest::SetUp();
    c_ = client();
  }

  api::Subnet make_subnet(const std::string& ns, const std::string& name, uint32_t vni,
                          const std::string& cidr) {
    auto s = subnet(ns, name, vni, cidr);
    s.metadata.uid.clear();
    auto r = c_->create(s);
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
    return r.value_or(s);
  }
  // Created, then addressed through the status subresource when vni != 0.
  api::NetworkAttachment make_na(const std::string& ns, const std::string& name, uint32_t vni = 0,
                                 const std::string& addr = "") {
    auto a = na(ns, name);
    a.metadata.uid.clear();
    auto r = c_->create(a);
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
    if (!r) return a;
    if (vni == 0) return *r;
    r->status.address_vni = vni;
    r->status.ipv4 = addr;
    auto u = c_->update_status(*r);
    EXPECT_TRUE(u.has_value()) << u.error().to_string();
    EXPECT_EQ(u->status.ipv4, addr);
    return u.value_or(*r);
  }
  // A lock controlled by `holder` (if it has a name), plus the extra owner references.
  api::IPLock make_lock(const std::string& ns, uint32_t vni, const std::string& addr,
                        const api::NetworkAttachment* holder, const std::string& subnet_name = "s1",
                        std::vector<api::OwnerReference> extra = {}) {
    auto l = iplock(ns, vni, addr, "", subnet_name);
    l.metadata.uid.clear();
    if (holder)
      l.metadata.owner_references.push_back(owner(holder->metadata.name, holder->metadata.uid));
    for (auto& o : extra) l.metadata.owner_references.push_back(o);
    auto r = c_->create(l);
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
    return r.value_or(l);
  }
  // The garbage collector never collects on account of a kind KOS does not serve: a lock
  // that also names such an owner outlives its attachment, as an orphan left by a crashed
  // controller or a missed GC event would.
  static api::OwnerReference keeper() { return {"example.com/v1", "Keeper", "k", "uid-keeper", {}, {}}; }
  // A lock whose controller is an attachment that is gone (`name` with a UID that never
  // existed), kept from the garbage collector by keeper().
  api::IPLock make_orphan(const std::string& ns, uint32_t vni, const std::string& addr,
                          const std::string& name = "gone") {
    auto l = iplock(ns, vni, addr, name, "s1", "uid-never-existed-" + name);
    l.metadata.uid.clear();
    l.metadata.owner_references.push_back(keeper());
    auto r = c_->create(l);
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
    return r.value_or(l);
  }
  bool exists(const std::string& ns, const std::string& name, const std::string& uid = "") {
    auto r = c_->get<api::IPLock>(ns, name);
    if (!r) {
      EXPECT_EQ(r.error().code, Errc::kNotFound) << r.error().to_string();
      return false;
    }
    return uid.empty() || r->metadata.uid == uid;
  }
  IpamReport check(const std::string& ns = "", int64_t limit = 500) {
    auto r = check_ipam(*c_, ns, limit);
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
    return r.value_or(IpamReport{});
  }

  std::shared_ptr<client::RestClient> c_;
};

TEST_F(IpamCheckServerTest, CleanSetupReportsNothing) {
  make_subnet("ns", "s1", 7, "10.0.0.0/24");
  make_subnet("ns", "s2", 8, "10.0.0.0/29");
  for (int i = 0; i < 5; ++i) {
    auto addr = "10.0.0." + std::to_string(2 + i);
    auto a = make_na("ns", "a" + std::to_string(i), 7, addr);
    make_lock("ns", 7, addr, &a);
  }
  auto b = make_na("ns", "b", 8, "10.0.0.6");
  make_lock("ns", 8, "10.0.0.6", &b, "s2");
  make_na("ns", "unaddressed");
  make_na("other", "x");

  for (int64_t limit : {500, 1, 2}) {
    SCOPED_TRACE(limit);
    auto rep = check("", limit);
    EXPECT_TRUE(rep.clean()) << messages(rep);
    EXPECT_EQ(rep.attachments, 8u);
    EXPECT_EQ(rep.addressed, 6u);
    EXPECT_EQ(rep.locks, 6u);
    EXPECT_EQ(rep.subnets, 2u);
    EXPECT_FALSE(rep.resource_version.empty());
  }
  auto rep = check("other");
  EXPECT_TRUE(rep.clean());
  EXPECT_EQ(rep.attachments, 1u);
  EXPECT_EQ(rep.locks, 0u);
}

TEST_F(IpamCheckServerTest, DetectsEveryKindTheServerAllows) {
  make_subnet("ns", "s1", 7, "10.0.0.0/24");
  // 1: two attachments on one address; the lock is x's.
  auto x = make_na("ns", "x", 7, "10.0.0.5");
  auto y = make_na("ns", "y", 7, "10.0.0.5");
  make_lock("ns", 7, "10.0.0.5", &x);
  // 2: an address without lock.
  make_na("ns", "z", 7, "10.0.0.6");
  // 3: an orphan, an earlier incarnation's lock, a lock without controller.
  make_orphan("ns", 7, "10.0.0.7");
  auto old = make_na("ns", "re", 7, "10.0.0.8");
  make_lock("ns", 7, "10.0.0.8", &old, "s1", {keeper()});
  ASSERT_TRUE(c_->remove<api::NetworkAttachment>("ns", "re").has_value());
  auto now = make_na("ns", "re", 7, "10.0.0.8");
  make_lock("ns", 7, "10.0.0.9", nullptr);
  // 4: wrong VNI, outside the CIDR, outside the usable range, no such subnet.
  auto v = make_na("ns", "v", 8, "10.0.0.10");
  make_lock("ns", 8, "10.0.0.10", &v);
  auto o = make_na("ns", "o", 7, "10.0.1.1");
  make_lock("ns", 7, "10.0.1.1", &o);
  auto g = make_na("ns", "g", 7, "10.0.0.1");
  make_lock("ns", 7, "10.0.0.1", &g);
  auto m = make_na("ns", "m", 7, "10.0.0.11");
  make_lock("ns", 7, "10.0.0.11", &m, "missing");

  auto rep = check();
  std::vector<Expected> want = {
      {FindingKind::kDuplicateAddress, {"ns/x", "ns/y"}},
      {FindingKind::kAddressWithoutLock, {"ns/z"}},
      {FindingKind::kLockHeldByOther, {"ns/re", lk("ns", 7, "10.0.0.8")}},
      {FindingKind::kLockHeldByOther, {"ns/y", lk("ns", 7, "10.0.0.5")}},
      {FindingKind::kOrphanLock, {lk("ns", 7, "10.0.0.7")}},
      {FindingKind::kOrphanLock, {lk("ns", 7, "10.0.0.8")}},
      {FindingKind::kUnownedLock, {lk("ns", 7, "10.0.0.9")}},
      {FindingKind::kSubnetMissing, {lk("ns", 7, "10.0.0.11")}},
      {FindingKind::kVniMismatch, {lk("ns", 8, "10.0.0.10"), "ns/s1"}},
      {FindingKind::kOutsideSubnet, {lk("ns", 7, "10.0.1.1"), "ns/s1"}},
      {FindingKind::kOutsideRange, {lk("ns", 7, "10.0.0.1"), "ns/s1"}},
  };
  EXPECT_EQ(summarize(rep), want) << messages(rep);
  // The earlier incarnation's orphan names the current UID.
  for (const auto& f : rep.findings)
    if (f.kind == FindingKind::kOrphanLock && f.objects[0].name == "v1-7-10-0-0-8") {
      EXPECT_NE(f.message.find("is now uid " + now.metadata.uid), std::string::npos) << f.message;
    }
  // Paging at the snapshot's revision reads the same.
  EXPECT_EQ(summarize(check("", 1)), want);
  EXPECT_EQ(summarize(check("", 3)), want);
}

TEST_F(IpamCheckServerTest, NamespaceScopesTheCheck) {
  make_subnet("ns1", "s1", 7, "10.0.0.0/24");
  make_subnet("ns2", "s1", 9, "10.0.0.0/24");
  make_orphan("ns1", 7, "10.0.0.7");
  make_na("ns2", "z", 9, "10.0.0.6");
  EXPECT_EQ(summarize(check("ns1")),
            (std::vector<Expected>{{FindingKind::kOrphanLock, {lk("ns1", 7, "10.0.0.7")}}}));
  EXPECT_EQ(summarize(check("ns2")),
            (std::vector<Expected>{{FindingKind::kAddressWithoutLock, {"ns2/z"}}}));
  EXPECT_EQ(check("").findings.size(), 2u);
  EXPECT_TRUE(check("ns3").clean());
}

TEST_F(IpamCheckServerTest, RepairDeletesOnlyOrphans) {
  make_subnet("ns", "s1", 7, "10.0.0.0/24");
  auto a = make_na("ns", "a", 7, "10.0.0.2");
  auto held = make_lock("ns", 7, "10.0.0.2", &a, "s1", {keeper()});
  auto o1 = make_orphan("ns", 7, "10.0.0.3", "gone1");
  auto o2 = make_orphan("ns", 7, "10.0.0.4", "gone2");
  auto unowned = make_lock("ns", 7, "10.0.0.5", nullptr);
  auto outside = make_lock("ns", 7, "10.0.0.1", &a);  // a's second lock: out of range

  auto rep = check();
  ASSERT_EQ(rep.count(FindingKind::kOrphanLock), 2u) << messages(rep);
  std::vector<RepairAction> actions;
  auto n = repair_orphan_locks(*c_, rep, &actions);
  ASSERT_TRUE(n.has_value()) << n.error().to_string();
  EXPECT_EQ(*n, 2);
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_EQ(actions[0].outcome, RepairAction::Outcome::kDeleted);
  EXPECT_EQ(actions[0].lock.name, o1.metadata.name);
  EXPECT_EQ(actions[0].message, "deleted orphan IPLock " + o1.metadata.namespace_ + "/" +
                                    o1.metadata.name + " (uid " + o1.metadata.uid + ")");
  EXPECT_EQ(actions[1].lock.name, o2.metadata.name);
  EXPECT_FALSE(exists("ns", o1.metadata.name));
  EXPECT_FALSE(exists("ns", o2.metadata.name));
  EXPECT_TRUE(exists("ns", held.metadata.name, held.metadata.uid));
  EXPECT_TRUE(exists("ns", unowned.metadata.name, unowned.metadata.uid));
  EXPECT_TRUE(exists("ns", outside.metadata.name, outside.metadata.uid));

  auto after = check();
  EXPECT_EQ(summarize(after),
            (std::vector<Expected>{{FindingKind::kUnownedLock, {"ns/v1-7-10-0-0-5"}},
                                   {FindingKind::kOutsideRange, {"ns/v1-7-10-0-0-1", "ns/s1"}}}))
      << messages(after);
  // Nothing left to repair.
  auto again = repair_orphan_locks(*c_, after);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, 0);
}

TEST_F(IpamCheckServerTest, RepairRespectsPreconditions) {
  make_subnet("ns", "s1", 7, "10.0.0.0/24");
  auto recreated = make_orphan("ns", 7, "10.0.0.3", "gone1");
  auto changed = make_orphan("ns", 7, "10.0.0.4", "gone2");
  auto vanished = make_orphan("ns", 7, "10.0.0.5", "gone3");
  auto plain = make_orphan("ns", 7, "10.0.0.6", "gone4");
  auto rep = check();
  ASSERT_EQ(rep.count(FindingKind::kOrphanLock), 4u) << messages(rep);

  // After the check: one lock re-created under its name (a new UID), one changed, one
  // deleted by someone else.
  ASSERT_TRUE(c_->remove<api::IPLock>("ns", recreated.metadata.name).has_value());
  auto again = make_orphan("ns", 7, "10.0.0.3", "gone1");
  ASSERT_NE(again.metadata.uid, recreated.metadata.uid);
  changed.metadata.labels["touched"] = "yes";
  ASSERT_TRUE(c_->update(changed).has_value());
  ASSERT_TRUE(c_->remove<api::IPLock>("ns", vanished.metadata.name).has_value());

  std::vector<RepairAction> actions;
  auto n = repair_orphan_locks(*c_, rep, &actions);
  ASSERT_TRUE(n.has_value()) << n.error().to_string();
  EXPECT_EQ(*n, 1);
  ASSERT_EQ(actions.size(), 4u);
  EXPECT_EQ(actions[0].outcome, RepairAction::Outcome::kChanged) << actions[0].message;
  EXPECT_EQ(actions[1].outcome, RepairAction::Outcome::kChanged) << actions[1].message;
  EXPECT_EQ(actions[2].outcome, RepairAction::Outcome::kAlreadyGone) << actions[2].message;
  EXPECT_EQ(actions[3].outcome, RepairAction::Outcome::kDeleted) << actions[3].message;
  EXPECT_TRUE(exists("ns", again.metadata.name, again.metadata.uid));
  EXPECT_TRUE(exists("ns", changed.metadata.name, changed.metadata.uid));
  EXPECT_FALSE(exists("ns", plain.metadata.name));

  // A fresh check sees the survivors as orphans, and repairs them.
  auto rep2 = check();
  EXPECT_EQ(rep2.count(FindingKind::kOrphanLock), 2u) << messages(rep2);
  auto n2 = repair_orphan_locks(*c_, rep2);
  ASSERT_TRUE(n2.has_value());
  EXPECT_EQ(*n2, 2);
  EXPECT_TRUE(check().clean());
}

TEST_F(IpamCheckServerTest, UnreachableServerIsAnError) {
  auto cfg = config();
  server_->stop();
  server_.reset();
  client::ClientOptions o;
  o.timeout = std::chrono::milliseconds(500);
  client::RestClient dead(*client::Transport::create(cfg), o);
  auto r = check_ipam(dead, "");
  ASSERT_FALSE(r.has_value());
  EXPECT_TRUE(r.error().code == Errc::kUnavailable || r.error().code == Errc::kTimeout)
      << r.error().to_string();
  EXPECT_EQ(r.error().message.rfind("listing iplocks: ", 0), 0u) << r.error().message;
}

}  // namespace
}  // namespace kos::controllers::ipam
