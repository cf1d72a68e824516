// The agent's local API: what the kos-cni plugin of this node asks for, served on a unix
// socket (protocol in cni/protocol.h). The agent does the work because it holds the
// credentials, the informers and the fabric; the plugin only translates CNI to requests.
//
// An attachment made this way is NetworkAttachment `cni-<16 hex digits>` (a hash of node,
// container id and interface name, so a repeated ADD finds it), on this node, labelled
// cni.network.example.com/plugin=kos-cni, with the container id, interface name, network
// name, network namespace and pod (if given) in cni.network.example.com/* annotations: GC
// and adoption read everything from the API after any crash. The agent never takes a
// namespace from an attachment (whoever may write attachments must not choose namespaces
// on the node): ADD tells it the runtime's CNI_NETNS (Agent::place_guest) so that it makes
// the guest end right there; without that (an agent restarted meanwhile) it makes it in
// its own namespace and ADD moves it.
//
//  add    gets or creates the attachment, waits (up to the request's timeout) until the IPAM
//         has addressed it and this agent has implemented it, then has the fabric plug its
//         guest interface into the container's namespace as CNI_IFNAME. Repeating it is
//         harmless. After the timeout: code 11 with what the attachment is waiting for.
//  del    deletes the attachment (UID precondition) and waits until its interface is gone
//         from this node; succeeds when it is gone already or the namespace is missing.
//         A DEL cancels an ADD of the same (container, interface) still in progress.
//  check  the attachment exists, has prevResult's address, is implemented here, and the
//         container's interface has its MAC and address and is up.
//  status the agent answers (it does) and the API server answers a list.
//  gc     deletes this node's attachments of that network not in the valid list.
//  probe  (`kos check`) a TCP connect, UDP datagram or ICMP echo from inside the guest of
//         a local attachment to an address, with a short timeout (probe.h): the guest's
//         namespace is found by its MAC. Code 0 with verdict "allow" or "deny" and how it
//         went; kNotLocal: the attachment does not exist, is on another node or is not
//         implemented here; kNoGuest: no namespace holds its guest interface; kProbeFailed:
//         the probe could not be sent (e.g. the guest interface lacks its address).
//
// Threads: the server accepts on a thread of its own and runs each request on a thread of
// its own (at most kMaxInFlight at once; more are answered "try again later"). Requests of
// one (container, interface) run one at a time. stop() cancels waits and joins them all.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "agent/agent.h"
#include "agent/probe.h"
#include "cni/protocol.h"
#include "fabric/fabric.h"

namespace kos::agent {

inline constexpr const char* kCniPluginLabel = "cni.network.example.com/plugin";
inline constexpr const char* kCniContainerAnnotation = "cni.network.example.com/container-id";
inline constexpr const char* kCniIfnameAnnotation = "cni.network.example.com/ifname";
inline constexpr const char* kCniNetworkAnnotation = "cni.network.example.com/network";
inline constexpr const char* kCniNetnsAnnotation = "cni.network.example.com/netns";
inline constexpr const char* kCniPodAnnotation = "cni.network.example.com/pod";

// The attachment name for (node, container id, interface name).
std::string cni_attachment_name(const std::string& node, const std::string& container_id, const std::string& ifname);

struct LocalApiOptions {
  std::string socket_path;                           // created (replacing a stale one), mode 0600
  std::chrono::milliseconds default_timeout{30000};  // when a request names none
  std::chrono::milliseconds max_timeout{300000};
  std::shared_ptr<GuestProber> prober;  // the probe op's; null: a LinuxGuestProber
};

class LocalApi {
 public:
  LocalApi(std::shared_ptr<client::RestClient> client, Agent& agent, fabric::Fabric& fabric, LocalApiOptions opts);
  ~LocalApi();
  // Binds and listens (an error if the path is taken by a live listener or cannot be made).
  Result<void> start();
  void stop();

  // One request, as the server runs it (public for tests).
  cni::Response handle(const cni::Request& req);

  static constexpr int kMaxInFlight = 64;

 private:
  struct KeyState;
  cni::Response add(const cni::Request& req, KeyState& ks);  // ks: its key's, held
  cni::Response del(const cni::Request& req);
  cni::Response check(const cni::Request& req);
  cni::Response status();
  cni::Response gc(const cni::Request& req);
  cni::Response probe(const cni::Request& req);
  std::chrono::milliseconds timeout_of(const cni::Request& req) const;  // the request's, clamped
  void accept_loop();
  void serve(int fd);

  // Per (container, interface): a mutex that orders its requests, and a count of DELs that
  // an ADD in progress watches to give up.
  struct KeyState {
    std::mutex mu;
    std::atomic<uint64_t> dels{0};
    int users = 0;  // guarded by keys_mu_
  };
  std::shared_ptr<KeyState> key_state(const std::string& name);
  void release_key(const std::string& name);

  std::shared_ptr<client::RestClient> client_;
  Agent& agent_;
  fabric::Fabric& fabric_;
  LocalApiOptions opts_;

  std::mutex keys_mu_;
  std::map<std::string, std::shared_ptr<KeyState>> keys_;

  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::mutex conns_mu_;
  std::condition_variable conns_cv_;
  int in_flight_ = 0;
};

}  // namespace kos::agent
