// Kubeconfig files (the format kubectl reads), reduced to what a KOS client needs to reach
// its API servers: where they are, how to trust them and how to authenticate to them.
//
// Several API servers: a cluster's `server` is the one kubectl uses; KOS clients also read
// the cluster extension named kServersExtension, whose `servers` list names every API
// server of the deployment (kubectl ignores it):
//
//   clusters:
//   - name: kos
//     cluster:
//       server: https://10.0.0.1:6443
//       extensions:
//       - name: servers.kos.network.example.com
//         extension:
//           servers: [https://10.0.0.1:6443, https://10.0.0.2:6443, https://10.0.0.3:6443]
//
// They must share the scheme, the certificate authority and the credentials (one
// deployment's API servers).
//
// Supported: clusters (server, certificate-authority[-data], insecure-skip-tls-verify),
// users (client-certificate[-data], client-key[-data], token, tokenFile), contexts
// (cluster, user, namespace) and current-context. A selected user that relies on exec
// plugins, auth providers or basic auth is rejected (kUnsupported) rather than silently
// used without credentials. Only the selected context, cluster and user are checked beyond
// their structure, as kubectl does.
//
// Errors: kNotFound when the kubeconfig, a file it names, or the context asked for by the
// caller does not exist; kBadRequest when the content is malformed or inconsistent. Messages
// start with "kubeconfig PATH: ".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"

namespace kos::client {

inline constexpr const char* kServersExtension = "servers.kos.network.example.com";

// One API server's address.
struct Endpoint {
  std::string server;  // scheme://host:port (IPv6 hosts in brackets)
  std::string host;    // without brackets
  uint16_t port = 0;
  bool operator==(const Endpoint&) const = default;
};

struct RestConfig {
  // The first API server (the kubeconfig's `server`).
  std::string server;     // scheme://host:port, no trailing slash (IPv6 hosts in brackets)
  std::string host;       // without brackets
  uint16_t port = 0;      // explicit, or 443 / 80 from the scheme
  bool tls = false;       // https
  std::string ca_pem;     // trust roots; empty: the system's
  std::string cert_pem;   // client certificate (with cert_pem, key_pem is set too)
  std::string key_pem;
  bool insecure_skip_verify = false;
  std::string bearer_token;
  std::string ns = "default";
  // Every API server, the first one first; empty means just the first one. A client
  // spreads its connections over them and fails over to the next when one cannot be
  // reached (see Transport).
  std::vector<Endpoint> endpoints;

  // endpoints, or the first server alone when there are none.
  std::vector<Endpoint> all_endpoints() const;

  bool operator==(const RestConfig&) const = default;
};

// Reads the kubeconfig at `path` and resolves `context` (empty: its current-context).
// Relative file names in it resolve against the kubeconfig's directory; *-data fields are
// base64-decoded; tokenFile is read and trimmed.
Result<RestConfig> load_kubeconfig(const std::string& path, const std::string& context = "");

// The kubeconfig a command uses: `path_flag` if not empty, else the first entry of the
// colon-separated $KUBECONFIG, else ~/.kube/config; then load_kubeconfig(path) on it.
Result<RestConfig> config_from_env_or_file(const std::string& path_flag);

// The file config_from_env_or_file() would read. Errors: kNotFound when none can be chosen
// (no flag, no $KUBECONFIG and no $HOME).
Result<std::string> kubeconfig_path(const std::string& path_flag);

// What a written kubeconfig holds: one cluster, one user, one context named `name`.
struct KubeconfigContent {
  std::string name = "kos";
  std::string server;    // https://HOST:PORT or http://...
  // More API servers of the same deployment (written in the kServersExtension, with
  // `server` first).
  std::vector<std::string> more_servers;
  std::string ca_pem;    // embedded as certificate-authority-data
  std::string cert_pem;  // client-certificate-data (with key_pem)
  std::string key_pem;
  std::string token;
  std::string ns = "default";
};

// The kubeconfig YAML for `c` (credentials embedded base64, as kubectl writes them).
std::string kubeconfig_yaml(const KubeconfigContent& c);
// Writes it to `path` atomically, 0600 (it holds a credential).
Result<void> write_kubeconfig(const std::string& path, const KubeconfigContent& c);

}  // namespace kos::client
