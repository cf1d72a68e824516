// For the agent's tests: a real API server (client/test_server.h) with the subnet validator
// and the IPAM running in process, as every agent test needs them.
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "client/test_server.h"
#include "controllers/ipam/ipam.h"
#include "controllers/subnet_validator/validator.h"

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
