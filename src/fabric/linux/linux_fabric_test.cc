// The linux fabric against the real kernel, inside network namespaces the tests create
// (kos-t-<pid>-<n>) and remove in destructors, so nothing outside them is touched and
// nothing is left behind even when an assertion fails. The fabric programs the kernel over
// netlink; the tests inspect it with `ip -j` / `bridge -j` and set up namespaces and
// addresses with `ip`. Needs root and `ip netns`; skips otherwise.
#include "test/support/skip.h"
#include "fabric/linux/linux_fabric.h"
#include "fabric/linux/router.h"

#include <gtest/gtest.h>

#include "fabric/testing.h"
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <filesystem>
#include <boost/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "api/cidr.h"
#include "test/support/netns.h"
#include "test/support/process.h"

namespace kos::fabric {
namespace {

namespace json = boost::json;
using kos::testing::run;

using testing::ip;
using testing::local;
using testing::remote;

std::vector<LocalIfc> sorted(std::vector<LocalIfc> v) {
  std::ranges::sort(v, [](const LocalIfc& a, const LocalIfc& b) { return std::tie(a.vni, a.mac) < std::tie(b.vni, b.mac); });
  return v;
}
std::vector<RemoteIfc> sorted(std::vector<RemoteIfc> v) {
  std::ranges::sort(v, [](const RemoteIfc& a, const RemoteIfc& b) {
    return std::tie(a.vni, a.guest_ip, a.mac) < std::tie(b.vni, b.guest_ip, b.mac);
  });
  return v;
}

std::string join(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

// Runs a command that must succeed (the test fails, and goes on, if it does not); stdout.
std::string sh(const std::vector<std::string>& argv) {
  auto r = run(argv);
  if (r.exit_code != 0) ADD_FAILURE() << join(argv) << " exited " << r.exit_code << ": " << r.err;
  return r.out;
}

using Entry = std::pair<std::string, std::string>;

bool succeeds(const std::vector<std::string>& argv) { return run(argv).exit_code == 0; }

// A network namespace for the life of the object (test/support/netns.h).
struct Netns : kos::testing::TestNetns {
  Netns() : TestNetns("kos-t") {}
};

// `ip -d -j link show` in a namespace: ifname -> object.
std::map<std::string, json::object> links(const std::string& ns) {
  std::map<std::string, json::object> out;
  auto v = json::parse(sh({"ip", "-d", "-j", "-n", ns, "link", "show"}));
  for (const auto& l : v.as_array()) out[std::string(l.at("ifname").as_string())] = l.as_object();
  return out;
}

std::set<std::string> link_names(const std::string& ns) {
  std::set<std::string> out;
  for (const auto& [name, _] : links(ns)) out.insert(name);
  return out;
}

bool has_flag(const json::object& link, std::string_view flag) {
  for (const auto& f : link.at("flags").as_array())
    if (f.as_string() == flag) return true;
  return false;
}

std::string str(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

// The VXLAN device's own FDB entries with a destination: MAC -> (dst, state).
std::map<std::string, std::pair<std::string, std::string>> fdb(const std::string& ns, const std::string& dev) {
  std::map<std::string, std::pair<std::string, std::string>> out;
  auto v = json::parse(sh({"bridge", "-j", "-n", ns, "fdb", "show", "dev", dev}));
  for (const auto& e : v.as_array()) {
    const auto& o = e.as_object();
    if (!o.contains("dst")) continue;
    out[str(o, "mac")] = {str(o, "dst"), str(o, "state")};
  }
  return out;
}

// Neighbour entries of a device: IP -> (lladdr, first state).
std::map<std::string, std::pair<std::string, std::string>> neigh(const std::string& ns, const std::string& dev) {
  std::map<std::string, std::pair<std::string, std::string>> out;
  auto v = json::parse(sh({"ip", "-j", "-n", ns, "neigh", "show", "dev", dev}));
  for (const auto& e : v.as_array()) {
    const auto& o = e.as_object();
    std::string state;
    if (const auto* s = o.if_contains("state"); s && s->is_array() && !s->as_array().empty())
      state = std::string(s->as_array()[0].as_string());
    out[str(o, "dst")] = {str(o, "lladdr"), state};
  }
  return out;
}

class LinuxFabricTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0)
      KOS_SKIP_UNLESS_CI() << "needs root: creates network namespaces, VXLAN devices, bridges and veth pairs";
    if (auto r = run({"ip", "netns", "list"}); r.exit_code != 0)
      KOS_SKIP_UNLESS_CI() << "`ip netns` is unavailable: " << r.err;
    node_ = std::make_unique<Netns>();
    if (!node_->ok()) KOS_SKIP_UNLESS_CI() << "cannot create a network namespace: " << node_->error();
  }

  const std::string& ns() const { return node_->name(); }

  std::unique_ptr<Fabric> open(const std::string& netns, std::string_view host_ip = "10.99.0.1",
                               const std::string& underlay = {}) {
    LinuxFabricOptions o;
    o.host_ip = ip(host_ip);
    o.netns = netns;
    o.underlay_dev = underlay;
    auto f = LinuxFabric::open(o);
    EXPECT_TRUE(f) << f.error().message;
    return f ? std::move(*f) : nullptr;
  }

  static LinuxFabricStats stats(const std::unique_ptr<Fabric>& f) {
    return dynamic_cast<const LinuxFabric&>(*f).stats();
  }

