#include "client/http2_connection.h"

#include <nghttp2/nghttp2.h>

#include "common/http2.h"

namespace kos::client::detail {
namespace net = boost::asio;
namespace beast = boost::beast;

struct H2Connection::Call {
  int32_t id = 0;
  bool is_stream = false;
  std::string method, target;
  std::string body;  // the request's
  size_t body_offset = 0;
  std::unique_ptr<net::steady_timer> timer;  // the exchange's deadline, or the stream's headers'
  bool received = false, timed_out = false, cancelled = false, headers_done = false;
  HttpResponse res;
  // An exchange:
  Done done;
  // A stream:
  std::function<void(unsigned, const std::string&)> on_status;
  std::function<void(std::string_view)> on_line;
  std::function<void(Result<void>)> on_end;
  std::string pending;  // a line not yet ended
};

std::shared_ptr<H2Connection> H2Connection::start(ConnPtr conn, Options opts, net::io_context& ioc,
                                                  std::function<void()> on_ready,
                                                  std::function<void(H2Connection*)> on_closed) {
  std::shared_ptr<H2Connection> c(
      new H2Connection(std::move(conn), std::move(opts), ioc, std::move(on_ready), std::move(on_closed)));
  nghttp2_session_callbacks* cbs;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  nghttp2_session_client_new(&c->session_, cbs, c.get());
  nghttp2_session_callbacks_del(cbs);
  // Watches receive much: windows large enough that the server need not wait for
  // WINDOW_UPDATEs (nghttp2 sends them as the data is consumed).
  nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                       {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
  nghttp2_submit_settings(c->session_, NGHTTP2_FLAG_NONE, settings, std::size(settings));
  nghttp2_session_set_local_window_size(c->session_, NGHTTP2_FLAG_NONE, 0, 16 << 20);
  c->conn_->tcp().expires_never();
  c->flush();
  c->read();
  return c;
}

H2Connection::H2Connection(ConnPtr conn, Options opts, net::io_context& ioc, std::function<void()> on_ready,
                           std::function<void(H2Connection*)> on_closed)
    : conn_(std::move(conn)),
      opts_(std::move(opts)),
      ioc_(ioc),
      on_ready_(std::move(on_ready)),
      on_closed_(std::move(on_closed)) {}

H2Connection::~H2Connection() {
  if (session_) nghttp2_session_del(session_);
}

bool H2Connection::accepting() const {
  if (closed_ || going_away_ || on_ready_) return false;
  return calls_.size() < nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

void H2Connection::request(const HttpRequest& req, Done done) {
  auto call = std::make_shared<Call>();
  call->done = std::move(done);
  call->timer = std::make_unique<net::steady_timer>(ioc_, req.timeout);
  if (submit(req, call) <= 0) return;
  call->timer->async_wait([self = shared_from_this(), id = call->id](beast::error_code ec) {
    auto it = self->calls_.find(id);
    if (ec || it == self->calls_.end()) return;
    it->second->timed_out = true;
    nghttp2_submit_rst_stream(self->session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    self->flush();
  });
}

int32_t H2Connection::stream(const HttpRequest& req, std::function<void(unsigned, const std::string&)> on_status,
                             std::function<void(std::string_view)> on_line,
                             std::function<void(Result<void>)> on_end) {
  auto call = std::make_shared<Call>();
  call->is_stream = true;
  call->on_status = std::move(on_status);
  call->on_line = std::move(on_line);
  call->on_end = std::move(on_end);
  // Bounds the response headers; the stream itself has no deadline.
  call->timer = std::make_unique<net::steady_timer>(ioc_, req.timeout);
  int32_t id = submit(req, call);
  if (id <= 0) return id;
  call->timer->async_wait([self = shared_from_this(), id](beast::error_code ec) {
    auto it = self->calls_.find(id);
    if (ec || it == self->calls_.end() || it->second->headers_done) return;
    it->second->timed_out = true;
    nghttp2_submit_rst_stream(self->session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    self->flush();
  });
  return id;
}

int32_t H2Connection::submit(const HttpRequest& req, std::shared_ptr<Call> call) {
  call->method = req.method;
  call->target = req.target;
  std::vector<std::pair<std::string, std::string>> h{{":method", req.method},
                                                     {":scheme", opts_.scheme},
                                                     {":authority", opts_.authority},
                                                     {":path", req.target},
                                                     {"user-agent", opts_.user_agent},
                                                     {"accept", req.accept}};
  if (!opts_.bearer_token.empty()) h.emplace_back("authorization", "Bearer " + opts_.bearer_token);
  const bool has_body = !req.body.empty() || req.method == "POST" || req.method == "PUT" || req.method == "PATCH";
  if (has_body) {
    h.emplace_back("content-type", req.content_type);
    h.emplace_back("content-length", std::to_string(req.body.size()));
    call->body = req.body;
  }
  std::vector<nghttp2_nv> nva;
  for (auto& [k, v] : h) nva.push_back(http::http2_header(k, v));
  nghttp2_data_provider prd{};
  prd.source.ptr = call.get();
  prd.read_callback = [](nghttp2_session*, int32_t, uint8_t* buf, size_t len, uint32_t* flags,
                         nghttp2_data_source* src, void*) -> ssize_t {
    auto* c = static_cast<Call*>(src->ptr);
    return http::http2_read_body(c->body, c->body_offset, buf, len, flags);
  };
  int32_t id = nghttp2_submit_request(session_, nullptr, nva.data(), nva.size(), has_body ? &prd : nullptr, nullptr);
  if (id < 0) {
    // No stream ids left (or a broken session): this connection takes no more; the
    // request was not sent.
    going_away_ = true;
    auto why = std::string("cannot send to the API server at ") + opts_.server + ": " + nghttp2_strerror(id);
    net::post(ioc_, [call, why] {
      if (call->is_stream) call->on_end(fail(Errc::kUnavailable, why));
      else call->done(fail(Errc::kUnavailable, why), Failure::kRefused);
    });
    return id;
  }
  call->id = id;
  calls_[id] = std::move(call);
  flush();
  return id;
}

void H2Connection::cancel(int32_t id) {
  auto it = calls_.find(id);
  if (it == calls_.end()) return;
  it->second->cancelled = true;
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
  flush();
}

// ---- nghttp2 callbacks (inside receive() or flush()) ----

int H2Connection::on_header(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
                            const uint8_t* value, size_t valuelen, uint8_t, void* ud) {
  auto& self = *static_cast<H2Connection*>(ud);
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  auto it = self.calls_.find(frame->hd.stream_id);
  if (it == self.calls_.end()) return 0;
  Call& call = *it->second;
  call.received = true;
  std::string_view n(reinterpret_cast<const char*>(name), namelen);
  std::string_view v(reinterpret_cast<const char*>(value), valuelen);
  if (n == ":status") {
    unsigned status = 0;
    for (char c : v) status = status * 10 + static_cast<unsigned>(c - '0');
    call.res.status = status;
  } else if (n == "warning") {
    call.res.warnings.emplace_back(v);
  }
  return 0;
}

int H2Connection::on_frame(nghttp2_session*, const nghttp2_frame* frame, void* ud) {
  auto& self = *static_cast<H2Connection*>(ud);
  if (frame->hd.type == NGHTTP2_GOAWAY) {
    self.going_away_ = true;  // the streams it did not take are closed as refused
    return 0;
  }
  if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK) && self.on_ready_) {
    // Posted: the transport submits its waiting calls, which must not happen inside
    // nghttp2's receive.
    net::post(self.ioc_, [ready = std::exchange(self.on_ready_, nullptr)] { ready(); });
    return 0;
  }
  if (frame->hd.type != NGHTTP2_HEADERS || !(frame->hd.flags & NGHTTP2_FLAG_END_HEADERS)) return 0;
  auto it = self.calls_.find(frame->hd.stream_id);
  if (it == self.calls_.end()) return 0;
  Call& call = *it->second;
  if (!call.is_stream || call.headers_done || call.res.status < 200) return 0;
  call.headers_done = true;
  call.timer->cancel();
  if (call.res.status == 200 && !call.cancelled) call.on_status(200, {});
  return 0;
}

int H2Connection::on_data(nghttp2_session*, uint8_t, int32_t id, const uint8_t* data, size_t len, void* ud) {
  auto& self = *static_cast<H2Connection*>(ud);
  auto it = self.calls_.find(id);
  if (it == self.calls_.end()) return 0;
  Call& call = *it->second;
  call.received = true;
  std::string_view chunk(reinterpret_cast<const char*>(data), len);
  if (!call.is_stream || call.res.status != 200) {
    call.res.body.append(chunk);  // an exchange's body, or a stream's error document
    return 0;
  }
  if (call.cancelled) return 0;
  // Lines, each handed over without its newline.
  size_t start = 0, nl;
  if (!call.pending.empty()) {
    nl = chunk.find('\n');
    if (nl == std::string_view::npos) {
      call.pending.append(chunk);
      return 0;
    }
    call.pending.append(chunk.substr(0, nl));
    call.on_line(call.pending);
    call.pending.clear();
    start = nl + 1;
  }
  while (!call.cancelled && (nl = chunk.find('\n', start)) != std::string_view::npos) {
    if (nl > start) call.on_line(chunk.substr(start, nl - start));
    start = nl + 1;
  }
  if (!call.cancelled) call.pending.assign(chunk.substr(start));
  return 0;
}

int H2Connection::on_stream_close(nghttp2_session*, int32_t id, uint32_t error_code, void* ud) {
  auto& self = *static_cast<H2Connection*>(ud);
  auto it = self.calls_.find(id);
  if (it == self.calls_.end()) return 0;
  auto call = std::move(it->second);
  self.calls_.erase(it);
  self.finish(*call, error_code);
  return 0;
}

// A call ended: error_code is HTTP/2's (0: the response is complete), or ~0u when the
// connection broke.
void H2Connection::finish(Call& call, uint32_t error_code) {
  call.timer->cancel();
  const bool complete = error_code == NGHTTP2_NO_ERROR && call.res.status != 0;
  std::string why = error_code == ~0u ? "the connection closed"
                                      : std::string("stream reset: ") + nghttp2_http2_strerror(error_code);
  if (!call.is_stream) {
    if (complete) {
      ++answered_;
      return call.done(std::move(call.res), Failure::kNone);
    }
    if (call.timed_out)
      return call.done(fail(Errc::kTimeout, call.method + " " + call.target + ": timed out"), Failure::kOther);
    Failure f = error_code == NGHTTP2_REFUSED_STREAM ? Failure::kRefused
                : call.received                      ? Failure::kOther
                                                     : Failure::kNothingReceived;
    return call.done(fail(Errc::kUnavailable, "cannot reach the API server at " + opts_.server + ": " + why), f);
  }
  if (call.cancelled) return;
  if (complete && call.res.status != 200) {
    call.on_status(call.res.status, call.res.body);
    return call.on_end({});
  }
  if (complete) return call.on_end({});
  if (call.timed_out)
    return call.on_end(fail(Errc::kTimeout, call.method + " " + call.target + ": no response headers in time"));
  call.on_end(fail(Errc::kUnavailable, "watch stream from " + opts_.server + " broke: " + why));
}

// ---- the connection ----

void H2Connection::read() {
  conn_->io([&](auto& s) {
    s.async_read_some(net::buffer(rbuf_), [self = shared_from_this()](beast::error_code ec, size_t n) {
      if (self->closed_) return;
      if (ec) return self->close();
      if (!self->receive(self->rbuf_.data(), n)) return;
      self->flush();
      if (!self->closed_) self->read();
    });
  });
}

bool H2Connection::receive(const uint8_t* data, size_t n) {
  // An HTTP/1.1 server answers the preface with a status line (400, 505): it cannot be
  // the frame the server's settings come in.
  if (on_ready_ && std::string_view(reinterpret_cast<const char*>(data), n).starts_with("HTTP/")) {
    refused_http2_ = true;
    close();
    return false;
  }
  if (nghttp2_session_mem_recv(session_, data, n) < 0) {
    close();
    return false;
  }
  return true;
}

void H2Connection::flush() {
  if (writing_ || closed_) return;
  if (!http::http2_take_output(session_, wbuf_)) return close();
  if (wbuf_.empty()) {
    if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_)) close();
    return;
  }
  writing_ = true;
  conn_->io([&](auto& s) {
    net::async_write(s, net::buffer(wbuf_), [self = shared_from_this()](beast::error_code ec, size_t) {
      self->writing_ = false;
      if (ec) return self->close();
      self->flush();
    });
  });
}

void H2Connection::close() {
  if (closed_) return;
  closed_ = true;
  auto self = shared_from_this();  // on_closed_ lets go of it
  conn_->close();
  auto calls = std::move(calls_);
  calls_.clear();
  for (auto& [id, call] : calls) finish(*call, ~0u);
  on_ready_ = nullptr;
  if (on_closed_) std::exchange(on_closed_, nullptr)(this);
}

}  // namespace kos::client::detail
