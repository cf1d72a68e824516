// The driver's bookkeeping of every attachment it creates: when each stage was reached,
// measured on the driver's own clock from the start of the create call.
//
// Stages:
//   create        the create call (its latency)
//   addressed     create -> the first notification showing status.ipv4
//   ready         create -> the first notification showing status.ifcName
//   implemented   create -> implemented on every relevant node: the latest of the
//                 attachment's local implementation (its node created the interface) and
//                 its remote implementations on the relevant nodes (they programmed the
//                 mapping), all read from the agents' implementation logs
//   tested        create -> the first notification showing status.postCreateExecReport
//                 (with --ping; a non-zero exit status is a failure)
//   delete        the delete call (its latency)
//
// Relevant nodes of attachment X (VNI v, node n): the nodes other than n that host another
// live attachment of v when X's create starts, as the driver knows them (an attachment is
// live from the start of its create until the start of its delete, unless its create
// failed). Only those nodes must program X for it to count as implemented everywhere. A
// relevant node that stops hosting any live attachment of v before it has programmed X is
// no longer waited for (its agent drops the VNI and may never program X); such nodes are
// counted (nodes_dropped). Nodes that start hosting v after X's create are not waited for:
// their delay is their own attachments' latency.
//
// A stage not reached `stage_timeout` after the create started fails ("timed out"), and
// so does every stage still open when finish() is called. A stage not reached when the
// driver deletes the attachment (churn) is neither a success nor a failure: it counts as
// cancelled. Only attachments created in the measured phase count (measured = true);
// the others (warm-up) are tracked for relevance only.
//
// Clock: every time here is the driver's system clock, except the implementation times,
// which are the agents' system clocks. The driver and the agents must share a clock (run
// on one machine, or be synchronised much better than the latencies measured).
//
// Thread-safe: every method takes one mutex.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "agent/agent.h"
#include "api/types.h"

namespace kos::driver {

using TimePoint = std::chrono::system_clock::time_point;

// kInForce: the attachment's security groups are in force on its node (status.securityGroupsInForce
// lists every group of spec.securityGroups). kMember: its address is in the member set of
// its group on every node that uses the group (a node with a live attachment of the group
// in its domain, its own included), from the agents' "member" records.
enum class Stage { kCreate, kAddressed, kReady, kImplemented, kTested, kInForce, kMember, kDelete };
inline constexpr size_t kStageCount = 8;
inline constexpr std::array<Stage, kStageCount> kAllStages = {
    Stage::kCreate, Stage::kAddressed, Stage::kReady,  Stage::kImplemented,
    Stage::kTested, Stage::kInForce,   Stage::kMember, Stage::kDelete};
const char* stage_label(Stage s);  // "create call", "create -> addressed", ...
const char* stage_id(Stage s);     // "create", "addressed", ... (JSON keys)

struct TrackerOptions {
  bool measure_implemented = false;  // agent endpoints are polled
  bool measure_tested = false;       // attachments carry a postCreateExec
  bool measure_policy = false;       // attachments are in security groups
  std::chrono::milliseconds stage_timeout{60000};
};

struct StageResult {
  std::vector<double> seconds;  // latencies of the successes
  std::vector<uint64_t> order;  // the creation order (0 = first measured create) of each
                                // success, parallel to seconds (empty for deletes)
  uint64_t failures = 0;
  uint64_t cancelled = 0;       // deleted by the driver before reaching the stage
  std::vector<std::string> failure_samples;  // the first few reasons
};

// Per relevant-node bookkeeping, for the summary.
struct RelevanceCounts {
  uint64_t required = 0;  // relevant remote nodes over all measured attachments
  uint64_t programmed = 0;  // of those, the ones that programmed the attachment in time
  uint64_t dropped = 0;     // of those, the ones that stopped hosting the VNI first
};

// The nodes that must program an attachment on `own_node`: those with a live attachment
// of the VNI (count > 0), other than own_node.
std::set<std::string> relevant_nodes(const std::map<std::string, int>& live_per_node, const std::string& own_node);

class Tracker {
 public:
  explicit Tracker(TrackerOptions opts);

