#include "controllers/subnet_validator/validator.h"

#include <spdlog/spdlog.h>

#include "api/cidr.h"

namespace kos::controllers {

namespace {
client::InformerOptions informer_of(api::Kind kind) {
  client::InformerOptions o;
  o.kind = kind;
  return o;
}

std::string vni_key(uint32_t vni) { return std::to_string(vni); }
// The key of the Vpc a Subnet names, or "".
std::string vpc_key(const api::Subnet& s) {
  return s.spec.vpc.empty() ? std::string() : s.metadata.namespace_ + "/" + s.spec.vpc;
}
std::string who(const api::ObjectMeta& m) { return m.namespace_ + "/" + m.name; }
}  // namespace

SubnetValidator::SubnetValidator(std::shared_ptr<client::RestClient> client,
                                 ValidatorOptions opts, client::EventRecorder* events)
    : client_(client), events_(events), informer_(client, informer_of(api::Kind::kSubnet)),
      vpcs_(client, informer_of(api::Kind::kVpc)),
      controller_("subnet-validator", opts.workers, [this](const std::string& k) { return reconcile(k); }),
      vpc_controller_("vpc-validator", 1, [this](const std::string& k) { return reconcile_vpc(k); }),
      validated_latency_(metrics::Registry::global().histogram(
          "kos_subnet_validator_create_to_validated_seconds",
          "Time from a Subnet's creation (its spec write) to its validation.")),
      live_list_latency_(metrics::Registry::global().histogram(
          "kos_subnet_validator_live_list_seconds", "Latency of the live list of one VNI's Subnets.")),
      outcomes_(metrics::Registry::global().counter(
          "kos_subnet_validator_decisions_total", "Validation decisions by outcome.", {"outcome"})) {
  informer_.indexer().add_index("vni", [](const api::AnyObject& o) {
    return std::vector<std::string>{vni_key(std::get<api::Subnet>(o).spec.vni)};
  });
  informer_.indexer().add_index("vpc", [](const api::AnyObject& o) {
    std::string k = vpc_key(std::get<api::Subnet>(o));
    return k.empty() ? std::vector<std::string>{} : std::vector<std::string>{k};
  });
  vpcs_.indexer().add_index("vni", [](const api::AnyObject& o) {
    return std::vector<std::string>{vni_key(std::get<api::Vpc>(o).spec.vni)};
  });
  // A Subnet's VPC counts it; a Subnet that goes may unblock the Subnets and the Vpcs of
  // its VNI.
  auto subnet_changed = [this](const client::ObjectPtr& o) {
    const auto& s = std::get<api::Subnet>(*o);
    controller_.enqueue(client::object_key(*o));
    if (auto k = vpc_key(s); !k.empty()) vpc_controller_.enqueue(k);
  };
  informer_.add_handlers(client::EventHandlers{
      subnet_changed,
      [subnet_changed](const client::ObjectPtr&, const client::ObjectPtr& o) { subnet_changed(o); },
      [this](const client::ObjectPtr& o, bool) {
        const auto& gone = std::get<api::Subnet>(*o);
        requeue_vni(gone.spec.vni);
        if (auto k = vpc_key(gone); !k.empty()) vpc_controller_.enqueue(k);
      }});
  // The Subnets of a VPC wait for it; a Vpc that goes may unblock the Subnets and the Vpcs
  // of its VNI.
  auto vpc_changed = [this](const client::ObjectPtr& o) {
    const std::string key = client::object_key(*o);
    vpc_controller_.enqueue(key);
    for (const auto& s : informer_.indexer().by_index("vpc", key))
      controller_.enqueue(client::object_key(*s));
  };
  vpcs_.add_handlers(client::EventHandlers{
      vpc_changed,
      [vpc_changed](const client::ObjectPtr&, const client::ObjectPtr& o) { vpc_changed(o); },
      [this](const client::ObjectPtr& o, bool) { requeue_vni(std::get<api::Vpc>(*o).spec.vni); }});
}

void SubnetValidator::requeue_vni(std::uint32_t vni) {
  for (const auto& s : informer_.indexer().by_index("vni", vni_key(vni))) controller_.enqueue(client::object_key(*s));
  for (const auto& v : vpcs_.indexer().by_index("vni", vni_key(vni))) vpc_controller_.enqueue(client::object_key(*v));
}

SubnetValidator::~SubnetValidator() { stop(); }

Result<void> SubnetValidator::start() {
  informer_.start();
  vpcs_.start();
  if (!informer_.wait_for_sync(std::chrono::minutes(2)))
    return fail(Errc::kUnavailable, "subnet validator: the Subnet informer did not sync");
  if (!vpcs_.wait_for_sync(std::chrono::minutes(2)))
    return fail(Errc::kUnavailable, "subnet validator: the Vpc informer did not sync");
  controller_.start();
  vpc_controller_.start();
  spdlog::info("subnet validator: started");
  return {};
}

void SubnetValidator::stop() {
  vpc_controller_.stop();
  controller_.stop();
  vpcs_.stop();
  informer_.stop();
}

Result<std::vector<std::string>> SubnetValidator::vpc_vni_users(std::uint32_t vni,
                                                                const std::string& except_vpc) {
  client::ListOptions lo;
  lo.field_selector = "spec.vni=" + std::to_string(vni);
  auto live = client_->list<api::Vpc>("", lo);  // consistent read: not the cache
  if (!live) return fail(live.error());
  std::vector<std::string> out;
  for (const auto& v : *live) {
    if (who(v.metadata) == except_vpc) continue;
    out.push_back("VNI " + std::to_string(vni) + " is the routing VNI of Vpc " + who(v.metadata));
  }
  return out;
}

Result<std::vector<std::string>> SubnetValidator::vpc_conflicts(api::Subnet& next,
                                                                const api::Ipv4Cidr& cidr) {
  const std::string& ns = next.metadata.namespace_;
  auto vpc = client_->get<api::Vpc>(ns, next.spec.vpc);
  if (!vpc) {
    if (vpc.error().code == Errc::kNotFound)
      return std::vector<std::string>{"Vpc " + ns + "/" + next.spec.vpc + " does not exist"};
    return fail(vpc.error());
  }
  if (!vpc->status.validated)
    return std::vector<std::string>{"Vpc " + ns + "/" + next.spec.vpc + " is not validated"};
  std::vector<std::string> errors;
  if (!vpc->spec.cidr_blocks.empty()) {
    bool inside = false;
    for (const auto& b : vpc->spec.cidr_blocks)
      if (auto bc = api::parse_cidr(b); bc && bc->contains(cidr)) inside = true;
    if (!inside) {
      std::string blocks;
      for (const auto& b : vpc->spec.cidr_blocks) blocks += (blocks.empty() ? "" : ", ") + b;
      errors.push_back("CIDR " + next.spec.ipv4 + " is not inside the cidrBlocks of Vpc " + ns + "/" +
                       next.spec.vpc + " (" + blocks + ")");
    }
  }
  client::ListOptions lo;
  lo.field_selector = "spec.vpc=" + next.spec.vpc;
  auto live = client_->list<api::Subnet>(ns, lo);  // consistent read: not the cache
  if (!live) return fail(live.error());
  for (const auto& other : *live) {
    if (other.metadata.name == next.metadata.name) continue;
    auto oc = api::parse_cidr(other.spec.ipv4);
    if (oc && oc->overlaps(cidr))
      errors.push_back("CIDR overlaps with " + who(other.metadata) + "'s (" + other.spec.ipv4 +
                       ") in Vpc " + next.spec.vpc);
  }
  if (errors.empty()) {
    next.status.gateway = api::format_ipv4(cidr.addr + 1);
    next.status.routes = vpc->spec.cidr_blocks;
    if (next.status.routes.empty()) next.status.routes = {"0.0.0.0/0"};
    next.status.routing_vni = vpc->spec.vni;
  }
  return errors;
}

Result<Requeue> SubnetValidator::reconcile_vpc(const std::string& key) {
  auto cached = vpcs_.indexer().get(key);
  if (!cached) return Requeue{};  // deleted
  const auto& vpc = std::get<api::Vpc>(*cached);
  const auto count = static_cast<std::int32_t>(informer_.indexer().by_index("vpc", key).size());
  if (vpc.status.validated) {
    if (vpc.status.subnet_count == count) return Requeue{};
    api::Vpc next = vpc;
    next.status.subnet_count = count;
    auto w = client_->update_status(next);  // a conflict: count again on fresh state
    if (!w && w.error().code != Errc::kNotFound) return fail(w.error());
    return Requeue{};
  }
  client::ListOptions lo;
  lo.field_selector = "spec.vni=" + std::to_string(vpc.spec.vni);
  auto live = client_->list<api::Vpc>("", lo);  // consistent read: not the cache
  if (!live) return fail(live.error());
  const api::Vpc* self = nullptr;
  std::vector<std::string> errors;
  for (const auto& v : *live) {
    if (who(v.metadata) == key) self = &v;
    else errors.push_back("VNI " + std::to_string(vpc.spec.vni) + " is also the routing VNI of Vpc " +
                          who(v.metadata));
  }
  if (!self || self->metadata.uid != vpc.metadata.uid) return Requeue{};  // gone or replaced
  if (self->status.validated) return Requeue{};
  auto subnets = client_->list<api::Subnet>("", lo);
  if (!subnets) return fail(subnets.error());
  for (const auto& s : *subnets)
    errors.push_back("VNI " + std::to_string(vpc.spec.vni) + " is used by Subnet " + who(s.metadata));

  api::Vpc next = *self;
  next.status.validated = errors.empty();
  next.status.errors = errors;
  next.status.subnet_count = count;
  if (next.status == self->status) return Requeue{};
  auto written = client_->update_status(next);
  if (!written) {
    if (written.error().code == Errc::kNotFound) return Requeue{};
    return fail(written.error());
  }
  if (errors.empty()) {
    outcomes_.with({"validated"}).inc();
    spdlog::info("subnet validator: validated vpc={} vni={}", key, vpc.spec.vni);
    if (events_) events_->event(api::AnyObject(*written), "Normal", "Validated",
                                "Vpc on routing VNI " + std::to_string(vpc.spec.vni) + " is valid");
  } else {
    outcomes_.with({"conflict"}).inc();
    spdlog::info("subnet validator: not validated vpc={} errors={}", key, errors.front());
    if (events_) events_->event(api::AnyObject(*written), "Warning", "ValidationFailed", errors.front());
  }
  return Requeue{};
}

Result<Requeue> SubnetValidator::reconcile(const std::string& key) {
  auto cached = informer_.indexer().get(key);
  if (!cached) return Requeue{};  // deleted
  const auto& subnet = std::get<api::Subnet>(*cached);
  if (subnet.status.validated) return Requeue{};  // never revoked for the same UID
  auto cidr = api::parse_cidr(subnet.spec.ipv4);
  if (!cidr) return Requeue{};  // the API server rejects these; nothing to decide

  client::ListOptions lo;
  lo.field_selector = "spec.vni=" + std::to_string(subnet.spec.vni);
  auto t0 = std::chrono::steady_clock::now();
  auto live = client_->list<api::Subnet>("", lo);  // consistent read: not the cache
  live_list_latency_.get().observe(std::chrono::steady_clock::now() - t0);
  if (!live) return fail(live.error());

  // The subject as the store has it now (the cache may lag).
  const api::Subnet* self = nullptr;
  for (const auto& s : *live)
    if (s.metadata.namespace_ == subnet.metadata.namespace_ && s.metadata.name == subnet.metadata.name)
      self = &s;
  if (!self || self->metadata.uid != subnet.metadata.uid) return Requeue{};  // gone or replaced
  if (self->status.validated) return Requeue{};

  std::vector<std::string> errors;
  for (const auto& other : *live) {
    if (&other == self) continue;
    std::string who = other.metadata.namespace_ + "/" + other.metadata.name;
    if (other.metadata.namespace_ != self->metadata.namespace_) {
      errors.push_back("same VNI but different namespace wrt " + who);
      continue;
    }
    if (!self->spec.vpc.empty() || !other.spec.vpc.empty()) {
      errors.push_back("same VNI as " + who + ": a subnet of a VPC needs a VNI of its own");
      continue;
    }
    auto oc = api::parse_cidr(other.spec.ipv4);
    if (oc && oc->overlaps(*cidr))
      errors.push_back("CIDR overlaps with " + who + "'s (" + other.spec.ipv4 + ")");
  }
  auto vpc_users = vpc_vni_users(self->spec.vni, "");
  if (!vpc_users) return fail(vpc_users.error());
  errors.insert(errors.end(), vpc_users->begin(), vpc_users->end());

  api::Subnet next = *self;
  if (!self->spec.vpc.empty() && errors.empty()) {
    auto more = vpc_conflicts(next, *cidr);
    if (!more) return fail(more.error());
    errors = std::move(*more);
  }
  next.status.validated = errors.empty();
  next.status.errors = errors;
  if (next.status == self->status) return Requeue{};
  auto written = client_->update_status(next);  // resourceVersion precondition from the live read
  if (!written) {
    if (written.error().code == Errc::kNotFound) return Requeue{};
    return fail(written.error());  // a conflict: decide again on fresh state
  }
  if (errors.empty()) {
    outcomes_.with({"validated"}).inc();
    if (auto t = self->extended_metadata.write_time(api::section::kSpec))
      validated_latency_.get().observe(std::chrono::system_clock::now() - *t);
    spdlog::info("subnet validator: validated subnet={} vni={} cidr={}", key, self->spec.vni,
                 self->spec.ipv4);
    if (events_) events_->event(api::AnyObject(*written), "Normal", "Validated",
                                "Subnet " + self->spec.ipv4 + " on VNI " + std::to_string(self->spec.vni) + " is valid");
  } else {
    outcomes_.with({"conflict"}).inc();
    spdlog::info("subnet validator: not validated subnet={} errors={}", key, errors.front());
    if (events_) events_->event(api::AnyObject(*written), "Warning", "ValidationFailed", errors.front());
  }
  return Requeue{};
}

}  // namespace kos::controllers
