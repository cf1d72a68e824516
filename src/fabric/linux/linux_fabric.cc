// The linux fabric over rtnetlink. See linux_fabric.h for the devices it makes.
//
// Library: libmnl rather than libnl-route-3. libnl's objects (rtnl_link_vxlan, rtnl_neigh)
// each send one request and wait for its acknowledgement, keep their own caches (which we
// would duplicate or fight: the fabric's cache is of *its* devices and entries, keyed the
// way the fabric is called), and their thread-safety rules are per-socket and per-cache.
// With libmnl the fabric builds each request as a value (a byte vector), concatenates the
// requests of many concurrent calls into one sendmsg, and matches the acknowledgements by
// sequence number: that batching is the point of the design, and it is natural here and
// awkward in libnl. The cost is building VXLAN/veth attributes by hand, which is a few lines
// per message below; the kernel's extended ACK messages make mistakes easy to diagnose.
//
// Structure: names; the VXLAN, bridge and neighbour messages (pure functions returning
// bytes; the shared ones, the NetlinkSocket and plugging are in netlink.h); the Impl
// (worker thread, cache, planning).
#include "fabric/linux/linux_fabric.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <system_error>
#include <thread>
#include <tuple>

#include <spdlog/spdlog.h>

#include "api/cidr.h"
#include "common/metrics.h"
#include "fabric/linux/netlink.h"
#include "fabric/linux/policy.h"
#include "fabric/linux/router.h"
#include "fabric/worker_queue.h"

