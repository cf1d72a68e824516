// Internals of the HTTP server shared by its HTTP/1.1 (http_server.cc) and HTTP/2
// (http2_server.cc) connections. Not part of the server's interface.
#pragma once

#include <deque>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>

#include "common/http_server.h"

namespace kos::http {

struct Server::Impl {
  ServerOptions opts;
  Handler handler;
  std::optional<boost::asio::ssl::context> tls;
  boost::asio::io_context ioc;
  boost::asio::thread_pool workers;
  boost::asio::ip::tcp::acceptor acceptor{ioc};
  std::vector<std::thread> threads;
  uint16_t port = 0;
  std::atomic<bool> stopped{false};

  explicit Impl(const ServerOptions& o) : opts(o), workers(static_cast<size_t>(o.worker_threads)) {}
  void accept();
  // Runs the handler; an exception becomes a 500.
  Reply call(const Request& req, const Peer& peer);
};

namespace detail {

using PlainStream = boost::beast::tcp_stream;
using TlsStream = boost::beast::ssl_stream<boost::beast::tcp_stream>;

const char* reason(unsigned status);
// The Status documents of a request too large to read.
Response body_too_large(size_t limit);
Response headers_too_large(size_t limit);

// The data queued for one streamed response: writers (any thread) add to it, the
// connection (on its strand) takes from it. Enforces the stream's own limit and the
// shared budget (see StreamBudget).
class StreamQueue {
 public:
  enum class Limit { kStream, kBudget, kNone };
  // `wake` is called (under the queue's lock: it must only post) when data or the end
  // arrives while the connection waits for it.
  StreamQueue(size_t max_queued, std::shared_ptr<StreamBudget> budget, std::function<void()> wake);

  // ---- any thread ----
  bool enqueue(std::shared_ptr<const std::string> data, Limit limit);
  void finish();
  bool closed() const;

  // ---- the connection ----
  enum class Take { kData, kWait, kEnd };
  // HTTP/1.1: moves up to max_items queued pieces (max_bytes in all) to `out`, which the
  // connection holds until the write completes (the budget is charged until the next take
  // or close). kWait: nothing queued (`wake` is called when there is); kEnd: finished.
  Take take(size_t max_items, size_t max_bytes, std::vector<std::shared_ptr<const std::string>>& out,
            size_t& bytes);
  // HTTP/2: copies up to `len` queued bytes to buf (released from the budget at once:
  // they are the protocol library's now).
  Take read(uint8_t* buf, size_t len, size_t& n);
  // Drops what is queued; true the first time.
  bool close();

 private:
  Take empty_locked();

  mutable std::mutex mu_;
  std::deque<std::shared_ptr<const std::string>> queue_;
  size_t front_offset_ = 0;  // bytes of queue_.front() already read
  size_t queued_bytes_ = 0, inflight_bytes_ = 0;
  const size_t max_queued_;
  std::shared_ptr<StreamBudget> budget_;
  std::function<void()> wake_;
  bool waiting_ = false, finishing_ = false, closed_ = false;
};

// The Stream a handler writes to. Keeps the connection (`owner`) alive.
class QueueHandle : public Stream {
 public:
  QueueHandle(std::shared_ptr<StreamQueue> q, std::shared_ptr<void> owner)
      : q_(std::move(q)), owner_(std::move(owner)) {}
  bool write(std::shared_ptr<const std::string> data) override {
    return q_->enqueue(std::move(data), StreamQueue::Limit::kStream);
  }
  bool write_initial(std::shared_ptr<const std::string> data) override {
    return q_->enqueue(std::move(data), StreamQueue::Limit::kBudget);
  }
  void write_final(std::shared_ptr<const std::string> data) override {
    q_->enqueue(std::move(data), StreamQueue::Limit::kNone);
  }
  void finish() override { q_->finish(); }
  bool closed() const override { return q_->closed(); }

 private:
  std::shared_ptr<StreamQueue> q_;
  std::shared_ptr<void> owner_;
};

// Serves HTTP/2 on a connection whose first bytes (`initial`, possibly empty) were already
// read: after TLS negotiated "h2", or a plain connection that began with the preface.
template <class S>
void serve_http2(S stream, Server::Impl& server, Peer peer, std::string_view initial);

extern template void serve_http2<PlainStream>(PlainStream, Server::Impl&, Peer, std::string_view);
extern template void serve_http2<TlsStream>(TlsStream, Server::Impl&, Peer, std::string_view);

// The HTTP/2 connection preface a client with prior knowledge starts with.
inline constexpr std::string_view kHttp2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

}  // namespace detail
}  // namespace kos::http