  std::unique_ptr<Netns> node_;
};

// ---------------------------------------------------------------------------------------
// Without root

TEST(LinuxFabricNames, DeviceNamesFitAndParse) {
  EXPECT_EQ(vxlan_device_name(100), "kosvx100");
  EXPECT_EQ(bridge_device_name(100), "kosbr100");
  EXPECT_LE(vxlan_device_name(api::kMaxVni).size(), 15u);
  EXPECT_LE(bridge_device_name(api::kMaxVni).size(), 15u);
  const auto mac = api::guest_mac(ip("10.1.0.2"), api::kMaxVni);
  const std::string host = host_end_name(mac);
  EXPECT_EQ(host.size(), 14u);
  EXPECT_EQ(host, "kh" + api::interface_name(mac).substr(3));
  EXPECT_NE(host, api::interface_name(mac));
  EXPECT_EQ(parse_host_end_name(host), mac);
  EXPECT_FALSE(parse_host_end_name(api::interface_name(mac)));
  EXPECT_FALSE(parse_host_end_name("khFE0102030405"));  // upper case is not ours
  EXPECT_FALSE(parse_host_end_name("kh0102030405"));
  EXPECT_FALSE(parse_host_end_name("kh0102030405zz"));
  EXPECT_EQ(parse_vxlan_device_name("kosvx7"), 7u);
  EXPECT_EQ(parse_bridge_device_name("kosbr2097151"), 2097151u);
  EXPECT_FALSE(parse_vxlan_device_name("kosvx07"));
  EXPECT_FALSE(parse_vxlan_device_name("kosvx0"));
  EXPECT_FALSE(parse_vxlan_device_name("kosvx2097152"));
  EXPECT_FALSE(parse_vxlan_device_name("kosbr7"));
  EXPECT_FALSE(parse_bridge_device_name("kosbr"));
}

TEST(LinuxFabricOpen, RejectsBadOptionsAndMissingNamespaces) {
  LinuxFabricOptions o;
  o.host_ip = ip("10.99.0.1");
  o.netns = "kos-t-missing-" + std::to_string(getpid());
  auto f = LinuxFabric::open(o);
  ASSERT_FALSE(f);
  EXPECT_EQ(f.error().code, Errc::kNotFound) << f.error().message;
  o.netns = "a/b";
  EXPECT_EQ(LinuxFabric::open(o).error().code, Errc::kInvalid);
  o.netns.clear();
  o.host_ip = 0;
  EXPECT_EQ(LinuxFabric::open(o).error().code, Errc::kInvalid);
  o.host_ip = ip("10.99.0.1");
  o.mtu = 20;
  EXPECT_EQ(LinuxFabric::open(o).error().code, Errc::kInvalid);
}

// ---------------------------------------------------------------------------------------
// In namespaces

TEST_F(LinuxFabricTest, CreateAndDeleteLocal) {
  auto f = open(ns());
  ASSERT_TRUE(f);
  EXPECT_EQ(f->name(), "linux");
  const LocalIfc l = local(100, "10.1.0.2");
  const std::string host = host_end_name(l.mac);
  ASSERT_TRUE(f->create_local(l));

  auto ls = links(ns());
  ASSERT_TRUE(ls.contains("kosvx100"));
  ASSERT_TRUE(ls.contains("kosbr100"));
  ASSERT_TRUE(ls.contains(host));
  ASSERT_TRUE(ls.contains(l.name));

  const auto& vx = ls["kosvx100"];
  const auto& info = vx.at("linkinfo").as_object();
  EXPECT_EQ(info.at("info_kind").as_string(), "vxlan");
  const auto& data = info.at("info_data").as_object();
  EXPECT_EQ(data.at("id").to_number<int64_t>(), 100);
  EXPECT_EQ(str(data, "local"), "10.99.0.1");
  EXPECT_EQ(data.at("port").to_number<int64_t>(), 4789);
  EXPECT_FALSE(data.at("learning").as_bool());
  EXPECT_TRUE(data.at("proxy").as_bool());
  EXPECT_FALSE(data.contains("group"));  // no default destination: no flooding
  EXPECT_FALSE(data.contains("remote"));
  EXPECT_EQ(str(vx, "master"), "kosbr100");
  EXPECT_EQ(vx.at("mtu").to_number<int64_t>(), 1450);
  EXPECT_TRUE(has_flag(vx, "UP"));

  const auto& br = ls["kosbr100"];
  EXPECT_EQ(br.at("linkinfo").at("info_kind").as_string(), "bridge");
  EXPECT_EQ(br.at("mtu").to_number<int64_t>(), 1450);
  EXPECT_TRUE(has_flag(br, "UP"));

  const auto& h = ls[host];
  EXPECT_EQ(h.at("linkinfo").at("info_kind").as_string(), "veth");
  EXPECT_EQ(str(h, "master"), "kosbr100");
  EXPECT_EQ(h.at("mtu").to_number<int64_t>(), 1450);
  EXPECT_TRUE(has_flag(h, "UP"));
  EXPECT_EQ(str(h, "link"), l.name);  // its peer
  EXPECT_EQ(str(h, "ifalias"), "kos vni=100 ip=10.1.0.2 name=" + l.name);

  const auto& g = ls[l.name];
  EXPECT_EQ(g.at("linkinfo").at("info_kind").as_string(), "veth");
  EXPECT_EQ(str(g, "address"), api::format_mac(l.mac));
  EXPECT_EQ(g.at("mtu").to_number<int64_t>(), 1450);
  EXPECT_FALSE(g.contains("master"));

  // Nothing happened in this (the host's) namespace.
  auto here = sh({"ip", "-j", "link", "show"});
  EXPECT_EQ(here.find("kosvx100"), std::string::npos);
  EXPECT_EQ(here.find(host), std::string::npos);

  auto listed = f->list_local();
  ASSERT_TRUE(listed);
  EXPECT_EQ(*listed, std::vector<LocalIfc>{l});

  ASSERT_TRUE(f->delete_local(l));
  EXPECT_EQ(link_names(ns()), std::set<std::string>{"lo"});
  auto s = stats(f);
  EXPECT_EQ(s.vnis_created, 1u);
  EXPECT_EQ(s.vnis_deleted, 1u);
}

TEST_F(LinuxFabricTest, CreateAndDeleteRemote) {
  auto f = open(ns());
  ASSERT_TRUE(f);
  const RemoteIfc r1 = remote(100, "10.1.0.3", "10.99.0.2");
  const RemoteIfc r2 = remote(100, "10.1.0.4", "10.99.0.3");
  ASSERT_TRUE(f->create_remote(r1));
  ASSERT_TRUE(f->create_remote(r2));
  // A remote alone brings its VNI's devices (the VXLAN device holds the entries).
  auto ls = links(ns());
  ASSERT_TRUE(ls.contains("kosvx100"));
  ASSERT_TRUE(ls.contains("kosbr100"));

  auto fd = fdb(ns(), "kosvx100");
  auto nb = neigh(ns(), "kosvx100");
  EXPECT_EQ(fd.size(), 2u);
  EXPECT_EQ(fd[api::format_mac(r1.mac)], (Entry{"10.99.0.2", "permanent"}));
  EXPECT_EQ(fd[api::format_mac(r2.mac)], (Entry{"10.99.0.3", "permanent"}));
  EXPECT_EQ(nb.size(), 2u);
  EXPECT_EQ(nb["10.1.0.3"], (Entry{api::format_mac(r1.mac), "PERMANENT"}));
  EXPECT_EQ(nb["10.1.0.4"], (Entry{api::format_mac(r2.mac), "PERMANENT"}));

  auto listed = f->list_remote();
  ASSERT_TRUE(listed);
  EXPECT_EQ(*listed, (std::vector<RemoteIfc>{r1, r2}));

  ASSERT_TRUE(f->delete_remote(r1));
  fd = fdb(ns(), "kosvx100");
  nb = neigh(ns(), "kosvx100");
  EXPECT_FALSE(fd.contains(api::format_mac(r1.mac)));
  EXPECT_FALSE(nb.contains("10.1.0.3"));
  EXPECT_TRUE(fd.contains(api::format_mac(r2.mac)));
  EXPECT_TRUE(nb.contains("10.1.0.4"));

  ASSERT_TRUE(f->delete_remote(r2));
  EXPECT_EQ(link_names(ns()), std::set<std::string>{"lo"});
}

TEST_F(LinuxFabricTest, VniDevicesGoWithTheirLastAttachment) {
  auto f = open(ns());
  ASSERT_TRUE(f);
  const LocalIfc a = local(7, "10.7.0.2");
  const RemoteIfc b = remote(7, "10.7.0.3", "10.99.0.2");
  const LocalIfc c = local(8, "10.8.0.2");
  ASSERT_TRUE(f->create_local(a));
  ASSERT_TRUE(f->create_remote(b));
  ASSERT_TRUE(f->create_local(c));

  ASSERT_TRUE(f->delete_local(a));  // VNI 7 still has a remote
  auto names = link_names(ns());
  EXPECT_TRUE(names.contains("kosvx7"));
  EXPECT_TRUE(names.contains("kosbr7"));
  EXPECT_FALSE(names.contains(host_end_name(a.mac)));
  EXPECT_FALSE(names.contains(a.name));
  EXPECT_TRUE(names.contains("kosvx8"));

  ASSERT_TRUE(f->delete_remote(b));  // VNI 7's last
  names = link_names(ns());
  EXPECT_FALSE(names.contains("kosvx7"));
  EXPECT_FALSE(names.contains("kosbr7"));
  EXPECT_TRUE(names.contains("kosvx8"));
  EXPECT_TRUE(names.contains("kosbr8"));

  ASSERT_TRUE(f->delete_local(c));
  EXPECT_EQ(link_names(ns()), std::set<std::string>{"lo"});
  auto s = stats(f);
  EXPECT_EQ(s.vnis_created, 2u);
  EXPECT_EQ(s.vnis_deleted, 2u);
}

TEST_F(LinuxFabricTest, IdempotentAndUnchangedEntriesAreNotRewritten) {
  auto f = open(ns());
  ASSERT_TRUE(f);
  const LocalIfc l = local(100, "10.1.0.2");
  ASSERT_TRUE(f->create_local(l));
  auto s0 = stats(f);
  ASSERT_TRUE(f->create_local(l));
  auto s1 = stats(f);
  EXPECT_EQ(s1.messages, s0.messages);
  EXPECT_EQ(s1.unchanged, s0.unchanged + 1);

  const RemoteIfc r = remote(100, "10.1.0.3", "10.99.0.2");
  ASSERT_TRUE(f->create_remote(r));
  s0 = stats(f);
  EXPECT_EQ(s0.messages, s1.messages + 2);  // one FDB and one neighbour entry
  ASSERT_TRUE(f->create_remote(r));
  EXPECT_EQ(stats(f).messages, s0.messages);

  // The guest moved to another node: only the FDB entry changes.
  RemoteIfc moved = r;
  moved.host_ip = ip("10.99.0.9");
  ASSERT_TRUE(f->create_remote(moved));
  EXPECT_EQ(stats(f).messages, s0.messages + 1);
  EXPECT_EQ(fdb(ns(), "kosvx100")[api::format_mac(r.mac)].first, "10.99.0.9");

  // A stale delete (the old host) leaves the newer mapping alone.
  s0 = stats(f);
  ASSERT_TRUE(f->delete_remote(r));
  EXPECT_EQ(stats(f).messages, s0.messages);
  EXPECT_EQ(fdb(ns(), "kosvx100")[api::format_mac(r.mac)].first, "10.99.0.9");
  EXPECT_TRUE(neigh(ns(), "kosvx100").contains("10.1.0.3"));

  ASSERT_TRUE(f->delete_remote(moved));
  ASSERT_TRUE(f->delete_remote(moved));
  EXPECT_TRUE(fdb(ns(), "kosvx100").empty());
  EXPECT_TRUE(neigh(ns(), "kosvx100").empty());

  // The same MAC under another guest IP only rewrites the alias.
  LocalIfc l2 = l;
  l2.guest_ip = ip("10.1.0.99");
  s0 = stats(f);
  ASSERT_TRUE(f->create_local(l2));
  EXPECT_EQ(stats(f).messages, s0.messages + 1);
  EXPECT_EQ(str(links(ns())[host_end_name(l.mac)], "ifalias"), "kos vni=100 ip=10.1.0.99 name=" + l.name);

  ASSERT_TRUE(f->delete_local(l2));
  ASSERT_TRUE(f->delete_local(l2));
  ASSERT_TRUE(f->delete_local(local(555, "10.5.0.2")));  // never existed: no devices made
  ASSERT_TRUE(f->delete_remote(remote(556, "10.5.0.3", "10.99.0.2")));
  EXPECT_EQ(link_names(ns()), std::set<std::string>{"lo"});

  // Bad arguments change nothing.
  LocalIfc bad = local(100, "10.1.0.2");
  bad.name = "much-too-long-name";
  EXPECT_EQ(f->create_local(bad).error().code, Errc::kInvalid);
  RemoteIfc bad_r = remote(0, "10.1.0.3", "10.99.0.2");
  EXPECT_EQ(f->create_remote(bad_r).error().code, Errc::kInvalid);
  EXPECT_EQ(link_names(ns()), std::set<std::string>{"lo"});
}

TEST_F(LinuxFabricTest, ListsRoundTripAcrossInstances) {
  const std::vector<LocalIfc> locals = sorted({local(100, "10.1.0.2"), local(200, "10.2.0.2"), local(100, "10.1.0.5")});
  const std::vector<RemoteIfc> remotes = sorted({remote(100, "10.1.0.3", "10.99.0.2"), remote(100, "10.1.0.4", "10.99.0.3"),
                                                 remote(200, "10.2.0.3", "10.99.0.2"),
                                                 remote(300, "10.3.0.3", "10.99.0.4")});  // a remote-only VNI
  {
    auto f = open(ns());
    ASSERT_TRUE(f);
    for (const auto& l : locals) ASSERT_TRUE(f->create_local(l));
    for (const auto& r : remotes) ASSERT_TRUE(f->create_remote(r));
    EXPECT_EQ(f->list_local().value(), locals);
    EXPECT_EQ(f->list_remote().value(), remotes);
  }
  // A new instance (the agent restarted) reads it all back...
  auto f = open(ns());
  ASSERT_TRUE(f);
  EXPECT_EQ(f->list_local().value(), locals);
  EXPECT_EQ(f->list_remote().value(), remotes);
  // ...and re-asserting it sends nothing.
  auto s0 = stats(f);
  for (const auto& l : locals) ASSERT_TRUE(f->create_local(l));
  for (const auto& r : remotes) ASSERT_TRUE(f->create_remote(r));
  auto s1 = stats(f);
  EXPECT_EQ(s1.messages, s0.messages);
  EXPECT_EQ(s1.unchanged, s0.unchanged + locals.size() + remotes.size());
  EXPECT_EQ(s1.vnis_created, 0u);

  for (const auto& l : locals) ASSERT_TRUE(f->delete_local(l));
  for (const auto& r : remotes) ASSERT_TRUE(f->delete_remote(r));
  EXPECT_TRUE(f->list_local().value().empty());
  EXPECT_TRUE(f->list_remote().value().empty());
  EXPECT_EQ(link_names(ns()), std::set<std::string>{"lo"});
}

TEST_F(LinuxFabricTest, MovedGuestEndIsStillListed) {
  Netns guest;
  ASSERT_TRUE(guest.ok()) << guest.error();
  const LocalIfc l = local(100, "10.1.0.2");
  {
    auto f = open(ns());
    ASSERT_TRUE(f);
    ASSERT_TRUE(f->create_local(l));
  }
  // What a postCreateExec does: move the guest end into the guest's namespace.
  sh({"ip", "-n", ns(), "link", "set", l.name, "netns", guest.name()});
  EXPECT_FALSE(link_names(ns()).contains(l.name));
  auto g = links(guest.name());
  ASSERT_TRUE(g.contains(l.name));
  EXPECT_EQ(str(g[l.name], "address"), api::format_mac(l.mac));

  auto f = open(ns());
  ASSERT_TRUE(f);
  EXPECT_EQ(f->list_local().value(), std::vector<LocalIfc>{l});
  auto s0 = stats(f);
  ASSERT_TRUE(f->create_local(l));  // as it is: nothing to do
  EXPECT_EQ(stats(f).messages, s0.messages);

  // Deleting the host end takes the moved guest end with it.
  ASSERT_TRUE(f->delete_local(l));
  EXPECT_FALSE(link_names(guest.name()).contains(l.name));
  EXPECT_EQ(link_names(ns()), std::set<std::string>{"lo"});
}

// What the CNI plugin asks of the fabric: the guest end moves into the workload's
// namespace under the runtime's name, configured; again is harmless; a name taken there by
// another interface is a conflict; delete_local takes it out again.
TEST_F(LinuxFabricTest, PlugMovesTheGuestEndIntoAWorkloadNamespaceConfigured) {
  Netns workload;
  ASSERT_TRUE(workload.ok()) << workload.error();
  const std::string path = "/var/run/netns/" + workload.name();
  auto f = open(ns());
  ASSERT_TRUE(f);
  const LocalIfc l = local(100, "10.1.0.2");
  Plug p{path, "eth0", ip("10.1.0.2"), 24};
  EXPECT_EQ(f->plug(l, p).error().code, Errc::kNotFound);  // not created yet
  ASSERT_TRUE(f->create_local(l));
  sh({"ip", "-n", workload.name(), "link", "set", "lo", "down"});
  auto r = f->plug(l, p);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->ifname, "eth0");
  EXPECT_EQ(r->mac, l.mac);
  EXPECT_TRUE(r->up);
  EXPECT_EQ(r->ipv4, (std::vector<std::pair<uint32_t, int>>{{ip("10.1.0.2"), 24}}));
  EXPECT_FALSE(link_names(ns()).contains(l.name));
  auto g = links(workload.name());
  ASSERT_TRUE(g.contains("eth0"));
  EXPECT_EQ(str(g["eth0"], "address"), api::format_mac(l.mac));
  EXPECT_TRUE(has_flag(g["eth0"], "UP"));
  EXPECT_TRUE(has_flag(g["lo"], "UP"));
  EXPECT_NE(sh({"ip", "-n", workload.name(), "-4", "addr", "show", "dev", "eth0"}).find("10.1.0.2/24"), std::string::npos);

