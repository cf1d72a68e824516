#include "client/transport.h"

#include <atomic>
#include <future>
#include <random>
#include <set>
#include <thread>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "client/connection.h"
#include "client/http2_connection.h"
#include "common/http2_env.h"
#include "common/thread_name.h"

#include <spdlog/spdlog.h>

namespace kos::client {
namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;

Result<HttpResponse> Transport::request_sync(HttpRequest req) {
  std::promise<Result<HttpResponse>> p;
  auto f = p.get_future();
  request(std::move(req), [&p](Result<HttpResponse> r) { p.set_value(std::move(r)); });
  return f.get();
}

namespace {

http::verb verb_of(const std::string& m) {
  auto v = http::string_to_verb(m);
  return v == http::verb::unknown ? http::verb::get : v;
}

using detail::Conn;
using detail::ConnPtr;
using detail::H2Connection;

class TransportImpl;

// One request/response exchange, possibly retried once on a fresh connection.
struct Exchange {
  HttpRequest req;
  std::function<void(Result<HttpResponse>)> done;
  int attempt = 0;           // retries on a reused connection found closed
  int connect_attempts = 0;  // retries of a connection that could not be made
  std::chrono::steady_clock::time_point deadline;
  ConnPtr conn;
  http::request<http::string_body> msg;
  std::optional<http::response_parser<http::string_body>> parser;
};

class StreamImpl : public StreamHandle, public std::enable_shared_from_this<StreamImpl> {
 public:
  StreamImpl(std::weak_ptr<Transport> t, ConnPtr c) : t_(std::move(t)), conn_(std::move(c)) {}
  void cancel() override;

  std::weak_ptr<Transport> t_;
  ConnPtr conn_;
  std::atomic<bool> cancelled{false};
  HttpRequest req;
  http::request<http::string_body> msg;
  http::response_parser<http::string_body> parser;
  std::string pending;
  std::function<size_t(std::uint64_t, beast::string_view, beast::error_code&)> chunk_cb;
  std::function<void(unsigned, const std::string&)> on_status;
  std::function<void(std::string_view)> on_line;
  std::function<void(Result<void>)> on_end;
  bool ended = false;
  // Bounds connecting and the response headers; the stream itself has no deadline.
  std::shared_ptr<net::steady_timer> header_timer;
  bool reused = false;      // started on a pooled keep-alive connection
  bool fresh_only = false;  // that failed before an answer: a new connection now
  size_t connect_failures = 0;  // connections that could not be made for it
  // On an HTTP/2 connection: the stream there (the connection is then not conn_).
  std::weak_ptr<H2Connection> h2;
  int32_t h2_id = 0;
};

class TransportImpl final : public Transport {
 public:
  TransportImpl(const RestConfig& cfg, const TransportOptions& opts,
                std::unique_ptr<net::ssl::context> tls)
      : cfg_(cfg), opts_(opts), eps_(cfg.all_endpoints()), sessions_(eps_.size(), nullptr),
        tls_(std::move(tls)), work_(net::make_work_guard(ioc_)),
        proto_(opts.http2 ? Proto::kUnknown : Proto::kHttp1) {
    // Several API servers: each client starts on one of them at random, so that many
    // clients spread over all (a client's requests and watches share one connection).
    if (eps_.size() > 1) active_ = opts.first_endpoint.value_or(std::random_device{}()) % eps_.size();
    thread_ = named_thread("kos-client-io", [this] { ioc_.run(); });
  }
  ~TransportImpl() override {
    shutdown();
    for (auto* ss : sessions_)
      if (ss) SSL_SESSION_free(ss);
  }

  void request(HttpRequest req, std::function<void(Result<HttpResponse>)> done) override {
    auto ex = std::make_shared<Exchange>();
    ex->req = std::move(req);
    ex->done = std::move(done);
    ex->deadline = std::chrono::steady_clock::now() + ex->req.timeout;
    net::post(ioc_, [this, ex] { start(ex); });
  }

  std::shared_ptr<StreamHandle> stream(
      HttpRequest req, std::function<void(unsigned, const std::string&)> on_status,
      std::function<void(std::string_view)> on_line,
      std::function<void(Result<void>)> on_end) override {
    auto conn = std::make_shared<Conn>(ioc_, tls_.get());
    auto s = std::make_shared<StreamImpl>(weak_from_this(), conn);
    s->req = std::move(req);
    s->on_status = std::move(on_status);
    s->on_line = std::move(on_line);
    s->on_end = std::move(on_end);
    net::post(ioc_, [this, s] { start_stream(s); });
    return s;
  }

