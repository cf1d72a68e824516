// A real single-member etcd server for tests, on loopback ports chosen at run time, with its
// data in a temporary directory. Whatever happens to the test, the server goes away with
// it: the destructor stops it (SIGTERM, then SIGKILL), and the server is started with a
// parent-death signal (setpriv --pdeathsig KILL), so it is killed even when the test process
// dies without running destructors (a crash, a ctest timeout).
//
// Threading: one thread uses an EtcdProcess. Start it and call restart() from a thread that
// lives as long as the server should (the test's main thread): the parent-death signal
// fires when the thread that started the server exits.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "test/support/process.h"

namespace kos::testing {

class EtcdProcess {
 public:
  // Starts etcd (the binary named by $KOS_ETCD_BIN, else /usr/bin/etcd) and waits until it
  // serves a linearizable read. Throws std::runtime_error, with the tail of etcd's log, if
  // it does not within `start_timeout`.
  explicit EtcdProcess(std::chrono::milliseconds start_timeout = std::chrono::seconds(30));
  // With TLS: clients must use https and present a certificate signed by the test CA
  // (etcd --client-cert-auth); ca_file(), client_cert_file() and client_key_file() are
  // what they need. Readiness is probed on a plain metrics URL (/health).
  struct TlsTag {};
  explicit EtcdProcess(TlsTag, std::chrono::milliseconds start_timeout = std::chrono::seconds(30));
  // A member of a cluster (see EtcdCluster): started at once, without waiting, since it
  // serves only once a quorum of members runs; then wait_until_serving().
  struct Member {
    std::string name;
    int client_port = 0;
    int peer_port = 0;
    std::string initial_cluster;  // NAME=http://127.0.0.1:PEER,...
    std::string token;
  };
  EtcdProcess(Member member, std::chrono::milliseconds start_timeout);
  // Waits until the member serves a linearizable read; an error message (with its log's
  // tail), empty on success.
  std::string wait_until_serving();
  ~EtcdProcess();
  EtcdProcess(const EtcdProcess&) = delete;
  EtcdProcess& operator=(const EtcdProcess&) = delete;

  bool tls() const { return tls_; }
  std::filesystem::path ca_file() const { return dir_.path() / "ca.crt"; }
  std::filesystem::path client_cert_file() const { return dir_.path() / "client.crt"; }
  std::filesystem::path client_key_file() const { return dir_.path() / "client.key"; }
  // The client URL, "http://127.0.0.1:PORT" (https with TLS); the same across restart().
  std::string endpoint() const;
  int client_port() const { return client_port_; }
  // etcd's --data-dir.
  std::filesystem::path data_dir() const { return dir_.path() / "data"; }
  // etcd's own log (JSON lines), kept across restarts.
  std::filesystem::path log_path() const { return dir_.path() / "etcd.log"; }

  // SIGKILL, and wait until the process is gone. No-op if it is not running.
  void kill9();
  // SIGTERM, then SIGKILL after a grace period. No-op if it is not running.
  void stop();
  // Starts the server again on the same data directory and ports (after kill9() or stop(),
  // or kills it first if it is running) and waits until it serves. Throws like the
  // constructor.
  void restart();
  bool running();
  // Whether this member is the cluster's leader now (asked over its plain client URL).
  bool is_leader() const;
  // The last `max_lines` lines of etcd's log.
  std::string log_tail(size_t max_lines = 40) const;

 private:
  // Spawns etcd and waits until it serves; returns an error message (empty on success).
  std::string start_once();
  void spawn();
  // One probe of the client port: true if a linearizable Range succeeds.
  bool serving() const;

  void init();

  TempDir dir_;
  std::string name_;
  bool tls_ = false;
  int metrics_port_ = 0;
  int client_port_ = 0;
  int peer_port_ = 0;
  std::string initial_cluster_;  // empty: a cluster of this one member
  std::string token_;
  std::chrono::milliseconds start_timeout_;
  std::unique_ptr<ChildProcess> proc_;
};

// A cluster of real etcd members on loopback ports, each an EtcdProcess (kill9(), restart()
// and log of each). Starting throws like EtcdProcess, with the logs of the members that did
// not serve.
class EtcdCluster {
 public:
  explicit EtcdCluster(int members = 3, std::chrono::milliseconds start_timeout = std::chrono::seconds(60));
  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;

  int size() const { return static_cast<int>(members_.size()); }
  EtcdProcess& member(int i) { return *members_.at(static_cast<size_t>(i)); }
  // Every member's client URL, comma-separated (what `kos apiserver --store etcd:...` takes).
  std::string endpoints() const;
  // The member that leads now, or -1 (during an election).
  int leader() const;

 private:
  std::vector<std::unique_ptr<EtcdProcess>> members_;
};

}  // namespace kos::testing
