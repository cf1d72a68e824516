// The OVS fabric. See ovs_fabric.h for what it makes; flows.h for the OpenFlow program.
//
// Structure: the OVSDB view (kept by a monitor on the client's reader thread); the worker
// (queue, cache, batches, restoration), which owns the connections, the netlink socket and
// the cache; the Fabric calls, which queue requests for it.
#include "fabric/ovs/ovs_fabric.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include "api/cidr.h"
#include "common/metrics.h"
#include "fabric/linux/linux_fabric.h"
#include "fabric/linux/netlink.h"
#include "fabric/ovs/bridge.h"
#include "fabric/ovs/flows.h"
#include "fabric/ovs/openflow.h"
#include "fabric/ovs/ovsdb_client.h"
#include "fabric/worker_queue.h"

namespace kos::fabric {
namespace json = boost::json;
using namespace nl;  // NOLINT

namespace {

constexpr const char* kDb = "Open_vSwitch";
constexpr auto kReconnectEvery = std::chrono::milliseconds(500);

// external_ids of a local's Interface row.
constexpr const char* kExtVni = "kos-vni";
constexpr const char* kExtIp = "kos-ip";
constexpr const char* kExtName = "kos-ifname";
constexpr const char* kExtMac = "attached-mac";
// external_ids of the bridge (flows.h): each set's name, each policy as given.
constexpr std::string_view kExtSet = "kos-set-";
constexpr std::string_view kExtPolicy = "kos-policy-";

metrics::Counter& counter(const std::string& name, const std::string& help) {
  return metrics::Registry::global().counter(name, help).get();
}

struct Metrics {
  metrics::Counter& bundles = counter("kos_fabric_ovs_bundles_total", "OpenFlow bundles committed by the OVS fabric.");
  metrics::Counter& flow_mods = counter("kos_fabric_ovs_flow_mods_total", "Flow adds and deletes sent in bundles.");
  metrics::Counter& transactions = counter("kos_fabric_ovs_transactions_total", "OVSDB transactions of the OVS fabric.");
  metrics::Counter& restores =
      counter("kos_fabric_ovs_restores_total", "Full reconciliations of the OVS bridge, ports and flows.");
  metrics::Counter& reconnects = counter("kos_fabric_ovs_reconnects_total", "Connections to OVS made again.");
};
Metrics& ovs_metrics() {
  static Metrics m;
  return m;
}

using Op = FabricOp;  // worker_queue.h
using Kind = FabricOp::Kind;

// What the OVSDB monitor shows of an Interface or Port row.
struct IfaceRow {
  std::string name;
  int64_t ofport = 0;  // 0: not yet assigned; -1: ovs-vswitchd could not open it
  std::map<std::string, std::string> ext;
  std::string error;
};
struct PortRow {
  std::string name;
};

std::map<std::string, std::string> ext_of(const LocalIfc& l) {
  return {{kExtVni, std::to_string(l.vni)}, {kExtIp, api::format_ipv4(l.guest_ip)}, {kExtName, l.name},
          {kExtMac, api::format_mac(l.mac)}};
}

using RemoteKey = std::pair<uint32_t, uint32_t>;  // (vni, guest IP)
RemoteKey key_of(const RemoteIfc& r) { return {r.vni, r.guest_ip}; }

}  // namespace

// ---------------------------------------------------------------------------------------

struct OvsFabric::Impl {
  explicit Impl(OvsFabricOptions o) : opts(std::move(o)), where(opts.netns.empty() ? "" : " in netns " + opts.netns) {}
  ~Impl() {
    stop();
    if (node_ns >= 0) ::close(node_ns);
  }

  const OvsFabricOptions opts;
  const std::string where;
  std::string mgmt;   // the bridge's OpenFlow socket
  int node_ns = -1;  // the fabric's namespace (plug() moves guest ends out of it)

  WorkerQueue queue{"the ovs fabric"};

  mutable std::mutex stats_mu;
  OvsFabricStats stats;
  void bump(uint64_t OvsFabricStats::*field, uint64_t n = 1) {
    std::lock_guard lk(stats_mu);
    stats.*field += n;
  }

  // The OVSDB view: written by the monitor callback (the client's reader thread).
  std::mutex view_mu;
  std::condition_variable view_cv;
  std::map<std::string, IfaceRow> ifaces;  // by row UUID
  std::map<std::string, PortRow> ports;

  // Owned by the worker thread.
  NetlinkSocket sock;
  std::unique_ptr<ovs::OvsdbClient> db;
  std::unique_ptr<ovs::of::Connection> of;
  uint32_t vtep = 0;
  struct LocalState {
    LocalIfc ifc;
    uint32_t ofport = 0;
  };
  std::map<api::MacAddress, LocalState> locals;
  std::map<RemoteKey, RemoteIfc> remotes;
  std::map<api::MacAddress, Policy> policies;  // of locals, by MAC
  ovs::Sets sets;

  // Security-group calls run on the worker too, as tasks beside the queue's batches
  // (worker_queue.h carries creates, deletes and lists only). run(false): cancelled.
  std::mutex task_mu;
  std::deque<std::function<void(bool)>> tasks;
  bool tasks_closed = false;
  bool dirty = true;           // OVS may differ from the cache: restore before the next batch
  bool reported_down = false;  // "lost OVS" logged
  bool connected_once = false;  // a connection now is a reconnection
  std::optional<Error> last_restore_error;

  // --- the calling side (worker_queue.h)

  Result<void> start(int netns_fd) {
    return queue.start([this, netns_fd] { return init(netns_fd); }, [this] { loop(); });
  }
  void stop() {
    queue.stop();
    std::deque<std::function<void(bool)>> left;
    {
      std::lock_guard lk(task_mu);
      tasks_closed = true;
      left.swap(tasks);
    }
    for (auto& t : left) t(false);
    of.reset();
    db.reset();
  }

