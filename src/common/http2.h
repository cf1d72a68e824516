// Helpers for nghttp2 shared by the HTTP server's and the client's HTTP/2 connections.
#pragma once

#include <algorithm>
#include <cstring>
#include <string>

#include <nghttp2/nghttp2.h>

namespace kos::http {

// A header field pointing into strings the caller keeps alive until the frame is submitted
// (nghttp2 copies it then).
inline nghttp2_nv http2_header(const std::string& name, const std::string& value) {
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
          reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
          NGHTTP2_NV_FLAG_NONE};
}

// Moves the frames the session has to send into `out` (emptied first), up to about
// `max` bytes, for one write. False if the session failed (the connection must close).
inline bool http2_take_output(nghttp2_session* session, std::string& out, size_t max = 64 << 10) {
  out.clear();
  while (out.size() < max) {
    const uint8_t* data;
    ssize_t n = nghttp2_session_mem_send(session, &data);
    if (n < 0) return false;
    if (n == 0) break;
    out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
  }
  return true;
}

// A data source's read of a body held whole: copies what fits from `offset` on, and ends
// the stream's data at its last byte.
inline ssize_t http2_read_body(const std::string& body, size_t& offset, uint8_t* buf, size_t len, uint32_t* flags) {
  size_t n = std::min(len, body.size() - offset);
  std::memcpy(buf, body.data() + offset, n);
  offset += n;
  if (offset == body.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return static_cast<ssize_t>(n);
}

}  // namespace kos::http
