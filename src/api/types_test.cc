#include "api/types.h"

#include <gtest/gtest.h>

namespace kos::api {
namespace {

using namespace std::chrono;

Time at(int y, unsigned mo, unsigned d, int h, int mi, int s) {
  return sys_days{year{y} / month{mo} / day{d}} + hours{h} + minutes{mi} + seconds{s};
}

TEST(Time, FormatsCanonically) {
  EXPECT_EQ(format_time(at(2006, 1, 2, 15, 4, 5)), "2006-01-02T15:04:05Z");
  EXPECT_EQ(format_time(Time{}), "1970-01-01T00:00:00Z");
  EXPECT_EQ(format_time(Time{seconds{-1}}), "1969-12-31T23:59:59Z");
  EXPECT_EQ(format_micro_time(MicroTime{at(2006, 1, 2, 15, 4, 5)} + microseconds{7}),
            "2006-01-02T15:04:05.000007Z");
  EXPECT_EQ(format_micro_time(MicroTime{microseconds{-1}}), "1969-12-31T23:59:59.999999Z");
}

TEST(Time, ParsesRfc3339) {
  struct Row {
    std::string_view text;
    Time want;
  };
  const Row rows[] = {
      {"2006-01-02T15:04:05Z", at(2006, 1, 2, 15, 4, 5)},
      {"2024-02-29T00:00:00Z", at(2024, 2, 29, 0, 0, 0)},
      {"2006-01-02T15:04:05.999999999Z", at(2006, 1, 2, 15, 4, 5)},  // truncated
      {"2006-01-02T15:04:05+01:30", at(2006, 1, 2, 13, 34, 5)},
      {"2006-01-02T23:59:59-01:00", at(2006, 1, 3, 0, 59, 59)},
      {"0000-01-01T00:00:00Z", at(0, 1, 1, 0, 0, 0)},
      {"9999-12-31T23:59:59Z", at(9999, 12, 31, 23, 59, 59)},
  };
  for (const auto& r : rows) {
    auto t = parse_time(r.text);
    ASSERT_TRUE(t.has_value()) << r.text << ": " << t.error().message;
    EXPECT_EQ(*t, r.want) << r.text;
  }
}

TEST(Time, MicroTimeKeepsMicrosecondsAndRoundTrips) {
  auto t = parse_micro_time("2006-01-02T15:04:05.1234569Z");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(format_micro_time(*t), "2006-01-02T15:04:05.123456Z");
  auto far = parse_micro_time("9999-12-31T23:59:59.999999Z");
  ASSERT_TRUE(far.has_value());
  EXPECT_EQ(format_micro_time(*far), "9999-12-31T23:59:59.999999Z");
  auto u = parse_micro_time("2006-01-02T15:04:05Z");
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(format_micro_time(*u), "2006-01-02T15:04:05.000000Z");
}

TEST(Time, RejectsMalformed) {
  const std::string_view bad[] = {
      "",
      "2006-01-02",
      "2006-01-02T15:04:05",              // no zone
      "2006-01-02 15:04:05Z",             // space instead of T
      "2006-01-02t15:04:05Z",             // lowercase t
      "2006-01-02T15:04:05z",             // lowercase z
      "2006-13-02T15:04:05Z",             // month 13
      "2006-00-02T15:04:05Z",             // month 0
      "2006-02-30T15:04:05Z",             // no such day
      "2023-02-29T15:04:05Z",             // not a leap year
      "2006-01-02T24:00:00Z",             // hour 24
      "2006-01-02T15:60:05Z",             // minute 60
      "2006-01-02T15:04:60Z",             // leap second
      "2006-01-02T15:04:05.Z",            // empty fraction
      "2006-01-02T15:04:05.1234567890Z",  // 10 fraction digits
      "2006-01-02T15:04:05+24:00",        // offset hour
      "2006-01-02T15:04:05+01:60",        // offset minute
      "2006-01-02T15:04:05+0100",         // offset without colon
      "2006-01-02T15:04:05ZZ",
      " 2006-01-02T15:04:05Z",
      "2006-01-02T15:04:05Z ",
      "+2006-01-02T15:04:05Z",
      "2006-1-02T15:04:05Z",
      "20a6-01-02T15:04:05Z",
      "2006-01-02T15:04:5Z",
      "yesterday at noon, roughly",
  };
  for (auto s : bad) {
    auto t = parse_time(s);
    ASSERT_FALSE(t.has_value()) << "accepted: " << s;
    EXPECT_EQ(t.error().code, Errc::kInvalid);
    EXPECT_FALSE(parse_micro_time(s).has_value()) << s;
  }
}

TEST(ExtendedObjectMeta, SetWriteReplacesAndPutsNewestFirst) {
  ExtendedObjectMeta x;
  const MicroTime t1{microseconds{1}}, t2{microseconds{2}}, t3{microseconds{3}};
  x.set_write(section::kSpec, t1);
  x.set_write(section::kAddress, t2);
  x.set_write(section::kSpec, t3);
  ASSERT_EQ(x.writes.size(), 2u);
  EXPECT_EQ(x.writes[0], (ObjectWrite{"spec", t3}));
  EXPECT_EQ(x.writes[1], (ObjectWrite{"status.address", t2}));
  EXPECT_EQ(x.write_time("spec"), t3);
  EXPECT_EQ(x.write_time("status.impl"), std::nullopt);
}

TEST(Kind, TablesAgree) {
  ASSERT_EQ(all_kinds().size(), 5u);
  for (const auto& k : all_kinds()) {
    EXPECT_EQ(kind_info(k.kind).name, k.name);
    EXPECT_EQ(kind_from_plural(k.plural), k.kind);
    EXPECT_EQ(kind_from_name(k.name), k.kind);
    EXPECT_EQ(kind_of(make_object(k.kind)), k.kind);
  }
  EXPECT_EQ(kind_info(Kind::kNetworkAttachment).plural, "networkattachments");
  EXPECT_EQ(kind_info(Kind::kIPLock).short_name, "ipl");
  EXPECT_FALSE(kind_info(Kind::kIPLock).has_status);
  EXPECT_EQ(kind_info(Kind::kVpc).short_name, "vpc");
  EXPECT_EQ(kind_from_plural("Subnets"), std::nullopt);
  EXPECT_EQ(kind_from_name("subnet"), std::nullopt);
}

TEST(AnyObject, MetaAccessorsReachTheObject) {
  AnyObject o = NetworkAttachment{};
  meta(o).name = "na1";
  extended_meta(o).set_write(section::kSpec, MicroTime{});
  const AnyObject& c = o;
  EXPECT_EQ(meta(c).name, "na1");
  EXPECT_EQ(std::get<NetworkAttachment>(o).metadata.name, "na1");
  EXPECT_EQ(extended_meta(c).writes.size(), 1u);
}

}  // namespace
}  // namespace kos::api
