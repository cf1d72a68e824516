#include "controllers/subnet_validator/validator.h"

#include <spdlog/spdlog.h>

#include "api/cidr.h"

namespace kos::controllers {

namespace {
client::InformerOptions subnet_informer() {
  client::InformerOptions o;
  o.kind = api::Kind::kSubnet;
  return o;
}

std::string vni_key(uint32_t vni) { return std::to_string(vni); }
}  // namespace

SubnetValidator::SubnetValidator(std::shared_ptr<client::RestClient> client,
                                 ValidatorOptions opts, client::EventRecorder* events)
    : client_(client), events_(events), informer_(client, subnet_informer()),
      controller_("subnet-validator", opts.workers, [this](const std::string& k) { return reconcile(k); }),
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
  informer_.add_handlers(client::EventHandlers{
      [this](const client::ObjectPtr& o) { controller_.enqueue(client::object_key(*o)); },
      [this](const client::ObjectPtr&, const client::ObjectPtr& o) {
        controller_.enqueue(client::object_key(*o));
      },
      // A Subnet that goes may unblock the others of its VNI.
      [this](const client::ObjectPtr& o, bool) {
        const auto& gone = std::get<api::Subnet>(*o);
        for (const auto& other : informer_.indexer().by_index("vni", vni_key(gone.spec.vni)))
          controller_.enqueue(client::object_key(*other));
      }});
}

SubnetValidator::~SubnetValidator() { stop(); }

Result<void> SubnetValidator::start() {
  informer_.start();
  if (!informer_.wait_for_sync(std::chrono::minutes(2)))
    return fail(Errc::kUnavailable, "subnet validator: the Subnet informer did not sync");
  controller_.start();
  spdlog::info("subnet validator: started");
  return {};
}

void SubnetValidator::stop() {
  controller_.stop();
  informer_.stop();
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
    auto oc = api::parse_cidr(other.spec.ipv4);
    if (oc && oc->overlaps(*cidr))
      errors.push_back("CIDR overlaps with " + who + "'s (" + other.spec.ipv4 + ")");
  }

  api::Subnet next = *self;
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
