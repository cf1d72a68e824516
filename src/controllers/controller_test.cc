#include "controllers/controller.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <thread>

namespace kos::controllers {
namespace {

using namespace std::chrono_literals;

// The worker side, recorded: which keys its reconcile saw; a key can be made to block.
struct Worker {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> seen;
  std::string block;  // reconciling this key waits until it is cleared
  bool blocked = false;

  Result<Requeue> reconcile(const std::string& key) {
    std::unique_lock lk(mu);
    seen.push_back(key);
    if (key == block) {
      blocked = true;
      cv.notify_all();
      cv.wait(lk, [&] { return block.empty(); });
    }
    cv.notify_all();
    return Requeue{};
  }
  bool wait_seen(size_t n) {
    std::unique_lock lk(mu);
    return cv.wait_for(lk, 10s, [&] { return seen.size() >= n; });
  }
};

// reconcile_now runs on the caller's thread only when a worker could take the key now;
// otherwise (not started, key held or queued, declined) the key goes to the workers.
TEST(ControllerTest, ReconcileNowRunsHereOnlyWhenNoWorkerHoldsTheKey) {
  metrics::Registry registry;
  FakeClock clock;  // backoffs stand still: a failure's retry stays delayed until advanced
  Worker w;
  Controller c("inline-test", 1, [&](const std::string& k) { return w.reconcile(k); }, registry, &clock);
  auto last_seen = [&] {
    std::lock_guard lk(w.mu);
    return w.seen.back();
  };
  const auto here = std::this_thread::get_id();
  int ran_here = 0;
  auto inline_ok = [&]() -> std::optional<Result<Requeue>> {
    EXPECT_EQ(std::this_thread::get_id(), here);
    ++ran_here;
    return Requeue{};
  };

  c.reconcile_now("early", inline_ok);  // before start(): the informers are still syncing
  EXPECT_EQ(ran_here, 0);
  EXPECT_EQ(c.queue().size(), 1u);
  c.start();
  ASSERT_TRUE(w.wait_seen(1));

  c.reconcile_now("free", inline_ok);
  EXPECT_EQ(ran_here, 1);
  EXPECT_FALSE(c.queue().is_processing("free"));
  EXPECT_EQ(c.queue().size(), 0u) << "a success is not queued again";

  c.reconcile_now("declined", [] { return std::optional<Result<Requeue>>{}; });
  ASSERT_TRUE(w.wait_seen(2));
  EXPECT_EQ(last_seen(), "declined");

  {
    std::lock_guard lk(w.mu);
    w.block = "held";
  }
  c.enqueue("held");
  {
    std::unique_lock lk(w.mu);
    ASSERT_TRUE(w.cv.wait_for(lk, 10s, [&] { return w.blocked; }));
  }
  c.reconcile_now("held", inline_ok);
  EXPECT_EQ(ran_here, 1) << "ran beside the worker that holds the key";
  {
    std::lock_guard lk(w.mu);
    w.block.clear();
  }
  w.cv.notify_all();
  ASSERT_TRUE(w.wait_seen(4)) << "the event was not handed to the worker after it let go";
  EXPECT_EQ(last_seen(), "held");

  c.reconcile_now("failing", [] { return std::optional<Result<Requeue>>{fail(Errc::kUnavailable, "down")}; });
  EXPECT_EQ(c.queue().delayed_size(), 1u) << "a failure backs off as a worker's";
  clock.advance(1s);
  ASSERT_TRUE(w.wait_seen(5)) << "the failed key was not retried by a worker after its backoff";
  EXPECT_EQ(last_seen(), "failing");
  c.stop();
}

}  // namespace
}  // namespace kos::controllers
