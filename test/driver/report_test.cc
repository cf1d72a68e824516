#include "driver/report.h"

#include <gtest/gtest.h>

#include "api/json.h"

namespace kos::driver {
namespace {

RunReport sample() {
  RunReport r;
  r.run_id = "r00test";
  r.parameters = {{"rate", "100 creates/s"}, {"odd <chars>", "a & b"}};
  r.measure_implemented = true;
  r.nodes = 3;
  r.vnis = 4;
  r.target_rate = 100;
  r.achieved_rate = 99.5;
  for (int i = 1; i <= 100; ++i) {
    r.results.stages[static_cast<size_t>(Stage::kCreate)].seconds.push_back(i * 1e-4);
    r.results.stages[static_cast<size_t>(Stage::kReady)].seconds.push_back(i * 1e-3);
    r.results.stages[static_cast<size_t>(Stage::kImplemented)].seconds.push_back(i * 2e-3);
    r.results.create_times.push_back(i * 0.01);
    r.results.ready_times.push_back(i * 0.01 + 0.05);
  }
  r.results.stages[static_cast<size_t>(Stage::kImplemented)].failures = 2;
  r.results.stages[static_cast<size_t>(Stage::kImplemented)].failure_samples = {"ns/x: timed out"};
  r.results.measured = 100;
  r.notes = {"something to know"};
  return r;
}

TEST(Report, SummaryTable) {
  auto text = summary_table(sample());
  EXPECT_NE(text.find("kos driver run r00test: 100 measured attachments on 3 nodes over 4 VNIs"), std::string::npos) << text;
  // create call: 100 samples of 0.1..10 ms: p50 5 ms, p99 9.9 ms, max 10 ms.
  EXPECT_NE(text.find("create call                             100         0          0       5.00       9.00       9.90      10.00"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("create -> tested                   not measured (no --ping)"), std::string::npos) << text;
  EXPECT_NE(text.find("note: something to know"), std::string::npos);
  EXPECT_NE(text.find("failure (implemented): ns/x: timed out"), std::string::npos);
}

TEST(Report, JsonHasEveryMeasuredStage) {
  auto j = api::parse_json(summary_json(sample()));
  ASSERT_TRUE(j);
  const auto& o = j->as_object();
  EXPECT_EQ(o.at("run_id").as_string(), "r00test");
  const auto& stages = o.at("stages").as_object();
  EXPECT_TRUE(stages.contains("create"));
  EXPECT_TRUE(stages.contains("implemented"));
  EXPECT_FALSE(stages.contains("tested"));
  EXPECT_EQ(stages.at("implemented").as_object().at("failures").to_number<uint64_t>(), 2u);
  EXPECT_EQ(stages.at("ready").as_object().at("count").to_number<uint64_t>(), 100u);
  EXPECT_DOUBLE_EQ(stages.at("ready").as_object().at("p90_ms").to_number<double>(), 90.0);
}

// Windows by creation order: attachment i's ready latency is (i+1) ms, delivered out of
// order; 4 windows of 25 get their own percentiles, and deletes (no order) are left out.
TEST(Report, WindowsByCreationOrder) {
  RunReport r;
  r.windows = 4;
  r.results.measured = 100;
  auto& ready = r.results.stages[static_cast<size_t>(Stage::kReady)];
  for (int k = 0; k < 100; ++k) {
    int i = (k * 37) % 100;  // a permutation: settle order differs from creation order
    ready.seconds.push_back((i + 1) * 1e-3);
    ready.order.push_back(static_cast<uint64_t>(i));
  }
  r.results.stages[static_cast<size_t>(Stage::kDelete)].seconds = {0.001, 0.002};
  auto ws = windows(r);
  ASSERT_EQ(ws.size(), 4u);
  EXPECT_EQ(ws[0].from, 0u);
  EXPECT_EQ(ws[0].to, 25u);
  EXPECT_EQ(ws[3].to, 100u);
  ASSERT_TRUE(ws[0].stages.count(Stage::kReady));
  EXPECT_FALSE(ws[0].stages.count(Stage::kDelete));
  EXPECT_EQ(ws[0].stages.at(Stage::kReady).count, 25u);
  EXPECT_DOUBLE_EQ(ws[0].stages.at(Stage::kReady).max, 0.025);
  EXPECT_DOUBLE_EQ(ws[3].stages.at(Stage::kReady).max, 0.100);
  EXPECT_NE(summary_table(r).find("by creation order"), std::string::npos);
  auto j = api::parse_json(summary_json(r));
  ASSERT_TRUE(j);
  EXPECT_EQ(j->as_object().at("windows").as_array().size(), 4u);
  r.windows = 0;
  EXPECT_TRUE(windows(r).empty());
}

TEST(Report, HtmlWithInlineSvgAndEscapedParameters) {
  auto html = html_report(sample());
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  size_t svgs = 0;
  for (size_t p = html.find("<svg"); p != std::string::npos; p = html.find("<svg", p + 1)) ++svgs;
  // The combined CDF, one per measured stage (create, addressed, ready, implemented,
  // delete), the events timeline and the latency by create time.
  EXPECT_EQ(svgs, 8u);
  EXPECT_NE(html.find("<polyline"), std::string::npos);
  EXPECT_NE(html.find("odd &lt;chars&gt;"), std::string::npos);
  EXPECT_NE(html.find("a &amp; b"), std::string::npos);
  EXPECT_NE(html.find("</html>"), std::string::npos);
}

// Marks (a kill, a restart) on both timelines and in a table; the latency timeline has a
// dot per attachment.
TEST(Report, MarksOnTheTimelinesAndLatencyByCreateTime) {
  RunReport r = sample();
  for (int i = 1; i <= 100; ++i) r.results.latency_by_time.push_back({i * 0.01, i == 50 ? 2.0 : 0.005});
  r.marks = {{0.3, "kill -9 etcd <member 0>"}, {0.6, "restarted"}};
  auto html = html_report(r);
  size_t labels = 0;
  for (size_t p = html.find("kill -9 etcd &lt;member 0&gt;"); p != std::string::npos;
       p = html.find("kill -9 etcd &lt;member 0&gt;", p + 1))
    ++labels;
  EXPECT_EQ(labels, 3u) << "two timelines and the table";
  EXPECT_NE(html.find("Latency by create time: create -&gt; implemented on all nodes"), std::string::npos);
  size_t dots = 0;
  for (size_t p = html.find("<circle"); p != std::string::npos; p = html.find("<circle", p + 1)) ++dots;
  EXPECT_EQ(dots, 100u);
  auto svg = latency_timeline_svg("t", r.results.latency_by_time, r.marks);
  EXPECT_NE(svg.find("1 ms"), std::string::npos);
  EXPECT_NE(svg.find("10 s"), std::string::npos) << "the axis reaches the 2 s outlier's decade";
  EXPECT_NE(latency_timeline_svg("none", {}, {}).find("no samples"), std::string::npos);
}

TEST(Report, PlotsWithoutSamples) {
  auto svg = cdf_svg("nothing", {{"a", {}, "red"}});
  EXPECT_NE(svg.find("no samples"), std::string::npos);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  auto one = cdf_svg("one", {{"a", {0.005}, "red"}});
  EXPECT_NE(one.find("<polyline"), std::string::npos);
  EXPECT_NE(one.find("1 ms"), std::string::npos);
  EXPECT_NE(one.find("10 ms"), std::string::npos);
  EXPECT_NE(timeline_svg("none", {{"a", {}, "red"}}).find("no events"), std::string::npos);
}

}  // namespace
}  // namespace kos::driver
