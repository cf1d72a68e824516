#include "test/integration/raw_http.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>

#include <boost/asio/connect.hpp>
#include <boost/asio/write.hpp>
#include <boost/url/parse.hpp>

namespace kos::testing {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using Steady = std::chrono::steady_clock;

RawHttp::RawHttp(const std::string& url, const std::string& target, Options opts) : socket_(io_) {
  auto u = boost::urls::parse_uri(url);
  tcp::resolver resolver(io_);
  auto endpoints = resolver.resolve(std::string(u->host()), std::string(u->port()));
  socket_.open(endpoints.begin()->endpoint().protocol());
  if (opts.receive_buffer > 0)
    setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVBUF, &opts.receive_buffer,
               sizeof opts.receive_buffer);
  socket_.connect(*endpoints.begin());
  std::string req = opts.method + " " + target + " HTTP/1.1\r\nHost: " + std::string(u->host()) +
                    "\r\nAccept: application/json\r\n";
  if (!opts.body.empty()) {
    req += std::string("Content-Type: ") +
           (opts.method == "PATCH" ? "application/merge-patch+json" : "application/json") +
           "\r\nContent-Length: " + std::to_string(opts.body.size()) + "\r\n";
  }
  req += "\r\n" + opts.body;
  net::write(socket_, net::buffer(req));
}

bool RawHttp::read_some() {
  // POSIX calls: asio's blocking read polls without a timeout once the socket says EAGAIN.
  pollfd p{socket_.native_handle(), POLLIN, 0};
  int ready = ::poll(&p, 1, 200);
  if (ready < 0) return errno == EINTR;
  if (ready == 0) return true;  // nothing within 200 ms
  char buf[65536];
  ssize_t n = ::recv(socket_.native_handle(), buf, sizeof buf, 0);
  if (n > 0) data_.append(buf, static_cast<size_t>(n));
  return n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR));
}

bool RawHttp::read_until(std::string_view needle, std::chrono::milliseconds timeout) {
  auto deadline = Steady::now() + timeout;
  while (data_.find(needle) == std::string::npos) {
    if (Steady::now() >= deadline || !read_some()) return data_.find(needle) != std::string::npos;
  }
  return true;
}

bool RawHttp::read_to_end(std::chrono::milliseconds timeout) {
  auto deadline = Steady::now() + timeout;
  while (Steady::now() < deadline)
    if (!read_some()) return true;
  return false;
}

size_t RawHttp::count(std::string_view needle) const {
  size_t n = 0;
  for (auto at = data_.find(needle); at != std::string::npos; at = data_.find(needle, at + needle.size())) ++n;
  return n;
}

}  // namespace kos::testing
