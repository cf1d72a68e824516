// kos-cni: the CNI plugin (CNI 0.4.0, 1.0.0 and 1.1.0). It checks what the runtime gives it
// (the environment and the network config), asks its node's KOS agent over the local API
// (cni/protocol.h) and prints the Result or the CNI error. It is stateless and never talks
// to the API server.
//
// Network config: {"cniVersion", "name", "type": "kos-cni", "namespace", "subnet",
// "agentSocket" (default /var/lib/kos/agent/cni.sock), "timeoutSeconds" (default 30, at
// most 300)}. CNI_ARGS may override the KOS namespace and subnet (KOS_NAMESPACE=,
// KOS_SUBNET=); K8S_POD_NAMESPACE / K8S_POD_NAME are recorded on the attachment. Addresses
// come from the subnet's IPAM: a requested IP or MAC (CNI_ARGS IP= / MAC=, runtimeConfig
// "ips" / "mac") is refused with code 2 rather than ignored.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "cni/protocol.h"

namespace kos::cni {

inline const std::vector<std::string> kSupportedVersions = {"0.4.0", "1.0.0", "1.1.0"};
inline constexpr const char* kDefaultAgentSocket = "/var/lib/kos/agent/cni.sock";

struct Invocation {
  std::map<std::string, std::string> env;  // CNI_COMMAND, CNI_CONTAINERID, ...
  std::string stdin_data;                  // the network config
};

struct Outcome {
  int exit_code = 0;
  std::string stdout_data;  // the Result, VERSION's answer or the error JSON
};

// How the plugin reaches the agent (cni::call; tests pass their own).
using AgentCall = std::function<Result<Response>(const std::string& socket, const Request&, std::chrono::milliseconds)>;

Outcome run(const Invocation& inv, const AgentCall& call);

}  // namespace kos::cni
