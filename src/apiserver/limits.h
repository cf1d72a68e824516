// A pipeline stage after authentication: per-user limits, so one user (a runaway
// controller, a compromised node) cannot starve the others. Requests per second per user
// (a token bucket; over it: 429 with Retry-After) and concurrent watches per user (over
// it: 429). Admins and controllers are exempt, as kube-apiserver's flow control exempts
// system:masters and serves its own controllers at a high priority. Body and header sizes and slow clients are the HTTP server's limits
// (http::ServerOptions).
//
// Threading: every method may be called from any thread.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "common/clock.h"

namespace kos::apiserver {

class UserLimits {
 public:
  struct Options {
    double requests_per_second = 0;  // per user; 0: no limit
    double burst = 0;                // bucket size (0: 2 s worth)
    int watches = 0;                 // concurrent watches per user; 0: no limit
  };
  UserLimits(const Options& o, const Clock& clock) : opts_(o), clock_(clock) {}

  // Takes one request from the user's bucket; nullopt if allowed, else the seconds after
  // which to retry.
  std::optional<int> take(const std::string& user);
  // A watch starts (false: the user has as many as allowed) and ends.
  bool start_watch(const std::string& user);
  void end_watch(const std::string& user);
  int watches(const std::string& user);

 private:
  struct Bucket {
    double tokens = 0;
    std::chrono::steady_clock::time_point at{};
    bool fresh = true;
  };
  Options opts_;
  const Clock& clock_;
  std::mutex mu_;
  std::map<std::string, Bucket, std::less<>> buckets_;
  std::map<std::string, int, std::less<>> watches_;
};

}  // namespace kos::apiserver
