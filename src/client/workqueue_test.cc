#include "client/workqueue.h"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <latch>
#include <mutex>
#include <thread>

namespace kos::client {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;

// Every queue here is driven by a FakeClock and process_delayed(): no sleeps, no timing.
class WorkQueueTest : public ::testing::Test {
 protected:
  std::unique_ptr<WorkQueue> make(const std::string& name = "test", RateLimits limits = {}) {
    WorkQueue::Options o;
    o.clock = &clock_;
    o.limits = limits;
    o.delay_thread = false;
    return std::make_unique<WorkQueue>(name, registry_, std::move(o));
  }
  double counter(const std::string& metric, const std::string& name = "test") {
    return registry_.counter(metric, "", {"name"}).with({name}).value();
  }
  double gauge(const std::string& metric, const std::string& name = "test") {
    return registry_.gauge(metric, "", {"name"}).with({name}).value();
  }
  metrics::Histogram::Snapshot histogram(const std::string& metric,
                                         const std::string& name = "test") {
    return registry_.histogram(metric, "", {"name"}).with({name}).snapshot();
  }

  FakeClock clock_;
  metrics::Registry registry_;
};

TEST_F(WorkQueueTest, AddDeduplicates) {
  auto q = make();
  q->add("a");
  q->add("b");
  q->add("a");
  EXPECT_EQ(q->size(), 2u);
  EXPECT_EQ(q->try_get(), "a");
  EXPECT_EQ(q->try_get(), "b");
  EXPECT_EQ(q->try_get(), std::nullopt);
  EXPECT_EQ(q->processing(), 2u);
}

TEST_F(WorkQueueTest, KeyAddedWhileProcessingIsQueuedAgainAtDone) {
  auto q = make();
  q->add("a");
  EXPECT_FALSE(q->is_processing("a"));  // queued, not handed out
  ASSERT_EQ(q->try_get(), "a");
  EXPECT_TRUE(q->is_processing("a"));
  q->add("a");
  q->add("a");  // still one pending re-add
  EXPECT_EQ(q->size(), 0u);
  EXPECT_EQ(q->try_get(), std::nullopt);
  q->done("a");
  EXPECT_EQ(q->size(), 1u);
  ASSERT_EQ(q->try_get(), "a");
  q->done("a");
  EXPECT_EQ(q->try_get(), std::nullopt);  // processed once per add-while-processing
  EXPECT_FALSE(q->is_processing("a"));
  EXPECT_EQ(q->processing(), 0u);
  EXPECT_TRUE(q->idle());
}

// try_claim hands out a key that no one holds and that is not queued, as get() would; a
// key added meanwhile is queued at done(), as for a worker.
TEST_F(WorkQueueTest, TryClaimTakesOnlyAKeyNoOneHoldsOrQueued) {
  auto q = make();
  ASSERT_TRUE(q->try_claim("a"));
  EXPECT_TRUE(q->is_processing("a"));
  EXPECT_FALSE(q->try_claim("a")) << "held already";
  q->add("a");
  EXPECT_EQ(q->try_get(), std::nullopt) << "handed to a worker while claimed";
  q->done("a");
  EXPECT_FALSE(q->try_claim("a")) << "queued: a worker's";
  EXPECT_EQ(q->try_get(), "a");
  EXPECT_FALSE(q->try_claim("a")) << "a worker holds it";
  q->done("a");
  EXPECT_TRUE(q->idle());
  q->add_after("b", seconds(10));
  EXPECT_TRUE(q->try_claim("b")) << "a delayed key may be claimed";
  q->done("b");
  q->shut_down();
  EXPECT_FALSE(q->try_claim("c"));
}

TEST_F(WorkQueueTest, DoneOfUnknownKeyIsIgnored) {
  auto q = make();
  q->done("never-handed-out");
  q->add("a");
  q->done("a");  // queued, not processing: stays queued
  EXPECT_EQ(q->try_get(), "a");
}

TEST_F(WorkQueueTest, SecondWorkerGetsReaddedKeyOnlyAfterFirstIsDone) {
  auto q = make();
  q->add("k");
  std::latch a_has_key(1), release_a(1);
  std::atomic<bool> a_done{false};
  std::optional<std::string> a_key, b_key;
  bool b_saw_a_done = false;
  std::thread a([&] {
    a_key = q->get();
    a_has_key.count_down();
    release_a.wait();
    a_done = true;
    if (a_key) q->done(*a_key);
  });
  a_has_key.wait();
  ASSERT_EQ(a_key, "k");
  q->add("k");  // re-added while worker A processes it
  EXPECT_EQ(q->size(), 0u);
  EXPECT_EQ(q->try_get(), std::nullopt);
  std::thread b([&] {
    b_key = q->get();  // blocks until A's done() queues "k" again
    b_saw_a_done = a_done.load();
    if (b_key) q->done(*b_key);
  });
  release_a.count_down();
  a.join();
  b.join();
  EXPECT_EQ(b_key, "k");
  EXPECT_TRUE(b_saw_a_done);
  EXPECT_EQ(q->processing(), 0u);
  EXPECT_EQ(q->size(), 0u);
}

// Four workers, four keys added over and over: no key is ever processed by two workers at
// once, and every add is followed by a processing that started after it (the last add of each
// key is never lost).
TEST_F(WorkQueueTest, WorkersNeverProcessOneKeyConcurrentlyAndLoseNoAdd) {
  auto q = make();
  constexpr int kKeys = 4, kWorkers = 4, kAdds = 20000;
  std::array<std::atomic<int>, kKeys> in_flight{}, added{}, seen{};
  std::atomic<int> overlaps{0};
  std::mutex mu;
  std::condition_variable worked;
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w)
    workers.emplace_back([&] {
      while (auto key = q->get()) {
        int i = key->back() - '0';
        seen[i] = added[i].load();  // this run covers every add up to here
        if (in_flight[i].fetch_add(1) != 0) ++overlaps;
        std::this_thread::yield();
        in_flight[i].fetch_sub(1);
        q->done(*key);
        std::lock_guard lk(mu);
        worked.notify_all();
      }
    });
  const std::array<std::string, kKeys> keys{"k0", "k1", "k2", "k3"};
  for (int n = 0; n < kAdds; ++n) {
    int i = n % kKeys;
    ++added[i];
    q->add(keys[i]);
  }
  {
    // Idle (nothing queued or in flight) can only be reached through a done(), which is
    // followed by a notification under `mu`.
    std::unique_lock lk(mu);
    worked.wait(lk, [&] { return q->idle(); });
  }
  q->shut_down();
  for (auto& t : workers) t.join();
  EXPECT_EQ(overlaps.load(), 0);
  for (int i = 0; i < kKeys; ++i) EXPECT_EQ(seen[i].load(), kAdds / kKeys) << "key " << i;
}