  auto again = f->plug(l, p);  // idempotent
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(*again, *r);
  auto seen = f->inspect(path, "eth0");
  ASSERT_TRUE(seen) << seen.error().message;
  EXPECT_EQ(*seen, *r);
  EXPECT_EQ(f->inspect(path, "eth9").error().code, Errc::kNotFound);
  EXPECT_EQ(f->inspect("/var/run/netns/kos-t-none-such", "eth0").error().code, Errc::kNotFound);

  // Another attachment cannot take a name the workload already uses.
  const LocalIfc l2 = local(100, "10.1.0.3");
  ASSERT_TRUE(f->create_local(l2));
  auto clash = f->plug(l2, Plug{path, "eth0", ip("10.1.0.3"), 24});
  EXPECT_EQ(clash.error().code, Errc::kConflict) << clash.error().message;
  EXPECT_TRUE(link_names(ns()).contains(l2.name)) << "a refused plug leaves the guest end where it was";
  EXPECT_EQ(f->plug(l2, Plug{"/var/run/netns/kos-t-none-such", "eth1", ip("10.1.0.3"), 24}).error().code,
            Errc::kNotFound);

  ASSERT_TRUE(f->delete_local(l));
  EXPECT_FALSE(link_names(workload.name()).contains("eth0"));
  EXPECT_EQ(f->list_local().value(), std::vector<LocalIfc>{l2});
}

