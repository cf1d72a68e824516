// HTTP/2 connections of the HTTP server (nghttp2 does the framing, HPACK and flow
// control; this file moves bytes and maps streams to the server's handlers).
//
// Everything of a connection runs on its strand, nghttp2's session included (it is not
// thread-safe). Handlers run on the worker pool as for HTTP/1.1; a streamed response's
// writers fill its StreamQueue from any thread, and a wake-up on the strand resumes the
// stream's data.
#include <map>

#include <nghttp2/nghttp2.h>
#include <spdlog/spdlog.h>

#include "common/http2.h"
#include "common/http_server_impl.h"

namespace kos::http::detail {
namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;

namespace {

// Headers HTTP/2 forbids (RFC 9113 8.2.2): the connection's business, not a stream's.
bool connection_specific(std::string_view name) {
  return beast::iequals(name, "connection") || beast::iequals(name, "transfer-encoding") ||
         beast::iequals(name, "keep-alive") || beast::iequals(name, "upgrade") ||
         beast::iequals(name, "proxy-connection");
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

template <class S>
class H2Session : public std::enable_shared_from_this<H2Session<S>> {
 public:
  H2Session(S stream, Server::Impl& server, Peer peer)
      : stream_(std::move(stream)), server_(server), peer_(std::move(peer)), idle_(stream_.get_executor()) {}
  ~H2Session() {
    if (session_) nghttp2_session_del(session_);
  }

  void start(std::string initial) {
    nghttp2_session_callbacks* cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_server_new(&session_, cbs, this);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, server_.opts.http2_max_streams},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(server_.opts.max_header_bytes)},
    };
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, std::size(settings));
    arm_idle();
    if (!initial.empty() && !receive(reinterpret_cast<const uint8_t*>(initial.data()), initial.size()))
      return;
    flush();
    read();
  }

 private:
  // One request and its response.
  struct H2Stream {
    int32_t id = 0;
    Request req;
    size_t header_bytes = 0;
    bool too_large_headers = false, too_large_body = false, dispatched = false, closed = false;
    std::string body;  // a plain response's
    size_t body_offset = 0;
    std::shared_ptr<StreamQueue> queue;  // a streamed response's
    std::function<void()> on_close;
    std::optional<net::steady_timer> timer;  // the request's deadline, then a stream's timeout
  };

  static H2Session& self(void* user_data) { return *static_cast<H2Session*>(user_data); }
  H2Stream* find(int32_t id) {
    auto it = streams_.find(id);
    return it == streams_.end() ? nullptr : it->second.get();
  }

  // ---- nghttp2 callbacks (on the strand, inside receive() or flush()) ----
  static int on_begin_headers(nghttp2_session*, const nghttp2_frame* frame, void* ud) {
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    auto st = std::make_shared<H2Stream>();
    st->id = frame->hd.stream_id;
    st->req.version(20);
    auto& s = self(ud);
    // A request not complete (headers and body) within request_read_timeout is reset:
    // a slow client holds a stream no longer than it would an HTTP/1.1 connection.
    st->timer.emplace(s.stream_.get_executor());
    st->timer->expires_after(s.server_.opts.request_read_timeout);
    st->timer->async_wait([w = s.weak_from_this(), id = st->id](beast::error_code ec) {
      auto self = w.lock();
      if (ec || !self || self->closed_) return;
      H2Stream* late = self->find(id);
      if (!late || late->dispatched) return;
      nghttp2_submit_rst_stream(self->session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
      self->flush();
    });
    s.streams_[st->id] = std::move(st);
    s.idle_.cancel();
    return 0;
  }

  static int on_header(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
                       const uint8_t* value, size_t valuelen, uint8_t, void* ud) {
    auto& s = self(ud);
    H2Stream* st = s.find(frame->hd.stream_id);
    if (!st || st->too_large_headers) return 0;
    std::string_view n(reinterpret_cast<const char*>(name), namelen);
    std::string_view v(reinterpret_cast<const char*>(value), valuelen);
    st->header_bytes += namelen + valuelen + 32;  // as SETTINGS_MAX_HEADER_LIST_SIZE counts
    if (st->header_bytes > s.server_.opts.max_header_bytes) {
      st->too_large_headers = true;
      return 0;
    }
    if (n == ":method")
      st->req.method_string(v);
    else if (n == ":path")
      st->req.target(v);
    else if (n == ":authority")
      st->req.set(beast::http::field::host, v);
    else if (!n.starts_with(':'))
      st->req.insert(n, v);
    return 0;
  }

  static int on_data(nghttp2_session*, uint8_t, int32_t id, const uint8_t* data, size_t len, void* ud) {
    auto& s = self(ud);
    H2Stream* st = s.find(id);
    if (!st || st->too_large_body) return 0;
    if (st->req.body().size() + len > s.server_.opts.max_body_bytes) {
      st->too_large_body = true;
      st->req.body().clear();
      return 0;
    }
    st->req.body().append(reinterpret_cast<const char*>(data), len);
    return 0;
  }

  static int on_frame(nghttp2_session*, const nghttp2_frame* frame, void* ud) {
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
      auto& s = self(ud);
      auto it = s.streams_.find(frame->hd.stream_id);
      if (it != s.streams_.end() && !it->second->dispatched) s.dispatch(it->second);
    }
    return 0;
  }

  static int on_stream_close(nghttp2_session*, int32_t id, uint32_t, void* ud) {
    auto& s = self(ud);
    auto it = s.streams_.find(id);
    if (it == s.streams_.end()) return 0;
    auto st = std::move(it->second);
    s.streams_.erase(it);
    s.end(*st);
    if (s.streams_.empty()) s.arm_idle();
    return 0;
  }

  // A plain response's body, then its end.
  static ssize_t read_body(nghttp2_session*, int32_t, uint8_t* buf, size_t len, uint32_t* flags,
                           nghttp2_data_source* src, void*) {
    auto* st = static_cast<H2Stream*>(src->ptr);
    return http2_read_body(st->body, st->body_offset, buf, len, flags);
  }

  // A streamed response: what its writers queued; deferred (resumed by the queue's
  // wake-up) when nothing is.
  static ssize_t read_queue(nghttp2_session*, int32_t, uint8_t* buf, size_t len, uint32_t* flags,
                            nghttp2_data_source* src, void*) {
    auto* st = static_cast<H2Stream*>(src->ptr);
    size_t n = 0;
    switch (st->queue->read(buf, len, n)) {
      case StreamQueue::Take::kData:
        return static_cast<ssize_t>(n);
      case StreamQueue::Take::kWait:
        return NGHTTP2_ERR_DEFERRED;
      case StreamQueue::Take::kEnd:
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    return 0;
  }

  // ---- requests and responses ----
  void dispatch(const std::shared_ptr<H2Stream>& st) {
    st->dispatched = true;
    st->timer->cancel();
    if (st->too_large_headers) return respond(*st, headers_too_large(server_.opts.max_header_bytes));
    if (st->too_large_body) return respond(*st, body_too_large(server_.opts.max_body_bytes));
    st->req.content_length(st->req.body().size());
    net::post(server_.workers, [self = this->shared_from_this(), st] {
      Reply reply = self->server_.call(st->req, self->peer_);
      net::post(self->stream_.get_executor(), [self, st, reply = std::move(reply)]() mutable {
        if (auto* r = std::get_if<Response>(&reply))
          self->respond(*st, std::move(*r));
        else
          self->start_stream(st, std::move(std::get<StreamStart>(reply)));
        self->flush();
      });
    });
  }

  // The response's header block; `extra` names and values are kept alive by the caller.
  std::vector<nghttp2_nv> headers(unsigned status, const std::string& content_type,
                                  std::vector<std::pair<std::string, std::string>>& extra) {
    extra.emplace_back(":status", std::to_string(status));
    extra.emplace_back("server", server_.opts.server_header);
    extra.emplace_back("content-type", content_type);
    std::vector<nghttp2_nv> out;
    for (auto& [k, v] : extra) out.push_back(http2_header(k, v));
    // :status first: pseudo-headers precede the others.
    std::rotate(out.begin(), out.end() - 3, out.end());
    return out;
  }

  void respond(H2Stream& st, Response r) {
    if (st.closed) return;
    std::vector<std::pair<std::string, std::string>> extra;
    for (auto& [k, v] : r.headers)
      if (!connection_specific(k)) extra.emplace_back(lower(k), v);
    extra.emplace_back("content-length", std::to_string(r.body.size()));
    auto nva = headers(r.status, r.content_type, extra);
    st.body = std::move(r.body);
    nghttp2_data_provider prd{};
    prd.source.ptr = &st;
    prd.read_callback = read_body;
    nghttp2_submit_response(session_, st.id, nva.data(), nva.size(), &prd);
  }

  void start_stream(const std::shared_ptr<H2Stream>& st, StreamStart s) {
    if (st->closed) {
      if (s.on_close) s.on_close();
      return;
    }
    st->on_close = std::move(s.on_close);
    st->queue = std::make_shared<StreamQueue>(
        s.max_queued_bytes, std::move(s.budget), [w = this->weak_from_this(), id = st->id] {
          if (auto self = w.lock()) net::post(self->stream_.get_executor(), [self, id] { self->resume(id); });
        });
    std::vector<std::pair<std::string, std::string>> extra{{"cache-control", "no-cache, private"}};
    auto nva = headers(s.status, s.content_type, extra);
    nghttp2_data_provider prd{};
    prd.source.ptr = st.get();
    prd.read_callback = read_queue;
    nghttp2_submit_response(session_, st->id, nva.data(), nva.size(), &prd);
    if (s.timeout) {
      st->timer.emplace(stream_.get_executor());
      st->timer->expires_after(*s.timeout);
      st->timer->async_wait([q = st->queue](beast::error_code ec) {
        if (!ec) q->finish();
      });
    }
    // Attaching can be heavy (a watch's initial state): a worker does it.
    net::post(server_.workers, [self = this->shared_from_this(), q = st->queue, attach = std::move(s.attach)] {
      attach(std::make_shared<QueueHandle>(q, self));
    });
  }

  void resume(int32_t id) {
    if (closed_ || !find(id)) return;
    nghttp2_session_resume_data(session_, id);
    flush();
  }

  // A stream is gone (finished, reset by the client, or the connection closed).
  void end(H2Stream& st) {
    st.closed = true;
    if (st.timer) st.timer->cancel();
    if (st.queue && st.queue->close() && st.on_close) std::exchange(st.on_close, nullptr)();
  }

  // ---- the connection ----
  // A connection without streams for idle_timeout is closed.
  void arm_idle() {
    idle_.expires_after(server_.opts.idle_timeout);
    idle_.async_wait([w = this->weak_from_this()](beast::error_code ec) {
      auto self = w.lock();
      if (ec || !self || !self->streams_.empty()) return;
      nghttp2_session_terminate_session(self->session_, NGHTTP2_NO_ERROR);
      self->flush();
    });
  }

  void read() {
    stream_.async_read_some(net::buffer(rbuf_), [self = this->shared_from_this()](beast::error_code ec, size_t n) {
      if (ec) return self->close();
      if (!self->receive(self->rbuf_.data(), n)) return;
      self->flush();
      if (!self->closed_) self->read();
    });
  }

  bool receive(const uint8_t* data, size_t n) {
    ssize_t rv = nghttp2_session_mem_recv(session_, data, n);
    if (rv < 0) {
      spdlog::debug("http2: from {}: {}", peer_.address, nghttp2_strerror(static_cast<int>(rv)));
      close();
      return false;
    }
    return true;
  }

  // Writes what nghttp2 has to send (frames of all streams gathered in one write).
  void flush() {
    if (writing_ || closed_) return;
    if (!http2_take_output(session_, wbuf_)) return close();
    if (wbuf_.empty()) {
      if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_)) close();
      return;
    }
    writing_ = true;
    net::async_write(stream_, net::buffer(wbuf_), [self = this->shared_from_this()](beast::error_code ec, size_t) {
      self->writing_ = false;
      if (ec) return self->close();
      self->flush();
    });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    idle_.cancel();
    beast::error_code ec;
    auto& tcp = beast::get_lowest_layer(stream_);
    tcp.socket().shutdown(tcp::socket::shutdown_both, ec);
    tcp.socket().close(ec);
    auto streams = std::move(streams_);
    streams_.clear();
    for (auto& [id, st] : streams) end(*st);
  }

  S stream_;
  Server::Impl& server_;
  Peer peer_;
  nghttp2_session* session_ = nullptr;
  net::steady_timer idle_;
  std::map<int32_t, std::shared_ptr<H2Stream>> streams_;
  std::array<uint8_t, 16 << 10> rbuf_{};
  std::string wbuf_;
  bool writing_ = false, closed_ = false;
};

}  // namespace

template <class S>
void serve_http2(S stream, Server::Impl& server, Peer peer, std::string_view initial) {
  auto session = std::make_shared<H2Session<S>>(std::move(stream), server, std::move(peer));
  session->start(std::string(initial));
}

template void serve_http2<PlainStream>(PlainStream, Server::Impl&, Peer, std::string_view);
template void serve_http2<TlsStream>(TlsStream, Server::Impl&, Peer, std::string_view);

}  // namespace kos::http::detail
