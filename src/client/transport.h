// HTTP transport of the KOS client library: asynchronous requests and streamed
// responses (watches) to one API server, on one event loop. HTTP/2 multiplexes them on one
// connection; HTTP/1.1 (a server that does not speak HTTP/2, or http2 off) uses a pool of
// persistent connections.
//
// Threading: the Transport owns an io_context run by one thread. Every method is
// thread-safe. Completion callbacks and stream callbacks run on that thread, in order per
// request or stream: keep them short (enqueue work elsewhere). request_sync() blocks the
// calling thread and must not be called from a callback.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "client/kubeconfig.h"
#include "common/error.h"

namespace kos::client {

struct HttpRequest {
  std::string method = "GET";  // GET, POST, PUT, PATCH, DELETE
  std::string target;          // path and query, e.g. /apis/g/v/namespaces/ns/things?limit=5
  std::string body;
  std::string content_type = "application/json";
  std::string accept = "application/json";
  std::chrono::milliseconds timeout{30000};  // for the whole exchange (not for streams)
};

struct HttpResponse {
  unsigned status = 0;
  std::string body;
  std::vector<std::string> warnings;  // Warning headers
};

// A streamed response being read. Destroying the handle does not stop it: call cancel().
class StreamHandle {
 public:
  virtual ~StreamHandle() = default;
  // Stops reading and closes the connection; on_end is not called after cancel() returns.
  virtual void cancel() = 0;
};

struct TransportOptions {
  size_t max_idle_connections = 16;
  std::chrono::milliseconds connect_timeout{5000};
  std::string user_agent = "kos-client";
  // HTTP/2: all requests and streams on one connection (more only past the server's
  // limit of streams per connection). Offered by ALPN over TLS, where a server may still
  // choose HTTP/1.1; spoken with prior knowledge over plain HTTP, falling back to HTTP/1.1
  // when the server answers the preface in it (KOS's servers speak both). Off: HTTP/1.1,
  // a connection per request in flight and per watch.
  bool http2 = true;
  // Several API servers (RestConfig::endpoints): the one to start on (an index into them),
  // e.g. the nearest; unset, one at random, so that many clients spread over all.
  std::optional<size_t> first_endpoint;
};

class Transport : public std::enable_shared_from_this<Transport> {
 public:
  static Result<std::shared_ptr<Transport>> create(const RestConfig& config,
                                                   const TransportOptions& opts = {});
  virtual ~Transport() = default;

  // Sends a request on a pooled connection. Errors: kUnavailable when the server cannot
  // be reached or the connection broke (the request may or may not have been processed
  // if it was sent), kTimeout. HTTP error statuses are responses, not errors.
  virtual void request(HttpRequest req, std::function<void(Result<HttpResponse>)> done) = 0;
  Result<HttpResponse> request_sync(HttpRequest req);

  // Sends a GET whose response body is a stream of lines (a watch). on_status gets the
  // HTTP status and, for a status other than 200, the whole body; then on_line gets
  // each line without its newline; on_end gets how it ended (success = the server closed
  // the stream normally).
  virtual std::shared_ptr<StreamHandle> stream(
      HttpRequest req, std::function<void(unsigned status, const std::string& error_body)> on_status,
      std::function<void(std::string_view line)> on_line,
      std::function<void(Result<void>)> on_end) = 0;

  // Runs fn on the transport's thread.
  virtual void post(std::function<void()> fn) = 0;
  // Runs fn on the transport's thread after `delay`; returns a cancel function.
  virtual std::function<void()> post_after(std::chrono::milliseconds delay,
                                           std::function<void()> fn) = 0;

  // Closes every connection, idle or busy (in-flight requests and streams fail with
  // kUnavailable). For tests of connection loss, and on shutdown.
  virtual void drop_connections() = 0;
  // Stops the event loop and joins its thread; pending callbacks are dropped.
  virtual void shutdown() = 0;
  virtual bool stopped() const = 0;

  // Open connections (idle + busy + streams), for leak checks.
  virtual size_t open_connections() const = 0;
};

}  // namespace kos::client