namespace kos::fabric {

// ---------------------------------------------------------------------------------------
// Names

namespace {

constexpr std::string_view kVxlanPrefix = "kosvx";
constexpr std::string_view kBridgePrefix = "kosbr";
constexpr std::string_view kHostEndPrefix = "kh";
constexpr std::string_view kAliasPrefix = "kos ";

std::optional<uint32_t> parse_vni_suffix(std::string_view name, std::string_view prefix) {
  if (!name.starts_with(prefix)) return std::nullopt;
  auto v = api::parse_decimal(name.substr(prefix.size()), api::kMaxVni);
  if (!v || *v == 0) return std::nullopt;
  return v;
}

}  // namespace

std::string vxlan_device_name(uint32_t vni) { return std::string(kVxlanPrefix) + std::to_string(vni); }
std::string bridge_device_name(uint32_t vni) { return std::string(kBridgePrefix) + std::to_string(vni); }

std::string host_end_name(const api::MacAddress& mac) {
  std::string hex = api::format_mac(mac);
  std::erase(hex, ':');
  return std::string(kHostEndPrefix) + hex;
}

std::optional<uint32_t> parse_vxlan_device_name(std::string_view name) {
  return parse_vni_suffix(name, kVxlanPrefix);
}
std::optional<uint32_t> parse_bridge_device_name(std::string_view name) {
  return parse_vni_suffix(name, kBridgePrefix);
}

std::optional<api::MacAddress> parse_host_end_name(std::string_view name) {
  if (name.size() != kHostEndPrefix.size() + 12 || !name.starts_with(kHostEndPrefix)) return std::nullopt;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;  // upper case is not ours: host_end_name() writes lower case
  };
  api::MacAddress mac{};
  for (size_t i = 0; i < 6; ++i) {
    int hi = hex(name[kHostEndPrefix.size() + 2 * i]), lo = hex(name[kHostEndPrefix.size() + 2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    mac[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return mac;
}

namespace {

// The host end's alias records what the kernel cannot: the guest IP and the guest end's
// name (the guest end may have been moved out of sight).
struct Alias {
  uint32_t vni = 0;
  uint32_t guest_ip = 0;
  std::string name;
};

std::optional<Alias> parse_alias(std::string_view s) {
  if (!s.starts_with(kAliasPrefix)) return std::nullopt;
  s.remove_prefix(kAliasPrefix.size());
  Alias a;
  bool vni = false, ip = false;
  while (!s.empty()) {
    size_t sp = s.find(' ');
    std::string_view tok = s.substr(0, sp);
    s = sp == std::string_view::npos ? std::string_view{} : s.substr(sp + 1);
    if (tok.starts_with("vni=")) {
      auto v = api::parse_decimal(tok.substr(4), api::kMaxVni);
      if (!v) return std::nullopt;
      a.vni = *v;
      vni = true;
    } else if (tok.starts_with("ip=")) {
      auto v = api::parse_ipv4(tok.substr(3));
      if (!v) return std::nullopt;
      a.guest_ip = *v;
      ip = true;
    } else if (tok.starts_with("name=")) {
      a.name = std::string(tok.substr(5));
    }
  }
  if (!vni || !ip || a.name.empty()) return std::nullopt;
  return a;
}

// Fallbacks when a host end has no alias (made by hand): the guest MAC encodes the whole
// VNI and, for the private ranges, the whole guest IP (api/names.h guest_mac()).
uint32_t vni_of_mac(const api::MacAddress& m) {
  return (static_cast<uint32_t>(m[0] & 0xF8) << 13) | (static_cast<uint32_t>(m[4]) << 8) | m[5];
}
uint32_t guest_ip_of_mac(const api::MacAddress& m) {
  uint32_t first = (m[0] & 0x04) ? 10 : m[1] == 168 ? 192 : (m[1] & 0xF0) == 0x10 ? 172 : 0;
  if (first == 0) return 0;
  return first << 24 | static_cast<uint32_t>(m[1]) << 16 | static_cast<uint32_t>(m[2]) << 8 | m[3];
}

}  // namespace

std::string host_end_alias(const LocalIfc& l) {
  return std::string(kAliasPrefix) + "vni=" + std::to_string(l.vni) + " ip=" + api::format_ipv4(l.guest_ip) +
         " name=" + l.name;
}

std::optional<LocalIfc> parse_host_end(std::string_view name, std::string_view alias) {
  auto mac = parse_host_end_name(name);
  auto a = parse_alias(alias);
  if (!mac || !a) return std::nullopt;
  return LocalIfc{a->vni, *mac, a->guest_ip, a->name, {}, {}};
}

namespace {

// ---------------------------------------------------------------------------------------
// Messages (the linux fabric's own; the shared ones are in netlink.h)

using namespace nl;  // NOLINT: this file is the netlink layer's main user

Request msg_new_bridge(const std::string& name, uint32_t mtu) {
  MsgBuilder m(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  link_header(m, true);
  m.str(IFLA_IFNAME, name);
  m.u32(IFLA_MTU, mtu);
  auto* li = m.nest(IFLA_LINKINFO);
  m.str(IFLA_INFO_KIND, "bridge");
  m.end(li);
  return m.done("create bridge " + name);
}

struct VxlanConfig {
  uint32_t host_ip = 0;
  uint16_t port = 0;
  uint32_t mtu = 0;
  int underlay = 0;
};

Request msg_new_vxlan(const std::string& name, uint32_t vni, const VxlanConfig& c, int master) {
  MsgBuilder m(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  link_header(m, true);
  m.str(IFLA_IFNAME, name);
  m.u32(IFLA_MTU, c.mtu);
  if (master) m.u32(IFLA_MASTER, static_cast<uint32_t>(master));
  auto* li = m.nest(IFLA_LINKINFO);
  m.str(IFLA_INFO_KIND, "vxlan");
  auto* data = m.nest(IFLA_INFO_DATA);
  m.u32(IFLA_VXLAN_ID, vni);
  m.u32(IFLA_VXLAN_LOCAL, htonl(c.host_ip));
  m.u16(IFLA_VXLAN_PORT, htons(c.port));
  m.u8(IFLA_VXLAN_LEARNING, 0);
  m.u8(IFLA_VXLAN_PROXY, 1);
  if (c.underlay) m.u32(IFLA_VXLAN_LINK, static_cast<uint32_t>(c.underlay));
  m.end(data);
  m.end(li);
  return m.done("create vxlan " + name);
}


Request msg_set_master_up(const std::string& name, int master) {
  MsgBuilder m(RTM_SETLINK, 0);
  link_header(m, true);
  m.str(IFLA_IFNAME, name);
  m.u32(IFLA_MASTER, static_cast<uint32_t>(master));
  return m.done("enslave " + name);
}

Request msg_fdb(bool add, int vxlan, const std::string& vxlan_name, const api::MacAddress& mac, uint32_t host_ip) {
  MsgBuilder m(add ? RTM_NEWNEIGH : RTM_DELNEIGH, add ? NLM_F_CREATE | NLM_F_REPLACE : 0);
  auto* nd = m.header<ndmsg>();
  nd->ndm_family = AF_BRIDGE;
  nd->ndm_ifindex = vxlan;
  nd->ndm_state = NUD_PERMANENT | NUD_NOARP;  // what `bridge fdb add` sends: a static entry
  nd->ndm_flags = NTF_SELF;                   // the VXLAN device's own table, not the bridge's
  m.bytes(NDA_LLADDR, mac.data(), mac.size());
  // A delete names no destination: the whole entry goes, whatever remotes it has.
  if (add) m.u32(NDA_DST, htonl(host_ip));
  const std::string what = add ? "add fdb " + api::format_mac(mac) + " -> " + api::format_ipv4(host_ip)
                               : "delete fdb " + api::format_mac(mac);
  return m.done(what + " on " + vxlan_name, !add);
}

// The anycast gateway MAC on its bridge port, static and sticky: frames from another node's
// gateway (routed there, carrying the same MAC) never move it to the VXLAN port.
Request msg_gateway_fdb(int port, const std::string& port_name, const api::MacAddress& mac) {
  MsgBuilder m(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE);
  auto* nd = m.header<ndmsg>();
  nd->ndm_family = AF_BRIDGE;
  nd->ndm_ifindex = port;
  nd->ndm_state = NUD_NOARP;  // "static"
  nd->ndm_flags = NTF_MASTER | NTF_STICKY;
  m.bytes(NDA_LLADDR, mac.data(), mac.size());
  return m.done("add sticky fdb " + api::format_mac(mac) + " on " + port_name);
}

Request msg_neigh(bool add, int vxlan, const std::string& vxlan_name, uint32_t guest_ip, const api::MacAddress& mac) {
  MsgBuilder m(add ? RTM_NEWNEIGH : RTM_DELNEIGH, add ? NLM_F_CREATE | NLM_F_REPLACE : 0);
  auto* nd = m.header<ndmsg>();
  nd->ndm_family = AF_INET;
  nd->ndm_ifindex = vxlan;
  nd->ndm_state = NUD_PERMANENT;
  m.u32(NDA_DST, htonl(guest_ip));
  if (add) m.bytes(NDA_LLADDR, mac.data(), mac.size());
  const std::string what = add ? "add neighbour " + api::format_ipv4(guest_ip) + " -> " + api::format_mac(mac)
                               : "delete neighbour " + api::format_ipv4(guest_ip);
  return m.done(what + " on " + vxlan_name, !add);
}

// AF_INET: the neighbour table; AF_BRIDGE: every device's FDB (a bare ndmsg dumps all).
std::vector<uint8_t> msg_dump_neigh(uint8_t family) {
  MsgBuilder m(RTM_GETNEIGH, NLM_F_DUMP);
  m.header<ndmsg>()->ndm_family = family;
  return m.done("").bytes;
}

struct Neigh {
  int ifindex = 0;
  uint16_t state = 0;
  uint8_t flags = 0;
  bool has_master = false;
  std::optional<uint32_t> dst;
  std::optional<api::MacAddress> lladdr;
};

std::optional<Neigh> parse_neigh(const nlmsghdr* nlh) {
  if (nlh->nlmsg_type != RTM_NEWNEIGH || mnl_nlmsg_get_payload_len(nlh) < sizeof(ndmsg)) return std::nullopt;
  const auto* nd = static_cast<const ndmsg*>(mnl_nlmsg_get_payload(nlh));
  AttrTable tb = attrs(nlh, sizeof(ndmsg), NDA_MAX);
  Neigh n;
  n.ifindex = nd->ndm_ifindex;
  n.state = nd->ndm_state;
  n.flags = nd->ndm_flags;
  n.has_master = tb[NDA_MASTER] != nullptr;
  n.dst = get_ipv4(tb[NDA_DST]);
  n.lladdr = get_mac(tb[NDA_LLADDR]);
  return n;
}

// ---------------------------------------------------------------------------------------
// Metrics (process-wide) mirroring LinuxFabricStats.

metrics::Counter& process_counter(const std::string& name, const std::string& help) {
  return metrics::Registry::global().counter(name, help).get();
}

struct FabricMetrics {
  metrics::Counter& messages =
      process_counter("kos_fabric_netlink_messages_total", "Netlink requests sent by the linux fabric.");
  metrics::Counter& sends =
      process_counter("kos_fabric_netlink_sends_total", "sendmsg calls carrying netlink requests.");
  metrics::Counter& errors =
      process_counter("kos_fabric_netlink_errors_total", "Netlink requests the kernel refused.");
  metrics::Counter& batches =
      process_counter("kos_fabric_batches_total", "Groups of fabric calls planned and sent together.");
  metrics::Counter& unchanged =
      process_counter("kos_fabric_unchanged_total", "Fabric calls that found the kernel as asked.");
  metrics::Counter& resyncs =
      process_counter("kos_fabric_resyncs_total", "Full reads of the kernel's state by the fabric.");
  metrics::Counter& routers_created = process_counter(
      "kos_fabric_routers_created_total", "Router namespaces of VPCs created by the linux fabric.");
  metrics::Counter& routers_deleted = process_counter(
      "kos_fabric_routers_deleted_total", "Router namespaces of VPCs deleted by the linux fabric.");
  metrics::Counter& gateways_created = process_counter(
      "kos_fabric_gateways_created_total", "Gateway ports (a routed VNI of a VPC on this node) created.");
};

FabricMetrics& fabric_metrics() {
  static FabricMetrics m;
  return m;
}

// ---------------------------------------------------------------------------------------
// Calls, as the worker sees them

// (worker_queue.h)
using Op = FabricOp;
using Kind = FabricOp::Kind;

// What the kernel has, per VNI.
struct LocalState {
  std::string name;  // the guest end
  uint32_t guest_ip = 0;
  int master = 0;  // the host end's bridge
};

struct VniState {
  int bridge = 0;  // ifindex; 0: absent
  int vxlan = 0;
  int vxlan_master = 0;
  bool vxlan_ok = false;  // its settings are this fabric's
  std::map<api::MacAddress, LocalState> locals;  // by guest MAC (= host end name)
  std::map<api::MacAddress, uint32_t> fdb;       // guest MAC -> host IP
  std::map<uint32_t, api::MacAddress> neigh;     // guest IP -> guest MAC
  int gw_port = 0;  // ifindex of kosgw<V> (router.h); 0: not routed
  Routing routing;  // as gw_port's alias says
  bool unused() const { return locals.empty() && fdb.empty() && neigh.empty(); }
};

// The requests of one batch and, for each, the call it serves.
struct Plan {
  std::vector<Request> reqs;
  std::vector<Op*> owners;
  std::vector<int> fds;  // namespaces the requests name (IFLA_NET_NS_FD), open until sent
  // Calls that delete a local or make a new one (replacing any with its MAC): a policy its
  // host end had goes with it (fabric.h), once the kernel has done it.
  std::vector<Op*> policy_goes;
  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    for (int fd : fds) ::close(fd);
  }
  void add(Op* op, Request r) {
    reqs.push_back(std::move(r));
    owners.push_back(op);
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------
// The worker

struct LinuxFabric::Impl {
  explicit Impl(LinuxFabricOptions o)
      : opts(std::move(o)), where(opts.netns.empty() ? std::string() : " in netns " + opts.netns) {}
  ~Impl() {
    stop();
    if (node_ns >= 0) ::close(node_ns);
    for (auto& [_, fd] : routers) ::close(fd);
  }

  const LinuxFabricOptions opts;
  int node_ns = -1;  // the fabric's network namespace (plug() moves guest ends out of it)
  const std::string where;  // for messages

  WorkerQueue queue{"the linux fabric"};

  mutable std::mutex stats_mu;
  LinuxFabricStats stats;

  // Owned by the worker thread.
  NetlinkSocket sock;
  std::map<uint32_t, VniState> vnis;
  int underlay = 0;
  bool cache_valid = false;
  std::map<uint32_t, int> routers;  // VPC routing VNI -> its router namespace, open
  std::unique_ptr<sg::PolicyTables> policy;  // security groups (policy.h); made by init()

  void bump(uint64_t LinuxFabricStats::*field, uint64_t n = 1) {
    std::lock_guard lk(stats_mu);
    stats.*field += n;
  }

  // --- the calling side (worker_queue.h)

  Result<void> start(int netns_fd) {
    return queue.start([this, netns_fd] { return init(netns_fd); }, [this] { loop(); });
  }
  void stop() {
    {
      std::lock_guard lk(tasks_mu);
      tasks_closed = true;
    }
    queue.stop();
    std::deque<Task> left;
    {
      std::lock_guard lk(tasks_mu);
      left.swap(tasks);
    }
    for (auto& t : left) t.cancel();
  }

  // Work that is not a FabricOp (the security groups): run by the worker between batches,
  // in its namespace, with its cache. The caller waits.
  struct Task {
    std::function<void()> run;
    std::function<void()> cancel;  // answers kCancelled
  };
  std::mutex tasks_mu;
  std::deque<Task> tasks;
  bool tasks_closed = false;

  template <class T>
  Result<T> on_worker(std::function<Result<T>()> fn) {
    auto done = std::make_shared<std::promise<Result<T>>>();
    auto answer = done->get_future();
    {
      std::lock_guard lk(tasks_mu);
      if (tasks_closed) return fail(Errc::kCancelled, "the linux fabric is shutting down");
      tasks.push_back(Task{[done, fn = std::move(fn)] { done->set_value(fn()); },
                           [done] { done->set_value(fail(Errc::kCancelled, "the linux fabric is shutting down")); }});
    }
    queue.wake();
    return answer.get();
  }

  void run_tasks() {
    for (;;) {
      Task t;
      {
        std::lock_guard lk(tasks_mu);
        if (tasks.empty()) return;
        t = std::move(tasks.front());
        tasks.pop_front();
      }
      t.run();
    }
  }

  // --- the worker thread

  Result<void> init(int netns_fd) {
    if (netns_fd >= 0) {
      const int rc = setns(netns_fd, CLONE_NEWNET);
      const int err = errno;
      ::close(netns_fd);
      if (rc != 0) return fail(sys_error("cannot enter network namespace " + opts.netns, err));
    }
    if (auto r = sock.open(); !r) return fail(r.error());
    if (auto r = resync(); !r) return fail(r.error());
    if (!opts.underlay_dev.empty() && underlay == 0)
      return fail(Errc::kNotFound, "underlay device " + opts.underlay_dev + " does not exist" + where);
    // Adoption leaves the kernel consistent: no VNI devices without attachments, and every
    // VNI's devices as this fabric would make them.
    std::vector<uint32_t> all;
    for (const auto& [vni, _] : vnis) all.push_back(vni);
    for (uint32_t vni : all) {
      const VniState& v = vnis[vni];
      Result<void> r;
      if (v.unused()) r = gc_vni(vni);
      else if (!v.bridge || !v.vxlan || !v.vxlan_ok || v.vxlan_master != v.bridge) r = ensure_vni(vni);
      if (!r) return fail(r.error());
    }
    if (auto r = gc_routers(); !r) return fail(r.error());
    // Security groups: adopted now if nftables can be read (else before their first call).
    policy = std::make_unique<sg::PolicyTables>(where, [this](const std::string& h) { return bridge_of(h); });
    if (auto r = policy->open(); !r) spdlog::warn("linux fabric: security groups{}: {}", where, r.error().message);
    size_t locals = 0, fdb = 0;
    for (const auto& [_, v] : vnis) {
      locals += v.locals.size();
      fdb += v.fdb.size();
    }
    spdlog::info("linux fabric: opened netns={} host_ip={} vnis={} locals={} remotes={}",
                 opts.netns.empty() ? "(current)" : opts.netns, api::format_ipv4(opts.host_ip), vnis.size(), locals,
                 fdb);
    return {};
  }

  void loop() {
    for (;;) {
      const auto due = opts.vni_linger.count() > 0 ? expire_idle() : std::nullopt;
      auto batch = queue.take(due);
      if (!batch) return;
      if (!batch->empty()) process(*batch);  // else a lingering VNI is due (or a task came)
      run_tasks();
    }
  }

  // With a linger: VNIs without attachments, since when (their devices stay meanwhile).
  std::map<uint32_t, std::chrono::steady_clock::time_point> idle;

  // Deletes the devices of VNIs unused for opts.vni_linger (apply() enters VNIs it left
  // unused in `idle`); when the next one is due.
  std::optional<std::chrono::steady_clock::time_point> expire_idle() {
    const auto now = std::chrono::steady_clock::now();
    std::optional<std::chrono::steady_clock::time_point> next;
    for (auto it = idle.begin(); it != idle.end();) {
      auto v = vnis.find(it->first);
      if (v == vnis.end() || !v->second.unused()) {
        it = idle.erase(it);
        continue;
      }
      const auto due = it->second + opts.vni_linger;
      if (due > now) {
        next = next ? std::min(*next, due) : due;
        ++it;
        continue;
      }
      if (auto r = gc_vni(it->first); !r) {
        spdlog::warn("linux fabric: deleting the devices of idle VNI {}{}: {}", it->first, where, r.error().message);
        (void)resync();
        next = now + opts.vni_linger;  // try again later
      }
      it = idle.erase(it);
    }
    return next;
  }

  // Lists are barriers (run_batch): the mutations queued before one are applied first.
  void process(const std::vector<Op*>& batch) {
    run_batch(batch, [this](const std::vector<Op*>& group) { apply(group, true); }, [this](Op& op) { list(op); });
  }

  void list(Op& op) {
    if (auto r = resync(); !r) {
      op.error = r.error();
      return;
    }
    for (const auto& [vni, v] : vnis) {
      if (op.kind == Kind::kListLocal) {
        for (const auto& [mac, st] : v.locals)
          op.locals.push_back(LocalIfc{vni, mac, st.guest_ip, st.name, {}, {}, v.routing});
        continue;
      }
      std::set<api::MacAddress> paired;
      for (const auto& [ip, mac] : v.neigh) {
        auto f = v.fdb.find(mac);
        op.remotes.push_back(RemoteIfc{vni, mac, ip, f == v.fdb.end() ? 0 : f->second, v.routing});
        paired.insert(mac);
      }
      for (const auto& [mac, host] : v.fdb)
        if (!paired.contains(mac)) op.remotes.push_back(RemoteIfc{vni, mac, 0, host, v.routing});
    }
    std::ranges::sort(op.remotes, [](const RemoteIfc& a, const RemoteIfc& b) {
      return std::tie(a.vni, a.guest_ip, a.mac) < std::tie(b.vni, b.guest_ip, b.mac);
    });
  }

  // Applies a group of creates and deletes: devices first (per VNI, rare), then every
  // entry change in one batch, then the removal of VNIs left without attachments. On a
  // kernel error the cache is re-read and each failed call is retried once on its own.
  void apply(const std::vector<Op*>& ops, bool first_attempt) {
    if (first_attempt) {
      bump(&LinuxFabricStats::calls, ops.size());
      bump(&LinuxFabricStats::batches);
      fabric_metrics().batches.inc();
    }
    if (!cache_valid) {
      if (auto r = resync(); !r) {
        for (Op* op : ops) op->error = r.error();
        return;
      }
    }
    std::vector<Op*> work;
    for (Op* op : ops) {
      auto e = op->is_local() ? check(op->local) : check(op->remote);
      if (e) op->error = std::move(e);
      else work.push_back(op);
    }
    bool failed = false;
    std::set<uint32_t> touched;
    std::map<uint32_t, Error> vni_errors;
    for (Op* op : work) {
      touched.insert(op->vni());
      if (!op->is_create() || vni_errors.contains(op->vni())) continue;
      if (auto r = ensure_vni(op->vni()); !r) {
        vni_errors.emplace(op->vni(), r.error());
        failed = true;
        continue;
      }
      const Routing& want = op->is_local() ? op->local.routing : op->remote.routing;
      if (auto r = ensure_routing(op->vni(), want); !r) {
        vni_errors.emplace(op->vni(), r.error());
        failed = true;
      }
    }
    Plan plan;
    for (Op* op : work) {
      if (op->is_create()) {
        if (auto it = vni_errors.find(op->vni()); it != vni_errors.end()) {
          op->error = it->second;
          continue;
        }
      }
      const size_t before = plan.reqs.size();
      plan_op(*op, plan, touched);
      if (plan.reqs.size() == before) {
        bump(&LinuxFabricStats::unchanged);
        fabric_metrics().unchanged.inc();
      }
    }
    if (!plan.reqs.empty()) {
      auto replies = send(plan.reqs);
      if (!replies) {
        for (Op* op : plan.owners)
          if (!op->error) op->error = replies.error();
        failed = true;
      } else {
        for (size_t k = 0; k < replies->size(); ++k) {
          auto e = refusal(plan.reqs[k], (*replies)[k], where);
          if (!e) continue;
          fabric_metrics().errors.inc();
          if (!plan.owners[k]->error) plan.owners[k]->error = std::move(e);
          failed = true;
        }
      }
    }
    for (Op* op : plan.policy_goes) {
      if (op->error || !policy) continue;
      const std::string host = host_end_name(op->local.mac);
      if (!policy->has_policy_pieces(host)) continue;
      if (auto r = policy->remove_policy(host); !r) {
        op->error = r.error();
        failed = true;
      }
    }
    if (failed) (void)resync();  // the optimistic cache updates of failed requests are undone
    if (cache_valid && opts.vni_linger.count() > 0) {  // expire_idle() deletes them later
      const auto now = std::chrono::steady_clock::now();
      for (uint32_t vni : touched)
        if (auto v = vnis.find(vni); v != vnis.end() && v->second.unused()) idle.try_emplace(vni, now);
    } else if (cache_valid) {
      for (uint32_t vni : touched) {
        if (auto r = gc_vni(vni); !r) {
          for (Op* op : work)
            if (op->vni() == vni && !op->is_create() && !op->error) op->error = r.error();
          failed = true;
          (void)resync();
        }
      }
    }
    if (first_attempt && failed) {
      for (Op* op : work) {
        if (!op->error) continue;
        spdlog::debug("linux fabric: retrying after error={}", op->error->message);
        op->error.reset();
        bump(&LinuxFabricStats::retries);
        apply({op}, false);
      }
    }
  }

  // --- security groups (policy.h), on the worker

  // The bridge of the local whose host end is `host`, if there is one.
  std::optional<std::string> bridge_of(const std::string& host) {
    auto mac = parse_host_end_name(host);
    if (!mac) return std::nullopt;
    auto found = find_local(*mac);
    if (!found) return std::nullopt;
    return bridge_device_name(found->first);
  }

  Result<void> ensure_cache() {
    if (cache_valid) return {};
    return resync();
  }

  Result<void> set_policy(const LocalIfc& ifc, const std::optional<Policy>& p) {
    if (auto r = ensure_cache(); !r) return r;
    const std::string host = host_end_name(ifc.mac);
    if (!p) return policy->remove_policy(host);  // the interface's by its MAC, whatever its name
    auto found = find_local(ifc.mac);
    if (!found || found->first != ifc.vni || found->second->name != ifc.name)
      return fail(Errc::kNotFound, "local interface " + ifc.name + " (VNI " + std::to_string(ifc.vni) + ", MAC " +
                                       api::format_mac(ifc.mac) + ") does not exist" + where);
    return policy->set_policy(host, bridge_device_name(ifc.vni), *p);
  }

  Result<std::map<std::string, Policy>> list_policies() {
    if (auto r = resync(); !r) return fail(r.error());  // as list_local: the kernel's now
    auto by_host = policy->list_policies();
    if (!by_host) return by_host;
    std::map<std::string, Policy> out;
    for (auto& [host, p] : *by_host) {
      auto mac = parse_host_end_name(host);
      auto found = mac ? find_local(*mac) : std::nullopt;
      if (found) out[found->second->name] = std::move(p);
    }
    return out;
  }

  std::optional<std::pair<uint32_t, LocalState*>> find_local(const api::MacAddress& mac) {
    for (auto& [vni, v] : vnis)
      if (auto it = v.locals.find(mac); it != v.locals.end()) return std::pair{vni, &it->second};
    return std::nullopt;
  }

  // Adds op's requests to the plan and updates the cache as if they will succeed.
  void plan_op(Op& op, Plan& plan, std::set<uint32_t>& touched) {
    switch (op.kind) {
      case Kind::kCreateLocal: {
        const LocalIfc& l = op.local;
        const std::string host = host_end_name(l.mac);
        auto found = find_local(l.mac);
        if (found && found->first == l.vni && found->second->name == l.name) {
          if (found->second->guest_ip == l.guest_ip) return;  // as asked
          plan.add(&op, msg_set_alias(host, host_end_alias(l)));
          found->second->guest_ip = l.guest_ip;
          return;
        }
        plan.policy_goes.push_back(&op);
        if (found) {  // the same MAC with another name or on another VNI: replaced
          plan.add(&op, msg_del_link(host));
          touched.insert(found->first);
          vnis[found->first].locals.erase(l.mac);
        }
        VniState& v = vnis[l.vni];
        for (auto& r : msgs_new_local(l, opts.mtu, v.bridge, plan.fds, "linux fabric")) plan.add(&op, std::move(r));
        v.locals[l.mac] = LocalState{l.name, l.guest_ip, v.bridge};
        return;
      }
      case Kind::kDeleteLocal: {
        plan.policy_goes.push_back(&op);  // (also when the local is gone already)
        auto found = find_local(op.local.mac);
        if (!found) return;
        plan.add(&op, msg_del_link(host_end_name(op.local.mac)));
        touched.insert(found->first);
        vnis[found->first].locals.erase(op.local.mac);
        return;
      }
      case Kind::kCreateRemote: {
        const RemoteIfc& r = op.remote;
        VniState& v = vnis[r.vni];
        const std::string vx = vxlan_device_name(r.vni);
        if (auto it = v.fdb.find(r.mac); it == v.fdb.end() || it->second != r.host_ip) {
          plan.add(&op, msg_fdb(true, v.vxlan, vx, r.mac, r.host_ip));
          v.fdb[r.mac] = r.host_ip;
        }
        if (auto it = v.neigh.find(r.guest_ip); it == v.neigh.end() || it->second != r.mac) {
          plan.add(&op, msg_neigh(true, v.vxlan, vx, r.guest_ip, r.mac));
          v.neigh[r.guest_ip] = r.mac;
        }
        return;
      }
      case Kind::kDeleteRemote: {
        const RemoteIfc& r = op.remote;
        auto vit = vnis.find(r.vni);
        if (vit == vnis.end()) return;
        VniState& v = vit->second;
        const std::string vx = vxlan_device_name(r.vni);
        // The MAC's FDB entry pointing at another host means a newer create of the same
        // guest (moved to another node): this delete is stale and leaves both entries.
        if (auto it = v.fdb.find(r.mac); it != v.fdb.end()) {
          if (it->second != r.host_ip) return;
          plan.add(&op, msg_fdb(false, v.vxlan, vx, r.mac, r.host_ip));
          v.fdb.erase(it);
        }
        if (auto it = v.neigh.find(r.guest_ip); it != v.neigh.end() && it->second == r.mac) {
          plan.add(&op, msg_neigh(false, v.vxlan, vx, r.guest_ip, r.mac));
          v.neigh.erase(it);
        }
        return;
      }
      case Kind::kListLocal:
      case Kind::kListRemote: return;
    }
  }

  Result<std::vector<NetlinkSocket::Reply>> send(const std::vector<Request>& reqs) {
    uint64_t sends = 0;
    auto r = sock.transact(reqs, &sends);
    bump(&LinuxFabricStats::messages, reqs.size());
    bump(&LinuxFabricStats::sends, sends);
    fabric_metrics().messages.inc(static_cast<double>(reqs.size()));
    fabric_metrics().sends.inc(static_cast<double>(sends));
    return r;
  }

  // Sends and returns the first refusal (deletes of absent things are not refusals), with
  // the replies for GET requests.
  Result<std::vector<NetlinkSocket::Reply>> run(const std::vector<Request>& reqs) {
    auto replies = send(reqs);
    if (!replies) return replies;
    for (size_t k = 0; k < reqs.size(); ++k)
      if (auto e = refusal(reqs[k], (*replies)[k], where)) {
        fabric_metrics().errors.inc();
        return fail(std::move(*e));
      }
    return replies;
  }

  // Creates `kind` device `name` and reads its ifindex back, in one round trip.
  Result<int> create_and_read(Request create, const std::string& name, std::string_view kind) {
    auto replies = run({std::move(create), msg_get_link(name)});
    if (!replies) return fail(replies.error());
    for (const auto& d : (*replies)[1].data) {
      auto link = parse_link(reinterpret_cast<const nlmsghdr*>(d.data()));
      if (link && link->name == name && link->kind == kind) return link->index;
    }
    return fail(Errc::kInternal, "created " + name + where + " but cannot read it back");
  }

  // Makes the VNI's bridge and VXLAN device exist, with this fabric's settings, the VXLAN
  // device and every local's host end enslaved to the bridge.
  Result<void> ensure_vni(uint32_t vni) {
    VniState& v = vnis[vni];
    const std::string br = bridge_device_name(vni), vx = vxlan_device_name(vni);
    if (v.vxlan && !v.vxlan_ok) {
      spdlog::warn("linux fabric: re-creating {}{}: its settings (host IP, port, MTU, underlay) are not this fabric's",
                   vx, where);
      if (auto r = run({msg_del_link(vx)}); !r) return fail(r.error());
      v.vxlan = 0;
      v.vxlan_master = 0;
      v.fdb.clear();  // they went with the device
      v.neigh.clear();
    }
    if (!v.bridge) {
      auto idx = create_and_read(msg_new_bridge(br, opts.mtu), br, "bridge");
      if (!idx) return fail(idx.error());
      v.bridge = *idx;
    }
    if (!v.vxlan) {
      VxlanConfig c{opts.host_ip, opts.vxlan_port, opts.mtu, underlay};
      auto idx = create_and_read(msg_new_vxlan(vx, vni, c, v.bridge), vx, "vxlan");
      if (!idx) return fail(idx.error());
      v.vxlan = *idx;
      v.vxlan_master = v.bridge;
      v.vxlan_ok = true;
      bump(&LinuxFabricStats::vnis_created);
      spdlog::debug("linux fabric: created {} and {}{}", br, vx, where);
    } else if (v.vxlan_master != v.bridge) {
      if (auto r = run({msg_set_master_up(vx, v.bridge)}); !r) return fail(r.error());
      v.vxlan_master = v.bridge;
    }
    std::vector<Request> reqs;
    for (auto& [mac, st] : v.locals)
      if (st.master != v.bridge) {
        reqs.push_back(msg_set_master_up(host_end_name(mac), v.bridge));
        st.master = v.bridge;
      }
    if (!reqs.empty())
      if (auto r = run(reqs); !r) return fail(r.error());
    return {};
  }

  // Deletes the VNI's devices if it has no attachments left.
  Result<void> gc_vni(uint32_t vni) {
    auto it = vnis.find(vni);
    if (it == vnis.end() || !it->second.unused()) return {};
    std::vector<Request> reqs;
    if (it->second.gw_port) reqs.push_back(msg_del_link(gateway_port_name(vni)));  // and its router end
    if (it->second.vxlan) reqs.push_back(msg_del_link(vxlan_device_name(vni)));
    if (it->second.bridge) reqs.push_back(msg_del_link(bridge_device_name(vni)));
    if (!reqs.empty()) {
      if (auto r = run(reqs); !r) return fail(r.error());
      bump(&LinuxFabricStats::vnis_deleted);
      spdlog::debug("linux fabric: deleted the devices of VNI {}{}", vni, where);
    }
    const bool routed = it->second.gw_port != 0;
    vnis.erase(it);
    if (routed) return gc_routers();
    return {};
  }

  // --- routing (router.h)

  // The router namespace of VPC `vpc`, made and configured if it does not exist.
  Result<int> ensure_router(uint32_t vpc) {
    if (auto it = routers.find(vpc); it != routers.end()) return it->second;
    const std::string name = router_netns_name(opts.netns, vpc);
    auto fd = nl::create_named_netns(name);
    if (!fd) return fail(fd.error());
    if (auto r = nl::configure_router(*fd, name); !r) {
      ::close(*fd);
      (void)nl::delete_named_netns(name);
      return fail(r.error());
    }
    routers[vpc] = *fd;
    bump(&LinuxFabricStats::routers_created);
    fabric_metrics().routers_created.inc();
    spdlog::info("linux fabric: created router namespace {} for VPC {}{}", name, vpc, where);
    return *fd;
  }

  // Deletes the router namespaces of this fabric that no VNI routes through.
  Result<void> gc_routers() {
    std::set<uint32_t> used;
    for (const auto& [_, v] : vnis)
      if (v.gw_port) used.insert(v.routing.vpc);
    for (const auto& name : nl::named_netns()) {
      auto vpc = parse_router_netns_name(opts.netns, name);
      if (!vpc || used.contains(*vpc)) continue;
      if (auto it = routers.find(*vpc); it != routers.end()) {
        ::close(it->second);
        routers.erase(it);
      }
      if (auto r = nl::delete_named_netns(name); !r) return r;
      bump(&LinuxFabricStats::routers_deleted);
      fabric_metrics().routers_deleted.inc();
      spdlog::info("linux fabric: deleted router namespace {}{}", name, where);
    }
    return {};
  }

  // Makes the VNI routed as `want` says: its gateway port on the bridge and, in the VPC's
  // router namespace, the gateway address on the router end. Routing{}: not routed.
  Result<void> ensure_routing(uint32_t vni, const Routing& want) {
    VniState& v = vnis[vni];
    if (v.routing == want && (want == Routing{} || v.gw_port)) return {};
    const std::string port = gateway_port_name(vni);
    if (v.gw_port) {
      if (auto r = run({msg_del_link(port)}); !r) return fail(r.error());
      v.gw_port = 0;
      v.routing = {};
      if (auto r = gc_routers(); !r) return r;
    }
    v.routing = {};
    if (want == Routing{}) return {};
    auto router = ensure_router(want.vpc);
    if (!router) return fail(router.error());
    const api::MacAddress mac = api::guest_mac(want.gateway, vni);
    const std::string inside = router_gateway_name(vni), ns = router_netns_name(opts.netns, want.vpc);
    auto idx = create_and_read(msg_new_veth(port, inside, mac, opts.mtu, v.bridge, *router), port, "veth");
    if (!idx) return fail(idx.error());
    auto undo = [&](Error e) -> Result<void> {
      (void)run({msg_del_link(port)});
      return fail(std::move(e));
    };
    if (auto r = run({msg_set_alias(port, gateway_port_alias(want)), msg_gateway_fdb(*idx, port, mac)}); !r)
      return undo(r.error());
    auto set = nl::in_netns<void>(*router, "router namespace " + ns, [&](NetlinkSocket& rs) -> Result<void> {
      const std::string there = " in router namespace " + ns;
      auto l = find_link(rs, inside, there);
      if (!l) return fail(l.error());
      if (!*l) return fail(Errc::kInternal, "the gateway " + inside + " did not appear" + there);
      if (auto r = one(rs, msg_set_addr((*l)->index, want.gateway, want.prefix_len, inside), there); !r)
        return fail(r.error());
      if (auto r = one(rs, msg_set_up((*l)->index, inside), there); !r) return fail(r.error());
      return {};
    });
    if (!set) return undo(set.error());
    v.gw_port = *idx;
    v.routing = want;
    bump(&LinuxFabricStats::gateways_created);
    fabric_metrics().gateways_created.inc();
    spdlog::debug("linux fabric: VNI {} routed in VPC {} through {}/{}{}", vni, want.vpc,
                  api::format_ipv4(want.gateway), want.prefix_len, where);
    return {};
  }

  bool vxlan_matches(const Link& l, uint32_t vni) const {
    return l.vx_id == vni && l.vx_local == opts.host_ip && l.vx_port == opts.vxlan_port && l.vx_learning == 0 &&
           l.vx_proxy == 1 && l.vx_link == static_cast<uint32_t>(underlay) && l.mtu == opts.mtu;
  }

  // Replaces the cache with the kernel's state. Retries dumps a concurrent change spoiled.
  Result<void> resync() {
    cache_valid = false;
    Error last{Errc::kInternal, "", {}};
    for (int attempt = 0; attempt < 5; ++attempt) {
      auto r = read_state();
      if (r) {
        vnis = std::move(*r);
        cache_valid = true;
        bump(&LinuxFabricStats::resyncs);
        fabric_metrics().resyncs.inc();
        return {};
      }
      last = r.error();
      if (last.code != Errc::kUnavailable) break;
    }
    last.message = "cannot read the kernel's state" + where + ": " + last.message;
    return fail(std::move(last));
  }

  Result<std::map<uint32_t, VniState>> read_state() {
    std::vector<Link> links;
    if (auto r = sock.dump(msg_dump_links(), [&](const nlmsghdr* n) {
          if (auto l = parse_link(n)) links.push_back(std::move(*l));
        });
        !r)
      return fail(r.error());
    std::map<uint32_t, VniState> out;
    std::map<int, uint32_t> bridges, vxlans;  // ifindex -> VNI
    underlay = 0;
    for (const Link& l : links) {
      if (!opts.underlay_dev.empty() && l.name == opts.underlay_dev) underlay = l.index;
      if (l.kind != "bridge") continue;
      if (auto vni = parse_bridge_device_name(l.name)) {
        out[*vni].bridge = l.index;
        bridges[l.index] = *vni;
      }
    }
    for (const Link& l : links) {
      if (l.kind != "vxlan") continue;
      if (auto vni = parse_vxlan_device_name(l.name)) {
        VniState& v = out[*vni];
        v.vxlan = l.index;
        v.vxlan_master = l.master;
        v.vxlan_ok = vxlan_matches(l, *vni);
        vxlans[l.index] = *vni;
      }
    }
    for (const Link& l : links) {
      if (l.kind != "veth") continue;
      if (auto vni = parse_gateway_port_name(l.name)) {
        VniState& v = out[*vni];
        v.gw_port = l.index;
        // A port without a readable alias routes nothing: the next routed create replaces it.
        v.routing = parse_gateway_port_alias(l.alias).value_or(Routing{});
        continue;
      }
      auto mac = parse_host_end_name(l.name);
      if (!mac) continue;
      auto alias = parse_alias(l.alias);
      uint32_t vni = alias ? alias->vni : vni_of_mac(*mac);
      if (auto b = bridges.find(l.master); b != bridges.end()) vni = b->second;
      if (vni == 0) continue;
      out[vni].locals[*mac] = LocalState{alias ? alias->name : api::interface_name(*mac),
                                         alias ? alias->guest_ip : guest_ip_of_mac(*mac), l.master};
    }
    if (vxlans.empty()) return out;  // no entries to read
    if (auto r = sock.dump(msg_dump_neigh(AF_INET), [&](const nlmsghdr* nlh) {
          auto n = parse_neigh(nlh);
          if (!n || !(n->state & NUD_PERMANENT) || !n->dst || !n->lladdr) return;
          if (auto x = vxlans.find(n->ifindex); x != vxlans.end()) out[x->second].neigh[*n->dst] = *n->lladdr;
        });
        !r)
      return fail(r.error());
    if (auto r = sock.dump(msg_dump_neigh(AF_BRIDGE), [&](const nlmsghdr* nlh) {
          auto n = parse_neigh(nlh);
          // The VXLAN device's own entries (NTF_SELF), not the bridge's about its port.
          if (!n || !(n->flags & NTF_SELF) || n->has_master || !n->dst || !n->lladdr) return;
          if (*n->lladdr == api::MacAddress{}) return;
          if (auto x = vxlans.find(n->ifindex); x != vxlans.end())
            out[x->second].fdb.try_emplace(*n->lladdr, *n->dst);  // the first remote of a MAC
        });
        !r)
      return fail(r.error());
    return out;
  }
};

// ---------------------------------------------------------------------------------------
// Plugging (netlink.cc)

Result<Plugged> LinuxFabric::plug(const LocalIfc& ifc, const Plug& plug) {
  return plug_guest_end(impl_->node_ns, impl_->where, ifc, plug);
}

Result<Plugged> LinuxFabric::inspect(const std::string& netns, const std::string& ifname) {
  return inspect_netns(netns, ifname);
}

// ---------------------------------------------------------------------------------------
// LinuxFabric

LinuxFabric::LinuxFabric(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LinuxFabric::~LinuxFabric() = default;

Result<std::unique_ptr<Fabric>> LinuxFabric::open(const LinuxFabricOptions& opts) {
  if (opts.host_ip == 0) return fail(Errc::kInvalid, "linux fabric: the host IP is required");
  if (opts.vxlan_port == 0) return fail(Errc::kInvalid, "linux fabric: the VXLAN port must not be 0");
  if (opts.mtu < 68 || opts.mtu > 65535)
    return fail(Errc::kInvalid, "linux fabric: MTU " + std::to_string(opts.mtu) + " is out of range 68..65535");
  if (opts.underlay_dev.size() > 15)
    return fail(Errc::kInvalid, "linux fabric: underlay device name " + opts.underlay_dev + " is too long");
  auto ns = open_fabric_netns(opts.netns, "linux fabric");
  if (!ns) return fail(ns.error());
  const int fd = *ns;
  auto impl = std::make_unique<Impl>(opts);
  impl->node_ns = fd;  // kept for plug(); closed by ~Impl
  const int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return fail(sys_error("linux fabric: cannot duplicate the namespace descriptor", errno));
  if (auto r = impl->start(dup); !r) return fail(r.error());  // the worker closes the dup
  return std::unique_ptr<Fabric>(new LinuxFabric(std::move(impl)));
}

WorkerQueue& LinuxFabric::queue() { return impl_->queue; }

Result<void> LinuxFabric::set_policy(const LocalIfc& ifc, const std::optional<Policy>& policy) {
  if (auto e = check(ifc)) return fail(std::move(*e));
  if (policy)
    if (auto e = check(*policy)) return fail(std::move(*e));
  return impl_->on_worker<void>([&] { return impl_->set_policy(ifc, policy); });
}

Result<void> LinuxFabric::update_set(const std::string& name, const std::vector<uint32_t>& add,
                                     const std::vector<uint32_t>& remove) {
  if (auto e = check_set_name(name)) return fail(std::move(*e));
  return impl_->on_worker<void>([&] { return impl_->policy->update_set(name, add, remove); });
}

Result<void> LinuxFabric::delete_set(const std::string& name) {
  if (auto e = check_set_name(name)) return fail(std::move(*e));
  return impl_->on_worker<void>([&] { return impl_->policy->delete_set(name); });
}

Result<std::map<std::string, std::vector<uint32_t>>> LinuxFabric::list_sets() {
  return impl_->on_worker<std::map<std::string, std::vector<uint32_t>>>([&] { return impl_->policy->list_sets(); });
}

Result<std::map<std::string, Policy>> LinuxFabric::list_policies() {
  return impl_->on_worker<std::map<std::string, Policy>>([&] { return impl_->list_policies(); });
}

LinuxFabricStats LinuxFabric::stats() const {
  LinuxFabricStats s;
  {
    std::lock_guard lk(impl_->stats_mu);
    s = impl_->stats;
  }
  // The policy tables exist from open() on (made by the worker's init, which open() waited for).
  if (const auto* p = impl_->policy.get()) {
    const sg::PolicyStats& ps = p->stats();
    s.nft_transactions = ps.transactions;
    s.nft_errors = ps.errors;
    s.policy_updates = ps.policy_updates;
    s.set_elements_changed = ps.set_elements_changed;
    s.policy_adoptions = ps.adoptions;
  }
  return s;
}

}  // namespace kos::fabric