  // Runs fn on the worker thread and waits for its result.
  template <class T>
  Result<T> call(std::function<Result<T>()> fn) {
    auto done = std::make_shared<std::promise<Result<T>>>();
    auto fut = done->get_future();
    {
      std::lock_guard lk(task_mu);
      if (tasks_closed) return fail(Errc::kCancelled, "the ovs fabric is shutting down");
      tasks.push_back([done, fn = std::move(fn)](bool run) {
        if (run) done->set_value(fn());
        else done->set_value(fail(Errc::kCancelled, "the ovs fabric is shutting down"));
      });
    }
    queue.wake();
    return fut.get();
  }
  bool has_tasks() {
    std::lock_guard lk(task_mu);
    return !tasks.empty();
  }
  void run_tasks() {
    std::deque<std::function<void(bool)>> now;
    {
      std::lock_guard lk(task_mu);
      now.swap(tasks);
    }
    for (auto& t : now) t(true);
  }

  // --- the worker thread

  Result<void> init(int netns_fd) {
    if (netns_fd >= 0) {
      auto r = enter_netns(netns_fd, opts.netns);
      ::close(netns_fd);
      if (!r) return r;
    }
    if (auto r = sock.open(); !r) return r;
    if (auto r = restore(true); !r) return r;
    spdlog::info("ovs fabric: opened bridge={} db={} netns={} vtep_ofport={} locals={} remotes={}", opts.bridge, opts.db,
                 opts.netns.empty() ? "(current)" : opts.netns, vtep, locals.size(), remotes.size());
    return {};
  }

  bool healthy() const { return !dirty && db && db->connected() && of && of->connected(); }

  void loop() {
    auto last_try = std::chrono::steady_clock::time_point{};
    for (;;) {
      auto taken = queue.take(std::chrono::steady_clock::now() + kReconnectEvery);
      if (!taken) return;
      const std::vector<Op*> batch = std::move(*taken);
      // Restoration: at once for a batch, else every kReconnectEvery while OVS is away.
      const bool work = !batch.empty() || has_tasks();
      if (!healthy() && (work || std::chrono::steady_clock::now() - last_try >= kReconnectEvery)) {
        last_try = std::chrono::steady_clock::now();
        if (auto r = restore(false); !r) {
          if (!last_restore_error || last_restore_error->message != r.error().message)
            spdlog::warn("ovs fabric: cannot restore bridge {}{}: {} (retrying every {} ms)", opts.bridge, where,
                         r.error().message, kReconnectEvery.count());
          last_restore_error = r.error();
        } else if (last_restore_error) {
          spdlog::info("ovs fabric: bridge {}{} restored: locals={} remotes={}", opts.bridge, where, locals.size(),
                       remotes.size());
          last_restore_error.reset();
        }
      }
      if (!batch.empty()) process(batch);
      run_tasks();
    }
  }

  // Lists are barriers (run_batch): the mutations queued before one are applied first.
  void process(const std::vector<Op*>& batch) {
    run_batch(batch, [this](const std::vector<Op*>& group) { apply(group); }, [this](Op& op) { list(op); });
  }

  void list(Op& op) {
    if (op.kind == Kind::kListLocal) {
      for (const auto& [_, st] : locals) op.locals.push_back(st.ifc);
      std::ranges::sort(op.locals, [](const LocalIfc& a, const LocalIfc& b) {
        return std::tie(a.vni, a.mac) < std::tie(b.vni, b.mac);
      });
    } else {
      for (const auto& [_, r] : remotes) op.remotes.push_back(r);
    }
  }

  // --- OVSDB

  void on_updates(const json::object& tables) {
    std::lock_guard lk(view_mu);
    auto each = [&](const char* table, auto&& fn) {
      const auto* t = tables.if_contains(table);
      if (!t || !t->is_object()) return;
      for (const auto& [uuid, upd] : t->as_object()) {
        const auto* nw = upd.as_object().if_contains("new");
        fn(std::string(uuid), nw && nw->is_object() ? &nw->as_object() : nullptr);
      }
    };
    each("Interface", [&](const std::string& uuid, const json::object* row) {
      if (!row) {
        ifaces.erase(uuid);
        return;
      }
      IfaceRow& r = ifaces[uuid];
      if (const auto* v = row->if_contains("name")) r.name = ovs::ovsdb_string(*v);
      if (const auto* v = row->if_contains("ofport")) r.ofport = v->is_int64() ? v->as_int64() : 0;
      if (const auto* v = row->if_contains("external_ids")) r.ext = ovs::parse_ovsdb_map(*v);
      if (const auto* v = row->if_contains("error")) r.error = ovs::ovsdb_string(*v);
    });
    each("Port", [&](const std::string& uuid, const json::object* row) {
      if (!row) {
        ports.erase(uuid);
        return;
      }
      if (const auto* v = row->if_contains("name")) ports[uuid].name = ovs::ovsdb_string(*v);
    });
    view_cv.notify_all();
  }

  Result<void> connect() {
    of.reset();
    db.reset();
    {
      std::lock_guard lk(view_mu);
      ifaces.clear();
      ports.clear();
    }
    auto c = ovs::OvsdbClient::connect(opts.db, opts.timeout);
    if (!c) return fail(c.error().code, "ovsdb-server at " + opts.db + ": " + c.error().message);
    db = std::move(*c);
    db->on_disconnect([this] { queue.wake(); });
    ovs::BridgeOptions bo;
    bo.name = opts.bridge;
    bo.datapath_type = opts.datapath_type;
    auto br = ovs::ensure_bridge(*db, bo, opts.timeout);
    if (!br) return fail(br.error());
    vtep = static_cast<uint32_t>(br->vtep_ofport);
    const json::object req{
        {"Interface", json::object{{"columns", json::array{"name", "ofport", "external_ids", "error"}}}},
        {"Port", json::object{{"columns", json::array{"name"}}}},
    };
    auto initial = db->monitor(kDb, "kos-ovs-fabric", req, [this](const json::object& u) { on_updates(u); }, opts.timeout);
    if (!initial) return fail(initial.error());
    on_updates(*initial);
    // ovs-vswitchd makes the management socket once it has configured the bridge.
    const auto deadline = std::chrono::steady_clock::now() + opts.timeout;
    for (;;) {
      auto conn = ovs::of::Connection::connect(mgmt, opts.timeout);
      if (conn) {
        of = std::move(*conn);
        of->on_disconnect([this] { queue.wake(); });
        return {};
      }
      if (conn.error().code != Errc::kUnavailable || std::chrono::steady_clock::now() >= deadline)
        return fail(conn.error().code, "bridge " + opts.bridge + "'s OpenFlow socket " + mgmt + ": " + conn.error().message);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // ovs-vswitchd creates it shortly
    }
  }

