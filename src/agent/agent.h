// The connection agent of one node: implements the node's NetworkAttachments in its
// Fabric and programs, for every attachment on another node of a VNI present here, the
// guest IP/MAC -> host IP mapping, and learns nothing about other VNIs.
//
// Informers: one on the local attachments (spec.node=NODE); one per *relevant* VNI (a VNI
// with at least one addressed local attachment) on the remote ones that their nodes have
// implemented (status.addressVNI=V,spec.node!=NODE,status.hostIP!=) -- or, for a local
// attachment on a subnet of a VPC, one per relevant VPC on the remote attachments of all
// its subnets (status.routingVNI=R,...), so the node routes to all of them --, started when the
// VNI's first local attachment appears and stopped relevance_grace after its last goes
// (unless one comes back). An attachment can sit in two informers for a moment (its VNI
// changed; informers are not ordered with each other): the agent keeps, per attachment,
// the set of informers holding it and leaves it alone while there are
// several; the stale informer's delete notification requeues it.
//
// Security groups (policy.h): an informer per group a local attachment is in, and a member
// watch per (group a rule of those names, address domain of their local attachments),
// each feeding one fabric address set element by element; a local attachment's policy is
// programmed before it is reported ready (status.securityGroupsInForce says when).
//
// Start-up: sync the local informer, start and sync the VNI informers, read what the
// fabric already has (interfaces, mappings, policies, sets), adopt what matches consistent
// lists of the attachments, remove orphans, then start the workers.
//
// Batches: a worker takes up to kMaxBatch ready keys; their remote mappings go to the
// fabric as one batch (see reconcile_batch), so a cold start with 10,000 mappings makes
// tens of fabric calls, not 10,000.
//
// Concurrency: mu_ guards the agent's maps only; it is never held across a fabric call or
// an API call (informer handlers take it on the client transport's thread).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "agent/policy.h"
#include "client/informer.h"
#include "common/clock.h"
#include "controllers/controller.h"
#include "fabric/fabric.h"

namespace kos::agent {

// What the agent has just made real, for observers (the driver's create->implemented
// measurements, `kos simulate`). Called on a worker thread; must not block.
struct Implemented {
  // kMember: attachment `key` is in this node's address sets of a group it is a member of
  // (its address added, as its status had it); kPolicy: the local attachment `key`'s
  // security groups are in force (status.securityGroupsInForce is about to say so).
  enum class Kind { kLocal, kRemote, kMember, kPolicy } kind;
  std::string node;
  std::string key;  // namespace/name of the attachment
  std::string uid;
  uint32_t vni = 0;
  std::chrono::system_clock::time_point at;
};

struct AgentOptions {
  std::string node;
  uint32_t host_ip = 0;
  std::string netns;                          // where execs run (the fabric has its own)
  std::vector<std::string> allowed_programs;  // postCreateExec/postDeleteExec allow-list
  int workers = 4;
  // A remote attachment's event (most of a node's events: the attachments of its VNIs on
  // other nodes) is programmed on the client transport's thread that delivered it, when no
  // worker holds its key, instead of waking a worker: at 200 attachments/s on 100
  // simulated nodes the hand-off was a fifth of the agents' CPU. The thread waits for the
  // fabric meanwhile (the fake one: nothing; linux and OVS: their worker's batch). false:
  // every key goes to the workers. A VNI informer's initial list always goes to the workers,
  // to be programmed in batches.
  bool remotes_inline = true;
  std::chrono::seconds exec_timeout{30};
  // A VNI whose last local attachment went keeps its informer (and its remote mappings)
  // this long, so one that flaps in and out of relevance is not relisted each time. Short:
  // meanwhile the node still hears about the VNI, and under churn (attachments landing on
  // new nodes) every node in its grace widens the VNI's fan-out. At 150 attachments/s on
  // 100 simulated nodes, 5 s sent 1.7x the watch events of 0 s; 1 s sends 1.2x.
  std::chrono::milliseconds relevance_grace{1000};
  // Times the relevance grace and the work queue's delays and backoffs (null: the real
  // clock). Must outlive the agent.
  const Clock* clock = nullptr;
  std::function<void(const Implemented&)> on_implemented;  // optional
};

class Agent {
 public:
  Agent(std::shared_ptr<client::RestClient> client, fabric::Fabric& fabric, AgentOptions opts);
  ~Agent();
  Result<void> start();
  void stop();

  // For tests and metrics.
  std::set<uint32_t> relevant_vnis() const;
  struct Counts {
    uint64_t local_events = 0;   // handler calls from the local informer
    uint64_t remote_events = 0;  // handler calls from VNI informers
    std::map<uint32_t, uint64_t> remote_events_by_vni;
    uint64_t irrelevant_events = 0;  // about a VNI not hosted here, or a local attachment
    uint64_t remote_unchanged = 0;   // remote events that changed nothing programmed here
    uint64_t local_unchanged = 0;    // local events that left the interface and its status as they were
    uint64_t relevance_checks = 0;   // local events that queued a look at which VNIs are relevant
    uint64_t remote_inline = 0;      // remote events reconciled on the thread that delivered them
    uint64_t vni_informers_started = 0;
    // Security groups: notifications from the group informers and the member watches,
    // member events about an attachment that is not a member in the watch's domain (must
    // stay 0), and the watches running now.
    uint64_t group_events = 0;
    uint64_t member_events = 0;
    uint64_t irrelevant_member_events = 0;
    uint64_t group_informers = 0;
    uint64_t member_watches = 0;
    std::set<std::string> watched_groups;  // "ns/name" of the member watches' groups
  };
  Counts counts() const;

