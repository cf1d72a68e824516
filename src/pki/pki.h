// Certificates for KOS: a cluster CA, the API server's serving certificate and client
// certificates (CN = user, O = groups, as Kubernetes reads them), generated with OpenSSL.
//
// Keys are ECDSA P-256 (small, fast handshakes, accepted by Go, Python and OpenSSL
// clients). PEM everywhere. No I/O except ensure_cluster_pki(), which keeps a cluster's
// files in one directory.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "common/error.h"

namespace kos::pki {

struct CertKey {
  std::string cert_pem;
  std::string key_pem;
};

struct Subject {
  std::string common_name;                 // the user
  std::vector<std::string> organizations;  // the groups
};

struct IssueOptions {
  Subject subject;
  bool server = false;  // serverAuth (else clientAuth)
  std::vector<std::string> dns_names;
  std::vector<std::string> ip_addresses;
  std::chrono::hours validity{24 * 365};
};

// A new self-signed CA.
Result<CertKey> make_ca(const std::string& common_name,
                        std::chrono::hours validity = std::chrono::hours(24 * 365 * 10));

// A certificate signed by `ca`. Errors: kBadRequest for an unusable CA or a bad address.
Result<CertKey> issue(const CertKey& ca, const IssueOptions& opts);

// The subject of a PEM certificate (the first in `pem`).
Result<Subject> subject_of(const std::string& cert_pem);

// The DNS names and IP addresses a PEM certificate is valid for.
Result<std::vector<std::string>> subject_alt_names(const std::string& cert_pem);

// A random bearer token (32 bytes, hex).
std::string random_token();

// The files of a cluster's PKI in `dir`: ca.crt, ca.key, apiserver.crt, apiserver.key.
struct ClusterPki {
  std::string dir;
  CertKey ca;
  CertKey serving;
  std::string ca_cert_file() const { return dir + "/ca.crt"; }
};

// Loads the cluster PKI from `dir`, creating what is missing: the CA once, and a serving
// certificate for `hosts` (names and addresses; localhost and 127.0.0.1 always) whenever
// the one there does not cover them all. Keys are written 0600.
Result<ClusterPki> ensure_cluster_pki(const std::string& dir, const std::vector<std::string>& hosts);

// Bearer tokens of a cluster: `dir`/tokens.csv, in kube-apiserver's --token-auth-file
// format (token,user,uid,"group1,group2"), which the API server re-reads when it changes.
std::string tokens_file(const std::string& dir);
// Adds a new random token for `user` (CN) and its groups (O); returns the token. The file
// is created 0600 if missing.
Result<std::string> add_token(const std::string& dir, const Subject& user);

// Loads a CA (cert and key) from `dir` (for issuing credentials).
Result<CertKey> load_ca(const std::string& dir);

// Reads a whole file. Errors: kNotFound.
Result<std::string> read_file(const std::string& path);
// Writes a file atomically (temp + rename) with `mode` permissions.
Result<void> write_file(const std::string& path, const std::string& data, unsigned mode = 0644);

}  // namespace kos::pki
