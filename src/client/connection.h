// A client connection to the API server (internal to the transport): plain TCP, or TLS
// over TCP when the server is https.
#pragma once

#include <memory>
#include <optional>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>

namespace kos::client::detail {

struct Conn {
  Conn(boost::asio::io_context& ioc, boost::asio::ssl::context* tls) {
    if (tls) ssl.emplace(ioc, *tls);
    else plain.emplace(ioc);
  }
  std::optional<boost::beast::tcp_stream> plain;
  std::optional<boost::beast::ssl_stream<boost::beast::tcp_stream>> ssl;
  boost::beast::tcp_stream& tcp() { return ssl ? boost::beast::get_lowest_layer(*ssl) : *plain; }
  // Runs f on the stream requests are written to and read from.
  template <class F>
  void io(F&& f) {
    if (ssl) f(*ssl);
    else f(*plain);
  }
  void close() {
    boost::beast::error_code ec;
    if (tcp().socket().is_open()) {
      tcp().socket().shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
      tcp().socket().close(ec);
    }
  }
  boost::beast::flat_buffer buffer;
  bool reused = false;
  size_t endpoint = 0;  // which of the transport's API servers (set when it connects)
};
using ConnPtr = std::shared_ptr<Conn>;

}  // namespace kos::client::detail
