// The subject of an X.509 certificate as Kubernetes reads it: CN (the user) and every O
// (the groups). Shared by the HTTP server (a client certificate) and src/pki.
#pragma once

#include <string>
#include <vector>

#include <openssl/x509.h>

namespace kos {

struct X509Subject {
  std::string common_name;
  std::vector<std::string> organizations;
};

X509Subject x509_subject(X509* cert);

}  // namespace kos
