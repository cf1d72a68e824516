#include "common/http_server.h"

#include <openssl/x509.h>
#include <spdlog/spdlog.h>

#include "common/http2_env.h"
#include "common/http_server_impl.h"
#include "common/thread_name.h"
#include "common/x509_subject.h"

namespace kos::http {
namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;

namespace detail {

const char* reason(unsigned status) {
  return bhttp::obsolete_reason(static_cast<bhttp::status>(status)).data();
}

Response body_too_large(size_t limit) {
  return {413, "application/json",
          R"({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Request entity too large: limit is )" +
              std::to_string(limit) + R"( bytes","reason":"RequestEntityTooLarge","code":413})",
          {}};
}

Response headers_too_large(size_t limit) {
  return {431, "application/json",
          R"({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Request header fields too large: limit is )" +
              std::to_string(limit) + R"( bytes","reason":"RequestHeaderFieldsTooLarge","code":431})",
          {}};
}

StreamQueue::StreamQueue(size_t max_queued, std::shared_ptr<StreamBudget> budget, std::function<void()> wake)
    : max_queued_(max_queued), budget_(std::move(budget)), wake_(std::move(wake)) {
  if (budget_) budget_->add_stream();
}

bool StreamQueue::enqueue(std::shared_ptr<const std::string> data, Limit limit) {
  std::lock_guard lk(mu_);
  // A stream that is ending takes nothing more, but that is not the writer's fault: only
  // a full queue (a receiver too far behind) answers false.
  if (closed_ || finishing_) return true;
  const size_t n = data->size();
  if (limit == Limit::kStream && queued_bytes_ + n > max_queued_) return false;
  if (budget_) {
    if (limit == Limit::kNone)
      budget_->charge(n);
    else if (!budget_->try_charge(queued_bytes_ + inflight_bytes_, n))
      return false;
  }
  queued_bytes_ += n;
  queue_.push_back(std::move(data));
  if (waiting_) {
    waiting_ = false;
    wake_();
  }
  return true;
}

void StreamQueue::finish() {
  std::lock_guard lk(mu_);
  if (closed_ || finishing_) return;
  finishing_ = true;
  if (waiting_) {
    waiting_ = false;
    wake_();
  }
}

bool StreamQueue::closed() const {
  std::lock_guard lk(mu_);
  return closed_;
}

StreamQueue::Take StreamQueue::empty_locked() {
  if (finishing_ || closed_) return Take::kEnd;
  waiting_ = true;
  return Take::kWait;
}

StreamQueue::Take StreamQueue::take(size_t max_items, size_t max_bytes,
                                    std::vector<std::shared_ptr<const std::string>>& out, size_t& bytes) {
  std::lock_guard lk(mu_);
  // What the last write sent is no longer held.
  if (budget_) budget_->release(inflight_bytes_);
  inflight_bytes_ = 0;
  bytes = 0;
  while (!queue_.empty() && out.size() < max_items && bytes < max_bytes) {
    bytes += queue_.front()->size();
    out.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  queued_bytes_ -= bytes;
  inflight_bytes_ = bytes;
  return out.empty() ? empty_locked() : Take::kData;
}

StreamQueue::Take StreamQueue::read(uint8_t* buf, size_t len, size_t& n) {
  std::lock_guard lk(mu_);
  n = 0;
  while (!queue_.empty() && n < len) {
    const std::string& front = *queue_.front();
    size_t k = std::min(len - n, front.size() - front_offset_);
    std::memcpy(buf + n, front.data() + front_offset_, k);
    n += k;
    front_offset_ += k;
    if (front_offset_ == front.size()) {
      queue_.pop_front();
      front_offset_ = 0;
    }
  }
  queued_bytes_ -= n;
  if (budget_) budget_->release(n);
  return n ? Take::kData : empty_locked();
}

bool StreamQueue::close() {
  std::function<void()> wake;
  std::lock_guard lk(mu_);
  if (closed_) return false;
  closed_ = true;
  queue_.clear();
  if (budget_) {
    budget_->release(queued_bytes_ + inflight_bytes_);
    budget_->remove_stream();
  }
  queued_bytes_ = inflight_bytes_ = 0;
  wake = std::move(wake_);  // what it holds goes once the lock is released
  return true;
}

}  // namespace detail

Reply Server::Impl::call(const Request& req, const Peer& peer) {
  try {
    return handler(req, peer);
  } catch (const std::exception& e) {
    spdlog::error("http: handler threw on {} {}: {}", std::string(req.method_string()),
                  std::string(req.target()), e.what());
    return Response{500, "application/json",
                    R"({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"internal error","reason":"InternalError","code":500})",
                    {}};
  }
}

