// Two API servers on one store, the second's watch caches lagging behind (its store's
// watches hold events back, or deliver nothing for a while): what several API servers
// behind a load balancer look like to a client that moves between them.
//  - A client that wrote through the first never sees time go backwards through the
//    second: a read without a resourceVersion is fresh, a list "not older than" the
//    write's resourceVersion waits for it, a watch from before the write delivers it.
//  - An agent that restarts on the lagging server keeps the interfaces of attachments its
//    cache does not show yet (adoption reads consistently), and converges once it does.
#include <gtest/gtest.h>

#include "agent/agent.h"
#include "agent/testing.h"
#include "apiserver/server.h"
#include "client/informer.h"
#include "client/rest_client.h"
#include "controllers/ipam/ipam.h"
#include "controllers/subnet_validator/validator.h"
#include "fabric/fake/fake_fabric.h"
#include "store/borrowed_store.h"
#include "store/fault_store.h"
#include "store/sqlite/sqlite_store.h"
#include "test/support/process.h"

namespace kos::agent {
namespace {

using namespace std::chrono_literals;

class LaggingServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store::SqliteOptions so;
    so.path = (dir_.path() / "kos.db").string();
    so.compaction_interval = 0ms;
    auto s = store::SqliteStore::open(so);
    ASSERT_TRUE(s) << s.error().message;
    store_ = std::move(*s);
    for (int i = 0; i < 2; ++i) {
      faults_[i] = std::make_unique<store::FaultStore>(std::make_unique<store::BorrowedStore>(*store_));
      apiserver::ServerOptions opts;
      opts.port = 0;
      opts.worker_threads = 8;
      auto srv = apiserver::ApiServer::start(*faults_[i], opts);
      ASSERT_TRUE(srv) << srv.error().message;
      servers_[i] = std::move(*srv);
    }
    a_ = client(0);
    b_ = client(1);
    validator_ = std::make_unique<controllers::SubnetValidator>(a_);
    ASSERT_TRUE(validator_->start());
    ipam_ = std::make_unique<controllers::Ipam>(a_);
    ASSERT_TRUE(ipam_->start());
  }
  void TearDown() override {
    for (auto& ag : agents_)
      if (ag) ag->stop();
    if (ipam_) ipam_->stop();
    if (validator_) validator_->stop();
    faults_[1]->hold_watches(false);
    for (auto& s : servers_)
      if (s) s->stop();
  }

  std::shared_ptr<client::RestClient> client(int i) {
    client::RestConfig c;
    c.server = servers_[i]->url();
    c.host = "127.0.0.1";
    c.port = servers_[i]->port();
    client::ClientOptions o;
    o.qps = 0;
    return std::make_shared<client::RestClient>(*client::Transport::create(c), o);
  }

  template <class P>
  static bool eventually(P pred, std::chrono::milliseconds limit = 20s) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred()) return true;
      std::this_thread::sleep_for(10ms);  // polling what other threads do
    }
    return pred();
  }

  void subnet(const std::string& name, uint32_t vni) {
    api::Subnet s;
    s.metadata.namespace_ = "ns";
    s.metadata.name = name;
    s.spec.vni = vni;
    s.spec.ipv4 = "10.201." + std::to_string(vni) + ".0/24";
    ASSERT_TRUE(a_->create(s));
  }
  api::NetworkAttachment attachment(const std::string& name, const std::string& node) {
    api::NetworkAttachment na;
    na.metadata.namespace_ = "ns";
    na.metadata.name = name;
    na.spec.node = node;
    na.spec.subnet = "net";
    return na;
  }

  kos::testing::TempDir dir_{"kos-lagging-server"};
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<store::FaultStore> faults_[2];
  std::unique_ptr<apiserver::ApiServer> servers_[2];
  std::shared_ptr<client::RestClient> a_, b_;
  std::unique_ptr<controllers::SubnetValidator> validator_;
  std::unique_ptr<controllers::Ipam> ipam_;
  std::vector<std::unique_ptr<Agent>> agents_;
};

uint64_t rv_of(const std::string& s) { return std::stoull(s); }

