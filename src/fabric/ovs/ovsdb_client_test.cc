// The OVSDB client against a real ovsdb-server (Debian's openvswitch-switch), started by
// the test on a fresh database of the Open_vSwitch schema in a directory of its own: no
// root, nothing shared with a system OVS.
#include "fabric/ovs/ovsdb_client.h"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "test/support/process.h"
#include "test/support/skip.h"

namespace kos::fabric::ovs {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

constexpr const char* kSchema = "/usr/share/openvswitch/vswitch.ovsschema";

class OvsdbClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists("/usr/sbin/ovsdb-server") || !std::filesystem::exists(kSchema))
      KOS_SKIP_UNLESS_CI() << "needs ovsdb-server (openvswitch-switch)";
    db_ = (dir_.path() / "conf.db").string();
    auto made = kos::testing::run({"ovsdb-tool", "create", db_, kSchema});
    ASSERT_EQ(made.exit_code, 0) << made.err;
    start_server();
  }
  void start_server() {
    const auto d = dir_.path();
    server_ = std::make_unique<kos::testing::ChildProcess>(std::vector<std::string>{
        "/usr/sbin/ovsdb-server", db_, "--remote=punix:" + (d / "db.sock").string(),
        "--unixctl=" + (d / "ovsdb.ctl").string(), "--no-chdir", "--log-file=" + (d / "ovsdb.log").string()}, false);
    target_ = "unix:" + (d / "db.sock").string();
    for (int i = 0; i < 200 && !std::filesystem::exists(d / "db.sock"); ++i) std::this_thread::sleep_for(10ms);
    ASSERT_TRUE(std::filesystem::exists(d / "db.sock")) << "ovsdb-server did not create its socket";
  }
  std::unique_ptr<OvsdbClient> client() {
    auto c = OvsdbClient::connect(target_, 5s);
    EXPECT_TRUE(c) << c.error().message;
    return c ? std::move(*c) : nullptr;
  }

  kos::testing::TempDir dir_{"kos-ovsdb"};
  std::string db_, target_;
  std::unique_ptr<kos::testing::ChildProcess> server_;
};

TEST_F(OvsdbClientTest, TransactsAndMonitors) {
  auto c = client();
  ASSERT_TRUE(c);
  auto dbs = c->list_dbs(5s);
  ASSERT_TRUE(dbs) << dbs.error().message;
  EXPECT_NE(std::find(dbs->begin(), dbs->end(), "Open_vSwitch"), dbs->end());

  // Watch the Bridge table from the start.
  std::mutex mu;
  std::vector<json::object> updates;
  std::condition_variable cv;
  auto initial = c->monitor("Open_vSwitch", "bridges", json::object{{"Bridge", json::object{{"columns", json::array{"name"}}}}},
                            [&](const json::object& u) {
                              std::lock_guard lk(mu);
                              updates.push_back(u);
                              cv.notify_all();
                            },
                            5s);
  ASSERT_TRUE(initial) << initial.error().message;
  EXPECT_TRUE(initial->empty()) << json::serialize(*initial);

  // What ovs-vsctl add-br does at the database: the root row, a bridge in its set.
  auto r = c->transact("Open_vSwitch",
                       json::array{json::object{{"op", "insert"}, {"table", "Open_vSwitch"}, {"row", json::object{}},
                                                {"uuid-name", "root"}},
                                   json::object{{"op", "insert"},
                                                {"table", "Bridge"},
                                                {"row", json::object{{"name", "kos"}, {"fail_mode", "secure"}}},
                                                {"uuid-name", "br"}},
                                   json::object{{"op", "mutate"},
                                                {"table", "Open_vSwitch"},
                                                {"where", json::array{}},
                                                {"mutations", json::array{json::array{
                                                                  "bridges", "insert",
                                                                  json::array{"set", json::array{json::array{"named-uuid", "br"}}}}}}}},
                       5s);
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->size(), 3u);
  EXPECT_TRUE(r->at(1).as_object().contains("uuid"));
  {
    std::unique_lock lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, 5s, [&] { return !updates.empty(); })) << "no update notification";
    const auto& rows = updates[0].at("Bridge").as_object();
    ASSERT_EQ(rows.size(), 1u);
    EXPECT_EQ(rows.begin()->value().at("new").at("name"), "kos");
  }
  auto sel = c->transact("Open_vSwitch",
                         json::array{json::object{{"op", "select"}, {"table", "Bridge"}, {"where", json::array{}},
                                                  {"columns", json::array{"name", "fail_mode"}}}},
                         5s);
  ASSERT_TRUE(sel) << sel.error().message;
  EXPECT_EQ(sel->at(0).at("rows").as_array().at(0).at("fail_mode"), "secure");
  // The same as seen by OVS's own tool.
  auto tool = kos::testing::run({"ovs-vsctl", "--db=" + target_, "--no-wait", "list-br"});
  EXPECT_EQ(tool.out, "kos\n") << tool.err;
}

TEST_F(OvsdbClientTest, FailedOperationsAndABrokenConnectionAreErrors) {
  auto c = client();
  ASSERT_TRUE(c);
  auto bad = c->transact("Open_vSwitch",
                         json::array{json::object{{"op", "insert"}, {"table", "Bridge"}, {"row", json::object{{"nonsense", 1}}}}},
                         5s);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, Errc::kInvalid);
  EXPECT_NE(bad.error().message.find("operation 0"), std::string::npos) << bad.error().message;
  auto nodb = c->transact("No_Such_DB", json::array{}, 5s);
  EXPECT_FALSE(nodb);

  std::atomic<bool> dropped{false};
  c->on_disconnect([&] { dropped = true; });
  server_->signal(SIGKILL);
  (void)server_->wait(5s);
  for (int i = 0; i < 500 && !dropped; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(dropped);
  EXPECT_FALSE(c->connected());
  auto after = c->list_dbs(5s);
  ASSERT_FALSE(after);
  EXPECT_EQ(after.error().code, Errc::kUnavailable);
  // A new client is the reconnect.
  std::filesystem::remove(dir_.path() / "db.sock");
  start_server();
  auto again = client();
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->list_dbs(5s));
  EXPECT_EQ(OvsdbClient::connect("unix:" + (dir_.path() / "nobody.sock").string(), 1s).error().code, Errc::kUnavailable);
  EXPECT_EQ(OvsdbClient::connect("http://x", 1s).error().code, Errc::kInvalid);
}

}  // namespace
}  // namespace kos::fabric::ovs