namespace {

using detail::PlainStream;
using detail::reason;
using detail::StreamQueue;
using detail::TlsStream;

// The client certificate of a TLS connection (verified by the handshake).
void read_peer_cert(SSL* ssl, Peer& peer) {
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (!cert) return;
  if (SSL_get_verify_result(ssl) == X509_V_OK) {
    peer.has_cert = true;
    auto subject = x509_subject(cert);
    peer.cert_common_name = std::move(subject.common_name);
    peer.cert_organizations = std::move(subject.organizations);
  }
  X509_free(cert);
}

// One connection. S is PlainStream or TlsStream.
template <class S>
class Session : public std::enable_shared_from_this<Session<S>> {
 public:
  Session(S stream, Server::Impl& server) : stream_(std::move(stream)), server_(server) {
    beast::error_code ec;
    auto ep = tcp_().socket().remote_endpoint(ec);
    if (!ec) peer_.address = ep.address().to_string();
    peer_.tls = std::is_same_v<S, TlsStream>;
  }

  void start() {
    net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
      if constexpr (std::is_same_v<S, TlsStream>) {
        self->tcp_().expires_after(std::chrono::seconds(10));
        self->stream_.async_handshake(net::ssl::stream_base::server, [self](beast::error_code ec) {
          if (ec) return self->close();
          read_peer_cert(self->stream_.native_handle(), self->peer_);
          const unsigned char* proto = nullptr;
          unsigned len = 0;
          SSL_get0_alpn_selected(self->stream_.native_handle(), &proto, &len);
          if (std::string_view(reinterpret_cast<const char*>(proto), len) == "h2") {
            self->tcp_().expires_never();
            return detail::serve_http2(std::move(self->stream_), self->server_, self->peer_, {});
          }
          self->read();
        });
      } else {
        self->read();
      }
    });
  }

 private:
  void read() {
    parser_.emplace();
    parser_->body_limit(server_.opts.max_body_bytes);
    parser_->header_limit(static_cast<std::uint32_t>(server_.opts.max_header_bytes));
    if (buffer_.size() > 0) return read_request();  // a pipelined request has begun
    // Idle until the first bytes of the next request: a longer wait than for the request
    // itself once it has begun. They are read (not only waited for): TLS may already hold
    // them, read from the socket with the handshake.
    tcp_().expires_after(server_.opts.idle_timeout);
    stream_.async_read_some(buffer_.prepare(4096), [self = this->shared_from_this()](beast::error_code ec, size_t n) {
      if (ec) return self->close();
      self->buffer_.commit(n);
      if (self->starts_http2()) {
        self->tcp_().expires_never();
        std::string initial = beast::buffers_to_string(self->buffer_.data());
        return detail::serve_http2(std::move(self->stream_), self->server_, self->peer_, initial);
      }
      self->read_request();
    });
  }

  // A plain connection's first request that is the HTTP/2 preface (a client with prior
  // knowledge, as KOS's own clients are).
  bool starts_http2() {
    if constexpr (std::is_same_v<S, TlsStream>) return false;  // TLS chose by ALPN
    if (!server_.opts.http2 || !first_read_) return false;
    first_read_ = false;
    auto data = beast::buffers_to_string(buffer_.data());
    return data.size() >= 14 && detail::kHttp2Preface.starts_with(data.substr(0, 14));
  }

  void read_request() {
    tcp_().expires_after(server_.opts.request_read_timeout);  // slow clients (slowloris)
    bhttp::async_read(stream_, buffer_, *parser_,
                      [self = this->shared_from_this()](beast::error_code ec, size_t) {
                        self->on_read(ec);
                      });
  }

  void on_read(beast::error_code ec) {
    if (ec == bhttp::error::end_of_stream || ec == net::error::operation_aborted ||
        ec == beast::error::timeout || ec == net::error::eof) {
      return close();
    }
    if (ec == bhttp::error::body_limit) return send(detail::body_too_large(server_.opts.max_body_bytes), false, 11);
    if (ec == bhttp::error::header_limit)
      return send(detail::headers_too_large(server_.opts.max_header_bytes), false, 11);
    if (ec) {
      Response r{400, "text/plain", "malformed HTTP request: " + ec.message() + "\n", {}};
      return send(std::move(r), false, 11);
    }
    tcp_().expires_never();
    auto req = std::make_shared<Request>(parser_->release());
    net::post(server_.workers, [self = this->shared_from_this(), req] {
      Reply reply = self->server_.call(*req, self->peer_);
      net::post(self->stream_.get_executor(), [self, req, reply = std::move(reply)]() mutable {
        if (auto* r = std::get_if<Response>(&reply))
          self->send(std::move(*r), req->keep_alive(), req->version());
        else
          self->start_stream(std::move(std::get<StreamStart>(reply)), req->version());
      });
    });
  }

  void send(Response r, bool keep_alive, unsigned version) {
    auto res = std::make_shared<bhttp::response<bhttp::string_body>>(
        static_cast<bhttp::status>(r.status), version);
    res->set(bhttp::field::server, server_.opts.server_header);
    res->set(bhttp::field::content_type, r.content_type);
    for (auto& [k, v] : r.headers) res->set(k, v);
    res->body() = std::move(r.body);
    res->keep_alive(keep_alive);
    res->prepare_payload();
    bhttp::async_write(stream_, *res,
                       [self = this->shared_from_this(), res, keep_alive](beast::error_code ec, size_t) {
                         if (ec || !keep_alive) return self->close();
                         self->read();
                       });
  }

  void start_stream(StreamStart s, unsigned version) {
    // A stream lives long and never reads another request: drop the parser and the read
    // buffer (thousands of watches are open at once on a large cluster).
    parser_.reset();
    buffer_.clear();
    buffer_.shrink_to_fit();
    on_close_ = std::move(s.on_close);
    q_ = std::make_shared<StreamQueue>(
        s.max_queued_bytes, std::move(s.budget), [w = this->weak_from_this()] {
          if (auto self = w.lock())
            net::post(self->stream_.get_executor(), [self] { self->write_next(); });
        });
    header_ = (version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ") + std::to_string(s.status) + " " +
              reason(s.status) + "\r\nServer: " + server_.opts.server_header +
              "\r\nContent-Type: " + s.content_type +
              "\r\nCache-Control: no-cache, private\r\nTransfer-Encoding: chunked\r\n"
              "Connection: close\r\n\r\n";
    if (s.timeout) {
      timer_.emplace(stream_.get_executor());
      timer_->expires_after(*s.timeout);
      timer_->async_wait([self = this->shared_from_this()](beast::error_code ec) {
        if (!ec) self->q_->finish();
      });
    }
    net::async_write(stream_, net::buffer(header_),
                     [self = this->shared_from_this(), attach = std::move(s.attach)](
                         beast::error_code ec, size_t) mutable {
                       if (ec) return self->close();
                       self->watch_peer();
                       self->write_next();
                       // Attaching can be heavy (a watch's initial state): a worker does it.
                       net::post(self->server_.workers, [self, attach = std::move(attach)] {
                         attach(std::make_shared<detail::QueueHandle>(self->q_, self));
                       });
                     });
  }

  // While streaming, a read that completes means the peer closed (or misbehaved).
  void watch_peer() {
    stream_.async_read_some(
        net::buffer(peer_buf_), [self = this->shared_from_this()](beast::error_code ec, size_t) {
          if (ec) return self->close();
          self->watch_peer();
        });
  }

  // Writes what is queued as one chunk (up to kMaxBatch lines): under load a watch has
  // several events waiting, and one gathered write costs one syscall instead of one each.
  void write_next() {
    static constexpr size_t kMaxBatch = 64, kMaxBatchBytes = 1 << 20;
    if (closed_) return;
    inflight_.clear();
    size_t bytes = 0;
    switch (q_->take(kMaxBatch, kMaxBatchBytes, inflight_, bytes)) {
      case StreamQueue::Take::kWait:
        return;
      case StreamQueue::Take::kEnd:
        net::async_write(stream_, net::buffer("0\r\n\r\n", 5),
                         [self = this->shared_from_this()](beast::error_code, size_t) { self->close(); });
        return;
      case StreamQueue::Take::kData:
        break;
    }
    char hex[24];
    int n = std::snprintf(hex, sizeof hex, "%zx\r\n", bytes);
    chunk_prefix_.assign(hex, static_cast<size_t>(n));
    gather_.clear();
    gather_.push_back(net::buffer(chunk_prefix_));
    for (const auto& d : inflight_) gather_.push_back(net::buffer(*d));
    gather_.push_back(net::buffer("\r\n", 2));
    net::async_write(stream_, gather_, [self = this->shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->close();
      self->write_next();
    });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    if (timer_) timer_->cancel();
    beast::error_code ec;
    tcp_().socket().shutdown(tcp::socket::shutdown_both, ec);
    tcp_().socket().close(ec);
    if (q_ && q_->close() && on_close_) std::exchange(on_close_, nullptr)();
  }

  beast::tcp_stream& tcp_() { return beast::get_lowest_layer(stream_); }

  S stream_;
  Server::Impl& server_;
  Peer peer_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::optional<net::steady_timer> timer_;
  std::string header_, chunk_prefix_;
  std::array<char, 512> peer_buf_{};

  // Streaming (on the strand, as everything but the queue's writers).
  std::shared_ptr<StreamQueue> q_;
  std::vector<std::shared_ptr<const std::string>> inflight_;  // being written
  std::vector<net::const_buffer> gather_;
  bool first_read_ = true, closed_ = false;
  std::function<void()> on_close_;
};

}  // namespace

