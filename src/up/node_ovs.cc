#include "up/node_ovs.h"

#include <thread>

#include "common/subprocess.h"

namespace kos::up {
namespace fs = std::filesystem;

namespace {
// Waits for a daemon's socket; false if it did not appear in 10 s.
bool wait_for(const fs::path& p) {
  for (int i = 0; i < 1000; ++i) {
    std::error_code ec;
    if (fs::exists(p, ec)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // the daemon creates it
  }
  return false;
}
}  // namespace

bool ovs_installed() {
  std::error_code ec;
  return fs::exists("/usr/sbin/ovsdb-server", ec) && fs::exists("/usr/sbin/ovs-vswitchd", ec) &&
         fs::exists("/usr/bin/ovs-vsctl", ec) && fs::exists(kOvsSchema, ec);
}

std::vector<std::string> ovsdb_server_argv(const std::string& netns, const fs::path& rundir) {
  return {"/usr/bin/ip", "netns", "exec", netns, "/usr/sbin/ovsdb-server", (rundir / "conf.db").string(),
          "--remote=punix:" + (rundir / "db.sock").string(), "--unixctl=" + (rundir / "ovsdb.ctl").string(),
          "--no-chdir", "-vconsole:off", "--log-file=" + (rundir / "ovsdb.log").string()};
}

std::vector<std::string> ovs_vswitchd_argv(const std::string& netns, const fs::path& rundir) {
  return {"/usr/bin/env", "OVS_RUNDIR=" + rundir.string(), "/usr/bin/ip", "netns", "exec", netns,
          "/usr/sbin/ovs-vswitchd", "unix:" + (rundir / "db.sock").string(),
          "--unixctl=" + (rundir / "vswitchd.ctl").string(), "--no-chdir", "-vconsole:off",
          "--log-file=" + (rundir / "vswitchd.log").string()};
}

Result<NodeOvs> start_node_ovs(Supervisor& sup, const std::string& name, const std::string& netns,
                               const fs::path& rundir, const std::string& underlay_cidr) {
  std::error_code ec;
  fs::remove_all(rundir, ec);  // a fresh database: the agent adopts nothing from an earlier run
  fs::create_directories(rundir, ec);
  if (ec) return fail(Errc::kInternal, "cannot make " + rundir.string() + ": " + ec.message());
  const std::string db_file = (rundir / "conf.db").string(), sock = (rundir / "db.sock").string();
  if (auto r = run_checked({"ovsdb-tool", "create", db_file, kOvsSchema}); !r) return fail(r.error());
  if (auto r = sup.spawn("ovsdb " + name, ovsdb_server_argv(netns, rundir)); !r) return fail(r.error());
  if (!wait_for(sock)) return fail(Errc::kTimeout, "ovsdb-server of " + name + " made no socket " + sock + " in 10 s");
  const std::vector<std::string> vsctl = {"ovs-vsctl", "--db=unix:" + sock, "--timeout=10"};
  auto with = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = vsctl;
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  };
  if (auto r = run_checked(with({"--no-wait", "init"})); !r) return fail(r.error());
  if (auto r = sup.spawn("vswitchd " + name, ovs_vswitchd_argv(netns, rundir)); !r) return fail(r.error());
  // ovs-vsctl waits until ovs-vswitchd has made the bridge.
  if (auto r = run_checked(with({"add-br", "brul", "--", "set", "bridge", "brul", "datapath_type=netdev", "--",
                                 "add-port", "brul", "ul0"}));
      !r)
    return fail(r.error());
  for (const auto& step : std::vector<std::vector<std::string>>{
           {"ip", "-n", netns, "addr", "del", underlay_cidr, "dev", "ul0"},
           {"ip", "-n", netns, "addr", "add", underlay_cidr, "dev", "brul"},
           {"ip", "-n", netns, "link", "set", "brul", "up"}})
    if (auto r = run_checked(step); !r) return fail(r.error());
  return NodeOvs{"unix:" + sock};
}

}  // namespace kos::up