  // For the local API (CNI): the interface of attachment `key` (namespace/name) of
  // incarnation `uid`, if this agent has implemented it.
  std::optional<fabric::LocalIfc> local(const std::string& key, const std::string& uid) const;
  // Waits until local(key, uid) has a value (or, with `gone`, until it has none), until
  // `deadline` (kTimeout) or until `cancelled` returns true (kCancelled; polled every 50 ms).
  Result<std::optional<fabric::LocalIfc>> wait_local(const std::string& key, const std::string& uid, bool gone,
                                                     std::chrono::steady_clock::time_point deadline,
                                                     const std::function<bool()>& cancelled = {}) const;
  // Where the local API (CNI ADD) wants the guest end of attachment `key` made: directly in
  // the container's namespace `netns` as `ifname` (moving it there later costs the kernel an
  // RCU grace period). Only the local API says so, never the attachment itself: whoever may
  // write attachments must not choose namespaces on the node. Forgotten with the interface.
  void place_guest(const std::string& key, const std::string& netns, const std::string& ifname);
  void forget_placement(const std::string& key);
  const std::string& node() const { return opts_.node; }

  Result<controllers::Requeue> reconcile(const std::string& key);
  // Several keys at once (what the workers call): the remote mappings among them, the bulk
  // of a node's work (every attachment of its VNIs on other nodes), are programmed with
  // one Fabric::apply for their deletes and one for their creates; other keys go through
  // reconcile(). Result i is keys[i]'s.
  std::vector<Result<controllers::Requeue>> reconcile_batch(const std::vector<std::string>& keys);
  static constexpr size_t kMaxBatch = 256;

 private:
  friend class AgentTestPeer;  // drives the informer handlers in a chosen order (agent_test)

 public:

 private:
  static constexpr uint32_t kLocal = 0;  // informer id of the local informer; VNIs are 1..
  // `from` is the informer that delivered: events of a VNI informer no longer in
  // vni_informers_ are dropped.
  // `before`: for the local informer, the attachment's state its last event showed (null:
  // none), so that a change of what it makes relevant is seen.
  void on_object(uint32_t informer, const client::Informer* from, const client::ObjectPtr& obj,
                 bool present, const api::AnyObject* before = nullptr);
  // The field selector of the informer of a VNI, or of a VPC's routing VNI (routed).
  std::string remote_selector(uint32_t vni, bool routed) const;
  void update_relevance();  // starts/stops VNI informers to match the local attachments
  Result<void> adopt();
  Result<controllers::Requeue> ensure_local(const std::string& key, const api::NetworkAttachment& na);