  void post(std::function<void()> fn) override { net::post(ioc_, std::move(fn)); }

  std::function<void()> post_after(std::chrono::milliseconds delay,
                                   std::function<void()> fn) override {
    auto timer = std::make_shared<net::steady_timer>(ioc_, delay);
    timer->async_wait([timer, fn = std::move(fn)](beast::error_code ec) {
      if (!ec) fn();
    });
    return [this, timer] { net::post(ioc_, [timer] { timer->cancel(); }); };
  }

  void drop_connections() override {
    std::promise<void> p;
    net::post(ioc_, [this, &p] {
      for (auto& c : idle_) {
        close(*c);
        --open_;
      }
      idle_.clear();
      for (auto& c : busy_) close(*c);  // their handlers fail and release them
      auto h2 = h2_;  // closing one takes it off the list
      for (auto& c : h2) c->close();
      p.set_value();
    });
    if (std::this_thread::get_id() != thread_.get_id()) p.get_future().wait();
  }

  void shutdown() override {
    if (stopped_.exchange(true)) return;
    if (std::this_thread::get_id() != thread_.get_id()) {
      drop_connections();
      work_.reset();
      ioc_.stop();
      thread_.join();
      // Every socket was closed above; handlers that would have released them will not
      // run anymore.
      busy_.clear();
      open_ = 0;
    }
  }

  size_t open_connections() const override { return open_.load(); }
  bool stopped() const override { return stopped_.load(); }

  // ---- on the io thread ----
  // Keeps a TLS connection's session for the next connections to resume (TLS 1.3 tickets
  // arrive after the handshake: this is called once a response has been read).
  void remember_session(Conn& c) {
    if (!c.ssl || SSL_session_reused(c.ssl->native_handle())) return;
    SSL_SESSION* ss = SSL_get1_session(c.ssl->native_handle());
    if (!ss) return;
    if (!SSL_SESSION_is_resumable(ss)) return SSL_SESSION_free(ss);
    SSL_SESSION*& slot = sessions_[c.endpoint];  // a session resumes on its own server only
    if (slot) SSL_SESSION_free(slot);
    slot = ss;
  }

  // The API server(s), for messages.
  std::string servers_text() const {
    if (eps_.size() == 1) return "the API server at " + eps_[0].server;
    std::string out = "any of the API servers (";
    for (size_t i = 0; i < eps_.size(); ++i) out += (i ? ", " : "") + eps_[i].server;
    return out + ")";
  }

  // A connection to endpoint `failed` could not be made: new connections go to the next
  // API server from now on (the idle ones to the old server are closed). Requests that
  // were not sent are sent there; watches that ended are started there by their owners,
  // from their last revision.
  void fail_over(size_t failed) {
    if (eps_.size() < 2 || failed != active_) return;
    active_ = (active_ + 1) % eps_.size();
    spdlog::warn("client: cannot reach the API server at {}; using {} now", eps_[failed].server,
                 eps_[active_].server);
    for (auto& c : idle_) {
      close(*c);
      --open_;
    }
    idle_.clear();
  }

  void close(Conn& c) { c.close(); }

  void release(const ConnPtr& c, bool keep) {
    busy_.erase(c);
    if (keep && c->endpoint == active_ && c->tcp().socket().is_open() &&
        idle_.size() < opts_.max_idle_connections) {
      c->reused = true;
      idle_.push_back(c);
      return;
    }
    close(*c);
    --open_;
  }

  // The server's addresses. An address in the kubeconfig (the usual case) is used as it
  // is: asio resolves names on a thread of its own, a hand-off per new connection.
  template <class Then>
  void resolve(const Endpoint& ep, Then then) {
    beast::error_code ec;
    auto addr = net::ip::make_address(ep.host, ec);
    if (!ec) return then(ec, std::vector<tcp::endpoint>{tcp::endpoint(addr, ep.port)});
    auto resolver = std::make_shared<tcp::resolver>(ioc_);
    resolver->async_resolve(ep.host, std::to_string(ep.port),
                            [resolver, then](beast::error_code ec2, tcp::resolver::results_type r) mutable {
                              std::vector<tcp::endpoint> eps;
                              for (const auto& e : r) eps.push_back(e.endpoint());
                              then(ec2, std::move(eps));
                            });
  }

