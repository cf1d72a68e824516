#include "test/controllers/harness.h"

#include "up/credentials.h"

#include <signal.h>
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "api/cidr.h"

namespace kos::ctltest {

using namespace std::chrono_literals;

// ---- KosProcess -------------------------------------------------------------------------

KosProcess::KosProcess(std::string name, std::vector<std::string> args, fs::path log)
    : name_(std::move(name)), args_(std::move(args)), log_(std::move(log)) {}

KosProcess::~KosProcess() { kill9(); }

void KosProcess::start() {
  if (child_ && child_->running()) return;
  // The shell only redirects and then execs kos: the pid is kos's own.
  std::vector<std::string> argv = {"/bin/sh", "-c", "exec \"$@\" >>'" + log_.string() + "' 2>&1",
                                   "sh", kKos};
  argv.insert(argv.end(), args_.begin(), args_.end());
  {
    std::ofstream out(log_, std::ios::app);
    out << "==== " << name_ << " start #" << (starts_ + 1) << " ====\n";
  }
  child_ = std::make_unique<testing::ChildProcess>(argv, /*capture_stdout=*/false);
  ++starts_;
}

void KosProcess::kill9() {
  if (!child_) return;
  child_->signal(SIGKILL);
  child_->wait(std::chrono::hours(1));
}

int KosProcess::stop(std::chrono::milliseconds grace) {
  if (!child_) return -1;
  return child_->stop(grace);
}

bool KosProcess::running() { return child_ && child_->running(); }

std::optional<int> KosProcess::exit_status() {
  if (!child_) return std::nullopt;
  return child_->wait(0ms);
}

pid_t KosProcess::pid() const { return child_ ? child_->pid() : -1; }

std::string KosProcess::log_tail(size_t bytes) const {
  std::ifstream in(log_);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  if (s.size() > bytes) s = "..." + s.substr(s.size() - bytes);
  return s;
}

// ---- ApiServer --------------------------------------------------------------------------

ApiServer::ApiServer(std::vector<std::string> extra_flags, std::string log_level) {
  std::vector<std::string> args = {"--log-level", log_level, "apiserver", "--listen", "127.0.0.1:0",
                                   "--data-dir", (dir_.path() / "data").string(),
                                   "--write-kubeconfig", kubeconfig().string(),
                                   // Informers of the tests must never need a re-list.
                                   "--watch-cache-history", "200000"};
  args.insert(args.end(), extra_flags.begin(), extra_flags.end());
  proc_ = std::make_unique<KosProcess>("apiserver", args, dir_.path() / "apiserver.log");
}

ApiServer::~ApiServer() {
  proc_->kill9();
  const char* keep = std::getenv("KOS_TEST_KEEP_LOGS");
  if (!keep || !*keep) return;
  std::error_code ec;
  fs::path to = fs::path(keep) / dir_.path().filename();
  fs::create_directories(to, ec);
  for (const auto& e : fs::directory_iterator(dir_.path(), ec))
    if (e.path().extension() == ".log") fs::copy_file(e.path(), to / e.path().filename(), ec);
}

std::string ApiServer::start() {
  std::error_code ec;
  fs::create_directories(dir_.path() / "data", ec);
  proc_->start();
  const auto deadline = Clock::now() + 30s;
  while (!fs::exists(kubeconfig())) {
    if (!proc_->running()) return "kos apiserver exited while starting:\n" + proc_->log_tail();
    if (Clock::now() >= deadline) return "kos apiserver wrote no kubeconfig within 30 s";
    std::this_thread::sleep_for(10ms);  // polling for a file, bounded by the deadline
  }
  return {};
}

fs::path ApiServer::credential(const std::string& role, const std::string& scope) {
  const fs::path path = dir_.path() / "credentials" / (role + (scope.empty() ? "" : "-" + scope) + ".kubeconfig");
  if (fs::exists(path)) return path;
  auto admin = client::load_kubeconfig(kubeconfig().string());
  if (!admin) throw std::runtime_error("credential: " + admin.error().message);
  up::CredentialRequest r;
  r.pki_dir = (dir_.path() / "data" / "pki").string();
  r.role = role;
  r.scope = scope;
  r.server = admin->server;
  if (auto w = up::write_credential_kubeconfig(r, path.string()); !w)
    throw std::runtime_error("credential: " + w.error().message);
  return path;
}

std::string ApiServer::token(const std::string& role, const std::string& scope) {
  up::CredentialRequest r;
  r.pki_dir = (dir_.path() / "data" / "pki").string();
  r.role = role;
  r.scope = scope;
  r.token = true;
  r.server = "https://unused";
  const fs::path path = dir_.path() / "credentials" / ("token-" + role + ".kubeconfig");
  if (auto w = up::write_credential_kubeconfig(r, path.string()); !w)
    throw std::runtime_error("token: " + w.error().message);
  auto k = client::load_kubeconfig(path.string());
  if (!k) throw std::runtime_error("token: " + k.error().message);
  return k->bearer_token;
}

std::shared_ptr<client::RestClient> ApiServer::client(double qps) {
  client::ClientOptions o;
  o.qps = qps;
  auto c = client::RestClient::from_kubeconfig(kubeconfig().string(), o);
  if (!c) throw std::runtime_error("client: " + c.error().message);
  return *c;
}

std::unique_ptr<KosProcess> controller_manager(ApiServer& server, const std::string& name,
                                               const std::string& controllers, int workers,
                                               std::vector<std::string> extra) {
  const char* env_level = std::getenv("KOS_TEST_CONTROLLER_LOG_LEVEL");
  const std::string log_level = env_level && *env_level ? env_level : "info";
  std::vector<std::string> args = {"--log-level", log_level, "controller-manager", "--kubeconfig",
                                   server.credential("controller").string(),
                                   "--controllers", controllers, "--workers", std::to_string(workers)};
  args.insert(args.end(), extra.begin(), extra.end());
  return std::make_unique<KosProcess>(name, args, server.dir() / (name + ".log"));
}

Controllers start_controllers(ApiServer& server, int ipams) {
  Controllers c;
  c.validator = controller_manager(server, "validator", "subnet-validator");
  for (int i = 0; i < ipams; ++i)
    c.ipams.push_back(controller_manager(server, "ipam-" + std::to_string(i), "ipam"));
  c.validator->start();
  for (auto& p : c.ipams) p->start();
  return c;
}

std::string Controllers::logs(ApiServer& server) const {
  std::string s = ctltest::logs({&server.process(), validator.get()});
  for (const auto& p : ipams) s += ctltest::logs({p.get()});
  return s;
}

testing::RunResult ipam_check(ApiServer& server, bool repair) {
  std::vector<std::string> argv = {kKos, "--log-level", "warn", "ipam-check", "--kubeconfig",
                                   server.kubeconfig().string()};
  if (repair) argv.push_back("--repair");
  testing::RunOptions o;
  o.timeout = 60s;
  return testing::run(argv, o);
}

std::string describe(const testing::RunResult& r) {
  std::string out = "exit " + std::to_string(r.exit_code) + (r.timed_out ? " (timed out)" : "");
  auto cut = [](const std::string& s) { return s.size() > 4000 ? s.substr(0, 4000) + "..." : s; };
  out += "\nstdout:\n" + cut(r.out) + "\nstderr:\n" + cut(r.err);
  return out;
}

std::string logs(std::initializer_list<KosProcess*> procs) {
  std::string out;
  for (auto* p : procs) {
    if (!p) continue;
    out += "\n---- " + p->name() + " (" + p->log().string() + "), last lines ----\n" + p->log_tail();
  }
  return out;
}

// ---- objects ----------------------------------------------------------------------------

api::Subnet make_subnet(const std::string& ns, const std::string& name, const std::string& cidr,
                        uint32_t vni) {
  api::Subnet s;
  s.metadata.namespace_ = ns;
  s.metadata.name = name;
  s.spec.ipv4 = cidr;
  s.spec.vni = vni;
  return s;
}

api::NetworkAttachment make_attachment(const std::string& ns, const std::string& name,
                                       const std::string& subnet, const std::string& node) {
  api::NetworkAttachment na;
  na.metadata.namespace_ = ns;
  na.metadata.name = name;
  na.spec.subnet = subnet;
  na.spec.node = node;
  return na;
}

uint32_t usable_addresses(const std::string& cidr) {
  auto c = api::parse_cidr(cidr);
  if (!c) throw std::runtime_error("bad CIDR " + cidr);
  return c->last_usable() - c->first_usable() + 1;
}

void parallel_for(int n, int threads, const std::function<void(int)>& fn) {
  std::atomic<int> next{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&] {
      for (int i = next++; i < n; i = next++) fn(i);
    });
  for (auto& t : ts) t.join();
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ---- AddressWatcher ---------------------------------------------------------------------

namespace {
client::InformerOptions na_informer() {
  client::InformerOptions o;
  o.kind = api::Kind::kNetworkAttachment;
  return o;
}
}  // namespace

AddressWatcher::AddressWatcher(std::shared_ptr<client::RestClient> client, bool track_locks)
    : informer_(client, na_informer()) {
  if (track_locks) {
    client::InformerOptions o;
    o.kind = api::Kind::kIPLock;
    lock_informer_ = std::make_unique<client::Informer>(client, o);
    auto life = [this](const client::ObjectPtr& o, bool added) {
      const auto& m = std::get<api::IPLock>(*o).metadata;
      int64_t rv = std::stoll(m.resource_version);
      std::lock_guard lk(mu_);
      auto& l = locks_[m.uid];
      l.name = m.name;
      (added ? l.born : l.died) = rv;
    };
    lock_informer_->add_handlers(client::EventHandlers{
        [=](const client::ObjectPtr& o) { life(o, true); }, nullptr,
        [=](const client::ObjectPtr& o, bool) { life(o, false); }});
  }
  auto na = [](const client::ObjectPtr& o) -> const api::NetworkAttachment& {
    return std::get<api::NetworkAttachment>(*o);
  };
  informer_.add_handlers(client::EventHandlers{
      [=, this](const client::ObjectPtr& o) { apply(na(o)); },
      [=, this](const client::ObjectPtr& old_obj, const client::ObjectPtr& o) {
        // Same key, another incarnation: the old one is gone.
        if (na(old_obj).metadata.uid != na(o).metadata.uid) remove(na(old_obj));
        apply(na(o));
      },
      [=, this](const client::ObjectPtr& o, bool) { remove(na(o)); }});
}

AddressWatcher::~AddressWatcher() { stop(); }

bool AddressWatcher::start(std::chrono::milliseconds timeout) {
  if (lock_informer_) {
    lock_informer_->start();
    if (!lock_informer_->wait_for_sync(timeout)) return false;
  }
  informer_.start();
  return informer_.wait_for_sync(timeout);
}

void AddressWatcher::stop() {
  informer_.stop();
  if (lock_informer_) lock_informer_->stop();
}

std::string AddressWatcher::lock_state(const std::string& lock_uid, const std::string& rv) const {
  auto it = locks_.find(lock_uid);
  if (it == locks_.end()) return "lock never seen";
  const auto& l = it->second;
  int64_t at = std::stoll(rv);
  std::string s = "lock " + l.name + " created at " + std::to_string(l.born);
  if (l.died) s += ", deleted at " + std::to_string(l.died);
  if (l.died && l.died <= at) return s + ": ALREADY DELETED at " + rv;
  return s + ": live at " + rv;
}

void AddressWatcher::apply(const api::NetworkAttachment& na) {
  ++events_;
  std::lock_guard lk(mu_);
  const std::string& uid = na.metadata.uid;
  names_[uid] = na.metadata.namespace_ + "/" + na.metadata.name;
  lock_uids_[uid] = na.status.lock_uid;
  std::optional<AddrKey> now;
  if (!na.status.ipv4.empty()) now = AddrKey{na.status.address_vni, na.status.ipv4};
  auto it = held_.find(uid);
  if (it != held_.end() && (!now || it->second != *now)) {
    if (now) {
      ++readdressed_;
      if (readdress_log_.size() < 20)
        readdress_log_.push_back(names_[uid] + " uid=" + uid + " " + std::to_string(it->second.first) + "/" +
                                 it->second.second + " -> " + std::to_string(now->first) + "/" + now->second +
                                 " at resourceVersion " + na.metadata.resource_version);
    }
    holders_[it->second].erase(uid);
    if (holders_[it->second].empty()) holders_.erase(it->second);
    held_.erase(it);
  }
  if (!now) return;
  if (!held_.count(uid)) addressed_at_[uid] = na.metadata.resource_version;
  held_[uid] = *now;
  auto& h = holders_[*now];
  h.insert(uid);
  if (h.size() > 1) {
    Violation v{now->first, now->second, na.metadata.resource_version, {}};
    for (const auto& u : h)
      v.holders.push_back(names_[u] + " uid=" + u + " addressed at " + addressed_at_[u] + " lockUID=" + lock_uids_[u]);
    violations_.push_back(std::move(v));
  }
}

void AddressWatcher::remove(const api::NetworkAttachment& na) {
  ++events_;
  std::lock_guard lk(mu_);
  const std::string& uid = na.metadata.uid;
  auto it = held_.find(uid);
  if (it != held_.end()) {
    holders_[it->second].erase(uid);
    if (holders_[it->second].empty()) holders_.erase(it->second);
    held_.erase(it);
  }
  names_.erase(uid);
  lock_uids_.erase(uid);
  addressed_at_.erase(uid);
}

std::vector<AddressWatcher::Violation> AddressWatcher::violations() const {
  std::lock_guard lk(mu_);
  return violations_;
}

std::string AddressWatcher::describe_violations(size_t max) const {
  std::lock_guard lk(mu_);
  std::string out = std::to_string(violations_.size()) + " moments with a shared address";
  for (size_t i = 0; i < violations_.size() && i < max; ++i) {
    const auto& v = violations_[i];
    out += "\n  vni " + std::to_string(v.vni) + " ip " + v.ipv4 + " at resourceVersion " +
           v.resource_version + ":";
    for (const auto& h : v.holders) {
      out += "\n    [" + h + "]";
      if (lock_informer_) out += " " + lock_state(h.substr(h.rfind("lockUID=") + 8), v.resource_version);
    }
  }
  return out;
}

std::vector<std::string> AddressWatcher::readdress_log() const {
  std::lock_guard lk(mu_);
  return readdress_log_;
}

size_t AddressWatcher::addressed() const {
  std::lock_guard lk(mu_);
  return held_.size();
}

}  // namespace kos::ctltest
