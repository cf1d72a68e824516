#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <set>

#include <sched.h>

#include <CLI/CLI.hpp>

#include "cmd/commands.h"
#include "cmd/version.h"
#include "common/log.h"

int main(int argc, char** argv) {
  CLI::App app{
      "KOS: virtual networks (VXLAN overlays) driven through a Kubernetes-style API.\n"
      "Components run as subcommands of this one executable."};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  std::string scheduling = "batch";
  app.add_option("--scheduling", scheduling,
                 "CPU scheduling of the long-running components (apiserver, controller-manager, "
                 "agent, simulate, up): batch (Linux SCHED_BATCH: a KOS thread that wakes does "
                 "not preempt the task running on its CPU, so work handed between threads is "
                 "taken in batches; about a third fewer context switches under load) or normal "
                 "(the default Linux policy, SCHED_OTHER). kos up's components inherit it")
      ->envname("KOS_SCHEDULING")
      ->check(CLI::IsMember({"batch", "normal"}))
      ->capture_default_str();
  std::function<int()> run;

  auto* version = app.add_subcommand("version", "Print the KOS version");
  version->callback([&] {
    run = [] { return std::printf("kos %s (allocator: %s)\n", KOS_VERSION, KOS_ALLOCATOR) < 0; };
  });

  kos::cmd::add_up_commands(app, run);
  kos::cmd::add_apiserver_command(app, run);
  kos::cmd::add_controller_manager_command(app, run);
  kos::cmd::add_agent_command(app, run);
  kos::cmd::add_store_commands(app, run);
  kos::cmd::add_ipam_check_command(app, run);
  kos::cmd::add_check_command(app, run);
  kos::cmd::add_credentials_command(app, run);
  kos::cmd::add_simulate_command(app, run);
  kos::cmd::add_driver_command(app, run);

  CLI11_PARSE(app, argc, argv);
  if (auto r = kos::log::init(log_level); !r) {
    std::fprintf(stderr, "kos: %s\n", r.error().message.c_str());
    return 2;
  }
  // The processes a component starts (kos up's) make the same choice.
  setenv("KOS_SCHEDULING", scheduling.c_str(), 1);
  // Before any thread starts: the threads a component creates inherit the policy.
  static const std::set<std::string> kComponents = {"apiserver", "controller-manager", "agent",
                                                    "simulate", "up"};
  if (scheduling == "batch" && !app.get_subcommands().empty() &&
      kComponents.count(app.get_subcommands().front()->get_name())) {
    sched_param param{};
    if (sched_setscheduler(0, SCHED_BATCH, &param) != 0)
      std::fprintf(stderr, "kos: warning: cannot use SCHED_BATCH (%s); running under the normal policy\n",
                   std::strerror(errno));
  }
  return run ? run() : 0;
}