  // A TLS handshake that failed for a reason that will not go away by itself (a
  // certificate not trusted, not for this host, or refused by the server), not because
  // the connection was lost during it.
  static bool tls_refused(beast::error_code ec) {
    return ec.category() == net::error::get_ssl_category() && ec != net::ssl::error::stream_truncated;
  }

  // Connects `c` to the active API server; a failure other than a refused TLS handshake
  // moves the transport to the next one.
  template <class Then>
  void connect(const ConnPtr& c, Then then) {
    ++open_;
    busy_.insert(c);
    c->endpoint = active_;
    c->tcp().expires_after(opts_.connect_timeout);
    auto done = [this, c, then](beast::error_code ec) mutable {
      if (ec && !tls_refused(ec)) fail_over(c->endpoint);
      then(ec);
    };
    const Endpoint& ep = eps_[c->endpoint];
    resolve(ep, [this, c, done, &ep](beast::error_code ec, std::vector<tcp::endpoint> r) mutable {
      if (ec) return done(ec);
      c->tcp().async_connect(r, [this, c, done, &ep](beast::error_code ec2, const tcp::endpoint&) mutable {
        if (ec2 || !c->ssl) {
          if (!ec2) c->tcp().socket().set_option(tcp::no_delay(true));
          return done(ec2);
        }
        c->tcp().socket().set_option(tcp::no_delay(true));
        // TLS: the server must present a certificate for the host we asked for, signed
        // by the configured CA (unless insecure-skip-tls-verify).
        beast::error_code vec;
        net::ip::make_address(ep.host, vec);
        if (vec)  // a name, not an address: send it (SNI)
          SSL_set_tlsext_host_name(c->ssl->native_handle(), ep.host.c_str());
        if (!cfg_.insecure_skip_verify)
          c->ssl->set_verify_callback(net::ssl::host_name_verification(ep.host));
        // Resume the last session: no certificates sent or verified again, no signature.
        if (SSL_SESSION* ss = sessions_[c->endpoint]) SSL_set_session(c->ssl->native_handle(), ss);
        // Offer HTTP/2 while the server's answer is not known (h2, else HTTP/1.1).
        if (proto_ != Proto::kHttp1) {
          static constexpr unsigned char kAlpn[] = "\x02h2\x08http/1.1";
          SSL_set_alpn_protos(c->ssl->native_handle(), kAlpn, sizeof kAlpn - 1);
        }
        c->ssl->async_handshake(net::ssl::stream_base::client,
                                [done](beast::error_code ec3) mutable { done(ec3); });
      });
    });
  }

  void start(const std::shared_ptr<Exchange>& ex) {
    if (stopped_) return ex->done(fail(Errc::kCancelled, "client is shutting down"));
    if (proto_ != Proto::kHttp1) {
      if (auto c = h2_pick()) return h2_request(c, ex);
      return h2_wait([this, ex](beast::error_code ec) {
        if (ec) return connect_failed(ex, ec);
        start(ex);
      });
    }
    ex->msg = {verb_of(ex->req.method), ex->req.target, 11};
    ex->msg.set(http::field::host, authority(active_));
    ex->msg.set(http::field::user_agent, opts_.user_agent);
    ex->msg.set(http::field::accept, ex->req.accept);
    if (!cfg_.bearer_token.empty())
      ex->msg.set(http::field::authorization, "Bearer " + cfg_.bearer_token);
    if (!ex->req.body.empty() || ex->msg.method() == http::verb::post ||
        ex->msg.method() == http::verb::put || ex->msg.method() == http::verb::patch) {
      ex->msg.set(http::field::content_type, ex->req.content_type);
      ex->msg.body() = ex->req.body;
    }
    ex->msg.keep_alive(true);
    ex->msg.prepare_payload();
    if (!idle_.empty()) {
      ex->conn = std::move(idle_.back());
      idle_.pop_back();
      busy_.insert(ex->conn);
      return send(ex);
    }
    ex->conn = std::make_shared<Conn>(ioc_, tls_.get());
    connect(ex->conn, [this, ex](beast::error_code ec) {
      if (!ec) return send(ex);
      release(ex->conn, false);
      connect_failed(ex, ec);
    });
  }

