// Each subcommand of `kos` registers itself on the app and runs when selected.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace kos::cmd {

// Adds `kos store ...` (inspect and maintain a store) to `app`; `run` is set to the
// selected action.
void add_store_commands(CLI::App& app, std::function<int()>& run);
// `kos apiserver`.
void add_apiserver_command(CLI::App& app, std::function<int()>& run);
// `kos agent`.
void add_agent_command(CLI::App& app, std::function<int()>& run);
// `kos simulate`: N agents on the fake fabric in one process.
void add_simulate_command(CLI::App& app, std::function<int()>& run);
// `kos driver`: the attachment throughput driver.
void add_driver_command(CLI::App& app, std::function<int()>& run);
// `kos controller-manager`.
void add_controller_manager_command(CLI::App& app, std::function<int()>& run);
// `kos up` (the whole system on this machine) and `kos down` (what a killed one left).
void add_up_commands(CLI::App& app, std::function<int()>& run);
// `kos ipam-check`: report (and with --repair, fix) IPAM inconsistencies.
void add_ipam_check_command(CLI::App& app, std::function<int()>& run);
// `kos check -f FILE`: connectivity expectations probed from inside the guests.
void add_check_command(CLI::App& app, std::function<int()>& run);
void add_credentials_command(CLI::App& app, std::function<int()>& run);

// `kos agent` and `kos simulate`: agent::AgentOptions::remotes_inline off.
inline constexpr const char* kRemotesOnWorkersHelp =
    "program remote attachments on the reconcile workers only (default: an update of one is programmed on "
    "the client thread that received it when no worker holds it, saving a thread hand-off per event; set "
    "this if the fabric's calls are slow)";

}  // namespace kos::cmd
