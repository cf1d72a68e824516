// HTTP/2 between the client's transport and the HTTP server, over plain HTTP (prior
// knowledge) and TLS (ALPN): requests and watches share a connection, a cancelled watch
// ends its stream only, a server's stream limit opens another connection, a server going
// away or gone is left for a new connection, the limits answer as over HTTP/1.1, and a
// server without HTTP/2 is spoken to in HTTP/1.1.
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "client/transport.h"
#include "common/http_server.h"
#include "pki/pki.h"
#include "test/support/process.h"

namespace kos::client {
namespace {

using namespace std::chrono_literals;

// Waits for a condition set by callbacks on the transport's thread.
struct Latch {
  std::mutex mu;
  std::condition_variable cv;
  template <class F>
  bool wait(F f, std::chrono::milliseconds d = 10s) {
    std::unique_lock lk(mu);
    return cv.wait_for(lk, d, f);
  }
  template <class F>
  void update(F f) {
    std::lock_guard lk(mu);
    f();
    cv.notify_all();
  }
};

// A watch-like stream read by the test.
struct Watch {
  Latch latch;
  unsigned status = 0;
  std::vector<std::string> lines;
  std::optional<Result<void>> end;
  std::shared_ptr<StreamHandle> handle;
};

class Http2Test : public ::testing::TestWithParam<bool /*tls*/> {
 protected:
  void SetUp() override { start_server({}); }
  void TearDown() override {
    for (auto& t : transports_) t->shutdown();
    if (server_) server_->stop();
  }

  // /echo: the request's method, content type, body and protocol version back.
  // /slow: answers after 1 s. /watch?N: N lines, then the stream stays open until the
  // test finishes it (streams_) or the client goes.
  void start_server(http::ServerOptions o) {
    if (GetParam()) {
      auto p = pki::ensure_cluster_pki((dir_.path() / "pki").string(), {});
      ASSERT_TRUE(p) << p.error().message;
      pki_ = *p;
      o.tls = http::TlsOptions{pki_.serving.cert_pem, pki_.serving.key_pem, ""};
    }
    o.port = 0;
    o.worker_threads = 8;
    auto s = http::Server::start(o, [this](const http::Request& req, const http::Peer&) -> http::Reply {
      std::string target(req.target());
      if (target == "/echo")
        return http::Response{200, "text/plain",
                              std::string(req.method_string()) + " " + std::string(req[boost::beast::http::field::content_type]) +
                                  " " + std::to_string(req.version()) + " " + req.body(),
                              {{"Warning", "299 - \"echoed\""}}};
      if (target == "/slow") {
        std::this_thread::sleep_for(1s);
        return http::Response{200, "text/plain", "late", {}};
      }
      if (target.starts_with("/watch?")) {
        int n = std::stoi(target.substr(7));
        http::StreamStart st;
        st.attach = [this, n](std::shared_ptr<http::Stream> s) {
          for (int i = 0; i < n; ++i) s->write(std::make_shared<const std::string>("line " + std::to_string(i) + "\n"));
          std::lock_guard lk(mu_);
          streams_.push_back(s);
        };
        st.on_close = [this] { ++closed_streams_; };
        return st;
      }
      return http::Response{404, "text/plain", "no such thing", {}};
    });
    ASSERT_TRUE(s) << s.error().message;
    server_ = std::move(*s);
  }

  std::shared_ptr<Transport> transport(TransportOptions to = {}) {
    RestConfig c;
    c.host = "127.0.0.1";
    c.port = server_->port();
    c.tls = GetParam();
    c.server = std::string(c.tls ? "https" : "http") + "://127.0.0.1:" + std::to_string(c.port);
    c.ca_pem = pki_.ca.cert_pem;
    auto t = Transport::create(c, to);
    EXPECT_TRUE(t) << t.error().message;
    transports_.push_back(*t);
    return *t;
  }

  std::shared_ptr<Watch> watch(Transport& t, int lines) {
    auto w = std::make_shared<Watch>();
    HttpRequest r;
    r.target = "/watch?" + std::to_string(lines);
    w->handle = t.stream(
        r, [w](unsigned st, const std::string&) { w->latch.update([&] { w->status = st; }); },
        [w](std::string_view l) { w->latch.update([&] { w->lines.emplace_back(l); }); },
        [w](Result<void> r) { w->latch.update([&] { w->end = std::move(r); }); });
    return w;
  }