  Result<json::array> transact(json::array ops) {
    if (ops.empty()) return json::array{};
    bump(&OvsFabricStats::transactions);
    ovs_metrics().transactions.inc();
    return db->transact(kDb, std::move(ops), opts.timeout);
  }

  // Our ports (host-end names) in the view: name -> (port UUID, its Interface row).
  struct OurPort {
    std::string port_uuid, iface_uuid;
    IfaceRow iface;
  };
  std::map<std::string, OurPort> our_ports() {
    std::lock_guard lk(view_mu);
    std::map<std::string, OurPort> out;
    for (const auto& [uuid, p] : ports)
      if (parse_host_end_name(p.name)) out[p.name].port_uuid = uuid;
    for (const auto& [uuid, i] : ifaces)
      if (auto it = out.find(i.name); it != out.end()) {
        it->second.iface_uuid = uuid;
        it->second.iface = i;
      }
    return out;
  }

  json::array remove_ports_ops(const std::vector<std::string>& port_uuids) {
    if (port_uuids.empty()) return {};
    json::array set;
    for (const auto& u : port_uuids) set.push_back(json::array{"uuid", json::string(u)});
    // Ports are not root rows: one no bridge refers to any more is deleted with its Interface.
    return json::array{json::object{{"op", "mutate"},
                                    {"table", "Bridge"},
                                    {"where", ovs::where_name(opts.bridge)},
                                    {"mutations", json::array{json::array{"ports", "delete", json::array{"set", set}}}}}};
  }

  // Inserts the ports of `ls` (one transaction); their Interface UUIDs in order.
  Result<std::vector<std::string>> add_ports(const std::vector<LocalIfc>& ls) {
    if (ls.empty()) return std::vector<std::string>{};
    json::array ops, named;
    for (size_t i = 0; i < ls.size(); ++i) {
      const std::string host = host_end_name(ls[i].mac), in = "i" + std::to_string(i), pn = "p" + std::to_string(i);
      ops.push_back(json::object{{"op", "insert"},
                                 {"table", "Interface"},
                                 {"row", json::object{{"name", host}, {"external_ids", ovs::ovsdb_map(ext_of(ls[i]))}}},
                                 {"uuid-name", in}});
      ops.push_back(json::object{{"op", "insert"},
                                 {"table", "Port"},
                                 {"row", json::object{{"name", host}, {"interfaces", json::array{"named-uuid", json::string(in)}}}},
                                 {"uuid-name", pn}});
      named.push_back(json::array{"named-uuid", json::string(pn)});
    }
    ops.push_back(json::object{{"op", "mutate"},
                               {"table", "Bridge"},
                               {"where", ovs::where_name(opts.bridge)},
                               {"mutations", json::array{json::array{"ports", "insert", json::array{"set", named}}}}});
    auto r = transact(std::move(ops));
    if (!r) return fail(r.error());
    std::vector<std::string> uuids;
    for (size_t i = 0; i < ls.size(); ++i) {
      const auto& res = r->at(2 * i).as_object();
      const auto* u = res.if_contains("uuid");
      if (!u || !u->is_array() || u->as_array().size() != 2) return fail(Errc::kInternal, "ovsdb-server's insert gave no uuid");
      uuids.push_back(ovs::ovsdb_string(u->as_array()[1]));
    }
    return uuids;
  }

  // Waits until ovs-vswitchd has given each of these Interface rows an OpenFlow port.
  // One result per row: its number, or why not.
  std::vector<Result<uint32_t>> wait_ofports(const std::vector<std::string>& iface_uuids) {
    const auto deadline = std::chrono::steady_clock::now() + opts.timeout;
    std::unique_lock lk(view_mu);
    auto settled = [&] {
      if (!db || !db->connected()) return true;
      for (const auto& u : iface_uuids) {
        auto it = ifaces.find(u);
        if (it == ifaces.end() || it->second.ofport == 0) return false;
      }
      return true;
    };
    view_cv.wait_until(lk, deadline, settled);
    std::vector<Result<uint32_t>> out;
    for (const auto& u : iface_uuids) {
      auto it = ifaces.find(u);
      if (it != ifaces.end() && it->second.ofport > 0) {
        out.push_back(static_cast<uint32_t>(it->second.ofport));
      } else if (it != ifaces.end() && it->second.ofport < 0) {
        out.push_back(fail(Errc::kInternal, "ovs-vswitchd cannot use port " + it->second.name + ": " + it->second.error));
      } else {
        const std::string name = it == ifaces.end() ? u : it->second.name;
        out.push_back(fail(db && db->connected() ? Errc::kTimeout : Errc::kUnavailable,
                           "ovs-vswitchd gave port " + name + " no OpenFlow port number in time (is it running?)"));
      }
    }
    return out;
  }

  Result<void> bundle(const std::vector<ovs::of::FlowMod>& mods) {
    if (mods.empty()) return {};
    auto r = of->bundle(mods, opts.timeout);
    if (!r) return r;
    bump(&OvsFabricStats::bundles);
    bump(&OvsFabricStats::flow_mods, mods.size());
    ovs_metrics().bundles.inc();
    ovs_metrics().flow_mods.inc(static_cast<double>(mods.size()));
    return {};
  }

  // The bridge's external_ids.
  Result<std::map<std::string, std::string>> bridge_ext() {
    json::array ops{json::object{{"op", "select"},
                                 {"table", "Bridge"},
                                 {"where", ovs::where_name(opts.bridge)},
                                 {"columns", json::array{"external_ids"}}}};
    auto r = transact(std::move(ops));
    if (!r) return fail(r.error());
    const auto* res = r->empty() ? nullptr : r->at(0).if_object();
    const auto* rows = res ? res->if_contains("rows") : nullptr;
    if (!rows || !rows->is_array() || rows->as_array().empty() || !rows->as_array()[0].is_object())
      return fail(Errc::kInternal, "ovsdb-server has no bridge " + opts.bridge);
    const auto* ext = rows->as_array()[0].as_object().if_contains("external_ids");
    if (!ext) return std::map<std::string, std::string>{};
    return ovs::parse_ovsdb_map(*ext);
  }

