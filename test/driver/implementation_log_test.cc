#include "agent/implementation_log.h"

#include <gtest/gtest.h>

#include <thread>

namespace kos::agent {
namespace {

using namespace std::chrono_literals;

Implemented rec(int i) {
  return Implemented{i % 2 ? Implemented::Kind::kRemote : Implemented::Kind::kLocal, "node-" + std::to_string(i % 3),
                     "ns/na-" + std::to_string(i), "uid-" + std::to_string(i), static_cast<uint32_t>(100 + i),
                     std::chrono::system_clock::time_point(std::chrono::seconds(1700000000) + std::chrono::microseconds(i))};
}

std::vector<uint64_t> seqs(const ImplementationPage& p) {
  std::vector<uint64_t> out;
  for (const auto& r : p.items) out.push_back(r.seq);
  return out;
}

http::Request get(const std::string& target) {
  http::Request req{boost::beast::http::verb::get, target, 11};
  return req;
}

TEST(ImplementationLog, SinceAndLimit) {
  ImplementationLog log(10);
  auto empty = log.since(0);
  EXPECT_EQ(empty.next, 0u);
  EXPECT_FALSE(empty.dropped);
  EXPECT_TRUE(empty.items.empty());
  for (int i = 0; i < 5; ++i) log.record(rec(i));
  EXPECT_EQ(log.next_seq(), 5u);
  auto all = log.since(0);
  EXPECT_EQ(seqs(all), (std::vector<uint64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(all.next, 5u);
  EXPECT_FALSE(all.dropped);
  EXPECT_EQ(all.items[3].what.key, "ns/na-3");
  auto page = log.since(1, 2);
  EXPECT_EQ(seqs(page), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(page.next, 3u);
  auto rest = log.since(page.next, 100);
  EXPECT_EQ(seqs(rest), (std::vector<uint64_t>{3, 4}));
  EXPECT_EQ(rest.next, 5u);
  auto none = log.since(5);  // caught up
  EXPECT_TRUE(none.items.empty());
  EXPECT_EQ(none.next, 5u);
  EXPECT_FALSE(none.dropped);
  auto zero = log.since(2, 0);
  EXPECT_TRUE(zero.items.empty());
  EXPECT_EQ(zero.next, 2u);
}

TEST(ImplementationLog, OverwrittenRecordsAreReportedAsDropped) {
  ImplementationLog log(4);
  for (int i = 0; i < 10; ++i) log.record(rec(i));  // keeps 6..9
  auto p = log.since(3);
  EXPECT_TRUE(p.dropped);
  EXPECT_EQ(seqs(p), (std::vector<uint64_t>{6, 7, 8, 9}));
  EXPECT_EQ(p.next, 10u);
  auto q = log.since(6);
  EXPECT_FALSE(q.dropped);
  EXPECT_EQ(q.items.size(), 4u);
  // A sequence number from the future (the process restarted): start again from the oldest.
  auto r = log.since(50, 2);
  EXPECT_TRUE(r.dropped);
  EXPECT_EQ(seqs(r), (std::vector<uint64_t>{6, 7}));
  EXPECT_EQ(r.next, 8u);
}

TEST(ImplementationLog, HttpHandlerAndJsonRoundTrip) {
  ImplementationLog log(100);
  for (int i = 0; i < 3; ++i) log.record(rec(i));
  auto resp = log.handle(get("/debug/implementations?since=1&limit=1"));
  EXPECT_EQ(resp.status, 200u);
  EXPECT_EQ(resp.content_type, "application/json");
  EXPECT_NE(resp.body.find("\"kind\":\"remote\""), std::string::npos) << resp.body;
  EXPECT_NE(resp.body.find("\"time\":\"2023-11-14T22:13:20.000001Z\""), std::string::npos) << resp.body;
  auto page = page_from_json(resp.body);
  ASSERT_TRUE(page) << page.error().message;
  EXPECT_EQ(page->next, 2u);
  EXPECT_FALSE(page->dropped);
  ASSERT_EQ(page->items.size(), 1u);
  const auto& r = page->items[0];
  EXPECT_EQ(r.seq, 1u);
  EXPECT_EQ(r.what.kind, Implemented::Kind::kRemote);
  EXPECT_EQ(r.what.node, "node-1");
  EXPECT_EQ(r.what.key, "ns/na-1");
  EXPECT_EQ(r.what.uid, "uid-1");
  EXPECT_EQ(r.what.vni, 101u);
  EXPECT_EQ(r.what.at, rec(1).at);

  auto all = page_from_json(log.handle(get("/debug/implementations")).body);
  ASSERT_TRUE(all);
  EXPECT_EQ(all->items.size(), 3u);
  EXPECT_EQ(all->items[0].what.kind, Implemented::Kind::kLocal);

  EXPECT_EQ(log.handle(get("/debug/implementations?since=x")).status, 400u);
  EXPECT_EQ(log.handle(get("/debug/implementations?limit=-1")).status, 400u);
  http::Request post{boost::beast::http::verb::post, "/debug/implementations", 11};
  EXPECT_EQ(log.handle(post).status, 405u);
  EXPECT_FALSE(page_from_json("{\"next\":1}"));
  EXPECT_FALSE(page_from_json("not json"));
}

TEST(ImplementationLog, ConcurrentWritersLoseNothingWithinCapacity) {
  ImplementationLog log(100000);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) log.record(rec(i));
    });
  uint64_t seen = 0, next = 0;
  while (seen < 40000) {
    auto p = log.since(next, 1000);
    ASSERT_FALSE(p.dropped);
    for (size_t i = 0; i < p.items.size(); ++i) ASSERT_EQ(p.items[i].seq, next + i);
    seen += p.items.size();
    next = p.next;
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(log.next_seq(), 40000u);
}

}  // namespace
}  // namespace kos::agent
