// Credentials for a cluster's users: a client certificate (or a bearer token) for a role,
// issued from the cluster PKI, written as a kubeconfig. What `kos credentials create`
// does, and what `kos up` does for the controller-manager and every node.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "common/error.h"

namespace kos::up {

struct CredentialRequest {
  std::string pki_dir;
  std::string role;   // admin, controller, viewer, tenant, node
  std::string scope;  // the tenant's namespace, the node's name
  std::string user;   // optional user name (not for nodes)
  bool token = false; // a bearer token instead of a client certificate
  std::string server; // the API server's URL, for the kubeconfig
  std::vector<std::string> more_servers;  // the deployment's other API servers
  std::string ns = "default";
  std::chrono::hours validity{24 * 365};
};

// Issues the credential and writes a kubeconfig for it to `path` (0600). Returns the user
// name. Errors: kBadRequest (role, names), kNotFound (no CA in the PKI dir).
Result<std::string> write_credential_kubeconfig(const CredentialRequest& req, const std::string& path);

}  // namespace kos::up
