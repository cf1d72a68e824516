// KOS_HTTP2=off (or 0) turns HTTP/2 off in every client and server of a process, as
// GODEBUG=http2client=0,http2server=0 does for Go programs: for a proxy in the way that
// mishandles it, or to compare the two protocols.
#pragma once

#include <cstdlib>
#include <string_view>

namespace kos::http {

inline bool http2_disabled_by_env() {
  const char* env = std::getenv("KOS_HTTP2");
  return env && (std::string_view(env) == "off" || std::string_view(env) == "0");
}

}  // namespace kos::http