// A CNI attachment's guest end is made directly in the workload's namespace (no move); if
// that namespace cannot be opened, in the fabric's.
TEST_F(LinuxFabricTest, AGuestEndIsMadeInTheWorkloadNamespaceItNames) {
  Netns workload;
  ASSERT_TRUE(workload.ok()) << workload.error();
  auto f = open(ns());
  ASSERT_TRUE(f);
  LocalIfc l = local(100, "10.1.0.2");
  l.guest_netns = "/var/run/netns/" + workload.name();
  l.guest_ifname = "net1";
  ASSERT_TRUE(f->create_local(l));
  EXPECT_FALSE(link_names(ns()).contains(l.name));
  auto g = links(workload.name());
  ASSERT_TRUE(g.contains("net1"));
  EXPECT_EQ(str(g["net1"], "address"), api::format_mac(l.mac));
  EXPECT_EQ(f->list_local().value(), std::vector<LocalIfc>{l}) << "listed by its host end";
  auto p = f->plug(l, Plug{l.guest_netns, "net1", ip("10.1.0.2"), 24});
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_TRUE(p->up);

  LocalIfc lost = local(100, "10.1.0.3");
  lost.guest_netns = "/var/run/netns/kos-t-none-such";
  lost.guest_ifname = "net1";
  ASSERT_TRUE(f->create_local(lost));
  EXPECT_TRUE(link_names(ns()).contains(lost.name));
  ASSERT_TRUE(f->delete_local(l));
  EXPECT_FALSE(link_names(workload.name()).contains("net1"));
}