TEST(RateLimiterTest, ExponentialBackoffDoublesUpToTheCapAndForgetResets) {
  ExponentialFailureRateLimiter r(milliseconds(5), seconds(1000));
  nanoseconds want = milliseconds(5);
  for (int i = 0; i < 18; ++i, want *= 2) EXPECT_EQ(r.when("a"), want) << "failure " << i;
  // 5 ms * 2^18 = 1310.72 s > 1000 s.
  EXPECT_EQ(r.when("a"), seconds(1000));
  for (int i = 0; i < 100; ++i) EXPECT_EQ(r.when("a"), seconds(1000));  // saturates
  EXPECT_EQ(r.num_requeues("a"), 119);
  EXPECT_EQ(r.when("b"), milliseconds(5));  // per key
  r.forget("a");
  EXPECT_EQ(r.num_requeues("a"), 0);
  EXPECT_EQ(r.when("a"), milliseconds(5));
  EXPECT_EQ(r.when("a"), milliseconds(10));
}

TEST(RateLimiterTest, TokenBucketLimitsBurstThenRefillsWithTheClock) {
  FakeClock clock;
  BucketRateLimiter r(10, 3, clock);
  EXPECT_EQ(r.when("a"), nanoseconds(0));
  EXPECT_EQ(r.when("b"), nanoseconds(0));
  EXPECT_EQ(r.when("c"), nanoseconds(0));
  EXPECT_EQ(r.when("d"), milliseconds(100));  // burst spent: reservations queue at 1/qps
  EXPECT_EQ(r.when("e"), milliseconds(200));
  clock.advance(milliseconds(100));  // one reservation covered
  EXPECT_EQ(r.when("f"), milliseconds(200));
  clock.advance(seconds(10));  // refills to the burst, no more
  EXPECT_EQ(r.when("g"), nanoseconds(0));
  EXPECT_EQ(r.when("h"), nanoseconds(0));
  EXPECT_EQ(r.when("i"), nanoseconds(0));
  EXPECT_EQ(r.when("j"), milliseconds(100));
  EXPECT_EQ(r.num_requeues("a"), 0);
}

