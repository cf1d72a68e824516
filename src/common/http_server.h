// A small asynchronous HTTP/1.1 server (Boost.Beast) for the API server and for every
// component's /metrics endpoint.
//
// Threading: one io_context, run by `io_threads` threads, owns the sockets. Handlers
// may block (they call the store), so each request is handled on a separate worker pool
// and the response is posted back to the connection's strand. A handler may turn the
// response into a stream (chunked transfer encoding, for watches): it gets a Stream that
// any thread may write to; writes are queued and sent in order by the connection.
#pragma once

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

// The write side of a streamed (chunked) response. Thread-safe.
class Stream {
 public:
  virtual ~Stream() = default;
  // Queues data; false if more than the stream's limit is already queued (the data is
  // not queued then). A stream that is ending drops data and answers true: its on_close
  // tells the writer.
  virtual bool write(std::shared_ptr<const std::string> data) = 0;
  // Queues data regardless of the limit.
  virtual void write_always(std::shared_ptr<const std::string> data) = 0;
  // Sends what is queued, then ends the response and closes the connection.
  virtual void finish() = 0;
  virtual bool closed() const = 0;
};

struct StreamStart {
  unsigned status = 200;
  std::string content_type = "application/json";
  // Most bytes queued before write() refuses more.
  size_t max_queued_bytes = 16 << 20;
  // Ends the stream after this long (nullopt: never).
  std::optional<std::chrono::milliseconds> timeout;
  // Called once the headers are sent, with the stream to write to.
  std::function<void(std::shared_ptr<Stream>)> attach;
  // Called once when the stream ends (client gone, timeout, finish()).
  std::function<void()> on_close;
};

using Reply = std::variant<Response, StreamStart>;

// Called on a worker thread for every request.
using Handler = std::function<Reply(const Request&)>;

struct ServerOptions {
  std::string address = "127.0.0.1";
  uint16_t port = 0;  // 0: any free port (see Server::port())
  int io_threads = 2;
  int worker_threads = 32;
  size_t max_body_bytes = 3 * 1024 * 1024;
  std::string server_header = "kos";
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