// With a linger, a VNI's devices outlive its last attachment: one that comes back meanwhile
// finds them in place; then they go.
TEST_F(LinuxFabricTest, WithALingerVniDevicesOutliveTheirLastAttachmentForAWhile) {
  LinuxFabricOptions o;
  o.host_ip = ip("10.99.0.1");
  o.netns = ns();
  o.vni_linger = std::chrono::milliseconds(300);
  auto opened = LinuxFabric::open(o);
  ASSERT_TRUE(opened) << opened.error().message;
  auto& f = *opened;
  const LocalIfc l = local(100, "10.1.0.2");
  ASSERT_TRUE(f->create_local(l));
  ASSERT_TRUE(f->delete_local(l));
  EXPECT_TRUE(link_names(ns()).contains(vxlan_device_name(100))) << "kept for the linger";
  EXPECT_TRUE(link_names(ns()).contains(bridge_device_name(100)));
  const auto made = stats(f).vnis_created;
  ASSERT_TRUE(f->create_local(l));  // back within the linger: nothing to make
  EXPECT_EQ(stats(f).vnis_created, made);
  ASSERT_TRUE(f->delete_local(l));
  const auto t0 = std::chrono::steady_clock::now();
  while ((link_names(ns()).size() > 1 || stats(f).vnis_deleted == 0) &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling the kernel
  EXPECT_EQ(link_names(ns()), std::set<std::string>{"lo"}) << "gone after the linger";
  EXPECT_EQ(stats(f).vnis_deleted, 1u);
}

TEST_F(LinuxFabricTest, AnotherHostIpRecreatesTheVxlanDevices) {
  const LocalIfc l = local(100, "10.1.0.2");
  const RemoteIfc r = remote(100, "10.1.0.3", "10.99.0.2");
  {
    auto f = open(ns(), "10.99.0.1");
    ASSERT_TRUE(f);
    ASSERT_TRUE(f->create_local(l));
    ASSERT_TRUE(f->create_remote(r));
  }
  auto f = open(ns(), "10.99.0.7");  // the node's address changed across a restart
  ASSERT_TRUE(f);
  auto ls = links(ns());
  ASSERT_TRUE(ls.contains("kosvx100"));
  EXPECT_EQ(str(ls["kosvx100"].at("linkinfo").at("info_data").as_object(), "local"), "10.99.0.7");
  EXPECT_EQ(str(ls["kosvx100"], "master"), "kosbr100");
  EXPECT_EQ(str(ls[host_end_name(l.mac)], "master"), "kosbr100");
  EXPECT_EQ(f->list_local().value(), std::vector<LocalIfc>{l});
  EXPECT_TRUE(f->list_remote().value().empty());  // went with the old device: to program again
  ASSERT_TRUE(f->create_remote(r));
  EXPECT_EQ(f->list_remote().value(), std::vector<RemoteIfc>{r});
  ASSERT_TRUE(f->delete_remote(r));
  ASSERT_TRUE(f->delete_local(l));
  EXPECT_EQ(link_names(ns()), std::set<std::string>{"lo"});
}

TEST_F(LinuxFabricTest, ConcurrentCallsAreBatched) {
  auto f = open(ns());
  ASSERT_TRUE(f);
  constexpr int kThreads = 8, kEach = 100, kVnis = 4;
  auto nth = [](int t, int i) {
    const uint32_t n = static_cast<uint32_t>(t * kEach + i);
    const uint32_t vni = 1000 + n % kVnis;
    const uint32_t g = ip("10.64.0.0") + n;
    return RemoteIfc{vni, api::guest_mac(g, vni), g, ip("10.99.1.0") + n % 200 + 1};
  };
  auto in_threads = [&](auto fn) {
    std::vector<std::thread> ts;
    for (int t = 0; t < kThreads; ++t)
      ts.emplace_back([&, t] {
        for (int i = 0; i < kEach; ++i) fn(nth(t, i));
      });
    for (auto& t : ts) t.join();
  };
  in_threads([&](const RemoteIfc& r) { EXPECT_TRUE(f->create_remote(r)); });
  auto listed = f->list_remote();
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->size(), static_cast<size_t>(kThreads * kEach));
  std::vector<RemoteIfc> want;
  for (int t = 0; t < kThreads; ++t)
    for (int i = 0; i < kEach; ++i) want.push_back(nth(t, i));
  EXPECT_EQ(*listed, sorted(want));
  auto s = stats(f);
  EXPECT_EQ(s.calls, static_cast<uint64_t>(kThreads * kEach));
  // Calls waiting together were planned and sent together: fewer batches than calls, and
  // fewer sendmsg calls than one per call (a call's two entries always share one, so
  // sends == messages / 2 without batching across calls).
  EXPECT_LT(s.batches, s.calls);
  EXPECT_LT(s.sends * 2, s.messages);
  EXPECT_EQ(s.vnis_created, static_cast<uint64_t>(kVnis));
  std::printf("  %llu calls in %llu batches, %llu messages in %llu sendmsg calls\n",
              static_cast<unsigned long long>(s.calls), static_cast<unsigned long long>(s.batches),
              static_cast<unsigned long long>(s.messages), static_cast<unsigned long long>(s.sends));

  in_threads([&](const RemoteIfc& r) { EXPECT_TRUE(f->delete_remote(r)); });
  EXPECT_TRUE(f->list_remote().value().empty());
  EXPECT_EQ(link_names(ns()), std::set<std::string>{"lo"});
}