  Result<HttpResponse> echo(Transport& t, const std::string& body) {
    HttpRequest r;
    r.method = "POST";
    r.target = "/echo";
    r.content_type = "text/x-test";
    r.body = body;
    return t.request_sync(r);
  }

  kos::testing::TempDir dir_{"kos-http2-test"};
  pki::ClusterPki pki_;
  std::unique_ptr<http::Server> server_;
  std::vector<std::shared_ptr<Transport>> transports_;
  std::mutex mu_;
  std::vector<std::shared_ptr<http::Stream>> streams_;
  std::atomic<int> closed_streams_{0};
};

TEST_P(Http2Test, RequestsAndWatchesShareOneConnection) {
  auto t = transport();
  std::vector<std::shared_ptr<Watch>> watches;
  for (int i = 0; i < 50; ++i) watches.push_back(watch(*t, 3));
  // 200 requests in flight at once, with bodies.
  Latch done;
  int answered = 0, right = 0;
  for (int i = 0; i < 200; ++i) {
    HttpRequest r;
    r.method = "POST";
    r.target = "/echo";
    r.content_type = "text/x-test";
    r.body = "body " + std::to_string(i);
    t->request(r, [&, i](Result<HttpResponse> res) {
      done.update([&] {
        ++answered;
        if (res && res->status == 200 && res->body == "POST text/x-test 20 body " + std::to_string(i) &&
            res->warnings == std::vector<std::string>{"299 - \"echoed\""})
          ++right;
      });
    });
  }
  ASSERT_TRUE(done.wait([&] { return answered == 200; }));
  EXPECT_EQ(right, 200);
  for (auto& w : watches) {
    ASSERT_TRUE(w->latch.wait([&] { return w->lines.size() == 3; }));
    EXPECT_EQ(w->status, 200u);
    EXPECT_EQ(w->lines, (std::vector<std::string>{"line 0", "line 1", "line 2"}));
  }
  EXPECT_EQ(t->open_connections(), 1u);
  // A body larger than a frame and than the initial flow-control window.
  std::string big(200000, 'x');
  auto r = echo(*t, big);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->body, "POST text/x-test 20 " + big);
  // HTTP/1.1 clients of the same server: one connection per watch.
  TransportOptions h1;
  h1.http2 = false;
  auto t1 = transport(h1);
  auto w1 = watch(*t1, 1), w2 = watch(*t1, 1);
  ASSERT_TRUE(w1->latch.wait([&] { return w1->lines.size() == 1; }));
  ASSERT_TRUE(w2->latch.wait([&] { return w2->lines.size() == 1; }));
  auto r1 = echo(*t1, "over 1.1");
  ASSERT_TRUE(r1);
  EXPECT_EQ(r1->body, "POST text/x-test 11 over 1.1");
  EXPECT_EQ(t1->open_connections(), 3u);
}

TEST_P(Http2Test, ACancelledWatchEndsItsStreamOnlyAndAFinishedOneEndsCleanly) {
  auto t = transport();
  auto a = watch(*t, 1), b = watch(*t, 1);
  ASSERT_TRUE(a->latch.wait([&] { return a->lines.size() == 1; }));
  ASSERT_TRUE(b->latch.wait([&] { return b->lines.size() == 1; }));
  a->handle->cancel();
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (closed_streams_ < 1 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms);  // the server hears of the reset
  EXPECT_EQ(closed_streams_, 1);
  {
    std::lock_guard lk(mu_);
    for (auto& s : streams_) s->write(std::make_shared<const std::string>("more\n"));
  }
  ASSERT_TRUE(b->latch.wait([&] { return b->lines.size() == 2; }));
  EXPECT_EQ(b->lines[1], "more");
  EXPECT_EQ(a->lines.size(), 1u);
  EXPECT_FALSE(a->end) << "a cancelled stream called on_end";
  {
    std::lock_guard lk(mu_);
    for (auto& s : streams_) s->finish();
  }
  ASSERT_TRUE(b->latch.wait([&] { return b->end.has_value(); }));
  EXPECT_TRUE(b->end->has_value()) << b->end->error().message;
  EXPECT_EQ(t->open_connections(), 1u);  // the connection outlives its streams
  auto r = echo(*t, "still here");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200u);
}

