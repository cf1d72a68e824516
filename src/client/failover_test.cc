// Several API servers behind one client: the transport spreads clients over them, moves to
// the next when its server cannot be reached, retries there what cannot have been applied
// (a request never sent, a read) and never a write that was sent to a server that died
// before answering. Over plain HTTP and TLS, HTTP/2 and HTTP/1.1.
#include <atomic>
#include <future>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "client/transport.h"
#include "common/http_server.h"
#include "pki/pki.h"
#include "test/support/process.h"

namespace kos::client {
namespace {

using namespace std::chrono_literals;

struct Param {
  bool tls;
  bool http2;
};

class FailoverTest : public ::testing::TestWithParam<Param> {
 protected:
  static constexpr int kServers = 3;

  void SetUp() override {
    if (GetParam().tls) {
      auto p = pki::ensure_cluster_pki((dir_.path() / "pki").string(), {});
      ASSERT_TRUE(p) << p.error().message;
      pki_ = *p;
    }
    for (int i = 0; i < kServers; ++i) start_server(i);
  }
  void TearDown() override {
    for (auto& t : transports_) t->shutdown();
    for (auto& s : servers_)
      if (s) s->stop();
  }

  // /who: the server's index. POST /write: counted, answered after `write_delay`.
  // GET /slow: answered after 500 ms. /watch: one line with the index, then open.
  void start_server(int i) {
    http::ServerOptions o;
    if (GetParam().tls) o.tls = http::TlsOptions{pki_.serving.cert_pem, pki_.serving.key_pem, ""};
    o.port = ports_[i];  // 0 the first time; the same port when restarted
    o.worker_threads = 4;
    auto s = http::Server::start(o, [this, i](const http::Request& req, const http::Peer&) -> http::Reply {
      std::string target(req.target());
      if (target == "/who") return http::Response{200, "text/plain", std::to_string(i), {}};
      if (target == "/write") {
        ++writes_[i];
        std::this_thread::sleep_for(write_delay_.load());
        return http::Response{201, "text/plain", "written by " + std::to_string(i), {}};
      }
      if (target == "/slow") {
        ++slow_[i];
        std::this_thread::sleep_for(500ms);
        return http::Response{200, "text/plain", std::to_string(i), {}};
      }
      if (target == "/watch") {
        http::StreamStart st;
        st.attach = [this, i](std::shared_ptr<http::Stream> s) {
          s->write(std::make_shared<const std::string>(std::to_string(i) + "\n"));
          std::lock_guard lk(mu_);
          streams_.push_back(s);
        };
        return st;
      }
      return http::Response{404, "text/plain", "no", {}};
    });
    ASSERT_TRUE(s) << s.error().message;
    servers_[i] = std::move(*s);
    ports_[i] = servers_[i]->port();
  }

  // Stops server i at once: its connections are closed with whatever was in flight.
  void kill(int i) {
    {
      std::lock_guard lk(mu_);
      streams_.clear();
    }
    servers_[i].reset();
  }

  RestConfig config() const {
    RestConfig c;
    c.tls = GetParam().tls;
    const std::string scheme = c.tls ? "https" : "http";
    for (int i = 0; i < kServers; ++i)
      c.endpoints.push_back({scheme + "://127.0.0.1:" + std::to_string(ports_[i]), "127.0.0.1", ports_[i]});
    c.server = c.endpoints[0].server;
    c.host = c.endpoints[0].host;
    c.port = c.endpoints[0].port;
    c.ca_pem = pki_.ca.cert_pem;
    return c;
  }

  std::shared_ptr<Transport> transport() {
    TransportOptions to;
    to.http2 = GetParam().http2;
    auto t = Transport::create(config(), to);
    EXPECT_TRUE(t) << t.error().message;
    transports_.push_back(*t);
    return *t;
  }

  static Result<HttpResponse> call(Transport& t, const std::string& method, const std::string& target,
                                   std::chrono::milliseconds timeout = 5s) {
    HttpRequest r;
    r.method = method;
    r.target = target;
    r.timeout = timeout;
    if (method == "POST") r.body = "x";
    return t.request_sync(r);
  }
  static int who(Transport& t) {
    auto r = call(t, "GET", "/who");
    EXPECT_TRUE(r) << r.error().message;
    return r ? std::stoi(r->body) : -1;
  }

