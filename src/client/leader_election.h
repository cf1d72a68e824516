// Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection: for
// singletons that prefer one active instance. No KOS controller's correctness depends on
// it (two IPAMs at once are safe); it only avoids duplicate work.
//
// The holder renews the lease every retry_period; a candidate takes the lease over when
// it has not seen the lease change for lease_duration (measured on its own clock, so clock
// skew between machines does not matter). A leader that cannot renew for renew_deadline
// steps down.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "client/rest_client.h"
#include "common/clock.h"

namespace kos::client {

struct LeaderElectionConfig {
  std::string ns = "kube-system";
  std::string name;      // the lease
  std::string identity;  // this candidate (e.g. hostname_pid)
  std::chrono::milliseconds lease_duration{15000};
  std::chrono::milliseconds renew_deadline{10000};
  std::chrono::milliseconds retry_period{2000};
  std::function<void()> on_started_leading;
  std::function<void()> on_stopped_leading;
  std::function<void(const std::string& identity)> on_new_leader;
};

class LeaderElector {
 public:
  LeaderElector(std::shared_ptr<RestClient> client, LeaderElectionConfig config,
                const Clock& clock = RealClock::instance());
  ~LeaderElector();  // stops; a leader releases the lease

  // Starts campaigning on a thread of its own.
  void start();
  // Stops campaigning; a leader gives the lease up (so another takes over at once).
  void stop();
  // Stops without releasing, as a crashed process would (for tests).
  void abandon();
  bool is_leader() const { return leader_.load(); }
  std::string leader() const;

 private:
  void run();
  // One attempt to acquire or renew. Returns true if this candidate holds the lease.
  bool try_acquire_or_renew();
  void release();

  std::shared_ptr<RestClient> client_;
  LeaderElectionConfig cfg_;
  const Clock& clock_;
  std::atomic<bool> leader_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool release_on_stop_ = true;
  std::thread thread_;
  // What this candidate last saw of the lease, and when (its own clock).
  std::string observed_rv_;
  std::string observed_holder_;
  std::chrono::steady_clock::time_point observed_at_{};
  std::chrono::steady_clock::time_point last_renew_{};
};

}  // namespace kos::client