TEST(RateLimiterTest, DefaultControllerLimiterTakesTheLongerDelay) {
  FakeClock clock;
  auto r = default_controller_rate_limiter(clock, {.qps = 10, .burst = 2});
  EXPECT_EQ(r->when("a"), milliseconds(5));    // per-key backoff decides
  EXPECT_EQ(r->when("b"), milliseconds(5));
  EXPECT_EQ(r->when("c"), milliseconds(100));  // the bucket decides
  EXPECT_EQ(r->when("a"), milliseconds(200));
  EXPECT_EQ(r->num_requeues("a"), 2);
  r->forget("a");
  EXPECT_EQ(r->num_requeues("a"), 0);
}

TEST_F(WorkQueueTest, AddRateLimitedBacksOffPerKeyOnTheClock) {
  auto q = make();
  q->add_rate_limited("a");
  EXPECT_EQ(q->num_requeues("a"), 1);
  EXPECT_EQ(q->size(), 0u);
  EXPECT_EQ(q->delayed_size(), 1u);
  clock_.advance(milliseconds(4));
  q->process_delayed();
  EXPECT_EQ(q->try_get(), std::nullopt);
  clock_.advance(milliseconds(1));
  q->process_delayed();
  ASSERT_EQ(q->try_get(), "a");
  q->done("a");

  q->add_rate_limited("a");  // second failure: 10 ms
  EXPECT_EQ(q->num_requeues("a"), 2);
  clock_.advance(milliseconds(9));
  q->process_delayed();
  EXPECT_EQ(q->try_get(), std::nullopt);
  clock_.advance(milliseconds(1));
  q->process_delayed();
  ASSERT_EQ(q->try_get(), "a");
  q->done("a");

  q->forget("a");  // success: the next failure starts from 5 ms again
  EXPECT_EQ(q->num_requeues("a"), 0);
  q->add_rate_limited("a");
  clock_.advance(milliseconds(5));
  q->process_delayed();
  EXPECT_EQ(q->try_get(), "a");
}

TEST_F(WorkQueueTest, AddRateLimitedHonoursTheTokenBucket) {
  auto q = make("test", {.qps = 10, .burst = 1});
  q->add_rate_limited("a");  // 5 ms (backoff), bucket has a token
  q->add_rate_limited("b");  // bucket empty: 100 ms
  clock_.advance(milliseconds(5));
  q->process_delayed();
  EXPECT_EQ(q->try_get(), "a");
  EXPECT_EQ(q->try_get(), std::nullopt);
  clock_.advance(milliseconds(94));
  q->process_delayed();
  EXPECT_EQ(q->try_get(), std::nullopt);
  clock_.advance(milliseconds(1));
  q->process_delayed();
  EXPECT_EQ(q->try_get(), "b");
}

