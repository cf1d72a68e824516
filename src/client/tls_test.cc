// The client's TLS against a real API server listening with TLS: the server is verified
// against the configured CA and host, the client certificate names the user, and a
// server signed by another CA is refused.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <optional>

#include <boost/json.hpp>
#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include "apiserver/server.h"
#include "client/kubeconfig.h"
#include "client/transport.h"
#include "pki/pki.h"
#include "store/sqlite/sqlite_store.h"
#include "test/support/process.h"

namespace kos::client {
namespace {

using namespace std::chrono_literals;
namespace json = boost::json;

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store::SqliteOptions so;
    so.path = (dir_.path() / "kos.db").string();
    so.compaction_interval = 0ms;
    store_ = std::move(*store::SqliteStore::open(so));
    auto p = pki::ensure_cluster_pki((dir_.path() / "pki").string(), {});
    ASSERT_TRUE(p) << p.error().message;
    pki_ = *p;
    apiserver::ServerOptions opts;
    opts.port = 0;
    opts.worker_threads = 4;
    opts.tls = http::TlsOptions{pki_.serving.cert_pem, pki_.serving.key_pem, pki_.ca.cert_pem};
    auto s = apiserver::ApiServer::start(*store_, opts);
    ASSERT_TRUE(s) << s.error().message;
    server_ = std::move(*s);
  }
  void TearDown() override {
    if (server_) server_->stop();
  }
  RestConfig config(const std::string& host = "127.0.0.1") const {
    RestConfig c;
    c.host = host;
    c.port = server_->port();
    c.server = "https://" + host + ":" + std::to_string(c.port);
    c.tls = true;
    c.ca_pem = pki_.ca.cert_pem;
    return c;
  }
  // config() with the client certificate of node `node` (user kos:node:NODE in kos:nodes).
  RestConfig node_config(const std::string& node) const {
    RestConfig c = config();
    auto cert = pki::issue(pki_.ca, {.subject = {"kos:node:" + node, {"kos:nodes"}}});
    EXPECT_TRUE(cert) << cert.error().message;
    if (cert) {
      c.cert_pem = cert->cert_pem;
      c.key_pem = cert->key_pem;
    }
    return c;
  }
  Result<HttpResponse> whoami(const RestConfig& c) {
    auto t = Transport::create(c);
    if (!t) return fail(t.error());
    HttpRequest r;
    r.method = "POST";
    r.target = "/apis/authentication.k8s.io/v1/selfsubjectreviews";
    r.body = R"({"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"})";
    r.timeout = 10s;
    auto out = (*t)->request_sync(r);
    (*t)->shutdown();
    return out;
  }

  kos::testing::TempDir dir_{"kos-tls-test"};
  std::unique_ptr<store::Store> store_;
  pki::ClusterPki pki_;
  std::unique_ptr<apiserver::ApiServer> server_;
};

TEST_F(TlsTest, AClientCertificateNamesTheUserAndItsGroups) {
  auto c = node_config("n7");
  auto r = whoami(c);
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->status, 201u) << r->body;
  auto v = json::parse(r->body);
  EXPECT_EQ(v.at("status").at("userInfo").at("username"), "kos:node:n7");
  EXPECT_EQ(v.at("status").at("userInfo").at("groups"), json::array{"kos:nodes"});
  EXPECT_TRUE(server_->url().starts_with("https://"));
}

TEST_F(TlsTest, AWatchStreamStartsAtOnceAndOutlivesTheHeaderTimeout) {
  auto c = node_config("n1");
  auto t = Transport::create(c);
  ASSERT_TRUE(t);
  std::mutex mu;
  std::condition_variable cv;
  unsigned status = 0;
  std::optional<Result<void>> ended;
  HttpRequest r;
  r.target = "/apis/network.example.com/v1alpha1/networkattachments?allowWatchBookmarks=true&fieldSelector=spec.node%3Dn1&resourceVersion=1&timeoutSeconds=400&watch=true";
  r.timeout = 1s;  // connect and headers: the stream itself has no deadline
  auto h = (*t)->stream(
      r,
      [&](unsigned s, const std::string&) {
        std::lock_guard lk(mu);
        status = s;
        cv.notify_all();
      },
      [](std::string_view) {},
      [&](Result<void> e) {
        std::lock_guard lk(mu);
        ended = e;
        cv.notify_all();
      });
  std::unique_lock lk(mu);
  ASSERT_TRUE(cv.wait_for(lk, 5s, [&] { return status != 0; })) << "no response headers over TLS";
  EXPECT_EQ(status, 200u);
  // Well past the 1 s header deadline the stream is still open.
  EXPECT_FALSE(cv.wait_for(lk, 2500ms, [&] { return ended.has_value(); }))
      << "the stream ended: " << (ended && !*ended ? ended->error().message : "normally");
  lk.unlock();
  h->cancel();
  (*t)->shutdown();
}

