#include "common/duration.h"

#include <charconv>
#include <cmath>
#include <cstdio>

namespace kos {

Result<std::chrono::microseconds> parse_duration(std::string_view s) {
  auto bad = [&] {
    return fail(Errc::kInvalid, "'" + std::string(s) + "' is not a duration (e.g. 250ms, 1.5s, 2m; units us, ms, s, m, h)");
  };
  if (s == "0") return std::chrono::microseconds(0);
  size_t unit = s.find_first_not_of("0123456789.");
  if (unit == 0 || unit == std::string_view::npos) return bad();
  std::string_view num = s.substr(0, unit), u = s.substr(unit);
  double v = 0;
  auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
  if (ec != std::errc() || ptr != num.data() + num.size() || !std::isfinite(v) || v < 0) return bad();
  double us;
  if (u == "us") us = v;
  else if (u == "ms") us = v * 1e3;
  else if (u == "s") us = v * 1e6;
  else if (u == "m") us = v * 60e6;
  else if (u == "h") us = v * 3600e6;
  else return bad();
  if (us > 1e15) return bad();
  return std::chrono::microseconds(static_cast<int64_t>(std::llround(us)));
}

std::string format_duration(std::chrono::microseconds d) {
  char buf[64];
  int64_t us = d.count();
  if (us == 0) return "0s";
  if (us % 1000000 == 0) std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(us / 1000000));
  else if (us >= 1000000) std::snprintf(buf, sizeof buf, "%gs", static_cast<double>(us) / 1e6);
  else if (us % 1000 == 0) std::snprintf(buf, sizeof buf, "%lldms", static_cast<long long>(us / 1000));
  else if (us >= 1000) std::snprintf(buf, sizeof buf, "%gms", static_cast<double>(us) / 1e3);
  else std::snprintf(buf, sizeof buf, "%lldus", static_cast<long long>(us));
  return buf;
}

}  // namespace kos
