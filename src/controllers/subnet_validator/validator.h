// The subnet validator: of Subnets and Vpcs that conflict, at most one is ever validated,
// and `status.validated` never returns to false for the same object (UID). Conflicts:
//  - two Subnets with the same VNI and overlapping CIDRs, or in two namespaces;
//  - two Subnets with the same VNI when either is in a VPC (a VPC subnet's VNI is its own);
//  - two Subnets of one VPC with overlapping CIDRs;
//  - a Vpc and a Subnet, or two Vpcs, with the same VNI.
// A Subnet of a VPC is validated only once its Vpc (same namespace) is, when its VNI is
// not the VPC's and its CIDR lies in the VPC's cidrBlocks (if any); then its status gets
// the gateway (the first usable address), the routes through it (the VPC's cidrBlocks, or
// 0.0.0.0/0) and the VPC's routing VNI. A Vpc's status counts the Subnets that name it.
//
// It decides from *live* lists (consistent reads from the store) of the objects that could
// conflict, never from its informers: two validators' caches fill in different orders.
// Why this is enough: objects are created one after another; an object is validated only
// if the lists taken after its creation show nothing that conflicts; so of two conflicting
// objects, the lists for the later one show the earlier one, and the later one is never
// validated.
#pragma once

#include <memory>

#include "api/cidr.h"
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
  // One Vpc, by "namespace/name". Public for tests.
  Result<Requeue> reconcile_vpc(const std::string& key);

 private:
  // Why `subnet` (as the store has it, with its CIDR) cannot be validated now.
  Result<std::vector<std::string>> vpc_conflicts(api::Subnet& next, const api::Ipv4Cidr& cidr);
  Result<std::vector<std::string>> vpc_vni_users(std::uint32_t vni, const std::string& except_vpc);
  // Requeues the Subnets and Vpcs on `vni`: one that went may unblock them.
  void requeue_vni(std::uint32_t vni);

  std::shared_ptr<client::RestClient> client_;
  client::EventRecorder* events_;
  client::Informer informer_;
  client::Informer vpcs_;
  Controller controller_;
  Controller vpc_controller_;
  metrics::Family<metrics::Histogram>& validated_latency_;
  metrics::Family<metrics::Histogram>& live_list_latency_;
  metrics::Family<metrics::Counter>& outcomes_;
};

}  // namespace kos::controllers