  // Security groups (policy.h). Informers: one per group a local attachment is in
  // (metadata.name=G in its namespace), and a member watch per (group, domain) that a
  // rule of those groups names, for the domains of the local attachments in them; both
  // follow the local attachments in update_relevance. A member watch feeds one fabric
  // address set, changed element by element ("@set/<name>" keys).
  void update_policy_relevance();  // a worker, from update_relevance
  void on_group(const std::string& gkey, const client::Informer* from);
  void on_member(const std::string& set, const client::Informer* from, const client::ObjectPtr& obj, bool present);
  Result<controllers::Requeue> reconcile_set(const std::string& set);
  // mu_ held: the policy `na` (a local attachment implemented as `ifc`) wants, and the
  // groups in force once it is programmed (those whose informers and member watches synced).
  struct PolicyWant {
    std::optional<fabric::Policy> policy;
    std::vector<api::SecurityGroupRevision> in_force;
  };
  PolicyWant policy_want_locked(const api::NetworkAttachment& na) const;
  Result<void> ensure_policy(const std::string& key, const api::NetworkAttachment& na, const fabric::LocalIfc& ifc,
                             std::vector<api::SecurityGroupRevision>& in_force);
  Result<void> remove_local(const std::string& key);
  // A remote mapping to program (want set) or remove (want unset) for `key`; `old` is what
  // the fabric has for it (taken out of remotes_ until apply_remotes writes it back).
  struct RemoteWork {
    std::string key;
    std::optional<fabric::RemoteIfc> want, old;
    client::ObjectPtr obj;  // the attachment (null: gone, or not remote any more)
  };
  // mu_ held. The work that makes the fabric's mapping for `key` match `obj`, if any.
  std::optional<RemoteWork> take_remote(const std::string& key, client::ObjectPtr obj);
  // mu_ held, the key held (by a worker, or claimed by Controller::reconcile_now): what
  // reconciling it takes. kGeneral: reconcile() (relevance, member sets, local attachments:
  // it may call the API server); kNone: nothing now (as wanted, or transient: held by two
  // informers until one lets go); kRemote: `work`, for apply_remotes.
  enum class Plan { kGeneral, kNone, kRemote };
  Plan plan_locked(const std::string& key, std::optional<RemoteWork>& work);
  // A remote key's reconcile on the calling thread (on_object's, via reconcile_now);
  // nullopt when it needs reconcile() on a worker.
  std::optional<Result<controllers::Requeue>> reconcile_remote_now(const std::string& key);
  // mu_ held. The event of VNI informer `informer` about `key` (obj null: deleted) leaves
  // the key's work as it is: the fabric already has what obj wants, the informer is the
  // key's only holder and no worker holds the key. No reconcile is needed then.
  bool remote_unchanged_locked(const std::string& key, uint32_t informer, const client::ObjectPtr& obj);
  // mu_ held. The local informer's event about `key` leaves its work as it is: the fabric
  // has the interface `na` wants, its policy and exec are done, and its status already says
  // all that (the echo of this agent's own status write). No reconcile is needed then.
  bool local_unchanged_locked(const std::string& key, const api::NetworkAttachment& na);
  // Without mu_: the fabric calls for all of `work` (one apply for the deletes, one for the
  // creates), remotes_ updated; result n is work[n]'s.
  std::vector<Result<void>> apply_remotes(const std::vector<RemoteWork>& work);
  // take_remote + apply_remotes for one key (obj null: remove its mapping).
  Result<void> program_remote(const std::string& key, client::ObjectPtr obj);
  void publish_counts();  // mu_ held
  api::ExecReport run_exec(const char* kind, const std::vector<std::string>& command, const fabric::LocalIfc& ifc);
  void implemented(Implemented::Kind kind, const std::string& key, const api::NetworkAttachment& na);

  std::shared_ptr<client::RestClient> client_;
  fabric::Fabric& fabric_;
  AgentOptions opts_;
  client::Informer local_;
  controllers::Controller controller_;

  mutable std::mutex mu_;
  mutable std::condition_variable locals_changed_;  // notified by publish_counts()
  // One informer per relevant domain: a VNI, or a VPC's routing VNI (routed_domains_).
  std::map<uint32_t, std::unique_ptr<client::Informer>> vni_informers_;
  std::set<uint32_t> routed_domains_;
  std::map<uint32_t, std::chrono::steady_clock::time_point> leaving_;  // VNI -> informer stops at
  std::map<std::string, std::set<uint32_t>> holders_;  // attachment key -> informers holding it
  // The status a worker is writing, with the spec it acted on (uid, generation), until the
  // next event about the key: that event, if it shows exactly this, is the echo and is
  // settled without a reconcile (the worker's work is what it wants), whether it comes
  // before or after the write's answer.
  struct StatusEcho {
    std::string uid;
    int64_t generation = 0;
    api::NetworkAttachmentStatus status;
  };
  std::map<std::string, StatusEcho> status_echo_;
  struct LocalState {
    fabric::LocalIfc ifc;
    std::string uid;
    std::vector<std::string> post_delete_exec;
  };
  std::map<std::string, LocalState> locals_;          // what the fabric has, per attachment
  std::map<std::string, fabric::RemoteIfc> remotes_;
  // What adopt() kept, with the informer that will hold it and the resourceVersion the
  // consistent read showed: until that informer has reached it (a lagging API server's
  // cache replays older states: no address yet, no host IP), the key is not acted on, so
  // a restart never tears down and re-creates what was right.
  struct AdoptedFloor {
    uint32_t informer = kLocal;
    uint64_t revision = 0;
  };
  std::map<std::string, AdoptedFloor> adopted_floor_;
  std::set<std::string> execs_done_;                  // uid + ifc name: postCreateExec ran
  std::map<std::string, std::pair<std::string, std::string>> placements_;  // key -> (netns, ifname)
  Counts counts_;
  std::map<std::string, std::unique_ptr<client::Informer>> group_informers_;  // "ns/name" ->
  struct MemberWatch {
    std::string ns, group, domain;
    std::unique_ptr<client::Informer> informer;
    MemberSet members;              // what the fabric's set has, by member
    std::set<std::string> dirty;    // members whose events are not applied yet
    // The set as the fabric had it at start-up: the first sync after the watch has synced
    // makes it exactly the members (removing addresses of members gone meanwhile).
    std::optional<std::set<uint32_t>> adopted;
  };
  std::map<std::string, MemberWatch> member_watches_;  // by set name
  std::map<std::string, std::set<uint32_t>> adopted_sets_;  // listed at start-up, not yet watched
  std::map<std::string, fabric::Policy> policies_;          // local key -> the fabric's policy
  struct {
    double locals = 0, remotes = 0, vnis = 0;
  } published_;  // this agent's share of the process-wide gauges
  bool started_ = false;
};

}  // namespace kos::agent
