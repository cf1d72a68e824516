// A small asynchronous HTTP/1.1 (Boost.Beast) and HTTP/2 (nghttp2) server for the API
// server and for every component's /metrics endpoint.
//
// Threading: one io_context, run by `io_threads` threads, owns the sockets. Handlers
// may block (they call the store), so each request is handled on a separate worker pool
// and the response is posted back to the connection's strand. A handler may turn the
// response into a stream (chunked transfer encoding, or an HTTP/2 stream, for watches):
// it gets a Stream that any thread may write to; writes are queued and sent in order by
// the connection.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <boost/beast/http.hpp>

#include "common/error.h"

namespace kos::http {

using Request = boost::beast::http::request<boost::beast::http::string_body>;

struct Response {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

// A cap on the bytes queued by all the streams that share it (the API server's watch
// memory: queued events and the initial state of new watches). Thread-safe.
//
// Up to half the limit anyone may queue. Beyond it, a stream may add only while it holds
// less than its fair share (half the limit over the streams sharing the budget), and no
// one goes past the limit. So a stream that keeps up (its queue is near empty) is not
// refused because another one cannot: the one refused is the one that holds the memory.
class StreamBudget {
 public:
  explicit StreamBudget(size_t limit) : limit_(limit) {}
  size_t limit() const { return limit_; }
  size_t used() const { return used_.load(); }
  // Charges `n` more bytes to a stream that holds `own` bytes; false (nothing charged) if
  // the budget refuses them.
  bool try_charge(size_t own, size_t n);
  void charge(size_t n) { used_ += n; }  // unconditionally (a stream's last words)
  void release(size_t n) { used_ -= n; }
  void add_stream() { ++streams_; }
  void remove_stream() { --streams_; }

 private:
  const size_t limit_;
  std::atomic<size_t> used_{0};
  std::atomic<size_t> streams_{0};
};

// The write side of a streamed (chunked) response. Thread-safe.
class Stream {
 public:
  virtual ~Stream() = default;
  // Queues data; false if more than the stream's limit is already queued or the shared
  // budget refuses it (the data is not queued then). A stream that is ending drops data
  // and answers true: its on_close tells the writer.
  virtual bool write(std::shared_ptr<const std::string> data) = 0;
  // Queues data beyond the stream's own limit (a watch's initial state), within the
  // shared budget: false if the budget refuses it.
  virtual bool write_initial(std::shared_ptr<const std::string> data) = 0;
  // Queues data regardless of any limit: a few last bytes before finish() (an error).
  virtual void write_final(std::shared_ptr<const std::string> data) = 0;
  // Sends what is queued, then ends the response and closes the connection.
  virtual void finish() = 0;
  virtual bool closed() const = 0;
};

struct StreamStart {
  unsigned status = 200;
  std::string content_type = "application/json";
  // Most bytes queued before write() refuses more.
  size_t max_queued_bytes = 16 << 20;
  // Shared with other streams (null: no shared cap). Charged for what is queued and being
  // written, released as it is sent or when the stream ends.
  std::shared_ptr<StreamBudget> budget;
  // Ends the stream after this long (nullopt: never).
  std::optional<std::chrono::milliseconds> timeout;
  // Called once the headers are sent, with the stream to write to.
  std::function<void(std::shared_ptr<Stream>)> attach;
  // Called once when the stream ends (client gone, timeout, finish()).
  std::function<void()> on_close;
};

using Reply = std::variant<Response, StreamStart>;

// Who sent a request: the connection's peer, and on TLS connections the client
// certificate it presented (verified against the client CA; absent if it sent none).
struct Peer {
  std::string address;  // remote IP
  bool tls = false;
  bool has_cert = false;
  std::string cert_common_name;                 // CN
  std::vector<std::string> cert_organizations;  // O
};

// Called on a worker thread for every request.
using Handler = std::function<Reply(const Request&, const Peer&)>;

// TLS for a listener. Client certificates are asked for and verified against
// client_ca_pem when it is set, but not required (the handler decides who may do what).
struct TlsOptions {
  std::string cert_pem;       // the serving certificate (chain)
  std::string key_pem;
  std::string client_ca_pem;  // empty: client certificates are not asked for
};

struct ServerOptions {
  std::string address = "127.0.0.1";
  uint16_t port = 0;  // 0: any free port (see Server::port())
  int io_threads = 2;
  int worker_threads = 32;
  size_t max_body_bytes = 3 * 1024 * 1024;
  std::string server_header = "kos";
  std::optional<TlsOptions> tls;  // unset: plain HTTP
  // Slow and idle clients: a connection that sends nothing for idle_timeout (after it was
  // accepted or after its last response) is closed, and so is one that does not complete a
  // request (headers and body) within request_read_timeout of its first byte (slowloris).
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(2)};
  std::chrono::milliseconds request_read_timeout{std::chrono::seconds(30)};
  size_t max_header_bytes = 64 * 1024;
  // HTTP/2: offered to TLS clients (ALPN "h2") and spoken to plain-HTTP clients that open
  // with its preface (prior knowledge). Many requests and watches then share a connection.
  bool http2 = true;
  uint32_t http2_max_streams = 1000;  // concurrent streams per connection
};

class Server {
 public:
  static Result<std::unique_ptr<Server>> start(const ServerOptions& opts, Handler handler);
  ~Server();  // stops accepting, closes connections, joins threads
  uint16_t port() const;
  void stop();

  struct Impl;

 private:
  explicit Server(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace kos::http
