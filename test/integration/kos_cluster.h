// A distributed KOS as processes on this machine, for the tests of fail-over: a real etcd
// cluster, several `kos apiserver` on it sharing one PKI (each on a fixed loopback port, so
// that it comes back where clients expect it), controller-managers with leader election,
// and kubeconfigs that name every API server (`kos credentials create --server A,B,...`).
// Everything is stopped by the destructor, also when an assertion failed.
//
// Threading: create, kill and restart its processes on the test's main thread (the
// children's parent-death signals are tied to the thread that starts them).
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "client/rest_client.h"
#include "test/support/etcd_process.h"
#include "test/support/process.h"

namespace kos::testing {

struct KosClusterOptions {
  int etcd_members = 3;
  int apiservers = 3;
  int controller_managers = 2;
  // Leader election's timing (short: hand-overs within the test's patience).
  std::string lease_duration = "2s", renew_deadline = "1500ms", retry_period = "250ms";
};

class KosCluster {
 public:
  explicit KosCluster(KosClusterOptions opts = {});
  ~KosCluster();
  KosCluster(const KosCluster&) = delete;
  KosCluster& operator=(const KosCluster&) = delete;

  // Starts everything; an error message, empty on success.
  std::string start();

  EtcdCluster& etcd() { return *etcd_; }
  std::filesystem::path dir() const { return dir_.path(); }
  std::filesystem::path pki_dir() const { return dir_.path() / "pki"; }
  // Admin and controller credentials naming every API server.
  std::filesystem::path admin_kubeconfig() const { return dir_.path() / "admin.kubeconfig"; }
  std::filesystem::path controller_kubeconfig() const { return dir_.path() / "cm.kubeconfig"; }
  // An admin client (no rate limit) on admin_kubeconfig().
  std::shared_ptr<client::RestClient> client() const { return client_; }

  int apiservers() const { return static_cast<int>(servers_.size()); }
  std::string apiserver_url(int i) const;
  void kill_apiserver(int i);             // SIGKILL, and reaped
  std::string restart_apiserver(int i);   // on its port; an error message, empty on success
  pid_t apiserver_pid(int i) const;

  int controller_managers() const { return static_cast<int>(cms_.size()); }
  // The controller-manager's metrics port (its --metrics-listen).
  int controller_manager_metrics_port(int i) const { return cm_metrics_ports_.at(static_cast<size_t>(i)); }
  void kill_controller_manager(int i);
  // SIGTERM; its wait status.
  int stop_controller_manager(int i);
  // The holder of lease kube-system/kos-controller-manager ("" when none or unreadable),
  // and the index of the controller-manager that holds it (-1 when none of them does).
  std::string lease_holder() const;
  int leader() const;

 private:
  std::string start_apiserver(int i);
  void start_controller_manager(int i);

  KosClusterOptions opts_;
  TempDir dir_{"kos-cluster"};
  std::unique_ptr<EtcdCluster> etcd_;
  std::vector<int> ports_;
  std::vector<std::unique_ptr<ChildProcess>> servers_;
  std::vector<int> cm_metrics_ports_;
  std::vector<std::unique_ptr<ChildProcess>> cms_;
  std::shared_ptr<client::RestClient> client_;
};

}  // namespace kos::testing
