// The HTTP server's limits against hostile clients: a slowloris (many connections that
// trickle a request's headers) and oversize bodies do not hold other clients up (their
// request p99 is printed beside the quiet baseline measured in the same run), and are
// cut off: 413 for a body over the limit, 431 for headers over it, a closed connection
// for a request not finished in time (over HTTP/2: a reset stream).
#include "common/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace kos::http {
namespace {

using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

int connect_to(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

bool send_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// Reads until `needle` arrives, the peer closes, or `timeout`; what arrived.
std::string read_until(int fd, std::string_view needle, std::chrono::milliseconds timeout) {
  std::string got;
  auto deadline = Steady::now() + timeout;
  while (got.find(needle) == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Steady::now()).count();
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) break;
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

class HttpLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerOptions o;
    o.io_threads = 2;
    o.worker_threads = 4;
    o.max_body_bytes = 64 * 1024;
    o.max_header_bytes = 8 * 1024;
    o.request_read_timeout = 1500ms;
    o.idle_timeout = 3s;
    auto s = Server::start(o, [](const Request&, const Peer&) -> Reply {
      return Response{200, "text/plain", "ok", {}};
    });
    ASSERT_TRUE(s) << s.error().message;
    server_ = std::move(*s);
  }

  // p99 (ms) of `n` GETs on one keep-alive connection.
  double p99_of_requests(int n) {
    int fd = connect_to(server_->port());
    EXPECT_GE(fd, 0);
    std::vector<double> ms;
    for (int i = 0; i < n; ++i) {
      auto t0 = Steady::now();
      if (!send_all(fd, "GET /x HTTP/1.1\r\nHost: t\r\n\r\n")) break;
      auto got = read_until(fd, "ok", 5s);
      if (got.find("ok") == std::string::npos) {
        ADD_FAILURE() << "a quiet client's request " << i << " got no answer";
        break;
      }
      ms.push_back(std::chrono::duration<double, std::milli>(Steady::now() - t0).count());
    }
    ::close(fd);
    if (ms.empty()) return 1e9;
    std::sort(ms.begin(), ms.end());
    return ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
  }

  std::unique_ptr<Server> server_;
};

TEST_F(HttpLimitsTest, ASlowlorisAndOversizeBodiesDoNotDisturbOtherClients) {
  const double quiet = p99_of_requests(400);

  std::atomic<bool> stop{false};
  std::atomic<int> slow_closed{0}, too_large{0};
  // 200 slowloris connections: a request line, then one header byte every 100 ms.
  std::vector<std::thread> attackers;
  attackers.emplace_back([&] {
    std::vector<int> fds;
    for (int i = 0; i < 200; ++i) {
      int fd = connect_to(server_->port());
      if (fd >= 0 && send_all(fd, "GET /slow HTTP/1.1\r\nHost: t\r\n")) fds.push_back(fd);
    }
    std::vector<bool> closed(fds.size(), false);
    while (!stop) {
      for (size_t i = 0; i < fds.size(); ++i)
        if (!closed[i] && !send_all(fds[i], "X")) {
          closed[i] = true;
          ++slow_closed;
        }
      std::this_thread::sleep_for(100ms);  // the attacker's pace
    }
    for (int fd : fds) ::close(fd);
  });
  // 4 clients sending bodies over the limit, again and again.
  for (int t = 0; t < 4; ++t)
    attackers.emplace_back([&] {
      const std::string body(256 * 1024, 'x');
      while (!stop) {
        int fd = connect_to(server_->port());
        if (fd < 0) continue;
        send_all(fd, "POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n");
        send_all(fd, body);
        if (read_until(fd, " 413 ", 2s).find(" 413 ") != std::string::npos) ++too_large;
        ::close(fd);
      }
    });
  std::this_thread::sleep_for(300ms);
  const double attacked = p99_of_requests(400);
  // Long enough for the request deadline (1.5 s) to cut every slow connection.
  std::this_thread::sleep_for(2500ms);
  stop = true;
  for (auto& t : attackers) t.join();

  std::printf("[ limits ] quiet p99 %.3f ms; with 200 slowloris connections and 4 oversize-body senders "
              "%.3f ms; %d slow connections cut, %d bodies refused with 413\n",
              quiet, attacked, slow_closed.load(), too_large.load());
  // Still served promptly: a server the attackers held up would answer in hundreds of
  // milliseconds (the request deadline is 1.5 s) or not at all. The ratio itself is a
  // figure for the line above, not for a bound: under ctest -j on two cores the attackers'
  // own CPU moved the p99 past a 2x bound (4.08 against 4 ms) in a CI run.
  EXPECT_LE(attacked, std::max(10 * quiet, 20.0));
  EXPECT_EQ(slow_closed.load(), 200) << "slow requests must be cut at the request deadline";
  EXPECT_GT(too_large.load(), 0);
}

