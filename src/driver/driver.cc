#include "driver/driver.h"

#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include "agent/implementation_log.h"
#include "api/cidr.h"
#include "api/names.h"
#include "client/informer.h"
#include "client/rest_client.h"
#include "driver/plan.h"
#include "driver/tracker.h"

namespace kos::driver {

namespace {

using SteadyClock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// A fixed pool of threads running submitted jobs in submission order.
class WorkPool {
 public:
  explicit WorkPool(int threads) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
  }
  ~WorkPool() {
    {
      std::lock_guard lk(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  void submit(std::function<void()> job) {
    {
      std::lock_guard lk(mu_);
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
  }
  // Waits until every submitted job has finished.
  void wait_idle() {
    std::unique_lock lk(mu_);
    idle_cv_.wait(lk, [&] { return jobs_.empty() && running_ == 0; });
  }
  size_t backlog() {
    std::lock_guard lk(mu_);
    return jobs_.size();
  }

 private:
  void work() {
    std::unique_lock lk(mu_);
    while (true) {
      cv_.wait(lk, [&] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      ++running_;
      lk.unlock();
      job();
      lk.lock();
      --running_;
      if (jobs_.empty() && running_ == 0) idle_cv_.notify_all();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::deque<std::function<void()>> jobs_;
  int running_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

struct Network {
  uint32_t vni = 0;
  uint32_t domain = 0;  // what makes nodes relevant: the VNI, or its VPC's routing VNI
  std::string ns, subnet, vpc;
  api::Ipv4Cidr cidr;
  uint32_t slots = 0;
};

// An agent's implementation log, polled over HTTP.
struct Endpoint {
  std::string url;
  std::shared_ptr<client::Transport> transport;
  uint64_t next = 0;
  uint64_t overflows = 0;     // pages that said records were dropped
  uint64_t errors = 0;        // polls that failed
  std::string last_error;
};

Result<client::RestConfig> endpoint_config(const std::string& url) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0)
    return fail(Errc::kInvalid, "--agent-endpoints " + url + ": expected http://HOST:PORT");
  std::string rest = url.substr(scheme.size());
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  auto colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0 || rest.find('/') != std::string::npos)
    return fail(Errc::kInvalid, "--agent-endpoints " + url + ": expected http://HOST:PORT");
  auto port = api::parse_decimal(rest.substr(colon + 1), 65535);
  if (!port || *port == 0) return fail(Errc::kInvalid, "--agent-endpoints " + url + ": invalid port");
  client::RestConfig c;
  c.host = rest.substr(0, colon);
  if (c.host.size() > 2 && c.host.front() == '[' && c.host.back() == ']') c.host = c.host.substr(1, c.host.size() - 2);
  c.port = static_cast<uint16_t>(*port);
  c.server = "http://" + rest;
  return c;
}

std::string random_run_id(std::mt19937_64& rng) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "r%06llx", static_cast<unsigned long long>(rng() & 0xFFFFFF));
  return buf;
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string join(const std::vector<std::string>& v, const char* sep = ",") {
  std::string out;
  for (const auto& x : v) out += (out.empty() ? "" : sep) + x;
  return out;
}

class Driver {
 public:
  Driver(const DriverOptions& o, const std::atomic<bool>& stop)
      : o_(o), stop_(stop),
        rng_(o.seed ? o.seed : std::random_device{}()),
        tracker_([&] {
          TrackerOptions t;
          t.measure_implemented = !o.agent_endpoints.empty();
          t.measure_tested = o.ping;
          t.measure_policy = o.security_groups > 0;
          t.stage_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(o.stage_timeout);
          return t;
        }()) {}

  Result<RunReport> run();

 private:
  Result<void> connect();
  Result<void> resolve_nodes();
  Result<void> plan_networks();
  Result<void> create_subnets();
  Result<void> start_informer();
  Result<void> start_endpoints();
  void poll_endpoints(bool discard);
  void schedule();
  void cooldown();
  void cleanup();
  void tick_loop();
  void print_progress(bool final_line);
  RunReport make_report();

  // The create and delete jobs (on the pool).
  struct Live {
    std::string key, ns, name;
    size_t net = 0;
    SteadyClock::time_point started;  // scheduled time
    std::shared_future<void> created;
  };
  void create_job(const Live& l, const std::string& node, bool measured, SteadyClock::time_point due,
                  std::shared_ptr<std::promise<void>> done);
  void delete_job(const Live& l, bool measured);
  // One line of the --ledger: op "create" or "delete", how the call ended.
  void note(const char* op, const Live& l, std::chrono::system_clock::time_point at, const Result<void>& r);
  std::mutex ledger_mu_;
  std::ofstream ledger_;
  bool delete_oldest(bool measured);  // mu_ held by the caller? no: takes mu_

  const DriverOptions& o_;
  const std::atomic<bool>& stop_;
  std::mt19937_64 rng_;
  std::string run_id_;
  std::string vpc_name(uint32_t i) const { return run_id_ + "-vpc-" + std::to_string(i + 1); }
  std::string group_name(size_t j) const { return run_id_ + "-sg-" + std::to_string(j + 1); }
  std::shared_ptr<client::RestClient> client_;
  std::vector<std::string> nodes_;
  std::vector<Network> nets_;
  Tracker tracker_;
  std::unique_ptr<client::Informer> informer_;
  std::vector<Endpoint> endpoints_;
  std::unique_ptr<WorkPool> pool_;

  std::mutex mu_;  // guards the slot model, the lag samples and the peers
  std::vector<size_t> free_slots_;  // network index, once per free slot
  std::deque<Live> live_;           // oldest first
  std::vector<double> lag_;         // seconds, measured creates
  std::map<uint32_t, std::map<std::string, std::string>> ready_peers_;  // vni -> key -> ipv4
  size_t node_rr_ = 0;

  TimePoint origin_{};
  SteadyClock::time_point origin_steady_{};
  std::atomic<int> phase_{0};  // 0 setup, 1 warm-up, 2 cruise, 3 cool-down, 4 clean-up
  std::atomic<bool> ticking_{false};
  std::thread ticker_;
  bool tty_ = false;
  double last_rate_ = 0;
};

Result<void> Driver::connect() {
  client::ClientOptions co;
  co.qps = 0;  // the driver sets its own pace
  auto c = client::RestClient::from_kubeconfig(o_.kubeconfig, co);
  if (!c) return fail(c.error());
  client_ = *c;
  return {};
}

Result<void> Driver::resolve_nodes() {
  if (!o_.nodes.empty()) nodes_ = o_.nodes;
  else if (!o_.node_prefix.empty())
    for (uint32_t i = 0; i < o_.node_count; ++i) nodes_.push_back(o_.node_prefix + "-" + std::to_string(i));
  else {
    client::ListOptions lo;
    lo.label_selector = o_.node_selector;
    auto l = client_->list(client::ResourceRef{"", "v1", "nodes", false}, "", lo);
    if (!l) {
      if (l.error().code == Errc::kNotFound)
        return fail(Errc::kInvalid,
                    "--node-selector: this API server serves no Node objects (KOS has none); name the nodes with "
                    "--nodes or --node-prefix/--node-count");
      return fail(Errc::kUnavailable, "--node-selector: listing nodes failed: " + l.error().message);
    }
    for (const auto& item : l->items)
      if (const auto* md = item.as_object().if_contains("metadata"))
        if (const auto* name = md->as_object().if_contains("name"))
          if (name->is_string()) nodes_.emplace_back(name->get_string());
    std::sort(nodes_.begin(), nodes_.end());
    if (nodes_.empty()) return fail(Errc::kInvalid, "--node-selector " + o_.node_selector + " matches no node");
  }
  return {};
}

Result<void> Driver::plan_networks() {
  auto slots = slot_distribution(o_.vnis, o_.slots_top, o_.slots_exponent);
  if (!slots) return fail(slots.error());
  auto base = api::parse_ipv4(o_.cidr_base);
  if (!base) return fail(Errc::kInvalid, "--cidr-base: " + base.error().message);
  auto cidrs = layout_subnets(*slots, *base);
  if (!cidrs) return fail(Errc::kInvalid, "--cidr-base: " + cidrs.error().message);
  uint32_t vni_base = o_.vni_base;
  if (vni_base == 0) vni_base = 1 + static_cast<uint32_t>(rng_() % (api::kMaxVni - o_.vnis - o_.vpcs + 1));
  for (uint32_t i = 0; i < o_.vnis; ++i) {
    Network n;
    n.vni = vni_base + i;
    n.domain = n.vni;
    n.ns = o_.namespaces[i % o_.namespaces.size()];
    if (o_.vpcs > 0) {
      // A VPC's subnets share its namespace.
      const uint32_t v = i % o_.vpcs;
      n.vpc = vpc_name(v);
      n.domain = vni_base + o_.vnis + v;
      n.ns = o_.namespaces[v % o_.namespaces.size()];
    }
    n.subnet = run_id_ + "-net-" + std::to_string(i + 1);
    n.cidr = (*cidrs)[i];
    n.slots = (*slots)[i];
    for (uint32_t s = 0; s < n.slots; ++s) free_slots_.push_back(i);
    nets_.push_back(n);
  }
  return {};
}

Result<void> Driver::create_subnets() {
  std::map<std::string, std::pair<std::string, uint32_t>> vpcs;  // name -> (namespace, VNI)
  for (const auto& n : nets_)
    if (!n.vpc.empty()) vpcs[n.vpc] = {n.ns, n.domain};
  for (const auto& [name, where] : vpcs) {
    api::Vpc v;
    v.metadata.namespace_ = where.first;
    v.metadata.name = name;
    v.metadata.labels[kRunLabel] = run_id_;
    v.spec.vni = where.second;
    auto r = client_->create(v);
    if (!r) return fail(r.error().code, "creating VPC " + where.first + "/" + name + " (VNI " +
                                            std::to_string(where.second) + "): " + r.error().message);
  }
  std::set<std::string> group_namespaces;
  for (const auto& n : nets_) group_namespaces.insert(n.ns);
  for (const auto& ns : group_namespaces) {
    for (uint32_t j = 0; j < o_.security_groups; ++j) {
      api::SecurityGroup g;
      g.metadata.namespace_ = ns;
      g.metadata.name = group_name(j);
      g.metadata.labels[kRunLabel] = run_id_;
      g.spec.ingress = {{"tcp", {"22"}, {{"", g.metadata.name}}}};
      g.spec.egress = {{"any", {}, {{"0.0.0.0/0", ""}}}};
      auto r = client_->create(g);
      if (!r) return fail(r.error().code, "creating SecurityGroup " + ns + "/" + g.metadata.name + ": " + r.error().message);
    }
  }
  for (const auto& n : nets_) {
    api::Subnet s;
    s.metadata.namespace_ = n.ns;
    s.metadata.name = n.subnet;
    s.metadata.labels[kRunLabel] = run_id_;
    s.spec.vni = n.vni;
    s.spec.ipv4 = n.cidr.to_string();
    s.spec.vpc = n.vpc;
    auto r = client_->create(s);
    if (!r) return fail(r.error().code, "creating subnet " + n.ns + "/" + n.subnet + " (VNI " + std::to_string(n.vni) +
                                            ", " + s.spec.ipv4 + "): " + r.error().message);
  }
  // The subnet validator must pass them before IPAM hands out addresses. It may take a
  // while for thousands: give up only when it makes no progress for 60 s.
  auto deadline = SteadyClock::now() + 60s;
  size_t last_validated = 0;
  std::set<std::string> nss(o_.namespaces.begin(), o_.namespaces.end());
  while (true) {
    size_t validated = 0;
    for (const auto& ns : nss) {
      client::ListOptions lo;
      lo.label_selector = std::string(kRunLabel) + "=" + run_id_;
      // From the server's cache (a consistent read of thousands of subnets, several times a
      // second, kept an API server busy): it catches up, and this only waits for it.
      lo.resource_version = "0";
      auto l = client_->list<api::Subnet>(ns, lo);
      if (!l) return fail(l.error().code, "listing the run's subnets: " + l.error().message);
      for (const auto& s : *l) {
        if (s.status.validated) ++validated;
        else if (!s.status.errors.empty())
          return fail(Errc::kConflict, "subnet " + ns + "/" + s.metadata.name + " was not validated: " +
                                           join(s.status.errors, "; ") + " (another subnet uses VNI " +
                                           std::to_string(s.spec.vni) + "? choose another --vni-base)");
      }
    }
    if (validated == nets_.size()) return {};
    if (validated > last_validated) {
      last_validated = validated;
      deadline = SteadyClock::now() + 60s;
    }
    if (stop_) return fail(Errc::kCancelled, "stopped while waiting for the subnets to be validated");
    if (SteadyClock::now() > deadline)
      return fail(Errc::kTimeout, std::to_string(nets_.size() - validated) + " of " + std::to_string(nets_.size()) +
                                      " subnets were not validated, and none for 60 s: is `kos controller-manager` "
                                      "(subnet-validator) running?");
    // Polling the validator's progress, bounded above; a list of thousands costs the server.
    std::this_thread::sleep_for(nets_.size() > 1000 ? 1s : 100ms);
  }
}

Result<void> Driver::start_informer() {
  client::InformerOptions io;
  io.kind = api::Kind::kNetworkAttachment;
  std::set<std::string> nss(o_.namespaces.begin(), o_.namespaces.end());
  if (nss.size() == 1) io.ns = *nss.begin();
  io.label_selector = std::string(kRunLabel) + "=" + run_id_;
  informer_ = std::make_unique<client::Informer>(client_, io);
  auto seen = [this](const client::ObjectPtr& o) {
    const auto& na = std::get<api::NetworkAttachment>(*o);
    tracker_.observe(na, std::chrono::system_clock::now());
    if (o_.ping && !na.status.ifc_name.empty() && !na.status.ipv4.empty()) {
      std::lock_guard lk(mu_);
      ready_peers_[na.status.address_vni][client::object_key(*o)] = na.status.ipv4;
    }
  };
  informer_->add_handlers({seen, [seen](const client::ObjectPtr&, const client::ObjectPtr& o) { seen(o); }, nullptr});
  informer_->start();
  if (!informer_->wait_for_sync(30s))
    return fail(Errc::kUnavailable, "the attachment informer did not sync within 30 s");
  return {};
}

Result<void> Driver::start_endpoints() {
  for (const auto& url : o_.agent_endpoints) {
    auto cfg = endpoint_config(url);
    if (!cfg) return fail(cfg.error());
    client::TransportOptions to;
    to.user_agent = "kos-driver";
    auto t = client::Transport::create(*cfg, to);
    if (!t) return fail(t.error());
    Endpoint e;
    e.url = url;
    e.transport = *t;
    endpoints_.push_back(std::move(e));
  }
  // Skip what the logs hold from before this run; and check that every endpoint answers.
  poll_endpoints(true);
  for (const auto& e : endpoints_)
    if (e.errors > 0)
      return fail(Errc::kUnavailable, "agent endpoint " + e.url + ": " + e.last_error +
                                          " (is the agent or `kos simulate` running with --metrics-listen?)");
  return {};
}

void Driver::poll_endpoints(bool discard) {
  constexpr size_t kPage = agent::ImplementationLog::kMaxLimit;
  for (auto& e : endpoints_) {
    for (int pages = 0; pages < 100; ++pages) {
      client::HttpRequest req;
      req.target = std::string(agent::kImplementationsPath) + "?since=" + std::to_string(e.next) +
                   "&limit=" + std::to_string(kPage);
      req.timeout = 5s;
      auto r = e.transport->request_sync(req);
      if (!r || r->status != 200) {
        ++e.errors;
        e.last_error = !r ? r.error().message : "HTTP " + std::to_string(r->status) + ": " + r->body.substr(0, 200);
        break;
      }
      auto page = agent::page_from_json(r->body);
      if (!page) {
        ++e.errors;
        e.last_error = page.error().message;
        break;
      }
      if (page->dropped && !discard) {
        ++e.overflows;
        spdlog::warn("driver: the implementation log of {} dropped records before seq {}: some implementations "
                     "were missed (poll more often with --poll-interval)", e.url, e.next);
      }
      e.next = page->next;
      if (!discard)
        for (const auto& rec : page->items) tracker_.implemented(rec.what);
      if (page->items.size() < kPage) break;
    }
  }
}

void Driver::create_job(const Live& l, const std::string& node, bool measured, SteadyClock::time_point due,
                        std::shared_ptr<std::promise<void>> done) {
  const auto& net = nets_[l.net];
  api::NetworkAttachment na;
  na.metadata.namespace_ = l.ns;
  na.metadata.name = l.name;
  na.metadata.labels[kRunLabel] = run_id_;
  na.spec.node = node;
  na.spec.subnet = net.subnet;
  const std::string group =
      o_.security_groups > 0 ? group_name(std::hash<std::string>{}(l.name) % o_.security_groups) : std::string();
  if (!group.empty()) na.spec.security_groups = {group};
  if (o_.ping) {
    na.spec.post_create_exec = {o_.ping_program, "${ifname}", "${ipv4}", "${mac}"};
    std::lock_guard lk(mu_);
    auto& peers = ready_peers_[net.vni];
    if (!peers.empty()) na.spec.post_create_exec.push_back(peers.rbegin()->second);
  }
  const auto start_steady = SteadyClock::now();
  const auto start = std::chrono::system_clock::now();
  if (measured) {
    std::lock_guard lk(mu_);
    lag_.push_back(std::chrono::duration<double>(start_steady - due).count());
  }
  tracker_.begin_create(l.key, net.domain, node, measured, start, group);
  auto r = client_->create(na);
  const auto end = std::chrono::system_clock::now();
  note("create", l, end, r ? Result<void>{} : Result<void>(fail(r.error())));
  if (r) tracker_.create_done(l.key, end, r->metadata.uid);
  else {
    tracker_.create_done(l.key, end, fail(r.error()));
    // Its slot frees up now, unless a delete has already taken it out of live_ (and freed it).
    std::lock_guard lk(mu_);
    auto it = std::find_if(live_.begin(), live_.end(), [&](const Live& x) { return x.key == l.key; });
    if (it != live_.end()) {
      live_.erase(it);
      free_slots_.push_back(l.net);
    }
  }
  done->set_value();
}

void Driver::delete_job(const Live& l, bool measured) {
  l.created.wait();  // never before its create (it was submitted earlier, so it is running or done)
  tracker_.begin_delete(l.key);
  {
    std::lock_guard lk(mu_);
    ready_peers_[nets_[l.net].vni].erase(l.key);
  }
  const auto start = std::chrono::system_clock::now();
  auto r = client_->remove<api::NetworkAttachment>(l.ns, l.name);
  const auto end = std::chrono::system_clock::now();
  note("delete", l, end, r);
  tracker_.delete_done(l.key, measured, start, end, r);
  if (r || r.error().code == Errc::kNotFound) return;
  spdlog::warn("driver: deleting {} failed: {}", l.key, r.error().message);
}

void Driver::note(const char* op, const Live& l, std::chrono::system_clock::time_point at, const Result<void>& r) {
  if (o_.ledger.empty()) return;
  boost::json::object line{
      {"t_ms", std::chrono::duration_cast<std::chrono::milliseconds>(at.time_since_epoch()).count()},
      {"op", op},
      {"namespace", l.ns},
      {"name", l.name},
      {"ok", r.has_value()}};
  if (!r) {
    line["code"] = std::string(errc_name(r.error().code));
    line["error"] = r.error().message;
  }
  std::lock_guard lk(ledger_mu_);
  ledger_ << boost::json::serialize(line) << '\n';
  ledger_.flush();
}

bool Driver::delete_oldest(bool measured) {
  Live victim;
  {
    std::lock_guard lk(mu_);
    if (live_.empty()) return false;
    victim = live_.front();
    live_.pop_front();
    free_slots_.push_back(victim.net);
  }
  pool_->submit([this, victim, measured] { delete_job(victim, measured); });
  return true;
}

void Driver::schedule() {
  const double mean_gap = 1.0 / o_.rate;
  std::exponential_distribution<double> exp_gap(o_.rate);
  const uint64_t cap = o_.max_live ? std::min<uint64_t>(o_.max_live, free_slots_.size()) : free_slots_.size();
  const auto warmup_end = origin_steady_ + o_.warmup;
  const auto cruise_end = warmup_end + o_.cruise;
  auto next = origin_steady_;
  uint64_t seq = 0, measured_created = 0;
  phase_ = o_.warmup.count() > 0 ? 1 : 2;
  while (!stop_) {
    const bool measured = next >= warmup_end;
    if (o_.count > 0 ? measured_created >= o_.count : next >= cruise_end) break;
    while (!stop_ && SteadyClock::now() < next)  // the schedule (interruptible by a signal)
      std::this_thread::sleep_for(std::min<SteadyClock::duration>(next - SteadyClock::now(), 50ms));
    if (stop_) break;
    phase_ = measured ? 2 : 1;
    const auto now = SteadyClock::now();
    if (o_.lifetime.count() > 0)
      while (true) {
        bool expired = false;
        {
          std::lock_guard lk(mu_);
          expired = !live_.empty() && live_.front().started + o_.lifetime <= now;
        }
        if (!expired || !delete_oldest(measured)) break;
      }
    bool full;
    {
      std::lock_guard lk(mu_);
      full = live_.size() >= cap || free_slots_.empty();
    }
    if (full) delete_oldest(measured);
    Live l;
    {
      std::lock_guard lk(mu_);
      if (free_slots_.empty()) {  // every slot's attachment is being deleted: wait a little
        next += std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(mean_gap));
        continue;
      }
      size_t i = rng_() % free_slots_.size();
      l.net = free_slots_[i];
      free_slots_[i] = free_slots_.back();
      free_slots_.pop_back();
    }
    ++seq;
    l.ns = nets_[l.net].ns;
    l.name = run_id_ + "-" + std::to_string(seq);
    l.key = l.ns + "/" + l.name;
    l.started = next;
    std::string node = o_.round_robin ? nodes_[node_rr_++ % nodes_.size()] : nodes_[rng_() % nodes_.size()];
    auto done = std::make_shared<std::promise<void>>();
    l.created = done->get_future().share();
    {
      std::lock_guard lk(mu_);
      live_.push_back(l);
    }
    pool_->submit([this, l, node, measured, due = next, done] { create_job(l, node, measured, due, done); });
    if (measured) ++measured_created;
    double gap = o_.arrivals == "poisson" ? exp_gap(rng_) : mean_gap;
    next += std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(gap));
  }
  pool_->wait_idle();
}

void Driver::cooldown() {
  phase_ = 3;
  // Stopped by a signal: a short cool-down only; a signal during the cool-down ends it.
  const bool stopped = stop_;
  const auto deadline = SteadyClock::now() + (stopped ? std::min<std::chrono::microseconds>(o_.cooldown, 2s) : o_.cooldown);
  while (SteadyClock::now() < deadline && !tracker_.settled() && (stopped || !stop_))
    std::this_thread::sleep_for(50ms);  // waiting for notifications and implementation records (ticker)
}

void Driver::cleanup() {
  phase_ = 4;
  std::set<std::string> nss(o_.namespaces.begin(), o_.namespaces.end());
  client::ListOptions lo;
  lo.label_selector = std::string(kRunLabel) + "=" + run_id_;
  if (o_.keep) {
    for (const auto& ns : nss)
      std::fprintf(stderr, "kos driver: kept the run's objects: kubectl delete networkattachments,subnets -n %s -l %s=%s\n",
                   ns.c_str(), kRunLabel, run_id_.c_str());
    return;
  }
  std::atomic<size_t> deleted{0}, failed{0};
  for (const auto& ns : nss) {
    auto l = client_->list<api::NetworkAttachment>(ns, lo);
    if (!l) {
      std::fprintf(stderr, "kos driver: clean-up: listing attachments in %s failed: %s\n", ns.c_str(), l.error().message.c_str());
      continue;
    }
    for (const auto& na : *l)
      pool_->submit([this, ns, name = na.metadata.name, &deleted, &failed] {
        auto r = client_->remove<api::NetworkAttachment>(ns, name);
        note("delete", Live{ns + "/" + name, ns, name, 0, {}, {}}, std::chrono::system_clock::now(), r);
        (r || r.error().code == Errc::kNotFound ? deleted : failed)++;
      });
  }
  pool_->wait_idle();
  // The run's objects of kind T in every namespace, one by one; how many went.
  auto remove_all = [&]<class T>() {
    size_t removed = 0;
    for (const auto& ns : nss) {
      auto l = client_->list<T>(ns, lo);
      if (!l) continue;
      for (const auto& x : *l) {
        auto r = client_->remove<T>(ns, x.metadata.name);
        if (r || r.error().code == Errc::kNotFound) ++removed;
        else ++failed;
      }
    }
    return removed;
  };
  const size_t subnets = remove_all.template operator()<api::Subnet>();
  const size_t vpcs = remove_all.template operator()<api::Vpc>();
  const size_t groups = remove_all.template operator()<api::SecurityGroup>();
  if (groups > 0) std::fprintf(stderr, "kos driver: clean-up: deleted %zu security groups\n", groups);
  if (vpcs > 0) std::fprintf(stderr, "kos driver: clean-up: deleted %zu VPCs\n", vpcs);
  std::fprintf(stderr, "kos driver: clean-up: deleted %zu attachments and %zu subnets%s\n", deleted.load(), subnets,
               failed ? (", " + std::to_string(failed.load()) + " deletes failed").c_str() : "");
}

void Driver::print_progress(bool final_line) {
  static const char* kPhases[] = {"setup", "warm-up", "cruise", "cool-down", "clean-up"};
  auto p = tracker_.progress();
  double t = std::chrono::duration<double>(SteadyClock::now() - origin_steady_).count();
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "[%s %6.1fs] created %llu ready %llu implemented %llu tested %llu deleted %llu live %llu "
                "failures %llu rate %.1f/s",
                kPhases[std::clamp(phase_.load(), 0, 4)], t, static_cast<unsigned long long>(p.created),
                static_cast<unsigned long long>(p.ready), static_cast<unsigned long long>(p.implemented),
                static_cast<unsigned long long>(p.tested), static_cast<unsigned long long>(p.deleted),
                static_cast<unsigned long long>(p.live),
                static_cast<unsigned long long>(p.failures), last_rate_);
  if (tty_) std::fprintf(stderr, "\r\033[K%s%s", buf, final_line ? "\n" : "");
  else std::fprintf(stderr, "%s\n", buf);
  std::fflush(stderr);
}

void Driver::tick_loop() {
  auto last_print = SteadyClock::now();
  auto last_poll = SteadyClock::now();
  uint64_t last_created = 0;
  auto rate_mark = SteadyClock::now();
  const auto print_every = tty_ ? 500ms : 5000ms;
  while (ticking_) {
    std::this_thread::sleep_for(50ms);  // the tick
    auto now = SteadyClock::now();
    if (!endpoints_.empty() && now - last_poll >= o_.poll_interval) {
      poll_endpoints(false);
      last_poll = now;
    }
    tracker_.evaluate(std::chrono::system_clock::now());
    if (now - rate_mark >= 1s) {
      auto p = tracker_.progress();
      last_rate_ = static_cast<double>(p.created + p.create_failures - last_created) /
                   std::chrono::duration<double>(now - rate_mark).count();
      last_created = p.created + p.create_failures;
      rate_mark = now;
    }
    if (o_.progress && now - last_print >= print_every) {
      print_progress(false);
      last_print = now;
    }
  }
  if (o_.progress) print_progress(true);
}

RunReport Driver::make_report() {
  RunReport r;
  r.run_id = run_id_;
  r.results = tracker_.results(origin_);
  r.measure_implemented = !o_.agent_endpoints.empty();
  r.measure_tested = o_.ping;
  r.measure_policy = o_.security_groups > 0;
  r.nodes = nodes_.size();
  r.vnis = nets_.size();
  r.target_rate = o_.rate;
  r.windows = o_.windows;
  if (!o_.marks.empty()) {
    // Lines "EPOCH_MS LABEL", written by whoever ran the driver while it ran.
    std::ifstream in(o_.marks);
    if (!in) r.notes.push_back("--marks " + o_.marks + ": cannot read it");
    int n = 0;
    const double origin_ms =
        std::chrono::duration<double, std::milli>(origin_.time_since_epoch()).count();
    for (std::string line; std::getline(in, line);) {
      ++n;
      if (line.empty()) continue;
      size_t sp = line.find(' ');
      std::optional<int64_t> ms;
      if (sp != std::string::npos && sp > 0 && sp <= 15 &&
          line.find_first_not_of("0123456789") == sp)
        ms = std::stoll(line.substr(0, sp));
      if (!ms) {
        r.notes.push_back("--marks " + o_.marks + " line " + std::to_string(n) +
                          ": expected EPOCH_MILLISECONDS LABEL, got \"" + line + "\"");
        continue;
      }
      r.marks.push_back({(static_cast<double>(*ms) - origin_ms) / 1000.0, line.substr(sp + 1)});
    }
  }
  const auto& ct = r.results.create_times;
  if (ct.size() > 1) {
    r.measured_seconds = ct.back() - ct.front();
    r.achieved_rate = r.measured_seconds > 0 ? static_cast<double>(ct.size() - 1) / r.measured_seconds : 0;
  }
  {
    std::lock_guard lk(mu_);
    r.schedule_lag = summarize(lag_);
  }
  uint64_t total_slots = 0;
  for (const auto& n : nets_) total_slots += n.slots;
  auto& p = r.parameters;
  p = {{"run id", run_id_},
       {"namespaces", join(o_.namespaces)},
       {"nodes", join(nodes_)},
       {"vnis", std::to_string(o_.vnis) + " (" + std::to_string(nets_.front().vni) + ".." + std::to_string(nets_.back().vni) + ")"},
       {"vpcs", o_.vpcs == 0 ? std::string("none (isolated subnets)") : std::to_string(o_.vpcs)},
       {"security groups", o_.security_groups == 0 ? std::string("none")
                                                   : std::to_string(o_.security_groups) + " per namespace"},
       {"slots", "top " + num(o_.slots_top) + ", exponent " + num(o_.slots_exponent) + ", total " + std::to_string(total_slots)},
       {"subnets", nets_.front().cidr.to_string() + " .. " + nets_.back().cidr.to_string()},
       {"rate", num(o_.rate) + " creates/s, " + o_.arrivals + " arrivals"},
       {"phases", "warm-up " + format_duration(o_.warmup) + ", " +
                      (o_.count ? "cruise " + std::to_string(o_.count) + " attachments" : "cruise " + format_duration(o_.cruise)) +
                      ", cool-down " + format_duration(o_.cooldown)},
       {"max live", o_.max_live ? std::to_string(o_.max_live) : "every slot (" + std::to_string(total_slots) + ")"},
       {"lifetime", o_.lifetime.count() ? format_duration(o_.lifetime) : "unlimited"},
       {"node choice", o_.round_robin ? "round robin" : "random"},
       {"ping", o_.ping ? o_.ping_program + " ${ifname} ${ipv4} ${mac} [peer ipv4]" : "off"},
       {"agent endpoints", o_.agent_endpoints.empty() ? "none" : join(o_.agent_endpoints)},
       {"poll interval", format_duration(o_.poll_interval)},
       {"stage timeout", format_duration(o_.stage_timeout)},
       {"threads", std::to_string(o_.threads)},
       {"seed", o_.seed ? std::to_string(o_.seed) : "random"},
       {"clock", "latencies start at the create call on the driver's clock; implementation times are the agents' "
                 "clocks (one machine, or clocks synchronised far better than the latencies)"}};
  if (r.measure_implemented && r.results.relevance.dropped > 0)
    r.notes.push_back(std::to_string(r.results.relevance.dropped) +
                      " relevant nodes stopped hosting the VNI before programming an attachment and were not "
                      "waited for (of " + std::to_string(r.results.relevance.required) + " relevant nodes in all)");
  for (const auto& e : endpoints_) {
    if (e.overflows)
      r.notes.push_back("the implementation log of " + e.url + " overflowed " + std::to_string(e.overflows) +
                        " times: some implementations were missed and show as timeouts");
    if (e.errors)
      r.notes.push_back(std::to_string(e.errors) + " polls of " + e.url + " failed; last: " + e.last_error);
  }
  if (r.results.status_errors)
    r.notes.push_back(std::to_string(r.results.status_errors) + " measured attachments showed status.errors at some point");
  uint64_t timeouts = 0;
  for (const auto& s : r.results.stages) timeouts += s.failures;
  if (timeouts)
    r.notes.push_back("a stage not reached within --stage-timeout (" + format_duration(o_.stage_timeout) +
                      ") of the create, or by the end of the cool-down, counts as a failure");
  return r;
}

Result<RunReport> Driver::run() {
  tty_ = isatty(STDERR_FILENO);
  run_id_ = o_.run_id.empty() ? random_run_id(rng_) : o_.run_id;
  if (auto r = connect(); !r) return fail(r.error());
  if (auto r = resolve_nodes(); !r) return fail(r.error());
  if (auto r = plan_networks(); !r) return fail(r.error());
  std::fprintf(stderr, "kos driver: run %s: %zu networks (VNIs %u..%u, %zu slots) in %s, %zu nodes, label %s=%s\n",
               run_id_.c_str(), nets_.size(), nets_.front().vni, nets_.back().vni, free_slots_.size(),
               join(o_.namespaces).c_str(), nodes_.size(), kRunLabel, run_id_.c_str());
  if (auto r = start_endpoints(); !r) return fail(r.error());
  if (!o_.ledger.empty()) {
    ledger_.open(o_.ledger, std::ios::trunc);
    if (!ledger_) return fail(Errc::kInvalid, "--ledger " + o_.ledger + ": cannot write it");
  }
  pool_ = std::make_unique<WorkPool>(o_.threads);
  Result<void> setup = create_subnets();
  if (setup) setup = start_informer();
  if (!setup) {
    cleanup();
    return fail(setup.error());
  }
  origin_ = std::chrono::system_clock::now();
  origin_steady_ = SteadyClock::now();
  ticking_ = true;
  ticker_ = std::thread([this] { tick_loop(); });
  schedule();
  cooldown();
  ticking_ = false;
  ticker_.join();
  if (!endpoints_.empty()) poll_endpoints(false);
  tracker_.evaluate(std::chrono::system_clock::now());
  tracker_.finish();
  informer_->stop();
  RunReport report = make_report();
  if (!o_.report_html.empty()) {
    std::ofstream out(o_.report_html, std::ios::trunc);
    out << html_report(report);
    if (!out) report.notes.push_back("could not write the HTML report to " + o_.report_html);
  }
  if (!o_.report_json.empty()) {
    std::ofstream out(o_.report_json, std::ios::trunc);
    out << summary_json(report);
    if (!out) report.notes.push_back("could not write the JSON summary to " + o_.report_json);
  }
  cleanup();
  pool_.reset();
  for (auto& e : endpoints_) e.transport->shutdown();
  return report;
}

}  // namespace

Result<void> validate(const DriverOptions& o) {
  auto bad = [](const std::string& m) { return fail(Errc::kInvalid, m); };
  if (o.namespaces.empty()) return bad("--namespace: at least one namespace");
  for (const auto& ns : o.namespaces)
    if (auto e = api::dns1123_label_error(ns)) return bad("--namespace " + ns + ": " + *e);
  if (!o.run_id.empty()) {
    if (auto e = api::label_value_error(o.run_id)) return bad("--run-id " + o.run_id + ": " + *e);
    if (auto e = api::dns1123_label_error(o.run_id)) return bad("--run-id " + o.run_id + ": " + *e);
    if (o.run_id.size() > 40) return bad("--run-id: at most 40 characters (names are built from it)");
  }
  if (o.vnis == 0) return bad("--vnis: at least 1");
  if (o.vnis > api::kMaxVni) return bad("--vnis: at most " + std::to_string(api::kMaxVni));
  if (o.vni_base != 0 && (o.vni_base > api::kMaxVni || o.vni_base + o.vnis + o.vpcs - 1 > api::kMaxVni))
    return bad("--vni-base: the VNIs base .. base+vnis+vpcs-1 must lie in 1.." + std::to_string(api::kMaxVni));
  if (o.vpcs > o.vnis) return bad("--vpcs: at most --vnis (each VPC has at least one subnet)");
  if (auto s = slot_distribution(o.vnis, o.slots_top, o.slots_exponent); !s)
    return bad("--slots-top/--slots-exponent: " + s.error().message);
  if (!api::parse_ipv4(o.cidr_base)) return bad("--cidr-base " + o.cidr_base + ": not an IPv4 address");
  if (!(o.rate > 0) || o.rate > 1e6) return bad("--rate: creates per second, in (0, 1000000]");
  if (o.arrivals != "steady" && o.arrivals != "poisson") return bad("--arrivals: steady or poisson");
  if (o.count == 0 && o.cruise.count() <= 0) return bad("--cruise must be positive (or give --count)");
  if (o.threads < 1 || o.threads > 1024) return bad("--threads: 1..1024");
  int node_ways = !o.nodes.empty() + !o.node_prefix.empty() + !o.node_selector.empty();
  if (node_ways == 0) return bad("name the nodes: --nodes a,b,c, or --node-prefix P --node-count N, or --node-selector");
  if (node_ways > 1) return bad("--nodes, --node-prefix and --node-selector exclude each other");
  for (const auto& n : o.nodes)
    if (auto e = api::dns1123_subdomain_error(n)) return bad("--nodes " + n + ": " + *e);
  if (!o.node_prefix.empty() && o.node_count == 0) return bad("--node-prefix needs --node-count N (N >= 1)");
  if (o.node_prefix.empty() && o.node_count != 0) return bad("--node-count needs --node-prefix");
  if (o.ping && o.ping_program.empty()) return bad("--ping needs --ping-program PATH");
  if (!o.ping && !o.ping_program.empty()) return bad("--ping-program is used only with --ping");
  if (o.ping && o.ping_program.front() != '/') return bad("--ping-program: an absolute path (agents allow-list programs by path)");
  for (const auto& e : o.agent_endpoints)
    if (auto c = endpoint_config(e); !c) return bad(c.error().message);
  if (o.poll_interval.count() <= 0) return bad("--poll-interval must be positive");
  if (o.stage_timeout.count() <= 0) return bad("--stage-timeout must be positive");
  return {};
}

Result<RunReport> run(const DriverOptions& o, const std::atomic<bool>& stop) {
  if (auto v = validate(o); !v) return fail(v.error());
  Driver d(o, stop);
  return d.run();
}

uint64_t total_failures(const RunReport& r) {
  uint64_t n = 0;
  for (Stage s : kAllStages) {
    if (s == Stage::kImplemented && !r.measure_implemented) continue;
    if (s == Stage::kTested && !r.measure_tested) continue;
    if (s == Stage::kInForce && !r.measure_policy) continue;
    if (s == Stage::kMember && !(r.measure_policy && r.measure_implemented)) continue;
    n += r.results.stages[static_cast<size_t>(s)].failures;
  }
  return n;
}

}  // namespace kos::driver
