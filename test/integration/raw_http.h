// One raw HTTP/1.1 request on its own connection, read as the bytes come: for what a
// client library hides (a watch's first bytes, a watcher that stops reading, the ERROR
// line at the end of a stream).
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <openssl/ssl.h>

namespace kos::testing {

class RawHttp {
 public:
  struct Options {
    std::string method = "GET";
    std::string body;  // sent as application/json (merge patch for PATCH) when not empty
    // The socket's receive buffer, set before connecting (0: the system's): a small one
    // makes a client that does not read back up the server at once.
    int receive_buffer = 0;
    // For an https URL: the kubeconfig whose CA, client certificate or token to use.
    std::string kubeconfig;
  };
  // Connects to `url` (http:// or https://HOST:PORT) and sends the request for `target`.
  RawHttp(const std::string& url, const std::string& target, Options opts);
  RawHttp(const std::string& url, const std::string& target) : RawHttp(url, target, Options{}) {}
  ~RawHttp();
  RawHttp(const RawHttp&) = delete;
  RawHttp& operator=(const RawHttp&) = delete;

  // Reads until `needle` has arrived or `timeout` passed; returns whether it arrived.
  bool read_until(std::string_view needle, std::chrono::milliseconds timeout);
  // Reads until the server closes the connection or `timeout` passed; returns whether it
  // closed.
  bool read_to_end(std::chrono::milliseconds timeout);
  // Everything read so far (status line, headers, body with chunk framing).
  const std::string& data() const { return data_; }
  // The number of times `needle` occurs in what was read.
  size_t count(std::string_view needle) const;

 private:
  // One read of at most 200 ms; false when the connection closed or failed.
  bool read_some();

  boost::asio::io_context io_;
  boost::asio::ip::tcp::socket socket_;
  SSL_CTX* ctx_ = nullptr;  // TLS (OpenSSL, blocking) for https URLs
  SSL* ssl_ = nullptr;
  std::string data_;
};

}  // namespace kos::testing
