// Durations as people write them on command lines: "250ms", "1.5s", "5m", "100us", "0".
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "common/error.h"

namespace kos {

// kInvalid (with a message that shows the accepted forms) for anything else. Units: us, ms,
// s, m, h.
Result<std::chrono::microseconds> parse_duration(std::string_view s);
std::string format_duration(std::chrono::microseconds d);  // "1.5s", "250ms", "100us"

}  // namespace kos