  std::string authority(size_t endpoint) const {
    const Endpoint& ep = eps_[endpoint];
    return (ep.host.find(':') != std::string::npos ? "[" + ep.host + "]" : ep.host) + ":" +
           std::to_string(ep.port);
  }

  // An exchange whose connection could not be made.
  void connect_failed(const std::shared_ptr<Exchange>& ex, beast::error_code ec) {
    // A TLS handshake that failed (a certificate not trusted, not for this host, or
    // refused by the server) fails the same way next time: no retry.
    if (tls_refused(ec))
      return ex->done(fail(Errc::kUnavailable, "TLS handshake with " + servers_text() + " failed: " +
                                                   ec.message()));
    // Nothing was sent: retrying is safe for any request until its deadline; at once on
    // the next API server while there is one not tried in this round, then with backoff.
    const size_t n = eps_.size();
    const int round = ex->connect_attempts / static_cast<int>(n);
    const bool next_now = n > 1 && (ex->connect_attempts + 1) % static_cast<int>(n) != 0;
    auto backoff = next_now ? std::chrono::milliseconds(0)
                            : std::chrono::milliseconds(std::min(1000, 25 << std::min(round, 6)));
    if (!stopped_ && std::chrono::steady_clock::now() + backoff < ex->deadline) {
      ++ex->connect_attempts;
      if (next_now) net::post(ioc_, [this, ex] { start(ex); });
      else post_after(backoff, [this, ex] { start(ex); });
      return;
    }
    ex->done(fail(Errc::kUnavailable, "cannot connect to " + servers_text() + ": " + ec.message()));
  }

  void send(const std::shared_ptr<Exchange>& ex) {
    ex->conn->tcp().expires_after(ex->req.timeout);
    ex->conn->io([&](auto& stream) {
    http::async_write(stream, ex->msg, [this, ex, &stream](beast::error_code ec, size_t) {
      if (ec) return finish(ex, ec, true, false);
      ex->parser.emplace();
      ex->parser->body_limit(1ULL << 30);
      http::async_read(stream, ex->conn->buffer, *ex->parser,
                       [this, ex](beast::error_code ec2, size_t n) {
                         if (ec2) return finish(ex, ec2, n == 0, true);
                         auto& res = ex->parser->get();
                         HttpResponse out;
                         out.status = res.result_int();
                         out.body = std::move(res.body());
                         for (auto it = res.find(http::field::warning);
                              it != res.end() && it->name() == http::field::warning; ++it)
                           out.warnings.emplace_back(it->value());
                         bool keep = res.keep_alive();
                         remember_session(*ex->conn);
                         release(ex->conn, keep);
                         ex->done(std::move(out));
                       });
    });
    });
  }

  // A failed exchange: retried once on a new connection (the next API server if this one
  // is gone) when the connection broke before any of the response arrived (a reused idle
  // one the server had closed, or a server that died) and the request cannot have been
  // applied: it was not written whole, or it only reads. A write that was sent may have
  // been applied by a server that died before answering: the caller decides.
  void finish(const std::shared_ptr<Exchange>& ex, beast::error_code ec, bool nothing_received,
              bool written) {
    release(ex->conn, false);
    if (nothing_received && (!written || replayable(ex->req.method)) && ex->attempt == 0 &&
        ec != beast::error::timeout) {
      ++ex->attempt;
      return start(ex);
    }
    if (ec == beast::error::timeout)
      return ex->done(fail(Errc::kTimeout, ex->req.method + " " + ex->req.target + ": timed out"));
    ex->done(fail(Errc::kUnavailable, "cannot reach the API server at " +
                                          eps_[ex->conn->endpoint].server + ": " + ec.message()));
  }

  static bool replayable(const std::string& method) { return method == "GET" || method == "HEAD"; }