// apply(): a batch of 1,000 creates (and then their deletes) is planned as one batch and
// sent in a few sendmsg calls (at most 256 messages each), with one result per change; a
// bad change fails alone.
TEST_F(LinuxFabricTest, ApplySendsABatchInFewSendmsgCalls) {
  auto f = open(ns());
  ASSERT_TRUE(f);
  constexpr uint32_t kCount = 1000, kVnis = 4;
  std::vector<Change> creates, deletes;
  std::vector<RemoteIfc> want;
  for (uint32_t n = 0; n < kCount; ++n) {
    const uint32_t vni = 2000 + n % kVnis;
    const uint32_t g = ip("10.65.0.0") + n;
    RemoteIfc r{vni, api::guest_mac(g, vni), g, ip("10.99.2.0") + n % 200 + 1};
    want.push_back(r);
    creates.push_back(Change::create(r));
    deletes.push_back(Change::remove(r));
  }
  RemoteIfc bad = want[0];
  bad.host_ip = 0;
  creates.insert(creates.begin() + 500, Change::create(bad));
  auto before = stats(f);
  auto rs = f->apply(creates);
  ASSERT_EQ(rs.size(), creates.size());
  for (size_t i = 0; i < rs.size(); ++i) {
    if (i == 500) {
      ASSERT_FALSE(rs[i]);
      EXPECT_EQ(rs[i].error().code, Errc::kInvalid);
    } else {
      EXPECT_TRUE(rs[i]) << i << ": " << rs[i].error().message;
    }
  }
  auto s = stats(f);
  EXPECT_EQ(s.batches - before.batches, 1u);
  EXPECT_EQ(s.calls - before.calls, creates.size());
  // 2,000 entry messages (plus the VNIs' devices) at up to 256 per sendmsg.
  EXPECT_LE(s.sends - before.sends, 2 * kCount / 256 + 1 + 4 * kVnis);
  EXPECT_EQ(f->list_remote().value(), sorted(want));
  std::printf("  apply: %zu changes in %llu batch, %llu messages in %llu sendmsg calls\n", creates.size(),
              static_cast<unsigned long long>(s.batches - before.batches),
              static_cast<unsigned long long>(s.messages - before.messages),
              static_cast<unsigned long long>(s.sends - before.sends));

  for (const auto& r : f->apply(deletes)) EXPECT_TRUE(r);
  EXPECT_TRUE(f->list_remote().value().empty());
  EXPECT_EQ(link_names(ns()), std::set<std::string>{"lo"});
}

TEST_F(LinuxFabricTest, AForeignDeviceWithTheGuestNameIsAnErrorAndLeavesNothing) {
  auto f = open(ns());
  ASSERT_TRUE(f);
  const LocalIfc l = local(100, "10.1.0.2");
  sh({"ip", "-n", ns(), "link", "add", l.name, "type", "bridge"});  // (no dummy module everywhere)
  auto r = f->create_local(l);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kAlreadyExists) << r.error().message;
  EXPECT_NE(r.error().message.find(l.name), std::string::npos) << r.error().message;
  EXPECT_EQ(stats(f).retries, 1u);
  // The VNI's devices, made for it, went again; the foreign device is untouched.
  EXPECT_EQ(link_names(ns()), (std::set<std::string>{"lo", l.name}));
  EXPECT_TRUE(f->list_local().value().empty());
  sh({"ip", "-n", ns(), "link", "del", l.name});
  ASSERT_TRUE(f->create_local(l));
  ASSERT_TRUE(f->delete_local(l));
  EXPECT_EQ(link_names(ns()), std::set<std::string>{"lo"});
}

TEST_F(LinuxFabricTest, DevicesDeletedBehindItsBackAreMadeAgain) {
  auto f = open(ns());
  ASSERT_TRUE(f);
  const LocalIfc l = local(100, "10.1.0.2");
  const RemoteIfc r1 = remote(100, "10.1.0.3", "10.99.0.2");
  const RemoteIfc r2 = remote(100, "10.1.0.4", "10.99.0.2");
  ASSERT_TRUE(f->create_local(l));
  ASSERT_TRUE(f->create_remote(r1));
  sh({"ip", "-n", ns(), "link", "del", "kosvx100"});  // the cache still has it
  ASSERT_TRUE(f->create_remote(r2));                  // fails, re-reads, re-creates, retries
  EXPECT_EQ(stats(f).retries, 1u);
  auto ls = links(ns());
  ASSERT_TRUE(ls.contains("kosvx100"));
  EXPECT_EQ(str(ls["kosvx100"], "master"), "kosbr100");
  EXPECT_EQ(f->list_remote().value(), std::vector<RemoteIfc>{r2});  // r1 went with the device
  ASSERT_TRUE(f->create_remote(r1));
  EXPECT_EQ(fdb(ns(), "kosvx100").size(), 2u);
  EXPECT_EQ(neigh(ns(), "kosvx100").size(), 2u);
  ASSERT_TRUE(f->delete_local(l));
  ASSERT_TRUE(f->delete_remote(r1));
  ASSERT_TRUE(f->delete_remote(r2));
  EXPECT_EQ(link_names(ns()), std::set<std::string>{"lo"});
}