TEST_F(HttpLimitsTest, OversizeHeadersGet431AndAnIdleConnectionIsClosed) {
  int fd = connect_to(server_->port());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_all(fd, "GET /x HTTP/1.1\r\nHost: t\r\nX-Big: " + std::string(16 * 1024, 'a') + "\r\n\r\n"));
  EXPECT_NE(read_until(fd, " 431 ", 5s).find(" 431 "), std::string::npos);
  ::close(fd);

  fd = connect_to(server_->port());
  ASSERT_GE(fd, 0);
  auto t0 = Steady::now();
  auto got = read_until(fd, "never", 10s);  // sends nothing: closed at the idle timeout
  auto waited = Steady::now() - t0;
  EXPECT_TRUE(got.empty());
  EXPECT_GE(waited, 2500ms);
  EXPECT_LT(waited, 8s) << "an idle connection was not closed";
  ::close(fd);
}

// A raw HTTP/2 client (nghttp2, prior knowledge over plain TCP) that can leave a request
// unfinished: its HEADERS go out without END_STREAM and its body never follows.
class RawH2Client {
 public:
  struct StreamResult {
    int status = 0;
    std::string body;
    bool closed = false;
    uint32_t reset_code = UINT32_MAX;  // RST_STREAM's error code, if the server reset it
  };