  void start_stream(const std::shared_ptr<StreamImpl>& s) {
    if (s->cancelled) return;
    if (proto_ != Proto::kHttp1) {
      if (auto c = h2_pick()) return h2_stream(c, s);
      return h2_wait([this, s](beast::error_code ec) {
        if (ec && another_server(*s, ec)) return start_stream(s);
        if (ec) return end_stream(s, ec);
        start_stream(s);
      });
    }
    // A pooled keep-alive connection, when there is one: no new connection (and, with TLS,
    // no handshake) per watch. The server closes it when the stream ends.
    if (!idle_.empty() && !s->fresh_only) {
      s->conn_ = std::move(idle_.back());
      idle_.pop_back();
      busy_.insert(s->conn_);
      s->reused = true;
      return send_stream(s);
    }
    connect(s->conn_, [this, s](beast::error_code ec) {
      if (ec && another_server(*s, ec)) {
        release(s->conn_, false);
        s->conn_ = std::make_shared<Conn>(ioc_, tls_.get());
        return start_stream(s);
      }
      if (ec) return end_stream(s, ec);
      send_stream(s);
    });
  }

  // A stream whose connection could not be made is started at once on the next API
  // server, once per server (then it ends, and its owner retries with backoff).
  bool another_server(StreamImpl& s, beast::error_code ec) {
    return !tls_refused(ec) && !s.cancelled && ++s.connect_failures < eps_.size();
  }

  // A stream that failed on a reused connection before any answer: the connection had
  // been closed by the server; start again on a new one.
  bool retry_stream(const std::shared_ptr<StreamImpl>& s) {
    if (!s->reused || s->fresh_only || s->cancelled) return false;
    if (s->header_timer) s->header_timer->cancel();
    release(s->conn_, false);
    s->conn_ = std::make_shared<Conn>(ioc_, tls_.get());
    s->reused = false;
    s->fresh_only = true;
    using Parser = http::response_parser<http::string_body>;
    s->parser.~Parser();
    new (&s->parser) Parser();
    s->pending.clear();
    start_stream(s);
    return true;
  }

  void send_stream(const std::shared_ptr<StreamImpl>& s) {
    s->msg = {verb_of(s->req.method), s->req.target, 11};
    s->msg.set(http::field::host, authority(s->conn_->endpoint));
    s->msg.set(http::field::user_agent, opts_.user_agent);
    s->msg.set(http::field::accept, s->req.accept);
    if (!cfg_.bearer_token.empty())
      s->msg.set(http::field::authorization, "Bearer " + cfg_.bearer_token);
    s->msg.prepare_payload();
    // The headers' deadline is a timer of its own: the socket has none once the
    // stream runs (a watch lives long).
    s->conn_->tcp().expires_never();
    s->header_timer = std::make_shared<net::steady_timer>(ioc_, s->req.timeout);
    s->header_timer->async_wait([this, s](beast::error_code tec) {
      if (!tec && !s->ended) close(*s->conn_);
    });
    s->conn_->io([&](auto& stream) {
    http::async_write(stream, s->msg, [this, s, &stream](beast::error_code ec2, size_t) {
      if (ec2) {
        if (retry_stream(s)) return;
        return end_stream(s, ec2);
      }
      s->parser.body_limit(boost::none);
      // Owned by the stream itself (Beast keeps a reference): captures a plain pointer.
      s->chunk_cb = [s = s.get()](std::uint64_t, beast::string_view body, beast::error_code&) {
        s->pending.append(body.data(), body.size());
        size_t start = 0, nl;
        while ((nl = s->pending.find('\n', start)) != std::string::npos) {
          if (s->cancelled) break;
          if (nl > start) s->on_line(std::string_view(s->pending).substr(start, nl - start));
          start = nl + 1;
        }
        s->pending.erase(0, start);
        return body.size();
      };
      s->parser.on_chunk_body(s->chunk_cb);
      http::async_read_header(stream, s->conn_->buffer, s->parser,
                              [this, s, &stream](beast::error_code ec3, size_t) {
                                s->header_timer->cancel();
                                if (ec3) {
                                  if (retry_stream(s)) return;
                                  return end_stream(s, ec3);
                                }
                                unsigned status = s->parser.get().result_int();
                                if (status != 200) {
                                  // An error document, not a stream: read it whole.
                                  s->conn_->tcp().expires_after(s->req.timeout);
                                  http::async_read(stream, s->conn_->buffer, s->parser,
                                                   [this, s, status](beast::error_code ec4, size_t) {
                                                     if (!s->cancelled)
                                                       s->on_status(status, ec4 ? std::string() : s->parser.get().body());
                                                     end_stream(s, {});
                                                   });
                                  return;
                                }
                                if (!s->cancelled) s->on_status(200, {});
                                read_stream(s);
                              });
    });
    });
  }

