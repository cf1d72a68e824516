// The API server's watch memory budget (--watch-memory-budget): all watches together queue
// at most that much. A watcher that does not read, or whose initial state does not fit,
// gets 410 Gone (its client relists) and is closed; a watcher that keeps up gets every
// event. Without the budget each watch could queue 16 MiB: a thousand stuck watchers,
// 16 GiB.
#include <chrono>
#include <string>

#include <gtest/gtest.h>

#include "test/integration/harness.h"
#include "test/integration/raw_http.h"

namespace kos::testing {
namespace {

using namespace std::chrono_literals;

constexpr char kNaPath[] = "/apis/network.example.com/v1alpha1/namespaces/budget/networkattachments";
constexpr char kSubnetPath[] = "/apis/network.example.com/v1alpha1/namespaces/budget/subnets";
const std::string kPad(60000, 'x');  // each event line carries about 60 KB

std::string attachment(const std::string& name, const std::string& round) {
  return R"({"apiVersion":"network.example.com/v1alpha1","kind":"NetworkAttachment","metadata":{"name":")" +
         name + R"(","annotations":{"pad":")" + kPad + R"(","round":")" + round +
         R"("}},"spec":{"subnet":"s1","node":"n1"}})";
}

// One request, waited for: the server's answer has `status` (" 201 ", " 200 ").
::testing::AssertionResult request(const ApiServerProcess& server, const std::string& method,
                                   const std::string& target, const std::string& body,
                                   const std::string& status) {
  RawHttp r(server.url(), target, {method, body, 0, server.kubeconfig().string()});
  if (!r.read_until("\r\n\r\n", 10s) || r.data().substr(0, 20).find(status) == std::string::npos)
    return ::testing::AssertionFailure() << method << " " << target << ": " << r.data().substr(0, 400);
  return ::testing::AssertionSuccess();
}

std::string resource_version_of(const ApiServerProcess& server, const std::string& target) {
  RawHttp r(server.url(), target, {"GET", "", 0, server.kubeconfig().string()});
  EXPECT_TRUE(r.read_until("\"resourceVersion\":\"", 10s)) << r.data();
  auto at = r.data().find("\"resourceVersion\":\"") + 19;
  r.read_until("\"", 1s);
  return r.data().substr(at, r.data().find('"', at) - at);
}

class WatchBudgetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(server_.start(), "");
    ASSERT_TRUE(request(server_, "POST", kSubnetPath,
                        R"({"apiVersion":"network.example.com/v1alpha1","kind":"Subnet","metadata":{"name":"s1"},"spec":{"vni":7,"ipv4":"10.7.0.0/16"}})",
                        " 201 "));
  }
  ApiServerProcess server_{Backend::kSqlite, {"--watch-memory-budget", "4Mi"}};
};

TEST_F(WatchBudgetTest, AWatcherThatDoesNotReadIsClosedAndOneThatKeepsUpGetsEverything) {
  const std::string url = server_.url();
  const std::string kc = server_.kubeconfig().string();
  ASSERT_TRUE(request(server_, "POST", kNaPath, attachment("big", "r0"), " 201 "));
  const std::string rv = resource_version_of(server_, std::string(kNaPath) + "/big");
  const std::string watch = std::string(kNaPath) + "?watch=1&resourceVersion=" + rv;
  // A tiny receive window: the slow watcher's events pile up in the server at once.
  RawHttp slow(url, watch, {"GET", "", 4096, kc});
  RawHttp fast(url, watch, {"GET", "", 0, kc});
  ASSERT_TRUE(slow.read_until("\r\n\r\n", 10s));
  ASSERT_TRUE(fast.read_until("\r\n\r\n", 10s));

  // 250 events of 60 KB: 15 MB, within one watch's own 16 MiB queue limit, far over the
  // 4 MiB budget.
  constexpr int kRounds = 250;
  for (int i = 1; i <= kRounds; ++i) {
    const std::string round = "r" + std::to_string(i);
    ASSERT_TRUE(request(server_, "PUT", std::string(kNaPath) + "/big", attachment("big", round), " 200 "));
    ASSERT_TRUE(fast.read_until("\"round\":\"" + round + "\"", 10s))
        << "the watcher that keeps up lost event " << round << "; tail: "
        << fast.data().substr(fast.data().size() > 600 ? fast.data().size() - 600 : 0);
  }
  EXPECT_EQ(fast.count("\"type\":\"MODIFIED\""), static_cast<size_t>(kRounds));
  EXPECT_EQ(fast.count("\"type\":\"ERROR\""), 0u);

  // The slow watcher: closed, its last line a 410 Status, not every event delivered.
  ASSERT_TRUE(slow.read_to_end(60s)) << "the watcher over budget was not closed";
  EXPECT_NE(slow.data().find("\"type\":\"ERROR\""), std::string::npos);
  EXPECT_NE(slow.data().find("\"code\":410"), std::string::npos);
  EXPECT_LT(slow.count("\"type\":\"MODIFIED\""), static_cast<size_t>(kRounds));
  std::printf("[ budget ] 4 MiB budget: the reading watcher got %d of %d events; the one that "
              "did not read got %zu, then 410\n",
              kRounds, kRounds, slow.count("\"type\":\"MODIFIED\""));
}

TEST_F(WatchBudgetTest, AnInitialStateOverBudgetGets410AndOtherWatchesGoOn) {
  const std::string url = server_.url();
  const std::string kc = server_.kubeconfig().string();
  // 200 attachments of 60 KB: a 12 MB initial state.
  for (int i = 0; i < 200; ++i)
    ASSERT_TRUE(request(server_, "POST", kNaPath, attachment("na" + std::to_string(i), "r0"), " 201 "));
  RawHttp subnets(url, std::string(kSubnetPath) + "?watch=1", {"GET", "", 0, kc});
  ASSERT_TRUE(subnets.read_until("\"type\":\"ADDED\"", 10s)) << subnets.data();

  RawHttp big(url, std::string(kNaPath) + "?watch=1", {"GET", "", 4096, kc});
  ASSERT_TRUE(big.read_to_end(60s)) << "the watch over budget was not closed";
  EXPECT_NE(big.data().find("\"code\":410"), std::string::npos) << big.data().substr(0, 300);
  EXPECT_LT(big.count("\"type\":\"ADDED\""), 200u);

  // The other watch goes on, and a paged list (what an informer does after a 410) works.
  ASSERT_TRUE(request(server_, "PATCH", std::string(kSubnetPath) + "/s1",
                      R"({"metadata":{"labels":{"after":"budget"}}})", " 200 "));
  EXPECT_TRUE(subnets.read_until("\"after\":\"budget\"", 10s)) << subnets.data();
  RawHttp page(url, std::string(kNaPath) + "?limit=50", {"GET", "", 0, kc});
  EXPECT_TRUE(page.read_until("\"continue\"", 10s)) << page.data().substr(0, 300);
  std::printf("[ budget ] a 12 MB initial state under a 4 MiB budget: %zu ADDED sent, then 410\n",
              big.count("\"type\":\"ADDED\""));
}

}  // namespace
}  // namespace kos::testing
