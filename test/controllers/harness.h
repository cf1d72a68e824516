// What the controller acceptance tests share: `kos apiserver` and `kos controller-manager`
// as child processes (so kill -9 is real), each logging to its own file in the test's
// temporary directory (the tail is printed when a test fails), REST clients on the
// server's kubeconfig, object builders, a parallel loop, bounded polling, `kos ipam-check`,
// and the AddressWatcher: an informer on NetworkAttachments that checks, at every event
// (every store revision it shows), that no two live attachments hold the same
// (addressVNI, ipv4).
//
// Threading: start, kill and restart processes on the test's main thread (the
// parent-death signal of a child is tied to the thread that forked it).
//
// Debugging: $KOS_TEST_CONTROLLER_LOG_LEVEL=debug runs the controllers with debug logs;
// $KOS_TEST_KEEP_LOGS=DIR copies every process's log to DIR/<temp dir name>/ at the end.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "api/types.h"
#include "client/informer.h"
#include "client/rest_client.h"
#include "test/support/process.h"

namespace kos::ctltest {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

inline constexpr const char* kKos = KOS_BINARY;

// One `kos` subcommand as a child process; stdout and stderr are appended to `log`.
// start() may be called again after the process ended or was killed (a restart).
class KosProcess {
 public:
  KosProcess(std::string name, std::vector<std::string> args, fs::path log);
  ~KosProcess();
  KosProcess(const KosProcess&) = delete;
  KosProcess& operator=(const KosProcess&) = delete;

  void start();
  // SIGKILL and reap. No-op if not running.
  void kill9();
  // SIGTERM, then SIGKILL after `grace`; returns the wait status (-1 if never started).
  int stop(std::chrono::milliseconds grace = std::chrono::seconds(5));
  bool running();
  // The wait status if it has exited (or was killed), else nullopt.
  std::optional<int> exit_status();
  pid_t pid() const;
  int starts() const { return starts_; }
  const std::string& name() const { return name_; }
  const fs::path& log() const { return log_; }
  // The last `bytes` of the log.
  std::string log_tail(size_t bytes = 3000) const;

 private:
  std::string name_;
  std::vector<std::string> args_;
  fs::path log_;
  std::unique_ptr<testing::ChildProcess> child_;
  int starts_ = 0;
};

// `kos apiserver --listen 127.0.0.1:0` on the embedded store in a fresh temporary
// directory. The watch cache keeps a long history so informers never need to re-list.
class ApiServer {
 public:
  explicit ApiServer(std::vector<std::string> extra_flags = {}, std::string log_level = "info");
  // With $KOS_TEST_KEEP_LOGS set to a directory, the processes' logs are copied there.
  ~ApiServer();
  // Starts and waits (bounded) for the kubeconfig; an error message, empty on success.
  std::string start();
  const fs::path& dir() const { return dir_.path(); }
  // The admin's kubeconfig (the server writes it).
  fs::path kubeconfig() const { return dir_.path() / "kubeconfig"; }
  // A kubeconfig with a credential of its own for a component: role "controller", or
  // "node" with scope = the node's name (issued from the server's PKI once, then reused).
  fs::path credential(const std::string& role, const std::string& scope = "");
  // A new bearer token for a role ("viewer", "controller", ...).
  std::string token(const std::string& role, const std::string& scope = "");
  KosProcess& process() { return *proc_; }
  // A client with no client-side rate limit (qps 0) by default.
  std::shared_ptr<client::RestClient> client(double qps = 0);

