// Running a program to completion (never through a shell): `ip` for the namespaces of
// `kos up`, `ping` for its examples. Its stdout is returned; a failure names the program and
// carries what it wrote on stderr.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "common/error.h"

namespace kos {

struct CommandResult {
  int exit_status = -1;  // the exit code, or -signal
  std::string out, err;  // each cut at 64 KiB
};

// Runs argv (argv[0] looked up in PATH when it has no '/') with stdin from /dev/null, and
// waits for it, killing it after `timeout`. Errors: it could not be started, or timed out.
Result<CommandResult> run_command(const std::vector<std::string>& argv,
                                  std::chrono::milliseconds timeout = std::chrono::seconds(30));

// As run_command, and a non-zero exit is an error too ("ip netns add x: exit 1: <stderr>").
Result<std::string> run_checked(const std::vector<std::string>& argv,
                                std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace kos