  void read_stream(const std::shared_ptr<StreamImpl>& s) {
    if (s->cancelled) return end_stream(s, {});
    if (s->parser.is_done()) return end_stream(s, {});
    s->conn_->io([&](auto& stream) {
      http::async_read_some(stream, s->conn_->buffer, s->parser,
                            [this, s](beast::error_code ec, size_t) {
                              if (ec) return end_stream(s, ec);
                              read_stream(s);
                            });
    });
  }

  void end_stream(const std::shared_ptr<StreamImpl>& s, beast::error_code ec) {
    if (s->ended) return;
    s->ended = true;
    if (busy_.count(s->conn_)) release(s->conn_, false);
    if (s->cancelled) return;
    if (!ec || ec == http::error::end_of_stream) return s->on_end({});
    s->on_end(fail(Errc::kUnavailable, "watch stream from " + eps_[s->conn_->endpoint].server +
                                           " broke: " + ec.message()));
  }

  // ---- HTTP/2 (on the io thread) ----
  // An open HTTP/2 connection that takes another stream, if any.
  std::shared_ptr<H2Connection> h2_pick() {
    for (auto& c : h2_)
      if (c->accepting() && c->conn().endpoint == active_) return c;
    return nullptr;
  }

  // Calls `then` once a new HTTP/2 connection is ready (the server's settings arrived) or
  // the protocol is known to be HTTP/1.1 (then with no error: the caller starts again), or
  // with the error that ended the connection.
  void h2_wait(std::function<void(beast::error_code)> then) {
    h2_waiters_.push_back(std::move(then));
    if (h2_connecting_) return;
    h2_connecting_ = true;
    auto conn = std::make_shared<Conn>(ioc_, tls_.get());
    connect(conn, [this, conn](beast::error_code ec) {
      if (ec) {
        release(conn, false);
        return h2_notify(ec);
      }
      if (conn->ssl && !alpn_h2(*conn)) {
        // The server speaks HTTP/1.1 only: this connection is a pooled one now.
        proto_ = Proto::kHttp1;
        release(conn, true);
        return h2_notify({});
      }
      busy_.erase(conn);  // counted in open_ until it closes
      proto_ = Proto::kHttp2;
      auto ready = std::make_shared<bool>(false);
      h2_.push_back(H2Connection::start(
          conn,
          {conn->ssl ? "https" : "http", authority(conn->endpoint), opts_.user_agent, cfg_.bearer_token,
           eps_[conn->endpoint].server},
          ioc_,
          [this, ready] {
            *ready = true;
            h2_notify({});
          },
          [this, ready](H2Connection* gone) {
            std::erase_if(h2_, [gone](const auto& c) { return c.get() == gone; });
            --open_;
            if (*ready) return;
            // A plain-HTTP server that does not speak HTTP/2 (not KOS's): HTTP/1.1 then.
            if (gone->refused_http2()) {
              proto_ = Proto::kHttp1;
              return h2_notify({});
            }
            h2_notify(net::error::connection_reset);
          }));
    });
  }

  void h2_notify(beast::error_code ec) {
    h2_connecting_ = false;
    auto waiters = std::move(h2_waiters_);
    h2_waiters_.clear();
    for (auto& w : waiters) w(ec);
  }

  static bool alpn_h2(Conn& c) {
    const unsigned char* proto = nullptr;
    unsigned len = 0;
    SSL_get0_alpn_selected(c.ssl->native_handle(), &proto, &len);
    return std::string_view(reinterpret_cast<const char*>(proto), len) == "h2";
  }

  void h2_request(const std::shared_ptr<H2Connection>& c, const std::shared_ptr<Exchange>& ex) {
    const bool proven = c->answered() > 0;  // as a reused HTTP/1.1 connection
    c->request(ex->req, [this, c, ex, proven](Result<HttpResponse> r, H2Connection::Failure f) {
      if (r) {
        if (c->answered() == 1) remember_session(c->conn());
        return ex->done(std::move(r));
      }
      // Not processed by the server (it was going away): safe to send again.
      if (f == H2Connection::Failure::kRefused && ex->attempt < 3 &&
          std::chrono::steady_clock::now() < ex->deadline) {
        ++ex->attempt;
        return start(ex);
      }
      // A connection that had worked broke before any answer: once more on a new one
      // (the next API server if this one is gone), when the request only reads. A write
      // may have been applied before the server died: the caller decides (a create that
      // was applied would come back AlreadyExists).
      if (f == H2Connection::Failure::kNothingReceived && proven && replayable(ex->req.method) &&
          ex->attempt == 0) {
        ++ex->attempt;
        return start(ex);
      }
      ex->done(std::move(r));
    });
  }