TEST_F(WorkQueueTest, AddAfterReleasesKeysInDeadlineOrder) {
  auto q = make();
  const SteadyTime t0 = clock_.steady_now();
  q->add_after("a", milliseconds(30));
  q->add_after("b", milliseconds(10));
  q->add_after("c", milliseconds(20));
  q->add_after("d", milliseconds(10));  // same deadline as b: after b
  q->add_after("now", nanoseconds(0));  // no delay: queued at once
  EXPECT_EQ(q->size(), 1u);
  EXPECT_EQ(q->delayed_size(), 4u);
  EXPECT_EQ(q->process_delayed(), t0 + milliseconds(10));
  EXPECT_EQ(q->try_get(), "now");

  clock_.advance(milliseconds(10));
  EXPECT_EQ(q->process_delayed(), t0 + milliseconds(20));
  EXPECT_EQ(q->try_get(), "b");
  EXPECT_EQ(q->try_get(), "d");
  EXPECT_EQ(q->try_get(), std::nullopt);

  clock_.advance(milliseconds(25));  // past c and a: both, in deadline order
  EXPECT_EQ(q->process_delayed(), std::nullopt);
  EXPECT_EQ(q->try_get(), "c");
  EXPECT_EQ(q->try_get(), "a");
  EXPECT_EQ(q->delayed_size(), 0u);
}

TEST_F(WorkQueueTest, AddAfterKeepsTheEarlierDeadlineAndDedupsWithTheQueue) {
  auto q = make();
  const SteadyTime t0 = clock_.steady_now();
  q->add_after("a", milliseconds(50));
  q->add_after("a", milliseconds(80));  // later: ignored
  EXPECT_EQ(q->process_delayed(), t0 + milliseconds(50));
  q->add_after("a", milliseconds(20));  // earlier: wins
  EXPECT_EQ(q->delayed_size(), 1u);
  EXPECT_EQ(q->process_delayed(), t0 + milliseconds(20));
  q->add("a");  // also queued directly: the delayed add then finds it queued
  clock_.advance(milliseconds(20));
  EXPECT_EQ(q->process_delayed(), std::nullopt);
  EXPECT_EQ(q->size(), 1u);
  EXPECT_EQ(q->try_get(), "a");
  EXPECT_EQ(q->try_get(), std::nullopt);
}

TEST_F(WorkQueueTest, HugeDelaysAndTimeoutsDoNotOverflow) {
  auto q = make();
  q->add_after("never", nanoseconds::max());
  auto next = q->process_delayed();
  ASSERT_TRUE(next.has_value());
  EXPECT_GT(*next, clock_.steady_now() + std::chrono::hours(24 * 365 * 99));
  q->add("a");
  EXPECT_EQ(q->get_for(nanoseconds::max()), "a");  // ready: returns at once
  EXPECT_EQ(q->get_for(nanoseconds(0)), std::nullopt);
}

TEST_F(WorkQueueTest, ShutDownWakesEveryGetterAndRejectsAdds) {
  auto q = make();
  constexpr int kGetters = 3;
  std::latch started(kGetters);
  std::array<std::optional<std::string>, kGetters> got;
  std::vector<std::thread> getters;
  for (int i = 0; i < kGetters; ++i)
    getters.emplace_back([&, i] {
      started.count_down();
      got[i] = q->get();
    });
  started.wait();
  q->shut_down();
  for (auto& t : getters) t.join();
  for (const auto& g : got) EXPECT_EQ(g, std::nullopt);
  EXPECT_TRUE(q->shutting_down());
  q->add("a");
  q->add_after("b", milliseconds(1));
  q->add_rate_limited("c");
  EXPECT_EQ(q->size(), 0u);
  EXPECT_EQ(q->delayed_size(), 0u);
  EXPECT_EQ(q->num_requeues("c"), 0);
  EXPECT_EQ(q->get(), std::nullopt);  // does not block
  EXPECT_EQ(counter("kos_workqueue_retries_total"), 0);
}

TEST_F(WorkQueueTest, ShutDownDropsQueuedAndDelayedKeys) {
  auto q = make();
  q->add("a");
  q->add_after("b", milliseconds(1));
  q->shut_down();
  EXPECT_EQ(q->try_get(), std::nullopt);
  clock_.advance(milliseconds(1));
  q->process_delayed();
  EXPECT_EQ(q->size(), 0u);
  EXPECT_EQ(gauge("kos_workqueue_depth"), 0);
}

