#include "test/support/ovs.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "api/cidr.h"
#include "up/node_ovs.h"

namespace kos::testing {

bool ovs_installed() { return up::ovs_installed(); }

OvsInstance::OvsInstance(std::string netns) : netns_(std::move(netns)) {}

OvsInstance::~OvsInstance() {
  vswitchd_.reset();  // SIGKILL and reap
  ovsdb_.reset();
}

namespace {
// A daemon's socket appears once it serves.
bool wait_for(const std::filesystem::path& p) {
  return poll_until([&] { return std::filesystem::exists(p); }, std::chrono::seconds(5), std::chrono::milliseconds(10));
}
}  // namespace

std::string OvsInstance::start() {
  if (auto e = start_ovsdb(true); !e.empty()) return e;
  return start_vswitchd();
}

std::string OvsInstance::restart_ovsdb(bool fresh) {
  ovsdb_.reset();
  return start_ovsdb(fresh);
}

std::string OvsInstance::start_ovsdb(bool create) {
  const auto d = dir_.path();
  if (create) {
    std::filesystem::remove(d / "conf.db");
    auto made = run({"ovsdb-tool", "create", (d / "conf.db").string(), up::kOvsSchema});
    if (made.exit_code != 0) return "ovsdb-tool create: " + made.err;
  }
  std::filesystem::remove(d / "db.sock");
  ovsdb_ = std::make_unique<ChildProcess>(up::ovsdb_server_argv(netns_, d), false);
  if (!wait_for(d / "db.sock")) return "ovsdb-server did not create its socket";
  auto init = vsctl({"--no-wait", "init"});
  if (init.exit_code != 0) return "ovs-vsctl init: " + init.err;
  return "";
}

std::string OvsInstance::start_vswitchd() {
  const auto d = dir_.path();
  std::filesystem::remove(d / "vswitchd.ctl");
  vswitchd_ = std::make_unique<ChildProcess>(up::ovs_vswitchd_argv(netns_, d), false);
  if (!wait_for(d / "vswitchd.ctl")) return "ovs-vswitchd did not create its control socket";
  return "";
}

std::string OvsInstance::restart_vswitchd() {
  vswitchd_.reset();
  return start_vswitchd();
}

RunResult OvsInstance::vsctl(std::vector<std::string> args) const {
  std::vector<std::string> argv = {"ovs-vsctl", "--db=" + db(), "--timeout=10"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv);
}

RunResult OvsInstance::ofctl(std::vector<std::string> args) const {
  std::vector<std::string> argv = {"ovs-ofctl", "-O", "OpenFlow14"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv);
}

std::vector<std::string> OvsInstance::flows(const std::string& bridge) const {
  auto r = ofctl({"dump-flows", mgmt(bridge)});
  if (r.exit_code != 0) return {"ovs-ofctl dump-flows failed: " + r.err};
  std::vector<std::string> out;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    if (line.find("cookie=") == std::string::npos) continue;  // the reply's header
    std::string kept;
    std::istringstream fields(line);
    // "cookie=0x.., duration=1.2s, table=0, n_packets=0, n_bytes=0, priority=..,match actions=.."
    for (std::string f; std::getline(fields, f, ' ');) {
      if (f.empty() || f.starts_with("duration=") || f.starts_with("n_packets=") || f.starts_with("n_bytes=") ||
          f.starts_with("idle_age=") || f.starts_with("hard_age="))
        continue;
      if (!kept.empty()) kept += ' ';
      kept += f;
    }
    out.push_back(kept);
  }
  std::sort(out.begin(), out.end());
  return out;
}

namespace {
std::string hex(uint64_t v) {
  char b[32];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}
}  // namespace

std::vector<std::string> expected_flows(const std::vector<std::pair<fabric::LocalIfc, int>>& locals,
                                        const std::vector<fabric::RemoteIfc>& remotes, int vtep) {
  std::vector<std::string> out = {"table=0, priority=0 actions=goto_table:1", "table=1, priority=0 actions=drop"};
  for (const auto& [l, port] : locals) {
    const std::string p = std::to_string(port), vni = hex(l.vni);
    out.push_back("table=0, priority=100,in_port=" + p + " actions=set_field:" + vni + "->tun_id,goto_table:1");
    out.push_back("table=1, priority=100,tun_id=" + vni + ",dl_dst=" + api::format_mac(l.mac) + " actions=output:" + p);
    out.push_back("table=1, priority=100,arp,tun_id=" + vni + ",arp_tpa=" + api::format_ipv4(l.guest_ip) +
                  " actions=output:" + p);
  }
  for (const auto& r : remotes) {
    const std::string to = " actions=set_field:" + api::format_ipv4(r.host_ip) + "->tun_dst,output:" + std::to_string(vtep);
    out.push_back("table=1, priority=100,tun_id=" + hex(r.vni) + ",dl_dst=" + api::format_mac(r.mac) + to);
    out.push_back("table=1, priority=100,arp,tun_id=" + hex(r.vni) + ",arp_tpa=" + api::format_ipv4(r.guest_ip) + to);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> OvsInstance::flows_without_cookies(const std::string& bridge) const {
  std::vector<std::string> out;
  for (const auto& l : flows(bridge)) out.push_back(without_cookie(l));
  std::sort(out.begin(), out.end());
  return out;
}

uint64_t flow_cookie(const std::string& line) {
  if (!line.starts_with("cookie=")) return 0;
  return std::stoull(line.substr(7), nullptr, 16);
}

std::string without_cookie(const std::string& line) {
  const auto sp = line.find(' ');
  return line.starts_with("cookie=") && sp != std::string::npos ? line.substr(sp + 1) : line;
}

}  // namespace kos::testing