  // Sets keys `put` (replacing) and removes keys `del` of the bridge's external_ids: one
  // transaction (nothing when both are empty).
  Result<void> update_bridge_ext(const std::map<std::string, std::string>& put, const std::vector<std::string>& del) {
    json::array keys;
    for (const auto& k : del) keys.push_back(json::string(k));
    for (const auto& [k, _] : put) keys.push_back(json::string(k));
    if (keys.empty()) return {};
    json::array muts{json::array{"external_ids", "delete", json::array{"set", keys}}};
    if (!put.empty()) muts.push_back(json::array{"external_ids", "insert", ovs::ovsdb_map(put)});
    auto r = transact(json::array{json::object{
        {"op", "mutate"}, {"table", "Bridge"}, {"where", ovs::where_name(opts.bridge)}, {"mutations", muts}}});
    if (!r) return fail(r.error());
    return {};
  }

  // --- veths

  // The netlink requests making the veths of `ls` (msgs_new_local); fds to close once sent.
  // The MAC of each request's local goes to `owners`.
  std::vector<Request> veth_creates(const std::vector<LocalIfc>& ls, std::vector<int>& fds,
                                    std::vector<api::MacAddress>& owners) {
    std::vector<Request> reqs;
    for (const auto& l : ls)
      for (auto& r : msgs_new_local(l, opts.mtu, 0, fds, "ovs fabric")) {
        reqs.push_back(std::move(r));
        owners.push_back(l.mac);
      }
    return reqs;
  }

  // The host ends (kh<MAC>) of veths in the fabric's namespace, with their aliases.
  Result<std::map<std::string, std::string>> host_ends() {
    for (int attempt = 0;; ++attempt) {
      std::map<std::string, std::string> out;
      auto r = sock.dump(msg_dump_links(), [&](const nlmsghdr* nlh) {
        if (auto l = parse_link(nlh); l && l->kind == "veth" && parse_host_end_name(l->name)) out[l->name] = l->alias;
      });
      if (r) return out;
      if (r.error().code != Errc::kUnavailable || attempt >= 3) return fail(r.error());
    }
  }

  // --- restoration