  explicit RawH2Client(int fd) : fd_(fd) {
    nghttp2_session_callbacks* cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_send_callback(cb, [](nghttp2_session*, const uint8_t* data, size_t len, int,
                                                       void* ud) -> ssize_t {
      auto* c = static_cast<RawH2Client*>(ud);
      return send_all(c->fd_, std::string(reinterpret_cast<const char*>(data), len))
                 ? static_cast<ssize_t>(len)
                 : static_cast<ssize_t>(NGHTTP2_ERR_CALLBACK_FAILURE);
    });
    nghttp2_session_callbacks_set_on_header_callback(
        cb, [](nghttp2_session*, const nghttp2_frame* f, const uint8_t* name, size_t nlen, const uint8_t* value,
               size_t vlen, uint8_t, void* ud) {
          if (std::string_view(reinterpret_cast<const char*>(name), nlen) == ":status")
            static_cast<RawH2Client*>(ud)->streams_[f->hd.stream_id].status =
                std::stoi(std::string(reinterpret_cast<const char*>(value), vlen));
          return 0;
        });
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        cb, [](nghttp2_session*, uint8_t, int32_t id, const uint8_t* data, size_t len, void* ud) {
          static_cast<RawH2Client*>(ud)->streams_[id].body.append(reinterpret_cast<const char*>(data), len);
          return 0;
        });
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, [](nghttp2_session*, const nghttp2_frame* f, void* ud) {
      if (f->hd.type == NGHTTP2_RST_STREAM)
        static_cast<RawH2Client*>(ud)->streams_[f->hd.stream_id].reset_code = f->rst_stream.error_code;
      return 0;
    });
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, [](nghttp2_session*, int32_t id, uint32_t, void* ud) {
      static_cast<RawH2Client*>(ud)->streams_[id].closed = true;
      return 0;
    });
    nghttp2_session_client_new(&session_, cb, this);
    nghttp2_session_callbacks_del(cb);
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, nullptr, 0);
  }
  ~RawH2Client() { nghttp2_session_del(session_); }

  // A request; with `stall`, its HEADERS announce a body that is never sent.
  int32_t request(const std::string& method, const std::string& path, bool stall) {
    auto nv = [](const char* n, const std::string& v) {
      return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(n)),
                        reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())), std::strlen(n), v.size(),
                        NGHTTP2_NV_FLAG_NONE};
    };
    const std::string scheme = "http", authority = "t";
    std::vector<nghttp2_nv> hdrs = {nv(":method", method), nv(":scheme", scheme), nv(":authority", authority),
                                    nv(":path", path)};
    nghttp2_data_provider body{};
    body.read_callback = [](nghttp2_session*, int32_t, uint8_t*, size_t, uint32_t*, nghttp2_data_source*,
                            void*) -> ssize_t { return NGHTTP2_ERR_DEFERRED; };
    return nghttp2_submit_request(session_, nullptr, hdrs.data(), hdrs.size(), stall ? &body : nullptr, nullptr);
  }

  // Sends what is queued and reads for up to `timeout` or until `done()`.
  template <class P>
  bool pump(std::chrono::milliseconds timeout, P done) {
    auto deadline = Steady::now() + timeout;
    while (!done()) {
      if (nghttp2_session_send(session_) != 0) return false;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Steady::now()).count();
      if (left <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(std::min<long>(left, 50))) <= 0) continue;
      uint8_t buf[16384];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return false;  // the server closed the connection
      if (nghttp2_session_mem_recv(session_, buf, static_cast<size_t>(n)) < 0) return false;
    }
    return true;
  }

  const StreamResult& stream(int32_t id) { return streams_[id]; }

 private:
  int fd_;
  nghttp2_session* session_ = nullptr;
  std::map<int32_t, StreamResult> streams_;
};

// An HTTP/2 request whose body does not arrive within request_read_timeout has its stream
// reset (as a slow HTTP/1.1 request has its connection closed); the connection's other
// streams, before and after, are served.
TEST_F(HttpLimitsTest, AStalledHttp2RequestIsResetAndItsConnectionServesOthers) {
  int fd = connect_to(server_->port());
  ASSERT_GE(fd, 0);
  RawH2Client c(fd);
  const auto t0 = Steady::now();  // before the server can have seen the HEADERS
  const int32_t slow = c.request("POST", "/slow", true);
  const int32_t quick = c.request("GET", "/quick", false);
  ASSERT_TRUE(c.pump(5s, [&] { return c.stream(quick).closed; }));
  EXPECT_EQ(c.stream(quick).status, 200);
  EXPECT_EQ(c.stream(quick).body, "ok");
  EXPECT_FALSE(c.stream(slow).closed) << "reset before its deadline";

  ASSERT_TRUE(c.pump(10s, [&] { return c.stream(slow).closed; })) << "a stalled request was never reset";
  const auto waited = Steady::now() - t0;
  EXPECT_EQ(c.stream(slow).reset_code, static_cast<uint32_t>(NGHTTP2_CANCEL));
  EXPECT_EQ(c.stream(slow).status, 0) << "the stalled request was answered";
  EXPECT_GE(waited, 1500ms) << "reset before request_read_timeout";
  EXPECT_LT(waited, 6s);

  const int32_t after = c.request("GET", "/after", false);
  ASSERT_TRUE(c.pump(5s, [&] { return c.stream(after).closed; })) << "the connection did not survive the reset";
  EXPECT_EQ(c.stream(after).status, 200);
  ::close(fd);
}

}  // namespace
}  // namespace kos::http
