// For the agent's tests: a real API server (client/test_server.h) with the subnet validator
// and the IPAM running in process, as every agent test needs them.
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "agent/agent.h"
#include "client/test_server.h"
#include "controllers/ipam/ipam.h"
#include "controllers/subnet_validator/validator.h"

namespace kos::agent {

// Reaches the agent's informer handlers, to deliver an event at a chosen moment.
class AgentTestPeer {
 public:
  static const client::Informer* informer(Agent& a, uint32_t vni) {
    std::lock_guard lk(a.mu_);
    auto it = a.vni_informers_.find(vni);
    return it == a.vni_informers_.end() ? nullptr : it->second.get();
  }
  static void deliver(Agent& a, uint32_t vni, const client::Informer* from, const client::ObjectPtr& obj) {
    a.on_object(vni, from, obj, true);
  }
  // Nothing queued, delayed or being reconciled.
  static bool idle(Agent& a) { return a.controller_.queue().idle(); }
  // The revision the local informer has reached.
  static uint64_t local_revision(Agent& a) { return client::revision_of(a.local_.resource_version()); }
  static std::set<uint32_t> holders(Agent& a, const std::string& key) {
    std::lock_guard lk(a.mu_);
    auto it = a.holders_.find(key);
    return it == a.holders_.end() ? std::set<uint32_t>{} : it->second;
  }
};

}  // namespace kos::agent

namespace kos::agent::testing {

class ControllersTest : public client::testing::ApiServerTest {
 protected:
  void SetUp() override {
    ApiServerTest::SetUp();
    c_ = client();
    validator_ = std::make_unique<controllers::SubnetValidator>(c_);
    ASSERT_TRUE(validator_->start().has_value());
    ipam_ = std::make_unique<controllers::Ipam>(c_);
    ASSERT_TRUE(ipam_->start().has_value());
  }
  // Derived fixtures stop their agents first.
  void TearDown() override {
    if (ipam_) ipam_->stop();
    if (validator_) validator_->stop();
    ApiServerTest::TearDown();
  }

  std::shared_ptr<client::RestClient> c_;
  std::unique_ptr<controllers::SubnetValidator> validator_;
  std::unique_ptr<controllers::Ipam> ipam_;
};

}  // namespace kos::agent::testing