  kos::testing::TempDir dir_{"kos-failover-test"};
  pki::ClusterPki pki_;
  uint16_t ports_[kServers] = {0, 0, 0};
  std::unique_ptr<http::Server> servers_[kServers];
  std::atomic<int> writes_[kServers] = {0, 0, 0};
  std::atomic<int> slow_[kServers] = {0, 0, 0};
  std::atomic<std::chrono::milliseconds> write_delay_{0ms};
  std::vector<std::shared_ptr<Transport>> transports_;
  std::mutex mu_;
  std::vector<std::shared_ptr<http::Stream>> streams_;
};

TEST_P(FailoverTest, ClientsSpreadOverTheServers) {
  std::set<int> used;
  for (int i = 0; i < 24; ++i) used.insert(who(*transport()));
  // 24 clients all on one of 3 servers: once in 3^23.
  EXPECT_GE(used.size(), 2u);
}

TEST_P(FailoverTest, ADeadServerIsLeftForTheNextAndTheClientStaysThere) {
  auto t = transport();
  const int first = who(*t);
  ASSERT_GE(first, 0);
  kill(first);
  // Not sent (the connection could not be made, or a read on a dead connection): served
  // by another server without an error.
  const int second = who(*t);
  ASSERT_GE(second, 0);
  EXPECT_NE(second, first);
  // It stays there, also once the first is back.
  start_server(first);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(who(*t), second);
  // Every server dead: a clear error naming them, within the request's timeout.
  for (int i = 0; i < kServers; ++i)
    if (servers_[i]) kill(i);
  auto start = std::chrono::steady_clock::now();
  auto gone = call(*t, "GET", "/who", 1s);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, Errc::kUnavailable);
  EXPECT_NE(gone.error().message.find("any of the API servers"), std::string::npos) << gone.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
  // One comes back: served again.
  start_server(1);
  EXPECT_EQ(who(*t), 1);
}

TEST_P(FailoverTest, AWriteSentToAServerThatDiesIsNotRetriedAReadIs) {
  auto t = transport();
  const int first = who(*t);
  ASSERT_GE(first, 0);
  write_delay_ = 500ms;
  auto write = std::async(std::launch::async, [&] { return call(*t, "POST", "/write"); });
  auto read = std::async(std::launch::async, [&] { return call(*t, "GET", "/slow"); });
  for (int i = 0; i < 200 && (writes_[first] == 0 || slow_[first] == 0); ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(writes_[first], 1);
  ASSERT_EQ(slow_[first], 1);
  kill(first);  // both were received and neither answered
  auto w = write.get();
  ASSERT_FALSE(w) << "a write in flight on a dead server was answered: " << w->body;
  EXPECT_EQ(w.error().code, Errc::kUnavailable) << w.error().message;
  auto r = read.get();
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_NE(std::stoi(r->body), first);
  int elsewhere = 0;
  for (int i = 0; i < kServers; ++i)
    if (i != first) elsewhere += writes_[i];
  EXPECT_EQ(elsewhere, 0) << "the write was sent again to another server";
  // The caller's own retry goes to a live server.
  write_delay_ = 0ms;
  auto again = call(*t, "POST", "/write");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->status, 201u);
}

TEST_P(FailoverTest, AWatchEndsWhenItsServerDiesAndStartsAgainOnAnother) {
  auto t = transport();
  struct W {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::string> lines;
    std::optional<Result<void>> end;
  };
  auto open = [&](std::shared_ptr<W> w) {
    HttpRequest r;
    r.target = "/watch";
    return t->stream(
        r, [](unsigned, const std::string&) {},
        [w](std::string_view l) {
          std::lock_guard lk(w->mu);
          w->lines.emplace_back(l);
          w->cv.notify_all();
        },
        [w](Result<void> e) {
          std::lock_guard lk(w->mu);
          w->end = std::move(e);
          w->cv.notify_all();
        });
  };
  auto a = std::make_shared<W>();
  auto ha = open(a);
  std::unique_lock lk(a->mu);
  ASSERT_TRUE(a->cv.wait_for(lk, 5s, [&] { return !a->lines.empty(); }));
  const int first = std::stoi(a->lines[0]);
  lk.unlock();
  kill(first);
  lk.lock();
  ASSERT_TRUE(a->cv.wait_for(lk, 5s, [&] { return a->end.has_value(); }));
  EXPECT_FALSE(a->end->has_value());
  lk.unlock();
  // Its owner starts it again (an informer, from its last revision): on another server,
  // at once, without an error.
  auto b = std::make_shared<W>();
  auto hb = open(b);
  std::unique_lock lkb(b->mu);
  ASSERT_TRUE(b->cv.wait_for(lkb, 5s, [&] { return !b->lines.empty() || b->end.has_value(); }));
  ASSERT_FALSE(b->lines.empty()) << (b->end && !b->end->has_value() ? b->end->error().message : "");
  EXPECT_NE(std::stoi(b->lines[0]), first);
  lkb.unlock();
  hb->cancel();
  ha->cancel();
}

INSTANTIATE_TEST_SUITE_P(Protocols, FailoverTest,
                         ::testing::Values(Param{false, true}, Param{true, true}, Param{false, false},
                                           Param{true, false}),
                         [](const auto& info) {
                           return std::string(info.param.tls ? "tls" : "plain") +
                                  (info.param.http2 ? "_http2" : "_http1");
                         });

}  // namespace
}  // namespace kos::client
