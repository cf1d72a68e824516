// Logging: spdlog, structured as "message key=value ...", always to stderr (stdout belongs
// to command output such as kubectl-style tables or a CNI result).
#pragma once

#include <string_view>

#include "common/error.h"

namespace kos::log {

// Installs the stderr logger as spdlog's default at `level` (trace, debug, info, warn,
// error, off). Call once at the start of main().
Result<void> init(std::string_view level = "info");

}  // namespace kos::log
