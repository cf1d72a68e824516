#include "common/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace kos::log {

Result<void> init(std::string_view level) {
  auto lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off")
    return fail(Errc::kBadRequest, "unknown log level '" + std::string(level) +
                                       "' (use trace, debug, info, warn, error or off)");
  auto logger = spdlog::stderr_logger_mt("kos");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %^%l%$ %v", spdlog::pattern_time_type::utc);
  spdlog::set_level(lvl);
  return {};
}

}  // namespace kos::log
