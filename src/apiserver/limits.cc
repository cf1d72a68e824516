#include "apiserver/limits.h"

#include <algorithm>
#include <cmath>

namespace kos::apiserver {

std::optional<int> UserLimits::take(const std::string& user) {
  if (opts_.requests_per_second <= 0) return std::nullopt;
  const double burst = opts_.burst > 0 ? opts_.burst : 2 * opts_.requests_per_second;
  const auto now = clock_.steady_now();
  std::lock_guard lk(mu_);
  auto& b = buckets_[user];
  if (b.fresh) {
    b.fresh = false;
    b.tokens = burst;
  } else {
    const double elapsed = std::chrono::duration<double>(now - b.at).count();
    b.tokens = std::min(burst, b.tokens + std::max(0.0, elapsed) * opts_.requests_per_second);
  }
  b.at = now;
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return std::nullopt;
  }
  return std::max(1, static_cast<int>(std::ceil((1 - b.tokens) / opts_.requests_per_second)));
}

bool UserLimits::start_watch(const std::string& user) {
  std::lock_guard lk(mu_);
  int& n = watches_[user];
  if (opts_.watches > 0 && n >= opts_.watches) return false;
  ++n;
  return true;
}

void UserLimits::end_watch(const std::string& user) {
  std::lock_guard lk(mu_);
  auto it = watches_.find(user);
  if (it == watches_.end()) return;
  if (--it->second <= 0) watches_.erase(it);
}

int UserLimits::watches(const std::string& user) {
  std::lock_guard lk(mu_);
  auto it = watches_.find(user);
  return it == watches_.end() ? 0 : it->second;
}

}  // namespace kos::apiserver