  // Makes OVS and the kernel match the cache (adopt: first fills the cache from what is
  // there). Reconnects if a connection is down.
  Result<void> restore(bool adopt) {
    bump(&OvsFabricStats::restores);
    ovs_metrics().restores.inc();
    dirty = true;
    if (!db || !db->connected() || !of || !of->connected()) {
      const bool again = connected_once;
      if (again && !reported_down) {
        spdlog::warn("ovs fabric: lost the connection to OVS (bridge {}{}); reconnecting", opts.bridge, where);
        reported_down = true;
      }
      if (auto r = connect(); !r) return r;
      if (again) {
        bump(&OvsFabricStats::reconnects);
        ovs_metrics().reconnects.inc();
      }
      connected_once = true;
      reported_down = false;
    }
    auto kernel = host_ends();
    if (!kernel) return fail(kernel.error());
    auto flows = of->dump_flows(opts.timeout);
    if (!flows) return fail(flows.error());
    std::map<uint64_t, std::vector<ovs::of::Flow>> by_cookie;
    std::set<uint64_t> foreign;  // cookies with a flow this fabric does not understand
    for (auto& e : *flows) {
      if (!e.understood) foreign.insert(e.flow.cookie);
      by_cookie[e.flow.cookie].push_back(std::move(e.flow));
    }
    auto ours = our_ports();
    auto bext = bridge_ext();
    if (!bext) return fail(bext.error());

    if (adopt) {
      // Locals from the kernel (the host ends' aliases): a veth outlives a lost database,
      // and a container's interface must not be replaced for that. Their ports follow.
      locals.clear();
      remotes.clear();
      for (const auto& [name, alias] : *kernel)
        if (auto l = parse_host_end(name, alias); l && !check(*l)) locals[l->mac] = LocalState{*l, 0};
      for (const auto& [cookie, fs] : by_cookie) {
        if (ovs::cookie_kind(cookie) != ovs::CookieKind::kRemote || foreign.contains(cookie)) continue;
        auto r = ovs::parse_remote(fs, vtep);
        if (!r || ovs::remote_cookie(*r) != cookie || check(*r) || remotes.contains(key_of(*r))) continue;
        remotes[key_of(*r)] = *r;
      }
      // Sets: their names from the bridge, their addresses from their table-250 flows;
      // policies as given, of the locals adopted (by interface name).
      sets.clear();
      policies.clear();
      std::map<std::string, api::MacAddress> by_name;
      for (const auto& [mac, st] : locals) by_name[st.ifc.name] = mac;
      for (const auto& [k, v] : *bext) {
        if (k.starts_with(kExtSet)) {
          const std::string name = k.substr(kExtSet.size());
          if (check_set_name(name)) continue;
          auto& addrs = sets[name];
          auto it = by_cookie.find(ovs::set_cookie(name));
          if (it == by_cookie.end()) continue;
          for (const auto& f : it->second)
            if (f.match.ipv4_src && f.match.ipv4_src->second == 0xffffffffu &&
                f == ovs::set_store_flow(name, f.match.ipv4_src->first))
              addrs.insert(f.match.ipv4_src->first);
        } else if (k.starts_with(kExtPolicy)) {
          auto who = by_name.find(k.substr(kExtPolicy.size()));
          auto p = ovs::parse_policy_text(v);
          if (who != by_name.end() && p) policies[who->second] = std::move(*p);
        }
      }
      for (const auto& [_, p] : policies)
        for (const auto& name : ovs::sets_named(p)) sets[name];
    }

    // Ports and veths: remove what the cache does not have, make what it has.
    std::vector<std::string> stale_ports;
    std::vector<Request> link_reqs;
    std::vector<LocalIfc> need_port;
    for (const auto& [name, p] : ours) {
      auto mac = parse_host_end_name(name);
      auto it = locals.find(*mac);
      const bool wanted = it != locals.end() && p.iface.ext == ext_of(it->second.ifc) && kernel->contains(name);
      if (!wanted) stale_ports.push_back(p.port_uuid);
    }
    for (const auto& [name, _] : *kernel)
      if (!locals.contains(*parse_host_end_name(name))) link_reqs.push_back(msg_del_link(name));
    std::vector<LocalIfc> need_veth;
    for (const auto& [mac, st] : locals) {
      const std::string name = host_end_name(mac);
      if (!kernel->contains(name)) need_veth.push_back(st.ifc);
      auto p = ours.find(name);
      if (p == ours.end() || p->second.iface.ext != ext_of(st.ifc) || !kernel->contains(name)) need_port.push_back(st.ifc);
    }
    if (auto r = transact(remove_ports_ops(stale_ports)); !r) return fail(r.error());
    std::vector<int> fds;
    std::vector<api::MacAddress> unused;
    for (auto& q : veth_creates(need_veth, fds, unused)) link_reqs.push_back(std::move(q));
    if (!link_reqs.empty()) {
      auto rep = sock.transact(link_reqs, nullptr);
      for (int fd : fds) ::close(fd);
      if (!rep) return fail(rep.error());
      for (size_t k = 0; k < rep->size(); ++k)
        if (auto e = refusal(link_reqs[k], (*rep)[k], where)) return fail(std::move(*e));
    }
    auto added = add_ports(need_port);
    if (!added) return fail(added.error());
    // Every cached local's port number, new or kept (a restarted ovs-vswitchd may renumber).
    std::vector<std::string> iface_uuids;
    std::vector<api::MacAddress> macs;
    std::set<api::MacAddress> readded;
    for (size_t i = 0; i < need_port.size(); ++i) {
      iface_uuids.push_back((*added)[i]);
      macs.push_back(need_port[i].mac);
      readded.insert(need_port[i].mac);
    }
    for (const auto& [mac, st] : locals) {
      auto p = ours.find(host_end_name(mac));
      if (readded.contains(mac) || p == ours.end()) continue;
      iface_uuids.push_back(p->second.iface_uuid);
      macs.push_back(mac);
    }
    auto ofports = wait_ofports(iface_uuids);
    for (size_t i = 0; i < macs.size(); ++i) {
      if (!ofports[i]) return fail(ofports[i].error());
      locals[macs[i]].ofport = *ofports[i];
    }

    // Flows: keep each expected cookie whose flows are exactly as expected; delete every
    // other cookie; add what is missing. One bundle.
    std::map<uint64_t, std::vector<ovs::of::Flow>> want;
    want[ovs::kDefaultsCookie] = ovs::default_flows();
    for (const auto& [_, st] : locals) want[ovs::local_cookie(st.ifc, st.ofport)] = ovs::local_flows(st.ifc, st.ofport);
    for (const auto& [_, r] : remotes) want[ovs::remote_cookie(r)] = ovs::remote_flows(r, vtep);
    std::erase_if(policies, [&](const auto& kv) { return !locals.contains(kv.first); });
    if (!policies.empty()) want[ovs::kPolicyDefaultsCookie] = ovs::policy_default_flows();
    for (const auto& [mac, p] : policies) {
      const auto& st = locals.at(mac);
      want[ovs::policy_cookie(st.ifc, st.ofport, p)] = ovs::policy_flows(st.ifc, st.ofport, p, sets);
    }
    for (const auto& [name, addrs] : sets) {
      auto& fs = want[ovs::set_cookie(name)];
      for (uint32_t a : addrs) fs.push_back(ovs::set_store_flow(name, a));
      if (fs.empty()) want.erase(ovs::set_cookie(name));
    }
    // The bridge's record of sets and policies.
    std::map<std::string, std::string> want_ext;
    for (const auto& [name, _] : sets) want_ext[std::string(kExtSet) + name] = "";
    for (const auto& [mac, p] : policies) want_ext[std::string(kExtPolicy) + locals.at(mac).ifc.name] = ovs::policy_text(p);
    std::map<std::string, std::string> put;
    std::vector<std::string> del;
    for (const auto& [k, v] : *bext) {
      if (!k.starts_with(kExtSet) && !k.starts_with(kExtPolicy)) continue;
      auto w = want_ext.find(k);
      if (w == want_ext.end()) del.push_back(k);
      else if (w->second != v) put.insert(*w);
    }
    for (const auto& [k, v] : want_ext)
      if (!bext->contains(k)) put.insert({k, v});
    if (auto r = update_bridge_ext(put, del); !r) return r;
    std::vector<ovs::of::FlowMod> mods;
    std::set<uint64_t> intact;
    for (const auto& [cookie, fs] : by_cookie) {
      auto w = want.find(cookie);
      if (w != want.end() && !foreign.contains(cookie) && ovs::same_flows(fs, w->second)) intact.insert(cookie);
      else mods.push_back(ovs::of::FlowMod::remove(cookie));
    }
    for (const auto& [cookie, fs] : want)
      if (!intact.contains(cookie))
        for (const auto& f : fs) mods.push_back(ovs::of::FlowMod::add(f));
    if (auto r = bundle(mods); !r) return r;
    if (!adopt || !mods.empty() || !stale_ports.empty() || !need_port.empty())
      spdlog::info("ovs fabric: bridge {}{} reconciled: {} stale ports removed, {} ports added, {} flow changes, {} "
                   "attachments' flows intact",
                   opts.bridge, where, stale_ports.size(), need_port.size(), mods.size(), intact.size());
    dirty = false;
    bump(&OvsFabricStats::restored);
    return {};
  }

  // --- batches

