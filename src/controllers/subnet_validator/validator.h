// The subnet validator: of Subnets that conflict (same VNI with overlapping CIDRs, or the
// same VNI in two namespaces), at most one is ever validated, and `status.validated` never
// returns to false for the same object (UID).
//
// It decides from a *live* list of the Subnets with the same VNI (a consistent read from
// the store), never from its informer: two validators' caches fill in different orders.
// Why this is enough: Subnets are created one after another; a Subnet is validated only
// if a list taken after its creation shows no conflicting Subnet; so of two conflicting
// Subnets, the list for the later one shows the earlier one, and the later one is never
// validated.
#pragma once

#include <memory>

#include "client/event_recorder.h"
#include "client/informer.h"
#include "controllers/controller.h"

namespace kos::controllers {

struct ValidatorOptions {
  int workers = 2;
};

class SubnetValidator {
 public:
  SubnetValidator(std::shared_ptr<client::RestClient> client, ValidatorOptions opts = {},
                  client::EventRecorder* events = nullptr);
  ~SubnetValidator();
  // Starts the informer, waits for it to sync, starts the workers.
  Result<void> start();
  void stop();

  // One Subnet, by "namespace/name". Public for tests.
  Result<Requeue> reconcile(const std::string& key);

 private:
  std::shared_ptr<client::RestClient> client_;
  client::EventRecorder* events_;
  client::Informer informer_;
  Controller controller_;
  metrics::Family<metrics::Histogram>& validated_latency_;
  metrics::Family<metrics::Histogram>& live_list_latency_;
  metrics::Family<metrics::Counter>& outcomes_;
};

}  // namespace kos::controllers
