#include "driver/plan.h"

#include <gtest/gtest.h>

namespace kos::driver {
namespace {

using namespace std::chrono_literals;

TEST(Duration, ParsesUnitsAndRejectsJunk) {
  EXPECT_EQ(*parse_duration("0"), 0us);
  EXPECT_EQ(*parse_duration("250ms"), 250ms);
  EXPECT_EQ(*parse_duration("1.5s"), 1500ms);
  EXPECT_EQ(*parse_duration("2m"), 120s);
  EXPECT_EQ(*parse_duration("100us"), 100us);
  EXPECT_EQ(*parse_duration("1h"), 3600s);
  for (const char* bad : {"", "s", "10", "-1s", "1x", "1.2.3s", "ms5", "1 s", "1e3s"})
    EXPECT_FALSE(parse_duration(bad)) << bad;
  EXPECT_EQ(format_duration(0us), "0s");
  EXPECT_EQ(format_duration(30s), "30s");
  EXPECT_EQ(format_duration(1500ms), "1.5s");
  EXPECT_EQ(format_duration(250ms), "250ms");
  EXPECT_EQ(format_duration(100us), "100us");
}

TEST(Slots, PowerLaw) {
  // ceil(100 / i^1): 100, 50, 34, 25, 20, 17, 15, 13, 12, 10
  EXPECT_EQ(*slot_distribution(10, 100, 1.0), (std::vector<uint32_t>{100, 50, 34, 25, 20, 17, 15, 13, 12, 10}));
  // Exponent 0: every network as large as the top one.
  EXPECT_EQ(*slot_distribution(3, 7, 0), (std::vector<uint32_t>{7, 7, 7}));
  // ceil(10 / i^2): 10, 3 (2.5), 2 (1.11), 1 (0.625), then never below 1.
  EXPECT_EQ(*slot_distribution(6, 10, 2.0), (std::vector<uint32_t>{10, 3, 2, 1, 1, 1}));
  EXPECT_FALSE(slot_distribution(0, 10, 1));
  EXPECT_FALSE(slot_distribution(3, 0.5, 1));
  EXPECT_FALSE(slot_distribution(3, 10, -1));
}

TEST(Subnets, SizedAlignedAndInRange) {
  EXPECT_EQ(prefix_for(1), 29);  // 8 addresses, 5 usable
  EXPECT_EQ(prefix_for(5), 29);
  EXPECT_EQ(prefix_for(6), 28);  // 16, 13 usable
  EXPECT_EQ(prefix_for(13), 28);
  EXPECT_EQ(prefix_for(14), 27);
  EXPECT_EQ(prefix_for(253), 24);
  EXPECT_EQ(prefix_for(254), 23);

  // Slots 100, 50, 3 with headroom 2: 200 -> /24, 100 -> /25, 6 -> /28.
  auto l = layout_subnets({100, 50, 3}, *api::parse_ipv4("10.1.0.0"));
  ASSERT_TRUE(l);
  ASSERT_EQ(l->size(), 3u);
  EXPECT_EQ((*l)[0].to_string(), "10.1.0.0/24");
  EXPECT_EQ((*l)[1].to_string(), "10.1.1.0/25");
  EXPECT_EQ((*l)[2].to_string(), "10.1.1.128/28");
  // Smaller first: each block is still aligned to its size, and none overlap.
  auto m = layout_subnets({3, 100}, *api::parse_ipv4("10.1.0.0"));
  ASSERT_TRUE(m);
  EXPECT_EQ((*m)[0].to_string(), "10.1.0.0/28");
  EXPECT_EQ((*m)[1].to_string(), "10.1.1.0/24");
  for (const auto& c : *m) EXPECT_GE(c.last_usable() - c.first_usable() + 1, 6u);

  EXPECT_FALSE(layout_subnets({1}, *api::parse_ipv4("8.8.8.0")));            // not private
  EXPECT_FALSE(layout_subnets({100000}, *api::parse_ipv4("192.168.0.0")));  // does not fit in /16
}

TEST(Stats, NearestRankPercentiles) {
  std::vector<double> v;
  for (int i = 1; i <= 100; ++i) v.push_back(i);
  EXPECT_EQ(percentile(v, 50), 50);
  EXPECT_EQ(percentile(v, 90), 90);
  EXPECT_EQ(percentile(v, 99), 99);
  EXPECT_EQ(percentile(v, 100), 100);
  EXPECT_EQ(percentile({7}, 50), 7);
  EXPECT_EQ(percentile({}, 50), 0);
  // Ten samples: p50 is the 5th, p90 the 9th, p99 the 10th.
  std::vector<double> ten = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  EXPECT_EQ(percentile(ten, 50), 5);
  EXPECT_EQ(percentile(ten, 90), 9);
  EXPECT_EQ(percentile(ten, 99), 10);

  auto s = summarize({3, 1, 2, 4});
  EXPECT_EQ(s.count, 4u);
  EXPECT_EQ(s.p50, 2);
  EXPECT_EQ(s.max, 4);
  EXPECT_DOUBLE_EQ(s.mean, 2.5);
  EXPECT_EQ(summarize({}).count, 0u);
}

}  // namespace
}  // namespace kos::driver