TEST_F(LaggingServerTest, TimeNeverGoesBackwardsThroughTheLaggingServer) {
  subnet("net", 31);
  faults_[1]->set_watch_delay(1500ms);  // the second server's caches learn of writes 1.5 s late
  const auto ref = client::ResourceRef::of(api::Kind::kNetworkAttachment);
  for (int i = 0; i < 5; ++i) {
    std::string before;
    ASSERT_TRUE(b_->list<api::NetworkAttachment>("ns", {}, &before));
    auto made = a_->create(attachment("na-" + std::to_string(i), "n1"));
    ASSERT_TRUE(made) << made.error().message;
    const std::string rv = made->metadata.resource_version;
    // A read without a resourceVersion: from the store, fresh.
    auto got = b_->get<api::NetworkAttachment>("ns", made->metadata.name);
    ASSERT_TRUE(got) << got.error().message;
    EXPECT_GE(rv_of(got->metadata.resource_version), rv_of(rv));
    std::string list_rv;
    auto fresh = b_->list<api::NetworkAttachment>("ns", {}, &list_rv);
    ASSERT_TRUE(fresh);
    EXPECT_GE(rv_of(list_rv), rv_of(rv));
    EXPECT_EQ(fresh->size(), static_cast<size_t>(i + 1));
    // Not older than the write: the lagging server waits until its cache has it.
    client::ListOptions lo;
    lo.resource_version = rv;
    lo.resource_version_match = "NotOlderThan";
    auto page = b_->list(ref, "ns", lo);
    ASSERT_TRUE(page) << page.error().message;
    EXPECT_GE(rv_of(page->resource_version), rv_of(rv));
    EXPECT_EQ(page->items.size(), static_cast<size_t>(i + 1));
    // A watch from before the write delivers it.
    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::string> seen;
    client::ListOptions wo;
    wo.resource_version = before;
    auto stream = b_->transport()->stream(
        client::HttpRequest{"GET", ref.path("ns") + wo.query(true), "", "application/json", "application/json", 10s},
        [](unsigned, const std::string&) {},
        [&](std::string_view line) {
          std::lock_guard lk(mu);
          seen.emplace_back(line);
          cv.notify_all();
        },
        [](Result<void>) {});
    std::unique_lock lk(mu);
    EXPECT_TRUE(cv.wait_for(lk, 5s, [&] {
      for (const auto& l : seen)
        if (l.find("\"ADDED\"") != std::string::npos && l.find(made->metadata.name) != std::string::npos) return true;
      return false;
    })) << "the watch from " << before << " did not deliver " << made->metadata.name;
    lk.unlock();
    stream->cancel();
  }
}

TEST_F(LaggingServerTest, AnAgentRestartedOnTheLaggingServerKeepsWhatItsCacheDoesNotShowYet) {
  subnet("net", 32);
  fabric::FakeFabric fabric;
  AgentOptions o;
  o.node = "n1";
  o.host_ip = 0x0a000001;
  o.workers = 2;
  o.relevance_grace = 0ms;
  agents_.push_back(std::make_unique<Agent>(a_, fabric, o));
  ASSERT_TRUE(agents_.back()->start());
  // The second server stops learning of writes from here on.
  faults_[1]->hold_watches(true);
  auto made = a_->create(attachment("late", "n1"));
  ASSERT_TRUE(made);
  ASSERT_TRUE(eventually([&] { return fabric.locals().size() == 1; })) << "the first agent did not implement it";
  ASSERT_TRUE(eventually([&] {
    auto na = a_->get<api::NetworkAttachment>("ns", "late");
    return na && !na->status.host_ip.empty();
  }));
  agents_.back()->stop();
  const auto before = fabric.counts();

  // The restart lands on the lagging server, whose cache has never seen "late".
  auto cached = b_->list(client::ResourceRef::of(api::Kind::kNetworkAttachment), "ns",
                         client::ListOptions{.resource_version = std::string("0")});
  ASSERT_TRUE(cached) << cached.error().message;
  ASSERT_TRUE(cached->items.empty()) << "the second server's cache is not lagging";
  agents_.push_back(std::make_unique<Agent>(b_, fabric, o));
  ASSERT_TRUE(agents_.back()->start());
  // What a wrong agent would delete, it has deleted once its start-up work is done.
  ASSERT_TRUE(eventually([&] { return AgentTestPeer::idle(*agents_.back()); }));
  EXPECT_EQ(fabric.counts().delete_local, before.delete_local) << "a live interface was deleted";
  EXPECT_EQ(fabric.locals().size(), 1u);

  // The cache catches up: the attachment's history reaches the agent, nothing is
  // re-programmed once the agent has handled it.
  faults_[1]->hold_watches(false);
  auto na = b_->get<api::NetworkAttachment>("ns", "late");
  ASSERT_TRUE(na);
  const uint64_t latest = client::revision_of(na->metadata.resource_version);
  ASSERT_TRUE(eventually([&] {
    return AgentTestPeer::local_revision(*agents_.back()) >= latest && AgentTestPeer::idle(*agents_.back());
  }));
  EXPECT_EQ(fabric.counts().delete_local, before.delete_local);
  EXPECT_EQ(fabric.counts().create_local, before.create_local) << "re-programmed what was right";
  EXPECT_EQ(fabric.locals().size(), 1u);
}

}  // namespace
}  // namespace kos::agent
