#include "cmd/metrics_listen.h"

#include "api/cidr.h"
#include "common/metrics.h"

namespace kos::cmd {

Result<ListenAddress> parse_metrics_listen(const std::string& addr) {
  auto colon = addr.rfind(':');
  auto port = colon == std::string::npos ? std::nullopt : api::parse_decimal(std::string_view(addr).substr(colon + 1), 65535);
  if (!port || colon == 0) return fail(Errc::kBadRequest, "--metrics-listen " + addr + ": expected HOST:PORT");
  return ListenAddress{addr.substr(0, colon), static_cast<uint16_t>(*port)};
}

Result<std::unique_ptr<http::Server>> serve_metrics(const ListenAddress& addr, MetricsServerOptions opts) {
  http::ServerOptions o;
  o.address = addr.host;
  o.port = addr.port;
  o.io_threads = 1;
  o.worker_threads = 2;
  return http::Server::start(o, [opts = std::move(opts)](const http::Request& req, const http::Peer&) -> http::Reply {
    if (opts.log && req.target().starts_with(agent::kImplementationsPath)) return opts.log->handle(req);
    if (req.target() == "/metrics")
      return http::Response{200, "text/plain; version=0.0.4", metrics::Registry::global().render(), {}};
    if (auto it = opts.json_pages.find(std::string(req.target())); it != opts.json_pages.end())
      return http::Response{200, "application/json", it->second(), {}};
    if (req.target() == "/healthz")
      return !opts.healthy || opts.healthy() ? http::Response{200, "text/plain", "ok\n", {}}
                                             : http::Response{503, "text/plain", "starting\n", {}};
    return http::Response{404, "text/plain", "not found\n", {}};
  });
}

}  // namespace kos::cmd
