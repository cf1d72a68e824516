#include "fabric/ovs/bridge.h"

#include <filesystem>
#include <thread>

#include <spdlog/spdlog.h>

namespace kos::fabric::ovs {
namespace json = boost::json;

namespace {

constexpr const char* kDb = "Open_vSwitch";

json::value set_of(std::initializer_list<const char*> items) {
  json::array a;
  for (const char* i : items) a.emplace_back(i);
  return json::array{"set", std::move(a)};
}

Result<json::array> select(OvsdbClient& db, const char* table, const std::string& name, json::array columns,
                           std::chrono::milliseconds timeout) {
  auto r = db.transact(kDb,
                       json::array{json::object{{"op", "select"}, {"table", table}, {"where", where_name(name)},
                                                {"columns", std::move(columns)}}},
                       timeout);
  if (!r) return fail(r.error());
  return r->at(0).as_object().at("rows").as_array();
}

std::string str(const json::object& row, const char* col) {
  const auto* v = row.if_contains(col);
  return v ? ovsdb_string(*v) : std::string();
}

}  // namespace

std::string detect_datapath_type() {
  std::error_code ec;
  return std::filesystem::exists("/sys/module/openvswitch", ec) ? "system" : "netdev";
}

Result<BridgePorts> ensure_bridge(OvsdbClient& db, const BridgeOptions& o, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const std::string dp = o.datapath_type.empty() ? detect_datapath_type() : o.datapath_type;
  const json::value protocols = set_of({"OpenFlow14", "OpenFlow15"});
  BridgePorts out;

  auto bridges = select(db, "Bridge", o.name, json::array{"_uuid", "fail_mode", "datapath_type"}, timeout);
  if (!bridges) return fail(bridges.error());
  if (bridges->empty()) {
    // As ovs-vsctl add-br: the bridge, its internal port and interface, in the root row's
    // set; "wait" makes it fail rather than duplicate if another client made it meanwhile.
    auto r = db.transact(
        kDb,
        json::array{
            json::object{{"op", "wait"}, {"table", "Bridge"}, {"where", where_name(o.name)}, {"columns", json::array{"name"}},
                         {"until", "=="}, {"rows", json::array{}}, {"timeout", 0}},
            json::object{{"op", "insert"}, {"table", "Interface"},
                         {"row", json::object{{"name", o.name}, {"type", "internal"}}}, {"uuid-name", "bri"}},
            json::object{{"op", "insert"}, {"table", "Port"},
                         {"row", json::object{{"name", o.name}, {"interfaces", json::array{"named-uuid", "bri"}}}},
                         {"uuid-name", "brp"}},
            json::object{{"op", "insert"}, {"table", "Bridge"},
                         {"row", json::object{{"name", o.name}, {"ports", json::array{"named-uuid", "brp"}},
                                              {"fail_mode", "secure"}, {"datapath_type", dp}, {"protocols", protocols}}},
                         {"uuid-name", "br"}},
            json::object{{"op", "mutate"}, {"table", "Open_vSwitch"}, {"where", json::array{}},
                         {"mutations", json::array{json::array{
                                           "bridges", "insert", json::array{"set", json::array{json::array{"named-uuid", "br"}}}}}}},
        },
        timeout);
    if (!r) return fail(r.error());
    out.created = true;
    spdlog::info("ovs: created bridge {} datapath_type={} fail_mode=secure", o.name, dp);
  } else {
    const auto& row = bridges->at(0).as_object();
    if (str(row, "fail_mode") != "secure" || str(row, "datapath_type") != dp) {
      spdlog::info("ovs: bridge {} had fail_mode={} datapath_type={}; setting secure, {}", o.name, str(row, "fail_mode"),
                   str(row, "datapath_type"), dp);
    }
    auto r = db.transact(kDb,
                         json::array{json::object{{"op", "update"}, {"table", "Bridge"}, {"where", where_name(o.name)},
                                                  {"row", json::object{{"fail_mode", "secure"}, {"datapath_type", dp},
                                                                       {"protocols", protocols}}}}},
                         timeout);
    if (!r) return fail(r.error());
  }

  // The VXLAN port.
  const json::value options = ovsdb_map({{"key", "flow"}, {"remote_ip", "flow"}});
  auto ifaces = select(db, "Interface", o.vtep, json::array{"type", "options"}, timeout);
  if (!ifaces) return fail(ifaces.error());
  if (ifaces->empty()) {
    auto r = db.transact(
        kDb,
        json::array{
            json::object{{"op", "insert"}, {"table", "Interface"},
                         {"row", json::object{{"name", o.vtep}, {"type", "vxlan"}, {"options", options}}},
                         {"uuid-name", "vi"}},
            json::object{{"op", "insert"}, {"table", "Port"},
                         {"row", json::object{{"name", o.vtep}, {"interfaces", json::array{"named-uuid", "vi"}}}},
                         {"uuid-name", "vp"}},
            json::object{{"op", "mutate"}, {"table", "Bridge"}, {"where", where_name(o.name)},
                         {"mutations", json::array{json::array{
                                           "ports", "insert", json::array{"set", json::array{json::array{"named-uuid", "vp"}}}}}}},
        },
        timeout);
    if (!r) return fail(r.error());
    spdlog::info("ovs: added port {} (vxlan, key=flow, remote_ip=flow) to bridge {}", o.vtep, o.name);
  } else {
    auto r = db.transact(kDb,
                         json::array{json::object{{"op", "update"}, {"table", "Interface"}, {"where", where_name(o.vtep)},
                                                  {"row", json::object{{"type", "vxlan"}, {"options", options}}}}},
                         timeout);
    if (!r) return fail(r.error());
  }

  // ovs-vswitchd writes the port's OpenFlow number back once it has made the port.
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return fail(Errc::kTimeout, "ovs-vswitchd gave port " + o.vtep + " no OpenFlow port number in time (is it running?)");
    auto rows = select(db, "Interface", o.vtep, json::array{"ofport"}, left);
    if (!rows) return fail(rows.error());
    if (!rows->empty())
      if (const auto* p = rows->at(0).as_object().if_contains("ofport"); p && p->is_int64() && p->as_int64() > 0) {
        out.vtep_ofport = p->as_int64();
        return out;
      }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // polling what ovs-vswitchd writes
  }
}

}  // namespace kos::fabric::ovs