 private:
  testing::TempDir dir_{"kos-ctl"};
  std::unique_ptr<KosProcess> proc_;
};

// `kos --log-level L controller-manager --kubeconfig K --controllers C --workers W [extra]`;
// L is $KOS_TEST_CONTROLLER_LOG_LEVEL if set (e.g. debug, to trace a failure), else info.
std::unique_ptr<KosProcess> controller_manager(ApiServer& server, const std::string& name,
                                               const std::string& controllers, int workers = 4,
                                               std::vector<std::string> extra = {});

// One subnet validator and `ipams` IPAM controllers, each its own controller-manager
// process, started.
struct Controllers {
  std::unique_ptr<KosProcess> validator;
  std::vector<std::unique_ptr<KosProcess>> ipams;
  // The tails of the server's and every controller's logs.
  std::string logs(ApiServer& server) const;
};
Controllers start_controllers(ApiServer& server, int ipams);

// `kos ipam-check --kubeconfig K [--repair]`.
testing::RunResult ipam_check(ApiServer& server, bool repair = false);
std::string describe(const testing::RunResult& r);

// The tails of the logs of these processes, for failure messages.
std::string logs(std::initializer_list<KosProcess*> procs);

// ---- objects ---------------------------------------------------------------------------

api::Subnet make_subnet(const std::string& ns, const std::string& name, const std::string& cidr,
                        uint32_t vni);
api::NetworkAttachment make_attachment(const std::string& ns, const std::string& name,
                                       const std::string& subnet, const std::string& node = "node-1");

// The usable addresses of a CIDR (what IPAM hands out).
uint32_t usable_addresses(const std::string& cidr);

// fn(i) for i in [0, n) on `threads` threads; each index once.
void parallel_for(int n, int threads, const std::function<void(int)>& fn);

using kos::testing::poll_until;  // test/support/process.h

// Retries `op` while it fails with kUnavailable or kTimeout (up to `attempts`); other
// results are returned as they are (a retried create may answer kAlreadyExists).
template <class F>
auto with_retries(F op, int attempts = 5) -> decltype(op()) {
  auto r = op();
  for (int i = 1; i < attempts && !r &&
                  (r.error().code == Errc::kUnavailable || r.error().code == Errc::kTimeout);
       ++i)
    r = op();
  return r;
}

double seconds_since(Clock::time_point t0);

// ---- the continuous duplicate-address check -------------------------------------------

// An informer on all NetworkAttachments. After every event it applies (one store revision
// of one attachment), it checks that no two live attachments (distinct UIDs present in
// the cache) hold the same (status.addressVNI, status.ipv4), and records every moment
// where that fails. It also counts address changes of one live attachment (re-addressing)
// and can answer questions about the cache for waiting.
//
// With track_locks, a second informer records every IPLock's creation and deletion
// (revision, UID), so that a violation can be explained: describe_violations() then says
// for each holder whether the lock its status.lockUID names existed at that revision.
class AddressWatcher {
 public:
  explicit AddressWatcher(std::shared_ptr<client::RestClient> client, bool track_locks = false);
  ~AddressWatcher();
  // Starts the informer and waits for its first list.
  bool start(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  void stop();

  struct Violation {
    uint32_t vni;
    std::string ipv4;
    std::string resource_version;  // of the event that made it visible
    std::vector<std::string> holders;  // "ns/name uid=... addressed at R lockUID=..."
  };
  std::vector<Violation> violations() const;
  std::string describe_violations(size_t max = 10) const;
  // Attachments whose address changed while they lived (same UID, a different ipv4/vni).
  uint64_t readdressed() const { return readdressed_.load(); }
  // The first few of them: "ns/name uid=... vni/ip -> vni/ip at resourceVersion R".
  std::vector<std::string> readdress_log() const;
  uint64_t events() const { return events_.load(); }
  // Informer lists: 1 means the check saw every revision (no re-list gaps).
  uint64_t lists() const { return informer_.stats().lists; }
  // The cached attachments, for waiting.
  std::vector<std::shared_ptr<const api::AnyObject>> cached() const { return informer_.indexer().list(); }
  size_t addressed() const;
  size_t size() const { return informer_.indexer().size(); }

 private:
  using AddrKey = std::pair<uint32_t, std::string>;
  void apply(const api::NetworkAttachment& na);
  void remove(const api::NetworkAttachment& na);

  // A lock's life: created at revision `born`, deleted at `died` (0: still there).
  struct LockLife {
    std::string name;
    int64_t born = 0, died = 0;
  };
  std::string lock_state(const std::string& lock_uid, const std::string& rv) const;  // mu_ held

  client::Informer informer_;
  std::unique_ptr<client::Informer> lock_informer_;
  std::map<std::string, LockLife> locks_;  // lock UID -> life
  mutable std::mutex mu_;
  std::map<std::string, AddrKey> held_;                  // uid -> address
  std::map<std::string, std::string> names_;             // uid -> ns/name
  std::map<std::string, std::string> lock_uids_;         // uid -> status.lockUID
  std::map<std::string, std::string> addressed_at_;      // uid -> revision of its current address
  std::map<AddrKey, std::set<std::string>> holders_;     // address -> uids
  std::vector<Violation> violations_;
  std::vector<std::string> readdress_log_;
  std::atomic<uint64_t> readdressed_{0}, events_{0};
};

}  // namespace kos::ctltest