bool StreamBudget::try_charge(size_t own, size_t n) {
  const size_t half = limit_ / 2;
  const size_t share = half / std::max<size_t>(1, streams_.load());
  size_t used = used_.load();
  do {
    if (used + n > limit_) return false;
    if (used + n > half && own + n > share) return false;
  } while (!used_.compare_exchange_weak(used, used + n));
  return true;
}

void Server::Impl::accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket s) {
    if (stopped) return;
    if (!ec) {
      s.set_option(tcp::no_delay(true));
      if (tls)
        std::make_shared<Session<TlsStream>>(TlsStream(std::move(s), *tls), *this)->start();
      else
        std::make_shared<Session<PlainStream>>(PlainStream(std::move(s)), *this)->start();
    } else if (ec != net::error::operation_aborted) {
      spdlog::warn("http: accept failed: {}", ec.message());
    }
    accept();
  });
}

Server::Server(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() { stop(); }

uint16_t Server::port() const { return impl_->port; }

void Server::stop() {
  if (impl_->stopped.exchange(true)) return;
  beast::error_code ec;
  net::post(impl_->ioc, [impl = impl_.get()] {
    beast::error_code e;
    impl->acceptor.close(e);
  });
  impl_->ioc.stop();
  for (auto& t : impl_->threads) t.join();
  impl_->workers.join();
}

namespace {
// ALPN: h2 when the client offers it, else HTTP/1.1 (also when it offers nothing known).
int select_protocol(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                    unsigned inlen, void*) {
  for (unsigned i = 0; i < inlen; i += 1u + in[i]) {
    unsigned len = in[i];
    if (i + 1 + len > inlen) break;
    if (std::string_view(reinterpret_cast<const char*>(in + i + 1), len) == "h2") {
      *out = in + i + 1;
      *outlen = static_cast<unsigned char>(len);
      return SSL_TLSEXT_ERR_OK;
    }
  }
  return SSL_TLSEXT_ERR_NOACK;
}
}  // namespace

Result<std::unique_ptr<Server>> Server::start(const ServerOptions& options, Handler handler) {
  ServerOptions opts = options;
  if (http2_disabled_by_env()) opts.http2 = false;
  auto impl = std::make_shared<Impl>(opts);
  impl->handler = std::move(handler);
  beast::error_code ec;
  if (opts.tls) {
    auto& ctx = impl->tls.emplace(net::ssl::context::tls_server);
    ctx.set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                    net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 |
                    net::ssl::context::no_tlsv1_1 | net::ssl::context::single_dh_use);
    ctx.use_certificate_chain(net::buffer(opts.tls->cert_pem), ec);
    if (ec) return fail(Errc::kBadRequest, "TLS serving certificate: " + ec.message());
    ctx.use_private_key(net::buffer(opts.tls->key_pem), net::ssl::context::pem, ec);
    if (ec) return fail(Errc::kBadRequest, "TLS serving key: " + ec.message());
    if (!opts.tls->client_ca_pem.empty()) {
      ctx.add_certificate_authority(net::buffer(opts.tls->client_ca_pem), ec);
      if (ec) return fail(Errc::kBadRequest, "client CA: " + ec.message());
      // Ask for a client certificate and verify one if given; anonymous clients still
      // connect (the API server answers them 401 where it must).
      ctx.set_verify_mode(net::ssl::verify_peer);
      SSL_CTX_set_session_id_context(ctx.native_handle(), reinterpret_cast<const unsigned char*>("kos"), 3);
    }
    if (opts.http2) SSL_CTX_set_alpn_select_cb(ctx.native_handle(), select_protocol, nullptr);
  }
  auto addr = net::ip::make_address(opts.address, ec);
  if (ec) return fail(Errc::kBadRequest, "invalid listen address '" + opts.address + "'");
  tcp::endpoint ep(addr, opts.port);
  impl->acceptor.open(ep.protocol(), ec);
  if (!ec) impl->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(ep, ec);
  if (!ec) impl->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    return fail(Errc::kUnavailable, "cannot listen on " + opts.address + ":" +
                                        std::to_string(opts.port) + ": " + ec.message());
  impl->port = impl->acceptor.local_endpoint().port();
  impl->accept();
  for (int i = 0; i < std::max(1, opts.io_threads); ++i)
    impl->threads.push_back(named_thread("kos-http-io", [raw = impl.get()] { raw->ioc.run(); }));
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

}  // namespace kos::http
