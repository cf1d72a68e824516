#include "test/integration/kos_cluster.h"

#include <signal.h>

#include "test/integration/harness.h"

namespace kos::testing {

using namespace std::chrono_literals;

KosCluster::KosCluster(KosClusterOptions opts) : opts_(std::move(opts)) {}

KosCluster::~KosCluster() {
  for (auto& cm : cms_)
    if (cm) cm->stop();
  for (auto& s : servers_)
    if (s) s->stop();
}

std::string KosCluster::start() {
  try {
    etcd_ = std::make_unique<EtcdCluster>(opts_.etcd_members);
  } catch (const std::exception& e) {
    return e.what();
  }
  servers_.resize(static_cast<size_t>(opts_.apiservers));
  std::string all;
  for (int i = 0; i < opts_.apiservers; ++i) {
    ports_.push_back(free_loopback_port());
    // One at a time: the first makes the PKI the others use.
    if (auto e = start_apiserver(i); !e.empty()) return e;
    all += (i ? "," : "") + apiserver_url(i);
  }
  for (auto [role, file] : {std::pair{"admin", admin_kubeconfig()}, std::pair{"controller", controller_kubeconfig()}}) {
    auto r = run({KOS_BINARY, "credentials", "create", "--pki-dir", pki_dir().string(), "--role", role, "--server",
                  all, "--out", file.string()});
    if (r.exit_code != 0) return "kos credentials create: " + describe(r);
  }
  cms_.resize(static_cast<size_t>(opts_.controller_managers));
  for (int i = 0; i < opts_.controller_managers; ++i) {
    cm_metrics_ports_.push_back(free_loopback_port());
    start_controller_manager(i);
  }
  client::ClientOptions co;
  co.qps = 0;
  co.timeout = 10s;
  auto c = client::RestClient::from_kubeconfig(admin_kubeconfig().string(), co);
  if (!c) return c.error().message;
  client_ = *c;
  return "";
}

std::string KosCluster::apiserver_url(int i) const {
  return "https://127.0.0.1:" + std::to_string(ports_.at(static_cast<size_t>(i)));
}

std::string KosCluster::start_apiserver(int i) {
  const auto kubeconfig = dir_.path() / ("apiserver-" + std::to_string(i) + ".kubeconfig");
  std::filesystem::remove(kubeconfig);
  servers_[static_cast<size_t>(i)] = std::make_unique<ChildProcess>(std::vector<std::string>{
      KOS_BINARY, "--log-level", "warn", "apiserver", "--listen", "127.0.0.1:" + std::to_string(ports_[static_cast<size_t>(i)]),
      "--store", "etcd:" + etcd_->endpoints(), "--pki-dir", pki_dir().string(), "--data-dir",
      (dir_.path() / ("data-" + std::to_string(i))).string(), "--write-kubeconfig", kubeconfig.string(),
      "--audit-log-path", "-"});
  if (!eventually([&] { return std::filesystem::exists(kubeconfig); }, 30s))
    return "apiserver " + std::to_string(i) + " wrote no kubeconfig";
  return "";
}

void KosCluster::kill_apiserver(int i) {
  auto& s = servers_.at(static_cast<size_t>(i));
  if (!s) return;
  s->signal(SIGKILL);
  s->wait(10s);
  s.reset();
}

std::string KosCluster::restart_apiserver(int i) {
  kill_apiserver(i);
  return start_apiserver(i);
}

pid_t KosCluster::apiserver_pid(int i) const {
  const auto& s = servers_.at(static_cast<size_t>(i));
  return s ? s->pid() : -1;
}

void KosCluster::start_controller_manager(int i) {
  cms_[static_cast<size_t>(i)] = std::make_unique<ChildProcess>(std::vector<std::string>{
      KOS_BINARY, "--log-level", "warn", "controller-manager", "--kubeconfig", controller_kubeconfig().string(),
      "--leader-elect", "--leader-elect-lease-duration", opts_.lease_duration, "--leader-elect-renew-deadline",
      opts_.renew_deadline, "--leader-elect-retry-period", opts_.retry_period, "--metrics-listen",
      "127.0.0.1:" + std::to_string(cm_metrics_ports_[static_cast<size_t>(i)])});
}

void KosCluster::kill_controller_manager(int i) {
  auto& cm = cms_.at(static_cast<size_t>(i));
  if (!cm) return;
  cm->signal(SIGKILL);
  cm->wait(10s);
  cm.reset();
}

int KosCluster::stop_controller_manager(int i) {
  auto& cm = cms_.at(static_cast<size_t>(i));
  if (!cm) return -1;
  int status = cm->stop();
  cm.reset();
  return status;
}

std::string KosCluster::lease_holder() const {
  if (!client_) return "";
  auto l = client_->get(client::ResourceRef::leases(), "kube-system", "kos-controller-manager");
  if (!l) return "";
  return str_at(*l, "spec.holderIdentity");
}

int KosCluster::leader() const {
  auto h = lease_holder();
  if (h.empty()) return -1;
  for (size_t i = 0; i < cms_.size(); ++i)
    if (cms_[i] && h.ends_with("_" + std::to_string(cms_[i]->pid()))) return static_cast<int>(i);
  return -1;
}

}  // namespace kos::testing
