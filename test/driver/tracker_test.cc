#include "driver/tracker.h"

#include <gtest/gtest.h>

namespace kos::driver {
namespace {

using namespace std::chrono_literals;
using Kind = agent::Implemented::Kind;

const TimePoint T0 = TimePoint(std::chrono::seconds(1700000000));

TrackerOptions opts(bool impl = true, bool tested = false) {
  TrackerOptions o;
  o.measure_implemented = impl;
  o.measure_tested = tested;
  o.stage_timeout = 10s;
  return o;
}

api::NetworkAttachment na(const std::string& name, const std::string& uid, const std::string& ipv4 = "",
                          const std::string& ifc = "") {
  api::NetworkAttachment a;
  a.metadata.namespace_ = "ns";
  a.metadata.name = name;
  a.metadata.uid = uid;
  a.status.ipv4 = ipv4;
  a.status.ifc_name = ifc;
  return a;
}

agent::Implemented rec(Kind kind, const std::string& node, const std::string& key, const std::string& uid,
                       TimePoint at, uint32_t vni = 1) {
  return agent::Implemented{kind, node, key, uid, vni, at};
}

const StageResult& stage(const Tracker::Results& r, Stage s) { return r.stages[static_cast<size_t>(s)]; }

// Creates ns/NAME (uid u-NAME) of `vni` on `node` at `at`, successfully.
void create(Tracker& t, const std::string& name, uint32_t vni, const std::string& node, TimePoint at,
            bool measured = true) {
  t.begin_create("ns/" + name, vni, node, measured, at);
  t.create_done("ns/" + name, at + 2ms, std::string("u-" + name));
}

TEST(RelevantNodes, NodesWithLiveAttachmentsOtherThanOwn) {
  EXPECT_EQ(relevant_nodes({{"a", 1}, {"b", 2}, {"c", 0}}, "a"), (std::set<std::string>{"b"}));
  EXPECT_EQ(relevant_nodes({}, "a"), (std::set<std::string>{}));
  EXPECT_EQ(relevant_nodes({{"a", 3}}, "a"), (std::set<std::string>{}));
  EXPECT_EQ(relevant_nodes({{"b", 1}, {"c", 1}}, "a"), (std::set<std::string>{"b", "c"}));
}

TEST(Tracker, StagesFromNotificationsAndTheLocalImplementation) {
  Tracker t(opts());
  create(t, "x", 1, "a", T0);
  EXPECT_FALSE(t.settled());
  t.observe(na("x", "u-x", "10.0.0.2"), T0 + 10ms);
  t.implemented(rec(Kind::kLocal, "a", "ns/x", "u-x", T0 + 15ms));
  t.observe(na("x", "u-x", "10.0.0.2", "kos0a0000000002"), T0 + 20ms);
  EXPECT_TRUE(t.settled());  // no other node hosts VNI 1: the local interface is all it takes
  auto r = t.results(T0);
  EXPECT_EQ(r.measured, 1u);
  EXPECT_EQ(stage(r, Stage::kCreate).seconds, std::vector<double>{0.002});
  EXPECT_EQ(stage(r, Stage::kAddressed).seconds, std::vector<double>{0.010});
  EXPECT_EQ(stage(r, Stage::kImplemented).seconds, std::vector<double>{0.015});
  EXPECT_EQ(stage(r, Stage::kReady).seconds, std::vector<double>{0.020});
  for (auto s : kAllStages) EXPECT_EQ(stage(r, s).failures, 0u);
  auto p = t.progress();
  EXPECT_EQ(p.created, 1u);
  EXPECT_EQ(p.ready, 1u);
  EXPECT_EQ(p.implemented, 1u);
  EXPECT_EQ(p.live, 1u);
}

TEST(Tracker, ImplementedWhenEveryRelevantNodeHasProgrammedIt) {
  Tracker t(opts());
  create(t, "y", 1, "b", T0, /*measured=*/false);  // warm-up: not counted, but makes b relevant
  create(t, "z", 2, "c", T0);                       // another VNI: c is not relevant to x
  create(t, "w", 1, "a", T0);                       // x's own node
  create(t, "x", 1, "a", T0 + 1s);
  EXPECT_EQ(t.live_nodes(1), (std::map<std::string, int>{{"a", 2}, {"b", 1}}));
  t.implemented(rec(Kind::kLocal, "a", "ns/x", "u-x", T0 + 1s + 10ms));
  t.implemented(rec(Kind::kRemote, "c", "ns/x", "u-x", T0 + 1s + 20ms));  // not required
  t.evaluate(T0 + 1s + 25ms);
  t.implemented(rec(Kind::kRemote, "a", "ns/x", "u-x", T0 + 1s + 26ms));  // own node: ignored
  // Still waiting for b (z and w have no implementation records at all).
  EXPECT_TRUE(stage(t.results(T0), Stage::kImplemented).seconds.empty());
  t.implemented(rec(Kind::kRemote, "b", "ns/x", "u-x", T0 + 1s + 30ms));
  auto r = t.results(T0);
  EXPECT_EQ(stage(r, Stage::kImplemented).seconds, std::vector<double>{0.030});
  EXPECT_EQ(r.relevance.required, 2u);  // b for x, b for w (z: none; y: warm-up)
  EXPECT_EQ(r.relevance.programmed, 1u);
  EXPECT_EQ(r.relevance.dropped, 0u);
}

TEST(Tracker, ANodeThatStopsBeingRelevantIsNotWaitedFor) {
  Tracker t(opts());
  create(t, "y", 1, "b", T0, false);
  create(t, "x", 1, "a", T0 + 1s);
  t.implemented(rec(Kind::kLocal, "a", "ns/x", "u-x", T0 + 1s + 10ms));
  t.evaluate(T0 + 1s + 20ms);
  EXPECT_TRUE(stage(t.results(T0), Stage::kImplemented).seconds.empty());  // still waiting for b
  t.begin_delete("ns/y");  // b hosts no attachment of VNI 1 any more
  t.evaluate(T0 + 1s + 40ms);
  auto r = t.results(T0);
  EXPECT_EQ(stage(r, Stage::kImplemented).seconds, std::vector<double>{0.010});
  EXPECT_EQ(r.relevance.required, 1u);
  EXPECT_EQ(r.relevance.dropped, 1u);
  EXPECT_EQ(stage(r, Stage::kImplemented).failures, 0u);
}

TEST(Tracker, ARelevantNodeThatNeverProgramsItTimesOut) {
  Tracker t(opts());
  create(t, "y", 1, "b", T0, false);
  create(t, "x", 1, "a", T0);
  t.observe(na("x", "u-x", "10.0.0.2", "kosx"), T0 + 5ms);
  t.implemented(rec(Kind::kLocal, "a", "ns/x", "u-x", T0 + 10ms));
  t.evaluate(T0 + 9s);
  EXPECT_FALSE(t.settled());
  t.evaluate(T0 + 11s);
  EXPECT_TRUE(t.settled());
  auto r = t.results(T0);
  EXPECT_EQ(stage(r, Stage::kImplemented).failures, 1u);
  ASSERT_EQ(stage(r, Stage::kImplemented).failure_samples.size(), 1u);
  EXPECT_NE(stage(r, Stage::kImplemented).failure_samples[0].find("not programmed on b"), std::string::npos)
      << stage(r, Stage::kImplemented).failure_samples[0];
  EXPECT_EQ(stage(r, Stage::kReady).failures, 0u);
  EXPECT_EQ(t.progress().failures, 1u);
}

TEST(Tracker, FinishFailsWhatIsStillOpen) {
  Tracker t(opts(true, true));
  create(t, "x", 1, "a", T0);
  t.finish();
  auto r = t.results(T0);
  EXPECT_EQ(stage(r, Stage::kAddressed).failures, 1u);
  EXPECT_EQ(stage(r, Stage::kReady).failures, 1u);
  EXPECT_EQ(stage(r, Stage::kImplemented).failures, 1u);
  EXPECT_EQ(stage(r, Stage::kTested).failures, 1u);
  EXPECT_EQ(stage(r, Stage::kCreate).failures, 0u);
  EXPECT_TRUE(t.settled());
}

TEST(Tracker, DeletedBeforeItsStagesIsCancelledNotFailed) {
  Tracker t(opts());
  create(t, "x", 1, "a", T0);
  t.observe(na("x", "u-x", "10.0.0.2"), T0 + 5ms);
  t.begin_delete("ns/x");
  t.delete_done("ns/x", true, T0 + 1s, T0 + 1s + 3ms, {});
  t.evaluate(T0 + 1h);
  auto r = t.results(T0);
  EXPECT_EQ(stage(r, Stage::kAddressed).seconds.size(), 1u);
  EXPECT_EQ(stage(r, Stage::kReady).cancelled, 1u);
  EXPECT_EQ(stage(r, Stage::kImplemented).cancelled, 1u);
  EXPECT_EQ(stage(r, Stage::kReady).failures, 0u);
  EXPECT_EQ(stage(r, Stage::kDelete).seconds, std::vector<double>{0.003});
  EXPECT_EQ(t.progress().live, 0u);
  EXPECT_TRUE(t.live_nodes(1).empty() || t.live_nodes(1).at("a") == 0);
}

TEST(Tracker, AFailedCreateCountsOnceAndIsNotLive) {
  Tracker t(opts());
  t.begin_create("ns/x", 1, "b", true, T0);
  t.create_done("ns/x", T0 + 1ms, fail(Errc::kInvalid, "bad"));
  create(t, "y", 1, "a", T0 + 1s);  // b is not relevant to y: x never existed
  t.implemented(rec(Kind::kLocal, "a", "ns/y", "u-y", T0 + 1s + 4ms));
  t.finish();
  auto r = t.results(T0);
  EXPECT_EQ(stage(r, Stage::kCreate).failures, 1u);
  EXPECT_EQ(stage(r, Stage::kCreate).seconds.size(), 1u);  // y
  EXPECT_EQ(stage(r, Stage::kImplemented).seconds, std::vector<double>{0.004});
  EXPECT_EQ(stage(r, Stage::kAddressed).failures, 1u);  // y's, at finish(); none for x
  EXPECT_EQ(t.progress().create_failures, 1u);
}

TEST(Tracker, OtherIncarnationsAndTestResults) {
  Tracker t(opts(false, true));
  create(t, "x", 1, "a", T0);
  create(t, "v", 1, "a", T0);
  t.observe(na("x", "someone-else", "10.0.0.9", "kosz"), T0 + 1ms);  // not this incarnation
  auto x = na("x", "u-x", "10.0.0.2", "kosx");
  x.status.post_create_exec_report = api::ExecReport{};
  t.observe(x, T0 + 40ms);
  auto v = na("v", "u-v", "10.0.0.3", "kosv");
  v.status.post_create_exec_report = api::ExecReport{{"/bin/ping"}, 1, {}, {}, "", "unreachable"};
  t.observe(v, T0 + 50ms);
  EXPECT_TRUE(t.settled());
  auto r = t.results(T0);
  EXPECT_EQ(stage(r, Stage::kReady).seconds, (std::vector<double>{0.040, 0.050}));
  EXPECT_EQ(stage(r, Stage::kTested).seconds, std::vector<double>{0.040});
  EXPECT_EQ(stage(r, Stage::kTested).failures, 1u);
  EXPECT_NE(stage(r, Stage::kTested).failure_samples.at(0).find("exited 1: unreachable"), std::string::npos);
}

}  // namespace
}  // namespace kos::driver
