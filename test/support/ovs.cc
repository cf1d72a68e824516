#include "test/support/ovs.h"

#include <filesystem>
#include <thread>

namespace kos::testing {

bool ovs_installed() {
  return std::filesystem::exists("/usr/sbin/ovsdb-server") && std::filesystem::exists("/usr/sbin/ovs-vswitchd") &&
         std::filesystem::exists("/usr/share/openvswitch/vswitch.ovsschema");
}

OvsInstance::OvsInstance(std::string netns) : netns_(std::move(netns)) {}

OvsInstance::~OvsInstance() {
  vswitchd_.reset();  // SIGKILL and reap
  ovsdb_.reset();
}

namespace {
bool wait_for(const std::filesystem::path& p) {
  for (int i = 0; i < 500; ++i) {
    if (std::filesystem::exists(p)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // the daemon creates it
  }
  return false;
}
}  // namespace

std::string OvsInstance::start() {
  const auto d = dir_.path();
  auto made = run({"ovsdb-tool", "create", (d / "conf.db").string(), "/usr/share/openvswitch/vswitch.ovsschema"});
  if (made.exit_code != 0) return "ovsdb-tool create: " + made.err;
  ovsdb_ = std::make_unique<ChildProcess>(
      std::vector<std::string>{"ip", "netns", "exec", netns_, "/usr/sbin/ovsdb-server", (d / "conf.db").string(),
                               "--remote=punix:" + (d / "db.sock").string(), "--unixctl=" + (d / "ovsdb.ctl").string(),
                               "--no-chdir", "-vconsole:off", "--log-file=" + (d / "ovsdb.log").string()},
      false);
  if (!wait_for(d / "db.sock")) return "ovsdb-server did not create its socket";
  auto init = vsctl({"--no-wait", "init"});
  if (init.exit_code != 0) return "ovs-vsctl init: " + init.err;
  return start_vswitchd();
}

std::string OvsInstance::start_vswitchd() {
  const auto d = dir_.path();
  std::filesystem::remove(d / "vswitchd.ctl");
  vswitchd_ = std::make_unique<ChildProcess>(
      std::vector<std::string>{"env", "OVS_RUNDIR=" + d.string(), "ip", "netns", "exec", netns_, "/usr/sbin/ovs-vswitchd",
                               db(), "--unixctl=" + (d / "vswitchd.ctl").string(), "--no-chdir",
                               "-vconsole:off", "--log-file=" + (d / "vswitchd.log").string()},
      false);
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

}  // namespace kos::testing
