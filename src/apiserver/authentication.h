// Stage 2 of the request pipeline: who sent a request.
//
// Client certificates (verified by the TLS handshake against the cluster CA; CN = user,
// O = groups, as Kubernetes reads them) and bearer tokens from a token file (the format of
// kube-apiserver's --token-auth-file: token,user,uid[,"group1,group2"] per line). A
// request with neither is anonymous; the pipeline answers 401 to anonymous requests except
// for health and version endpoints.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/http_server.h"

namespace kos::apiserver {

struct UserInfo {
  std::string name;
  std::string uid;
  std::vector<std::string> groups;
  bool operator==(const UserInfo&) const = default;
};

class Authenticator {
 public:
  virtual ~Authenticator() = default;
  // nullopt: the request carries no credential this authenticator reads. An error
  // (kUnauthorized): it carries one that is not valid.
  virtual Result<std::optional<UserInfo>> authenticate(const http::Request& req,
                                                       const http::Peer& peer) = 0;
};

// The client certificate the TLS handshake verified.
class CertificateAuthenticator : public Authenticator {
 public:
  Result<std::optional<UserInfo>> authenticate(const http::Request& req,
                                               const http::Peer& peer) override;
};

// Bearer tokens listed in a file, re-read when the file changes (checked at most once a
// second, and whenever a token is not found), so `kos credentials create --token` takes
// effect at once, without a restart.
class TokenFileAuthenticator : public Authenticator {
 public:
  // Errors: kNotFound (no file), kBadRequest (a malformed line, named).
  static Result<std::unique_ptr<TokenFileAuthenticator>> open(const std::string& path);
  Result<std::optional<UserInfo>> authenticate(const http::Request& req,
                                               const http::Peer& peer) override;
  // Parses the file's content. Errors: kBadRequest naming the line.
  static Result<std::map<std::string, UserInfo>> parse(const std::string& content,
                                                       const std::string& path);

 private:
  explicit TokenFileAuthenticator(std::string path) : path_(std::move(path)) {}
  Result<void> reload_if_changed();

  std::string path_;
  std::mutex mu_;
  std::map<std::string, UserInfo> tokens_;
  std::chrono::steady_clock::time_point checked_{};
  int64_t mtime_ns_ = -1;
  uintmax_t size_ = 0;
};

// The first authenticator that recognizes a credential decides.
class AuthenticatorChain : public Authenticator {
 public:
  void add(std::unique_ptr<Authenticator> a) { chain_.push_back(std::move(a)); }
  Result<std::optional<UserInfo>> authenticate(const http::Request& req,
                                               const http::Peer& peer) override;

 private:
  std::vector<std::unique_ptr<Authenticator>> chain_;
};

}  // namespace kos::apiserver