TEST_F(WorkQueueTest, ShutDownWithDrainWaitsForInFlightKeys) {
  auto q = make();
  q->add("a");
  ASSERT_EQ(q->try_get(), "a");
  q->add("a");  // a pending re-add is dropped by the shutdown
  std::optional<std::string> getter_got = "unset";
  std::thread getter([&] { getter_got = q->get(); });  // blocks: nothing ready
  std::atomic<bool> drained{false};
  std::thread drainer([&] {
    q->shut_down_with_drain();
    drained = true;
  });
  getter.join();  // returns only once the drain has shut the queue down
  EXPECT_EQ(getter_got, std::nullopt);
  EXPECT_FALSE(drained.load());  // "a" is still being processed
  q->add("b");
  EXPECT_EQ(q->size(), 0u);
  q->done("a");
  drainer.join();
  EXPECT_TRUE(drained.load());
  EXPECT_EQ(q->processing(), 0u);
  EXPECT_EQ(q->try_get(), std::nullopt);  // the re-add of "a" was dropped
}

TEST_F(WorkQueueTest, MetricsFollowTheQueue) {
  auto q = make("m");
  q->add("a");
  q->add("a");  // duplicate: not counted
  q->add("b");
  EXPECT_EQ(counter("kos_workqueue_adds_total", "m"), 2);
  EXPECT_EQ(gauge("kos_workqueue_depth", "m"), 2);

  clock_.advance(seconds(2));
  ASSERT_EQ(q->try_get(), "a");
  EXPECT_EQ(gauge("kos_workqueue_depth", "m"), 1);
  auto waited = histogram("kos_workqueue_queue_duration_seconds", "m");
  EXPECT_EQ(waited.count, 1u);
  EXPECT_DOUBLE_EQ(waited.sum, 2.0);

  clock_.advance(seconds(3));
  q->done("a");
  auto worked = histogram("kos_workqueue_work_duration_seconds", "m");
  EXPECT_EQ(worked.count, 1u);
  EXPECT_DOUBLE_EQ(worked.sum, 3.0);

  q->add_rate_limited("a");
  q->add_rate_limited("a");
  EXPECT_EQ(counter("kos_workqueue_retries_total", "m"), 2);
  EXPECT_EQ(counter("kos_workqueue_adds_total", "m"), 2);  // still delayed
  clock_.advance(seconds(1));
  q->process_delayed();
  EXPECT_EQ(counter("kos_workqueue_adds_total", "m"), 3);
  EXPECT_EQ(gauge("kos_workqueue_depth", "m"), 2);

  const std::string text = registry_.render();
  EXPECT_NE(text.find("kos_workqueue_adds_total{name=\"m\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("kos_workqueue_depth{name=\"m\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("kos_workqueue_retries_total{name=\"m\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("kos_workqueue_queue_duration_seconds_count{name=\"m\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("kos_workqueue_work_duration_seconds_sum{name=\"m\"} 3\n"),
            std::string::npos)
      << text;
}

// The internal delay thread with the real clock: get() blocks until the delay has passed.
TEST(WorkQueueRealClockTest, DelayThreadReleasesDueKeys) {
  metrics::Registry registry;
  WorkQueue q("real", registry);
  const auto start = std::chrono::steady_clock::now();
  q.add_after("later", milliseconds(20));
  q.add_after("sooner", milliseconds(1));
  EXPECT_EQ(q.get(), "sooner");
  EXPECT_EQ(q.get(), "later");
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(20));
  q.add_after("far", std::chrono::hours(1));  // the destructor does not wait for it
}

}  // namespace
}  // namespace kos::client

namespace kos::client {
namespace {

// The delay thread waits on the queue's clock: a FakeClock's advance() releases a delayed
// key at once (it used to wait out the delay in real time).
TEST(WorkQueueDelayThread, FollowsAFakeClock) {
  FakeClock clock;
  metrics::Registry registry;
  WorkQueue::Options o;
  o.clock = &clock;
  WorkQueue q("delay-thread", registry, std::move(o));
  q.add_after("a", std::chrono::seconds(60));
  EXPECT_EQ(q.get_for(std::chrono::milliseconds(100)), std::nullopt) << "released before its time came";
  clock.advance(std::chrono::seconds(60));
  EXPECT_EQ(q.get_for(std::chrono::seconds(5)), "a");
}

}  // namespace
}  // namespace kos::client
