// An HTTP/2 header field for nghttp2 pointing into strings the caller keeps alive until
// the frame is submitted (nghttp2 copies it then).
#pragma once

#include <string>

#include <nghttp2/nghttp2.h>

namespace kos::http {

inline nghttp2_nv http2_header(const std::string& name, const std::string& value) {
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
          reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
          NGHTTP2_NV_FLAG_NONE};
}

}  // namespace kos::http