  // Plans a group of creates and deletes by final state per interface, then carries it out
  // in the steps the header lists. A failed step fails the calls it served and leaves the
  // fabric dirty: the next batch restores first.
  void apply(const std::vector<Op*>& ops) {
    bump(&OvsFabricStats::calls, ops.size());
    bump(&OvsFabricStats::batches);
    std::map<api::MacAddress, std::optional<LocalIfc>> want_local;
    std::map<RemoteKey, std::optional<RemoteIfc>> want_remote;
    std::map<api::MacAddress, std::vector<Op*>> local_ops;
    std::map<RemoteKey, std::vector<Op*>> remote_ops;
    for (Op* op : ops) {
      if (auto e = op->is_local() ? check(op->local) : check(op->remote)) {
        op->error = std::move(e);
        continue;
      }
      // Routing between the subnets of a VPC is the linux fabric's so far: a routed
      // interface here would be reachable on its subnet only, its gateway dead.
      if (op->is_create() && (op->is_local() ? op->local.routing : op->remote.routing) != Routing{}) {
        op->error = Error{Errc::kUnsupported,
                          "the ovs fabric does not route the subnets of a VPC yet (VNI " +
                              std::to_string(op->vni()) + "): run the agent with --fabric linux", {}};
        continue;
      }
      switch (op->kind) {
        case Kind::kCreateLocal: want_local[op->local.mac] = op->local; break;
        case Kind::kDeleteLocal: want_local[op->local.mac] = std::nullopt; break;
        case Kind::kCreateRemote: want_remote[key_of(op->remote)] = op->remote; break;
        case Kind::kDeleteRemote: {
          const RemoteKey k = key_of(op->remote);
          std::optional<RemoteIfc> cur;
          if (auto w = want_remote.find(k); w != want_remote.end()) cur = w->second;
          else if (auto c = remotes.find(k); c != remotes.end()) cur = c->second;
          if (cur && cur->mac == op->remote.mac && cur->host_ip == op->remote.host_ip) want_remote[k] = std::nullopt;
          else if (!want_remote.contains(k)) want_remote[k] = cur;
          break;
        }
        default: break;
      }
      if (op->is_local()) local_ops[op->local.mac].push_back(op);
      else remote_ops[key_of(op->remote)].push_back(op);
    }
    if (!healthy()) {
      const Error e = last_restore_error.value_or(Error{Errc::kUnavailable, "OVS is not reachable", {}});
      for (auto& [_, v] : local_ops)
        for (Op* op : v) op->error = e;
      for (auto& [_, v] : remote_ops)
        for (Op* op : v) op->error = e;
      return;
    }

    // The differences.
    std::vector<std::pair<api::MacAddress, LocalState>> gone;  // removed or replaced: the old
    std::vector<LocalIfc> made;                                // added or replaced: the new
    std::map<api::MacAddress, std::optional<Error>> local_err;
    for (const auto& [mac, w] : want_local) {
      auto cur = locals.find(mac);
      const bool has = cur != locals.end();
      if (has && w && cur->second.ifc == *w) continue;
      if (!has && !w) continue;
      if (has) gone.emplace_back(mac, cur->second);
      if (w) made.push_back(*w);
      local_err[mac];
    }
    std::vector<RemoteIfc> remote_gone, remote_made;
    std::map<RemoteKey, std::optional<Error>> remote_err;
    for (const auto& [k, w] : want_remote) {
      auto cur = remotes.find(k);
      const bool has = cur != remotes.end();
      if (has && w && cur->second == *w) continue;
      if (!has && !w) continue;
      if (has) remote_gone.push_back(cur->second);
      if (w) remote_made.push_back(*w);
      remote_err[k];
    }
    const size_t changed = local_err.size() + remote_err.size();
    bump(&OvsFabricStats::unchanged, local_ops.size() + remote_ops.size() - changed);
    auto fail_local = [&](const api::MacAddress& mac, const Error& e) {
      if (!local_err[mac]) local_err[mac] = e;
      dirty = true;
    };

    // 1. Ports of removed or replaced locals leave the bridge.
    if (!gone.empty()) {
      auto ours = our_ports();
      std::vector<std::string> uuids;
      for (const auto& [mac, _] : gone)
        if (auto p = ours.find(host_end_name(mac)); p != ours.end()) uuids.push_back(p->second.port_uuid);
      if (auto r = transact(remove_ports_ops(uuids)); !r)
        for (const auto& [mac, _] : gone) fail_local(mac, r.error());
    }
    // 2. Their veths go, the new ones come: one sendmsg.
    {
      std::vector<Request> reqs;
      std::vector<api::MacAddress> owner;
      for (const auto& [mac, _] : gone) {
        if (local_err[mac]) continue;
        reqs.push_back(msg_del_link(host_end_name(mac)));
        owner.push_back(mac);
      }
      std::vector<LocalIfc> creating;
      for (const auto& l : made)
        if (!local_err[l.mac]) creating.push_back(l);
      std::vector<int> fds;
      for (auto& q : veth_creates(creating, fds, owner)) reqs.push_back(std::move(q));
      if (!reqs.empty()) {
        auto rep = sock.transact(reqs, nullptr);
        for (int fd : fds) ::close(fd);
        for (size_t k = 0; k < reqs.size(); ++k) {
          if (!rep) {
            fail_local(owner[k], rep.error());
            continue;
          }
          if (auto e = refusal(reqs[k], (*rep)[k], where)) fail_local(owner[k], *e);
        }
      }
    }
    // 3. Their ports join the bridge; 4. ovs-vswitchd numbers them.
    std::map<api::MacAddress, uint32_t> ofport;
    {
      std::vector<LocalIfc> adding;
      for (const auto& l : made)
        if (!local_err[l.mac]) adding.push_back(l);
      auto added = add_ports(adding);
      if (!added) {
        for (const auto& l : adding) fail_local(l.mac, added.error());
      } else {
        auto nums = wait_ofports(*added);
        for (size_t i = 0; i < adding.size(); ++i) {
          if (nums[i]) ofport[adding[i].mac] = *nums[i];
          else fail_local(adding[i].mac, nums[i].error());
        }
      }
    }
    // 5. One bundle: the old flows out, the new in.
    std::vector<ovs::of::FlowMod> mods;
    for (const auto& [mac, st] : gone)
      if (!local_err[mac]) mods.push_back(ovs::of::FlowMod::remove(ovs::local_cookie(st.ifc, st.ofport)));
    for (const auto& r : remote_gone) mods.push_back(ovs::of::FlowMod::remove(ovs::remote_cookie(r)));
    for (const auto& l : made)
      if (!local_err[l.mac])
        for (auto& f : ovs::local_flows(l, ofport[l.mac])) mods.push_back(ovs::of::FlowMod::add(std::move(f)));
    for (const auto& r : remote_made)
      for (auto& f : ovs::remote_flows(r, vtep)) mods.push_back(ovs::of::FlowMod::add(std::move(f)));
    // Policies go with their locals: a replaced local keeps its policy (on its new port),
    // a deleted one loses it; the security-group defaults go with the last policy.
    std::set<api::MacAddress> remade;
    for (const auto& l : made)
      if (!local_err[l.mac]) remade.insert(l.mac);
    std::vector<api::MacAddress> unpoliced;
    for (const auto& [mac, st] : gone) {
      auto p = policies.find(mac);
      if (local_err[mac] || p == policies.end()) continue;
      mods.push_back(ovs::of::FlowMod::remove(ovs::policy_cookie(st.ifc, st.ofport, p->second)));
      if (!remade.contains(mac)) unpoliced.push_back(mac);
    }
    for (const auto& l : made)
      if (auto p = policies.find(l.mac); !local_err[l.mac] && p != policies.end())
        for (auto& f : ovs::policy_flows(l, ofport[l.mac], p->second, sets)) mods.push_back(ovs::of::FlowMod::add(std::move(f)));
    if (!policies.empty() && unpoliced.size() == policies.size())
      mods.push_back(ovs::of::FlowMod::remove(ovs::kPolicyDefaultsCookie));
    std::map<std::string, std::string> ext_put;
    std::vector<std::string> ext_del;
    for (const auto& [mac, st] : gone)
      if (policies.contains(mac) && !local_err[mac]) ext_del.push_back(std::string(kExtPolicy) + st.ifc.name);
    for (const auto& l : made)
      if (auto p = policies.find(l.mac); !local_err[l.mac] && p != policies.end())
        ext_put[std::string(kExtPolicy) + l.name] = ovs::policy_text(p->second);
    std::erase_if(ext_del, [&](const std::string& k) { return ext_put.contains(k); });
    if (auto r = bundle(mods); !r) {
      for (auto& [mac, e] : local_err)
        if (!e) fail_local(mac, r.error());
      for (auto& [k, e] : remote_err)
        if (!e) e = r.error();
      dirty = true;
    }

    // The cache follows what succeeded; each call gets its interface's outcome.
    for (const auto& mac : unpoliced)
      if (!local_err[mac]) policies.erase(mac);
    if (!ext_put.empty() || !ext_del.empty()) {
      if (auto r = update_bridge_ext(ext_put, ext_del); !r) {
        spdlog::warn("ovs fabric: cannot record policies on bridge {}{}: {}", opts.bridge, where, r.error().message);
        dirty = true;  // the next restoration writes them from the cache
      }
    }
    for (const auto& [mac, st] : gone)
      if (!local_err[mac]) locals.erase(mac);
    for (const auto& l : made)
      if (!local_err[l.mac]) locals[l.mac] = LocalState{l, ofport[l.mac]};
    for (const auto& r : remote_gone)
      if (!remote_err[key_of(r)]) remotes.erase(key_of(r));
    for (const auto& r : remote_made)
      if (!remote_err[key_of(r)]) remotes[key_of(r)] = r;
    for (auto& [mac, v] : local_ops)
      if (auto it = local_err.find(mac); it != local_err.end() && it->second)
        for (Op* op : v) op->error = it->second;
    for (auto& [k, v] : remote_ops)
      if (auto it = remote_err.find(k); it != remote_err.end() && it->second)
        for (Op* op : v) op->error = it->second;
  }