TEST_P(Http2Test, StreamsBeyondTheServersLimitOpenAnotherConnection) {
  server_->stop();
  http::ServerOptions o;
  o.http2_max_streams = 8;
  start_server(o);
  auto t = transport();
  std::vector<std::shared_ptr<Watch>> watches;
  for (int i = 0; i < 20; ++i) watches.push_back(watch(*t, 1));
  for (auto& w : watches) ASSERT_TRUE(w->latch.wait([&] { return w->lines.size() == 1; }));
  EXPECT_EQ(t->open_connections(), 3u);
}

TEST_P(Http2Test, AServerThatGoesAwayOrDiesIsLeftForANewConnection) {
  server_->stop();
  http::ServerOptions o;
  o.idle_timeout = 300ms;
  start_server(o);
  auto t = transport();
  ASSERT_TRUE(echo(*t, "1"));
  // Idle: the server says GOAWAY and closes; the next request goes on a new connection.
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (t->open_connections() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(t->open_connections(), 0u);
  auto r = echo(*t, "2");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->body, "POST text/x-test 20 2");
  // A request timing out resets its stream, not the connection.
  HttpRequest slow;
  slow.target = "/slow";
  slow.timeout = 200ms;
  auto timed_out = t->request_sync(slow);
  ASSERT_FALSE(timed_out);
  EXPECT_EQ(timed_out.error().code, Errc::kTimeout);
  ASSERT_TRUE(echo(*t, "3"));
  EXPECT_EQ(t->open_connections(), 1u);
  // The server dies: its watches end in an error, and requests fail until it is back.
  auto w = watch(*t, 1);
  ASSERT_TRUE(w->latch.wait([&] { return w->lines.size() == 1; }));
  {
    std::lock_guard lk(mu_);
    streams_.clear();  // they hold their connection
  }
  server_.reset();
  ASSERT_TRUE(w->latch.wait([&] { return w->end.has_value(); }));
  ASSERT_FALSE(w->end->has_value());
  EXPECT_EQ(w->end->error().code, Errc::kUnavailable);
  HttpRequest r4;
  r4.target = "/echo";
  r4.timeout = 300ms;
  auto gone = t->request_sync(r4);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, Errc::kUnavailable) << gone.error().message;
}

TEST_P(Http2Test, OversizeBodiesAndHeadersGetTheirStatusAsOverHttp1) {
  server_->stop();
  http::ServerOptions o;
  o.max_body_bytes = 1000;
  o.max_header_bytes = 2000;
  start_server(o);
  auto t = transport();
  auto r = echo(*t, std::string(5000, 'b'));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->status, 413u);
  EXPECT_NE(r->body.find("RequestEntityTooLarge"), std::string::npos);
  HttpRequest big;
  big.target = "/echo?" + std::string(3000, 'q');
  auto h = t->request_sync(big);
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(h->status, 431u);
  // The connection is fine after both.
  auto ok = echo(*t, "small");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200u);
  EXPECT_EQ(t->open_connections(), 1u);
}

TEST_P(Http2Test, AServerWithoutHttp2IsSpokenToInHttp1) {
  // Over TLS it does not pick h2 by ALPN; over plain HTTP it answers the preface in
  // HTTP/1.1 (as any HTTP/1.1 server, Prometheus for one).
  server_->stop();
  http::ServerOptions o;
  o.http2 = false;
  start_server(o);
  auto t = transport();
  auto r = echo(*t, "x");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->body, "POST text/x-test 11 x");
  auto a = watch(*t, 1), b = watch(*t, 1);
  ASSERT_TRUE(a->latch.wait([&] { return a->lines.size() == 1; }));
  ASSERT_TRUE(b->latch.wait([&] { return b->lines.size() == 1; }));
  EXPECT_GE(t->open_connections(), 2u);
}

INSTANTIATE_TEST_SUITE_P(Protocols, Http2Test, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "tls" : "plain"; });

}  // namespace
}  // namespace kos::client