// A TLS 1.3 client may send its first request in the same packet as its handshake's last
// message (curl does): the server must answer it, though the handshake already read it
// from the socket.
TEST_F(TlsTest, ARequestSentWithTheHandshakesLastFlightIsAnswered) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  SSL* ssl = SSL_new(ctx);
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, in, out);
  SSL_set_connect_state(ssl);
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(server_->port());
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  auto flush = [&] {  // what the client has written, sent in one write
    char buf[16384];
    std::string all;
    for (int n; (n = BIO_read(out, buf, sizeof buf)) > 0;) all.append(buf, static_cast<size_t>(n));
    if (!all.empty()) {
      ASSERT_EQ(::send(fd, all.data(), all.size(), 0), static_cast<ssize_t>(all.size()));
    }
  };
  auto pump_in = [&] {
    char buf[16384];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) BIO_write(in, buf, static_cast<int>(n));
    return n > 0;
  };
  while (SSL_do_handshake(ssl) != 1) {
    ASSERT_EQ(SSL_get_error(ssl, -1), SSL_ERROR_WANT_READ);
    if (BIO_pending(out) > 0 && !SSL_is_init_finished(ssl)) {
      // Not the last flight yet (ClientHello): send it now.
      flush();
    }
    ASSERT_TRUE(pump_in()) << "the server stopped during the handshake";
  }
  // The handshake's last flight (Finished) is still in `out`: the request joins it.
  const std::string req = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  ASSERT_EQ(SSL_write(ssl, req.data(), static_cast<int>(req.size())), static_cast<int>(req.size()));
  flush();
  std::string got;
  char buf[4096];
  while (got.find("ok") == std::string::npos) {
    int n = SSL_read(ssl, buf, sizeof buf);
    if (n > 0) {
      got.append(buf, static_cast<size_t>(n));
      continue;
    }
    ASSERT_EQ(SSL_get_error(ssl, n), SSL_ERROR_WANT_READ);
    ASSERT_TRUE(pump_in()) << "no answer to a request sent with the handshake; got: " << got;
  }
  EXPECT_NE(got.find("HTTP/1.1 200"), std::string::npos) << got;
  ::close(fd);
  SSL_free(ssl);
  SSL_CTX_free(ctx);
}

TEST_F(TlsTest, ConnectionsResumeTheSessionAndKeepTheirUserAndWatchesReuseIdleConnections) {
  auto c = node_config("n3");
  TransportOptions http1;  // HTTP/2 has a connection of its own test (http2_test.cc)
  http1.http2 = false;
  auto t = Transport::create(c, http1);
  ASSERT_TRUE(t);
  HttpRequest who;
  who.method = "POST";
  who.target = "/apis/authentication.k8s.io/v1/selfsubjectreviews";
  who.body = R"({"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"})";
  auto first = (*t)->request_sync(who);
  ASSERT_TRUE(first && first->status == 201u);
  // A new connection (the pooled one dropped) resumes the session; the user is the same.
  (*t)->drop_connections();
  auto second = (*t)->request_sync(who);
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_NE(second->body.find("kos:node:n3"), std::string::npos) << second->body;
  EXPECT_EQ((*t)->open_connections(), 1u);
  // A watch starts on the idle keep-alive connection: still one connection.
  std::mutex mu;
  std::condition_variable cv;
  unsigned status = 0;
  HttpRequest w;
  w.target = "/apis/network.example.com/v1alpha1/networkattachments?watch=1&fieldSelector=spec.node%3Dn3";
  auto h = (*t)->stream(
      w,
      [&](unsigned st, const std::string&) {
        std::lock_guard lk(mu);
        status = st;
        cv.notify_all();
      },
      [](std::string_view) {}, [](Result<void>) {});
  {
    std::unique_lock lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, 5s, [&] { return status != 0; }));
  }
  EXPECT_EQ(status, 200u);
  EXPECT_EQ((*t)->open_connections(), 1u);
  h->cancel();
  (*t)->shutdown();
}

TEST_F(TlsTest, NoCredentialIs401) {
  auto r = whoami(config());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->status, 401u) << r->body;
}

TEST_F(TlsTest, AServerSignedByAnotherCaOrForAnotherHostIsRefused) {
  auto other = pki::make_ca("another-ca");
  ASSERT_TRUE(other);
  auto c = config();
  c.ca_pem = other->cert_pem;
  auto r = whoami(c);
  ASSERT_FALSE(r) << "a server the CA did not sign was trusted: " << r->status;
  EXPECT_EQ(r.error().code, Errc::kUnavailable);
  EXPECT_NE(r.error().message.find("certificate verify failed"), std::string::npos) << r.error().message;

  // The right CA, but a name the certificate does not carry.
  auto wrong_host = config("127.0.0.2");
  auto w = whoami(wrong_host);
  EXPECT_FALSE(w) << "a certificate for another host was accepted";

  // A client certificate from another CA: the handshake fails.
  auto foreign = pki::issue(*other, {.subject = {"intruder", {"kos:admins"}}});
  ASSERT_TRUE(foreign);
  auto f = config();
  f.cert_pem = foreign->cert_pem;
  f.key_pem = foreign->key_pem;
  auto fr = whoami(f);
  EXPECT_TRUE(!fr || fr->status == 401u) << "a client certificate from another CA was accepted";
}

TEST_F(TlsTest, AWrittenKubeconfigRoundTrips) {
  auto cert = pki::issue(pki_.ca, {.subject = {"kos-admin", {"kos:admins"}}});
  ASSERT_TRUE(cert);
  KubeconfigContent kc;
  kc.server = server_->url();
  kc.ca_pem = pki_.ca.cert_pem;
  kc.cert_pem = cert->cert_pem;
  kc.key_pem = cert->key_pem;
  const std::string path = (dir_.path() / "admin.kubeconfig").string();
  ASSERT_TRUE(write_kubeconfig(path, kc));
  auto rc = load_kubeconfig(path);
  ASSERT_TRUE(rc) << rc.error().message;
  EXPECT_TRUE(rc->tls);
  EXPECT_EQ(rc->ca_pem, kc.ca_pem);
  EXPECT_EQ(rc->cert_pem, kc.cert_pem);
  EXPECT_EQ(rc->key_pem, kc.key_pem);
  auto r = whoami(*rc);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_NE(r->body.find("kos-admin"), std::string::npos) << r->body;
}

}  // namespace
}  // namespace kos::client
