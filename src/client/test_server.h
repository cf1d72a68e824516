// Test fixture: a real API server in process, on the embedded store in a temporary
// directory (behind a FaultStore, for tests that inject store faults), on a port chosen at
// run time.
#pragma once

#include <gtest/gtest.h>

#include "apiserver/server.h"
#include "client/rest_client.h"
#include "store/fault_store.h"
#include "store/sqlite/sqlite_store.h"
#include "test/support/process.h"

namespace kos::client::testing {

class ApiServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store::SqliteOptions so;
    so.path = (dir_.path() / "kos.db").string();
    so.compaction_interval = std::chrono::milliseconds(0);
    faults_ = new store::FaultStore(*store::SqliteStore::open(so));
    store_.reset(faults_);
    apiserver::ServerOptions opts;
    opts.port = 0;
    opts.worker_threads = 8;
    opts.cache.history = 50;  // a short window: resuming after a gap needs a re-list
    auto s = apiserver::ApiServer::start(*store_, opts);
    ASSERT_TRUE(s.has_value()) << s.error().message;
    server_ = std::move(*s);
  }
  void TearDown() override {
    if (server_) server_->stop();
  }
  RestConfig config() const {
    RestConfig c;
    c.server = server_->url();
    c.host = "127.0.0.1";
    c.port = server_->port();
    return c;
  }
  std::shared_ptr<RestClient> client(double qps = 0, const TransportOptions& to = {}) {
    ClientOptions o;
    o.qps = qps;
    return std::make_shared<RestClient>(*Transport::create(config(), to), o);
  }

  // The server's store: SQLite behind a FaultStore, so tests can inject store errors,
  // delays and lagging watches under the API server.
  store::FaultStore& faults() { return *faults_; }

  kos::testing::TempDir dir_{"kos-client-test"};
  store::FaultStore* faults_ = nullptr;  // owned by store_
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<apiserver::ApiServer> server_;
};

}  // namespace kos::client::testing
