// --metrics-listen HOST:PORT, shared by the commands that serve metrics beside their work
// (controller-manager, agent, simulate): /metrics (the process registry), /healthz, and
// optionally the agents' implementation log.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "agent/implementation_log.h"
#include "common/error.h"
#include "common/http_server.h"

namespace kos::cmd {

struct ListenAddress {
  std::string host;
  uint16_t port = 0;
};
// "HOST:PORT" (port 0: any); kBadRequest naming --metrics-listen otherwise.
Result<ListenAddress> parse_metrics_listen(const std::string& addr);

struct MetricsServerOptions {
  std::function<bool()> healthy;                   // /healthz: 200 if it holds (or unset), else 503
  const agent::ImplementationLog* log = nullptr;  // served on agent::kImplementationsPath
  // More pages: path -> a JSON document.
  std::map<std::string, std::function<std::string()>> json_pages;
};
Result<std::unique_ptr<http::Server>> serve_metrics(const ListenAddress& addr,
                                                    MetricsServerOptions opts = {});

}  // namespace kos::cmd