  // --- security groups (flows.h), on the worker thread

  Result<void> unavailable() const {
    return fail(last_restore_error.value_or(Error{Errc::kUnavailable, "OVS is not reachable", {}}));
  }

  // Makes the sets in `names` that do not exist (empty): their bridge records.
  Result<void> make_sets(const std::set<std::string>& names) {
    std::map<std::string, std::string> put;
    for (const auto& n : names)
      if (!sets.contains(n)) put[std::string(kExtSet) + n] = "";
    if (auto r = update_bridge_ext(put, {}); !r) return r;
    for (const auto& n : names) sets[n];
    return {};
  }

  Result<void> set_policy(const LocalIfc& ifc, const std::optional<Policy>& policy) {
    if (auto e = check(ifc)) return fail(std::move(*e));
    if (policy) {
      if (auto e = check(*policy)) return fail(std::move(*e));
      if (auto e = ovs::check_programmable(*policy)) return fail(std::move(*e));
    }
    // Removing: the policy of the local with that MAC, if any (as the linux fabric does:
    // an absent local or policy is success).
    auto old = policies.find(ifc.mac);
    if (!policy && old == policies.end()) return {};
    auto it = locals.find(ifc.mac);
    if (it == locals.end() || (policy && (it->second.ifc.name != ifc.name || it->second.ifc.vni != ifc.vni)))
      return fail(Errc::kNotFound, "the ovs fabric has no local interface " + ifc.name + " (MAC " +
                                       api::format_mac(ifc.mac) + ", VNI " + std::to_string(ifc.vni) + ")");
    const LocalState& st = it->second;
    if (policy && old != policies.end() && old->second == *policy) return {};
    if (!healthy()) return unavailable();
    if (policy) {
      if (auto r = make_sets(ovs::sets_named(*policy)); !r) return r;
    }
    std::vector<ovs::of::FlowMod> mods;
    if (old != policies.end()) mods.push_back(ovs::of::FlowMod::remove(ovs::policy_cookie(st.ifc, st.ofport, old->second)));
    const size_t after = policies.size() + (policy ? 1 : 0) - (old != policies.end() ? 1 : 0);
    if (policies.empty() && after > 0)
      for (auto& f : ovs::policy_default_flows()) mods.push_back(ovs::of::FlowMod::add(std::move(f)));
    if (policy)
      for (auto& f : ovs::policy_flows(st.ifc, st.ofport, *policy, sets)) mods.push_back(ovs::of::FlowMod::add(std::move(f)));
    if (!policies.empty() && after == 0) mods.push_back(ovs::of::FlowMod::remove(ovs::kPolicyDefaultsCookie));
    const std::string key = std::string(kExtPolicy) + st.ifc.name;
    if (policy) {
      if (auto r = update_bridge_ext({{key, ovs::policy_text(*policy)}}, {}); !r) return r;
    } else {
      if (auto r = update_bridge_ext({}, {key}); !r) return r;
    }
    if (auto r = bundle(mods); !r) {
      dirty = true;  // the bridge's record says the new policy: the restoration follows the cache
      return r;
    }
    if (policy) policies[ifc.mac] = *policy;
    else policies.erase(ifc.mac);
    return {};
  }