  void h2_stream(const std::shared_ptr<H2Connection>& c, const std::shared_ptr<StreamImpl>& s) {
    s->h2 = c;
    s->h2_id = c->stream(
        s->req,
        [s](unsigned status, const std::string& body) {
          if (!s->cancelled) s->on_status(status, body);
        },
        [s](std::string_view line) {
          if (!s->cancelled) s->on_line(line);
        },
        [s](Result<void> r) {
          if (s->ended) return;
          s->ended = true;
          if (!s->cancelled) s->on_end(std::move(r));
        });
  }

 public:
  void cancel_stream(const std::shared_ptr<StreamImpl>& s) {
    if (auto c = s->h2.lock()) return c->cancel(s->h2_id);
    close(*s->conn_);
  }

 private:
  const RestConfig cfg_;
  const TransportOptions opts_;
  const std::vector<Endpoint> eps_;      // the API servers
  size_t active_ = 0;                    // the one new connections go to
  std::vector<SSL_SESSION*> sessions_;   // per API server: the TLS session new connections resume
  std::unique_ptr<net::ssl::context> tls_;  // null: plain HTTP
  net::io_context ioc_;
  net::executor_work_guard<net::io_context::executor_type> work_;
  std::thread thread_;
  std::atomic<bool> stopped_{false};
  std::atomic<size_t> open_{0};
  std::vector<ConnPtr> idle_;
  std::set<ConnPtr> busy_;
  // HTTP/2: unknown until a TLS server answers the offer, or a plain-HTTP one the preface
  // (prior knowledge; a server that answers in HTTP/1.1 is spoken to in HTTP/1.1).
  enum class Proto { kUnknown, kHttp2, kHttp1 } proto_;
  std::vector<std::shared_ptr<H2Connection>> h2_;
  bool h2_connecting_ = false;
  std::vector<std::function<void(beast::error_code)>> h2_waiters_;
};

void StreamImpl::cancel() {
  cancelled = true;
  auto t = t_.lock();
  if (!t) return;  // the transport is gone, and its connections with it
  auto* impl = static_cast<TransportImpl*>(t.get());
  // The connection is read on the transport's thread: a stream may move to another
  // connection before it starts.
  impl->post([impl, self = shared_from_this()] { impl->cancel_stream(self); });
}

}  // namespace

Result<std::shared_ptr<Transport>> Transport::create(const RestConfig& config,
                                                     const TransportOptions& options) {
  TransportOptions opts = options;
  if (kos::http::http2_disabled_by_env()) opts.http2 = false;
  if (config.host.empty() || config.port == 0)
    return fail(Errc::kBadRequest, "invalid API server address '" + config.server + "'");
  std::unique_ptr<net::ssl::context> tls;
  if (config.tls) {
    tls = std::make_unique<net::ssl::context>(net::ssl::context::tls_client);
    tls->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                     net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 |
                     net::ssl::context::no_tlsv1_1);
    beast::error_code ec;
    if (config.insecure_skip_verify) {
      tls->set_verify_mode(net::ssl::verify_none);
    } else {
      tls->set_verify_mode(net::ssl::verify_peer);
      if (config.ca_pem.empty()) tls->set_default_verify_paths(ec);
      else tls->add_certificate_authority(net::buffer(config.ca_pem), ec);
      if (ec) return fail(Errc::kBadRequest, "the certificate authority of " + config.server + ": " + ec.message());
    }
    if (!config.cert_pem.empty()) {
      tls->use_certificate_chain(net::buffer(config.cert_pem), ec);
      if (ec) return fail(Errc::kBadRequest, "client certificate: " + ec.message());
      tls->use_private_key(net::buffer(config.key_pem), net::ssl::context::pem, ec);
      if (ec) return fail(Errc::kBadRequest, "client key: " + ec.message());
    }
  } else if (!config.cert_pem.empty()) {
    return fail(Errc::kBadRequest, "a client certificate needs an https server, not " + config.server);
  }
  return std::shared_ptr<Transport>(std::make_shared<TransportImpl>(config, opts, std::move(tls)));
}

}  // namespace kos::client