// Two nodes joined by an underlay veth pair (10.254.0.0/24, inside the namespaces only),
// one fabric per node, guests in their own namespaces. VNI 100: A (node a) and B (node b).
// VNI 200: C (node a) with A's address and D (node b); node a also maps 10.1.0.3 on VNI
// 200 to node b, where no VNI-200 guest has it. Traffic flows within each VNI and never
// across: C cannot reach B although B's address is mapped and routed.
TEST_F(LinuxFabricTest, GuestsOnOneVniReachEachOtherAndNoOneElse) {
  Netns node_b, ga, gb, gc, gd;
  for (const Netns* n : {&node_b, &ga, &gb, &gc, &gd}) ASSERT_TRUE(n->ok()) << n->error();
  const std::string& a = ns();
  const std::string& b = node_b.name();
  sh({"ip", "-n", a, "link", "add", "ul0", "type", "veth", "peer", "name", "ul1", "netns", b});
  sh({"ip", "-n", a, "addr", "add", "10.254.0.1/24", "dev", "ul0"});
  sh({"ip", "-n", b, "addr", "add", "10.254.0.2/24", "dev", "ul1"});
  sh({"ip", "-n", a, "link", "set", "ul0", "up"});
  sh({"ip", "-n", b, "link", "set", "ul1", "up"});

  auto fa = open(a, "10.254.0.1", "ul0");  // node a names its underlay device; node b does not
  auto fb = open(b, "10.254.0.2");
  ASSERT_TRUE(fa && fb);
  const LocalIfc A = local(100, "10.1.0.2"), B = local(100, "10.1.0.3");
  const LocalIfc C = local(200, "10.1.0.2"), D = local(200, "10.1.0.4");
  ASSERT_TRUE(fa->create_local(A));
  ASSERT_TRUE(fa->create_local(C));
  ASSERT_TRUE(fb->create_local(B));
  ASSERT_TRUE(fb->create_local(D));
  ASSERT_TRUE(fa->create_remote(remote(100, "10.1.0.3", "10.254.0.2")));
  ASSERT_TRUE(fa->create_remote(remote(200, "10.1.0.4", "10.254.0.2")));
  ASSERT_TRUE(fa->create_remote(remote(200, "10.1.0.3", "10.254.0.2")));  // nobody there on VNI 200
  ASSERT_TRUE(fb->create_remote(remote(100, "10.1.0.2", "10.254.0.1")));
  ASSERT_TRUE(fb->create_remote(remote(200, "10.1.0.2", "10.254.0.1")));

  struct Guest {
    const LocalIfc& ifc;
    const std::string& node;
    const Netns& ns;
  };
  for (const Guest& g : {Guest{A, a, ga}, Guest{B, b, gb}, Guest{C, a, gc}, Guest{D, b, gd}}) {
    sh({"ip", "-n", g.node, "link", "set", g.ifc.name, "netns", g.ns.name()});
    sh({"ip", "-n", g.ns.name(), "addr", "add", api::format_ipv4(g.ifc.guest_ip) + "/24", "dev", g.ifc.name});
    sh({"ip", "-n", g.ns.name(), "link", "set", g.ifc.name, "up"});
  }
  auto ping = [](const Netns& from, const std::string& to, const std::string& count) {
    return succeeds({"ip", "netns", "exec", from.name(), "ping", "-n", "-q", "-c", count, "-W", "1", to});
  };
  EXPECT_TRUE(ping(ga, "10.1.0.3", "2")) << "A -> B on VNI 100";
  EXPECT_TRUE(ping(gb, "10.1.0.2", "2")) << "B -> A on VNI 100";
  EXPECT_TRUE(ping(gc, "10.1.0.4", "2")) << "C -> D on VNI 200 (C has A's address)";
  EXPECT_TRUE(ping(gd, "10.1.0.2", "2")) << "D -> C on VNI 200 (reaches C, not A)";
  EXPECT_FALSE(ping(gc, "10.1.0.3", "1")) << "C (VNI 200) must not reach B (VNI 100)";
  EXPECT_FALSE(ping(gd, "10.1.0.3", "1")) << "D (VNI 200) must not reach B (VNI 100)";

  // The same holds for a fabric that adopted node a's state.
  fa.reset();
  fa = open(a, "10.254.0.1", "ul0");
  ASSERT_TRUE(fa);
  EXPECT_EQ(stats(fa).vnis_created, 0u);  // its devices were adopted as they are
  EXPECT_EQ(fa->list_local().value(), sorted({A, C}));
  EXPECT_EQ(fa->list_remote().value().size(), 3u);
  EXPECT_TRUE(ping(ga, "10.1.0.3", "1"));
}


Routing routing(uint32_t vpc, std::string_view gateway, int prefix_len) {
  return Routing{vpc, ip(gateway), prefix_len};
}
template <class T>
T routed(T ifc, const Routing& r) {
  ifc.routing = r;
  return ifc;
}

bool netns_exists(const std::string& name) { return std::filesystem::exists("/var/run/netns/" + name); }

