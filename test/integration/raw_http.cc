#include "test/integration/raw_http.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>

#include <boost/asio/connect.hpp>
#include <boost/asio/write.hpp>
#include <boost/url/parse.hpp>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <stdexcept>

#include "client/kubeconfig.h"

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
  std::string auth;
  if (u->scheme() == "https") {
    auto kc = client::load_kubeconfig(opts.kubeconfig);
    if (!kc) throw std::runtime_error("RawHttp: " + kc.error().message);
    ctx_ = SSL_CTX_new(TLS_client_method());
    X509_STORE* store = SSL_CTX_get_cert_store(ctx_);
    BIO* b = BIO_new_mem_buf(kc->ca_pem.data(), static_cast<int>(kc->ca_pem.size()));
    while (X509* c = PEM_read_bio_X509(b, nullptr, nullptr, nullptr)) {
      X509_STORE_add_cert(store, c);
      X509_free(c);
    }
    BIO_free(b);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    if (!kc->cert_pem.empty()) {
      BIO* cb = BIO_new_mem_buf(kc->cert_pem.data(), static_cast<int>(kc->cert_pem.size()));
      X509* cert = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
      BIO_free(cb);
      BIO* kb = BIO_new_mem_buf(kc->key_pem.data(), static_cast<int>(kc->key_pem.size()));
      EVP_PKEY* key = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
      BIO_free(kb);
      SSL_CTX_use_certificate(ctx_, cert);
      SSL_CTX_use_PrivateKey(ctx_, key);
      X509_free(cert);
      EVP_PKEY_free(key);
    }
    if (!kc->bearer_token.empty()) auth = "Authorization: Bearer " + kc->bearer_token + "\r\n";
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, socket_.native_handle());
    if (SSL_connect(ssl_) != 1) throw std::runtime_error("RawHttp: TLS handshake with " + url + " failed");
  }
  std::string req = opts.method + " " + target + " HTTP/1.1\r\nHost: " + std::string(u->host()) +
                    "\r\nAccept: application/json\r\n" + auth;
  if (!opts.body.empty()) {
    req += std::string("Content-Type: ") +
           (opts.method == "PATCH" ? "application/merge-patch+json" : "application/json") +
           "\r\nContent-Length: " + std::to_string(opts.body.size()) + "\r\n";
  }
  req += "\r\n" + opts.body;
  if (ssl_) {
    if (SSL_write(ssl_, req.data(), static_cast<int>(req.size())) <= 0)
      throw std::runtime_error("RawHttp: TLS write failed");
  } else {
    net::write(socket_, net::buffer(req));
  }
}

RawHttp::~RawHttp() {
  if (ssl_) SSL_free(ssl_);
  if (ctx_) SSL_CTX_free(ctx_);
}

bool RawHttp::read_some() {
  // POSIX calls: asio's blocking read polls without a timeout once the socket says EAGAIN.
  char buf[65536];
  if (ssl_ && SSL_pending(ssl_) == 0) {
    pollfd p{socket_.native_handle(), POLLIN, 0};
    int ready = ::poll(&p, 1, 200);
    if (ready < 0) return errno == EINTR;
    if (ready == 0) return true;
  }
  if (ssl_) {
    int n = SSL_read(ssl_, buf, sizeof buf);
    if (n > 0) {
      data_.append(buf, static_cast<size_t>(n));
      return true;
    }
    int e = SSL_get_error(ssl_, n);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
  }
  pollfd p{socket_.native_handle(), POLLIN, 0};
  int ready = ::poll(&p, 1, 200);
  if (ready < 0) return errno == EINTR;
  if (ready == 0) return true;  // nothing within 200 ms
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