  // The driver is about to create `key` (namespace/name). Counts it live from now.
  // `group`: the security group it is in ("" none).
  void begin_create(const std::string& key, uint32_t vni, const std::string& node, bool measured, TimePoint start,
                    const std::string& group = "");
  // The create call returned: the new object's uid, or the error (then it is not live).
  void create_done(const std::string& key, TimePoint end, const Result<std::string>& uid);
  // The driver is about to delete `key`: it stops being live now.
  void begin_delete(const std::string& key);
  void delete_done(const std::string& key, bool measured, TimePoint start, TimePoint end, const Result<void>& r);

  // An informer notification (the attachment as it is now), received at `now`.
  void observe(const api::NetworkAttachment& na, TimePoint now);
  // A record of an agent's implementation log. Records of unknown keys are ignored.
  void implemented(const agent::Implemented& rec);

  // Settles implemented stages whose nodes are all done or dropped, and timeouts.
  void evaluate(TimePoint now);
  // Fails every stage still open of a measured attachment (the run is over).
  void finish();
  // True when no measured attachment has an open stage.
  bool settled() const;

  // The live attachments of a VNI per node, as the driver knows them.
  std::map<std::string, int> live_nodes(uint32_t vni) const;

  struct Progress {
    uint64_t created = 0, create_failures = 0, addressed = 0, ready = 0, implemented = 0, tested = 0,
             deleted = 0, failures = 0, live = 0;
  };
  Progress progress() const;

  struct Results {
    std::array<StageResult, kStageCount> stages;
    RelevanceCounts relevance;
    uint64_t measured = 0;       // attachments created in the measured phase
    uint64_t status_errors = 0;  // attachments that showed status.errors at some point
    std::vector<std::string> status_error_samples;
    // Seconds since `origin` of each measured create start, ready and implemented time.
    std::vector<double> create_times, ready_times, implemented_times;
    // Each measured attachment that reached the last stage measured (implemented on all
    // nodes, else ready): (create start, seconds since origin; its latency, seconds).
    std::vector<std::pair<double, double>> latency_by_time;
  };
  Results results(TimePoint origin) const;

 private:
  struct Att {
    uint32_t vni = 0;
    std::string node, uid;
    bool measured = false, live = true, create_failed = false;
    uint64_t seq = 0;  // creation order among the measured attachments
    TimePoint create_start{};
    std::optional<TimePoint> addressed, ready, tested, in_force, local_impl, implemented_all;
    std::map<std::string, TimePoint> remote_impl;  // first programming per node
    std::string group;                             // its security group ("" none)
    std::map<std::string, TimePoint> member_at;    // in the group's set, per node
    std::set<std::string> member_waiting;          // nodes using the group, not yet there
    std::set<std::string> waiting;                 // relevant nodes not yet programmed/dropped
    std::set<std::string> required;                // relevant nodes still required
    std::array<bool, kStageCount> settled{};
    bool errors_seen = false;
  };
  void settle(const std::string& key, Att& a, Stage s, std::optional<TimePoint> at, const std::string& why);  // mu_ held
  void set_live(Att& a, bool live);            // mu_ held
  void try_implemented(const std::string& key, Att& a);  // mu_ held
  void try_member(const std::string& key, Att& a);       // mu_ held
  bool measure_member() const { return opts_.measure_policy && opts_.measure_implemented; }
  bool open(const Att& a) const;               // mu_ held: a measured stage is still unsettled

  TrackerOptions opts_;
  mutable std::mutex mu_;
  std::map<std::string, Att> atts_;  // until deleted
  struct Times {
    TimePoint create;
    std::optional<TimePoint> ready, implemented;
  };
  std::vector<Times> retired_;  // of the measured attachments deleted so far
  std::set<std::string> open_;  // measured keys with an unsettled stage
  std::map<uint32_t, std::map<std::string, int>> live_;  // vni -> node -> live attachments
  // (domain, group) -> node -> live attachments in the group: the nodes that use its set.
  std::map<std::pair<uint32_t, std::string>, std::map<std::string, int>> live_groups_;
  std::array<StageResult, kStageCount> stages_;
  RelevanceCounts relevance_;
  uint64_t measured_ = 0, status_errors_ = 0;
  std::vector<std::string> status_error_samples_;
  Progress progress_;
};

}  // namespace kos::driver