// Issue 18's datapath on three nodes joined by an underlay bridge: VPC A (routing VNI 1000)
// with subnets A1 10.1.0.0/24 (VNI 1001) and A2 10.2.0.0/24 (VNI 1002); VPC B (2000) with
// B1 10.1.0.0/24 (VNI 2001), reusing A1's range. Guests in A route to each other through
// their own node's gateway (one hop); B's guest with the same address as A1's reaches
// nothing of A, and nothing of A reaches it; deleting the interfaces removes every router
// namespace and gateway port they made.
TEST_F(LinuxFabricTest, VpcSubnetsRouteOnTheirNodeAndVpcsStayApart) {
  Netns n1, n2, ul, g0, g2, gb;
  for (const Netns* n : {&n1, &n2, &ul, &g0, &g2, &gb}) ASSERT_TRUE(n->ok()) << n->error();
  const std::vector<std::string> nodes{ns(), n1.name(), n2.name()};
  sh({"ip", "-n", ul.name(), "link", "add", "ulbr", "type", "bridge"});
  sh({"ip", "-n", ul.name(), "link", "set", "ulbr", "up"});
  for (size_t i = 0; i < nodes.size(); ++i) {
    const std::string port = "p" + std::to_string(i);
    sh({"ip", "-n", ul.name(), "link", "add", port, "type", "veth", "peer", "name", "ul", "netns", nodes[i]});
    sh({"ip", "-n", ul.name(), "link", "set", port, "master", "ulbr", "up"});
    sh({"ip", "-n", nodes[i], "addr", "add", "10.254.0." + std::to_string(i + 1) + "/24", "dev", "ul"});
    sh({"ip", "-n", nodes[i], "link", "set", "ul", "up"});
  }
  auto f0 = open(nodes[0], "10.254.0.1");
  auto f2 = open(nodes[2], "10.254.0.3");
  ASSERT_TRUE(f0 && f2);
  const Routing a1 = routing(1000, "10.1.0.1", 24), a2 = routing(1000, "10.2.0.1", 24),
                b1 = routing(2000, "10.1.0.1", 24);
  const LocalIfc G0 = routed(local(1001, "10.1.0.2"), a1), G2 = routed(local(1002, "10.2.0.2"), a2),
                 GB = routed(local(2001, "10.1.0.2"), b1);
  ASSERT_TRUE(f0->create_local(G0));
  ASSERT_TRUE(f0->create_local(GB));
  ASSERT_TRUE(f0->create_remote(routed(remote(1002, "10.2.0.2", "10.254.0.3"), a2)));
  ASSERT_TRUE(f2->create_local(G2));
  ASSERT_TRUE(f2->create_remote(routed(remote(1001, "10.1.0.2", "10.254.0.1"), a1)));
  for (auto [g, n, gw] : {std::tuple{&G0, &nodes[0], &g0}, std::tuple{&G2, &nodes[2], &g2}, std::tuple{&GB, &nodes[0], &gb}}) {
    sh({"ip", "-n", *n, "link", "set", g->name, "netns", gw->name()});
    sh({"ip", "-n", gw->name(), "addr", "add", api::format_ipv4(g->guest_ip) + "/24", "dev", g->name});
    sh({"ip", "-n", gw->name(), "link", "set", g->name, "up"});
    sh({"ip", "-n", gw->name(), "route", "add", "default", "via", api::format_ipv4(g->routing.gateway)});
  }
  // Node 0 has a router for each VPC, node 2 for A only; each gateway sits in its VPC's.
  const std::string r0a = router_netns_name(nodes[0], 1000), r0b = router_netns_name(nodes[0], 2000),
                    r2a = router_netns_name(nodes[2], 1000);
  EXPECT_TRUE(netns_exists(r0a) && netns_exists(r0b) && netns_exists(r2a));
  EXPECT_FALSE(netns_exists(router_netns_name(nodes[2], 2000)));
  EXPECT_EQ(link_names(r0a), (std::set<std::string>{"lo", "gw1001", "gw1002"}));
  EXPECT_EQ(link_names(r0b), (std::set<std::string>{"lo", "gw2001"}));
  EXPECT_EQ(sh({"ip", "-n", r0a, "-4", "-o", "addr", "show", "dev", "gw1001"}).find("10.1.0.1/24") != std::string::npos,
            true);
  // Nothing in a router but its VPC's connected routes: no default, no host, no underlay.
  const std::string routes = sh({"ip", "-n", r0a, "route", "show"});
  EXPECT_NE(routes.find("10.1.0.0/24 dev gw1001"), std::string::npos) << routes;
  EXPECT_NE(routes.find("10.2.0.0/24 dev gw1002"), std::string::npos) << routes;
  EXPECT_EQ(routes.find("default"), std::string::npos) << routes;
  EXPECT_EQ(routes.find("10.254."), std::string::npos) << routes;

  auto ping = [](const Netns& from, const std::string& to, const std::string& count) {
    return succeeds({"ip", "netns", "exec", from.name(), "ping", "-n", "-q", "-c", count, "-W", "1", to});
  };
  EXPECT_TRUE(ping(g0, "10.2.0.2", "2")) << "A1 on node 0 -> A2 on node 2, routed";
  EXPECT_TRUE(ping(g2, "10.1.0.2", "2")) << "A2 on node 2 -> A1 on node 0, routed";
  EXPECT_TRUE(ping(g0, "10.1.0.1", "1")) << "A1's gateway answers on node 0";
  // One routed hop: the first TTL expires at the gateway of the guest's own node.
  auto hop1 = run({"ip", "netns", "exec", g0.name(), "ping", "-n", "-c", "1", "-W", "1", "-t", "1", "10.2.0.2"});
  EXPECT_NE(hop1.out.find("From 10.1.0.1"), std::string::npos) << hop1.out << hop1.err;
  EXPECT_TRUE(succeeds({"ip", "netns", "exec", g0.name(), "ping", "-n", "-q", "-c", "1", "-W", "1", "-t", "2", "10.2.0.2"}))
      << "two hops reach the guest";
  // B's guest has A1's guest's address; it reaches nothing of A, and A does not reach it.
  // B's guest counts the echo requests it receives (Icmp InEchos of its namespace).
  auto echoes_received = [&] {
    const std::string snmp = sh({"ip", "netns", "exec", gb.name(), "cat", "/proc/net/snmp"});
    // Two "Icmp:" lines: the field names, then the values.
    const auto names_at = snmp.find("Icmp:"), values_at = snmp.find("Icmp:", names_at + 1);
    std::istringstream names(snmp.substr(names_at, snmp.find('\n', names_at) - names_at)),
        values(snmp.substr(values_at, snmp.find('\n', values_at) - values_at));
    std::string n, v;
    while (names >> n && values >> v)
      if (n == "InEchos") return std::stol(v);
    return -1L;
  };
  EXPECT_FALSE(ping(gb, "10.2.0.2", "1")) << "B1 must not reach A2";
  const long before = echoes_received();
  EXPECT_TRUE(ping(g2, "10.1.0.2", "3")) << "A2 reaches A1's 10.1.0.2...";
  EXPECT_EQ(echoes_received(), before) << "...and never B1's 10.1.0.2";
  EXPECT_GE(before, 0);

  // The gateway port and routers are adopted by a new fabric as they are.
  f0.reset();
  f0 = open(nodes[0], "10.254.0.1");
  ASSERT_TRUE(f0);
  EXPECT_EQ(stats(f0).routers_created, 0u);
  EXPECT_EQ(f0->list_local().value(), sorted({G0, GB}));
  EXPECT_TRUE(ping(g0, "10.2.0.2", "1"));

  // Deleting the interfaces removes every gateway port and router namespace.
  ASSERT_TRUE(f0->delete_local(G0));
  ASSERT_TRUE(f0->delete_remote(routed(remote(1002, "10.2.0.2", "10.254.0.3"), a2)));
  EXPECT_FALSE(netns_exists(r0a));
  EXPECT_TRUE(netns_exists(r0b));
  ASSERT_TRUE(f0->delete_local(GB));
  ASSERT_TRUE(f2->delete_local(G2));
  ASSERT_TRUE(f2->delete_remote(routed(remote(1001, "10.1.0.2", "10.254.0.1"), a1)));
  EXPECT_FALSE(netns_exists(r0b));
  EXPECT_FALSE(netns_exists(r2a));
  for (const auto& n : {nodes[0], nodes[2]})
    for (const auto& name : link_names(n)) EXPECT_FALSE(name.starts_with("kos")) << name << " left in " << n;
}

}  // namespace
}  // namespace kos::fabric