  Result<void> update_set(const std::string& name, const std::vector<uint32_t>& add, const std::vector<uint32_t>& remove) {
    if (auto e = check_set_name(name)) return fail(std::move(*e));
    if (!healthy()) return unavailable();
    if (auto r = make_sets({name}); !r) return r;
    const std::set<uint32_t>& cur = sets[name];
    // An address both added and removed stays (as in the linux fabric).
    const std::set<uint32_t> adding(add.begin(), add.end());
    std::set<uint32_t> gone, fresh;
    for (uint32_t a : adding)
      if (!cur.contains(a)) fresh.insert(a);
    for (uint32_t a : remove)
      if (cur.contains(a) && !adding.contains(a)) gone.insert(a);
    if (fresh.empty() && gone.empty()) return {};
    // One flow per address in the set's table, and one per rule naming the set of each
    // policy: O(rules naming the set) per address, whatever the set's size.
    std::vector<ovs::of::FlowMod> mods;
    for (uint32_t a : gone) mods.push_back(ovs::of::FlowMod::remove_strict(ovs::set_store_flow(name, a)));
    for (uint32_t a : fresh) mods.push_back(ovs::of::FlowMod::add(ovs::set_store_flow(name, a)));
    for (const auto& [mac, p] : policies) {
      if (!ovs::sets_named(p).contains(name)) continue;
      const LocalState& st = locals.at(mac);
      for (uint32_t a : gone)
        for (auto& f : ovs::set_member_flows(st.ifc, st.ofport, p, name, a, sets))
          mods.push_back(ovs::of::FlowMod::remove_strict(std::move(f)));
      for (uint32_t a : fresh)
        for (auto& f : ovs::set_member_flows(st.ifc, st.ofport, p, name, a, sets))
          mods.push_back(ovs::of::FlowMod::add(std::move(f)));
    }
    if (auto r = bundle(mods); !r) {
      dirty = true;
      return r;
    }
    auto& s = sets[name];
    for (uint32_t a : gone) s.erase(a);
    s.insert(fresh.begin(), fresh.end());
    return {};
  }

  Result<void> delete_set(const std::string& name) {
    if (auto e = check_set_name(name)) return fail(std::move(*e));
    if (!sets.contains(name)) return {};
    for (const auto& [mac, p] : policies)
      if (ovs::sets_named(p).contains(name))
        return fail(Errc::kConflict, "address set " + name + " is named by the policy of " + locals.at(mac).ifc.name);
    if (!healthy()) return unavailable();
    if (auto r = bundle({ovs::of::FlowMod::remove(ovs::set_cookie(name))}); !r) {
      dirty = true;
      return r;
    }
    if (auto r = update_bridge_ext({}, {std::string(kExtSet) + name}); !r) {
      dirty = true;
      return r;
    }
    sets.erase(name);
    return {};
  }

  std::map<std::string, std::vector<uint32_t>> list_sets() const {
    std::map<std::string, std::vector<uint32_t>> out;
    for (const auto& [name, addrs] : sets) out[name].assign(addrs.begin(), addrs.end());
    return out;
  }

  std::map<std::string, Policy> list_policies() const {
    std::map<std::string, Policy> out;
    for (const auto& [mac, p] : policies) out[locals.at(mac).ifc.name] = p;
    return out;
  }
};

// ---------------------------------------------------------------------------------------

Result<void> OvsFabric::set_policy(const LocalIfc& ifc, const std::optional<Policy>& policy) {
  return impl_->call<void>([&] { return impl_->set_policy(ifc, policy); });
}

Result<void> OvsFabric::update_set(const std::string& name, const std::vector<uint32_t>& add,
                                   const std::vector<uint32_t>& remove) {
  return impl_->call<void>([&] { return impl_->update_set(name, add, remove); });
}

Result<void> OvsFabric::delete_set(const std::string& name) {
  return impl_->call<void>([&] { return impl_->delete_set(name); });
}

Result<std::map<std::string, std::vector<uint32_t>>> OvsFabric::list_sets() {
  return impl_->call<std::map<std::string, std::vector<uint32_t>>>(
      [&]() -> Result<std::map<std::string, std::vector<uint32_t>>> { return impl_->list_sets(); });
}

Result<std::map<std::string, Policy>> OvsFabric::list_policies() {
  return impl_->call<std::map<std::string, Policy>>(
      [&]() -> Result<std::map<std::string, Policy>> { return impl_->list_policies(); });
}

OvsFabric::OvsFabric(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
OvsFabric::~OvsFabric() = default;

Result<std::unique_ptr<Fabric>> OvsFabric::open(const OvsFabricOptions& opts) {
  if (!opts.db.starts_with("unix:") || opts.db.size() <= 5)
    return fail(Errc::kInvalid, "ovs fabric: --ovs-db must be unix:PATH (ovsdb-server's socket), not \"" + opts.db + "\"");
  if (opts.bridge.empty() || opts.bridge.size() > 15 || opts.bridge.find('/') != std::string::npos)
    return fail(Errc::kInvalid, "ovs fabric: bad bridge name \"" + opts.bridge + "\" (1..15 characters, no '/')");
  if (!opts.datapath_type.empty() && opts.datapath_type != "system" && opts.datapath_type != "netdev")
    return fail(Errc::kInvalid, "ovs fabric: datapath type must be system or netdev, not \"" + opts.datapath_type + "\"");
  if (opts.mtu < 68 || opts.mtu > 65535)
    return fail(Errc::kInvalid, "ovs fabric: MTU " + std::to_string(opts.mtu) + " is out of range 68..65535");
  auto ns = open_fabric_netns(opts.netns, "ovs fabric");
  if (!ns) return fail(ns.error());
  auto impl = std::make_unique<Impl>(opts);
  impl->node_ns = *ns;
  const std::string rundir =
      opts.rundir.empty() ? std::filesystem::path(opts.db.substr(5)).parent_path().string() : opts.rundir;
  impl->mgmt = (std::filesystem::path(rundir) / (opts.bridge + ".mgmt")).string();
  const int dup = fcntl(*ns, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return fail(sys_error("ovs fabric: cannot duplicate the namespace descriptor", errno));
  if (auto r = impl->start(dup); !r) return fail(r.error());
  return std::unique_ptr<Fabric>(new OvsFabric(std::move(impl)));
}

WorkerQueue& OvsFabric::queue() { return impl_->queue; }

Result<Plugged> OvsFabric::plug(const LocalIfc& ifc, const Plug& plug) {
  return plug_guest_end(impl_->node_ns, impl_->where, ifc, plug);
}

Result<Plugged> OvsFabric::inspect(const std::string& netns, const std::string& ifname) {
  return inspect_netns(netns, ifname);
}

OvsFabricStats OvsFabric::stats() const {
  std::lock_guard lk(impl_->stats_mu);
  return impl_->stats;
}

}  // namespace kos::fabric
