// An HTTP/2 connection of the transport (internal): many requests and streams (watches)
// at once on one connection, nghttp2 doing the framing. Used from the transport's thread
// only.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include <nghttp2/nghttp2.h>

#include "client/connection.h"
#include "client/transport.h"
#include "common/error.h"

namespace kos::client::detail {

class H2Connection : public std::enable_shared_from_this<H2Connection> {
 public:
  // Headers sent with every request besides the method's own.
  struct Options {
    std::string scheme;     // http or https
    std::string authority;  // host:port
    std::string user_agent;
    std::string bearer_token;  // empty: none
    std::string server;        // for error messages
  };
  // How a failed exchange failed, for the transport's retry decision.
  enum class Failure {
    kNone,
    kRefused,          // the server did not process it (GOAWAY, REFUSED_STREAM): safe to retry
    kNothingReceived,  // the connection broke before any of the response arrived
    kOther,
  };
  using Done = std::function<void(Result<HttpResponse>, Failure)>;

  // `conn` is connected (and TLS negotiated "h2"). on_ready is called once the server's
  // settings (its limit of streams) have arrived; on_closed once the connection has ended
  // (its calls have all been answered by then), also if it ends before it was ready.
  static std::shared_ptr<H2Connection> start(ConnPtr conn, Options opts,
                                             boost::asio::io_context& ioc, std::function<void()> on_ready,
                                             std::function<void(H2Connection*)> on_closed);
  ~H2Connection();

  // Takes new requests: open, not going away, below the server's limit of streams.
  bool accepting() const;
  // Exchanges it answered: a connection that has worked before (retry decisions).
  uint64_t answered() const { return answered_; }
  Conn& conn() { return *conn_; }
  // The server answered the connection's preface with something else than HTTP/2 (a
  // plain-HTTP server that speaks HTTP/1.1 only).
  bool refused_http2() const { return refused_http2_; }

  void request(const HttpRequest& req, Done done);
  // A streamed response (see Transport::stream). Returns its id, for cancel().
  int32_t stream(const HttpRequest& req, std::function<void(unsigned, const std::string&)> on_status,
                 std::function<void(std::string_view)> on_line, std::function<void(Result<void>)> on_end);
  // Resets the stream; none of its callbacks runs after this.
  void cancel(int32_t id);
  // Closes the connection: every call in flight fails.
  void close();

 private:
  struct Call;
  H2Connection(ConnPtr conn, Options opts, boost::asio::io_context& ioc, std::function<void()> on_ready,
               std::function<void(H2Connection*)> on_closed);
  int32_t submit(const HttpRequest& req, std::shared_ptr<Call> call);
  void finish(Call& call, uint32_t error_code);
  void read();
  bool receive(const uint8_t* data, size_t n);
  void flush();

  static int on_header(nghttp2_session*, const nghttp2_frame*, const uint8_t*, size_t, const uint8_t*,
                       size_t, uint8_t, void*);
  static int on_frame(nghttp2_session*, const nghttp2_frame*, void*);
  static int on_data(nghttp2_session*, uint8_t, int32_t, const uint8_t*, size_t, void*);
  static int on_stream_close(nghttp2_session*, int32_t, uint32_t, void*);

  ConnPtr conn_;
  Options opts_;
  boost::asio::io_context& ioc_;
  std::function<void()> on_ready_;
  std::function<void(H2Connection*)> on_closed_;
  nghttp2_session* session_ = nullptr;
  std::map<int32_t, std::shared_ptr<Call>> calls_;
  std::array<uint8_t, 16 << 10> rbuf_{};
  std::string wbuf_;
  uint64_t answered_ = 0;
  bool writing_ = false, closed_ = false, going_away_ = false, refused_http2_ = false;
};

}  // namespace kos::client::detail
