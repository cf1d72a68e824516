// `kos driver`: the attachment throughput driver (the original KOS's
// attachment-tput-driver). It creates one Subnet per virtual network (network i has about
// slots_top / i^slots_exponent slots), then creates NetworkAttachments at a set rate
// (steady or Poisson arrivals, open loop: a slow call does not delay the next), deleting
// the oldest live one whenever --max-live (or a network's slots) would be exceeded or an
// attachment outlives --lifetime, and measures each attachment's stages (see tracker.h)
// from an informer on the run's label and from the agents' implementation logs.
//
// Phases: warm-up (creates that are not measured), cruise (measured creates: for
// --cruise, or until --count of them), cool-down (no more operations; waits up to
// --cooldown for the measured attachments to finish their stages, then counts what is
// still open as failed). Then, unless --keep, it deletes everything it created (by label).
//
// Every object it creates carries the label kos-driver-run=<run id>.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"
#include "driver/report.h"

namespace kos::driver {

inline constexpr const char* kRunLabel = "kos-driver-run";

struct DriverOptions {
  std::string kubeconfig;
  std::vector<std::string> namespaces = {"kos-driver"};
  std::string run_id;  // empty: random
  uint32_t vnis = 10;
  uint32_t vni_base = 0;  // 0: random
  // > 0: that many Vpcs (routing VNIs base+vnis ..), network i a subnet of VPC i mod vpcs;
  // create -> implemented then means on every node of the attachment's VPC.
  uint32_t vpcs = 0;
  // > 0: that many SecurityGroups per namespace ("<run>-sg-<j>", each taking tcp 22 from its
  // own members and sending anything); attachment i is in group i mod this. Measures
  // create -> rules in force.
  uint32_t security_groups = 0;
  std::string cidr_base = "10.0.0.0";
  double slots_top = 100;
  double slots_exponent = 1.0;
  double rate = 10;  // creates per second
  std::string arrivals = "steady";  // or "poisson"
  uint64_t seed = 0;  // 0: random
  std::chrono::microseconds warmup{0};
  std::chrono::microseconds cruise{std::chrono::seconds(30)};
  std::chrono::microseconds cooldown{std::chrono::seconds(30)};
  uint64_t count = 0;     // > 0: that many measured creates (instead of --cruise)
  uint64_t max_live = 0;  // 0: every slot
  std::chrono::microseconds lifetime{0};  // 0: attachments live until the cap needs room
  std::vector<std::string> nodes;
  std::string node_prefix;
  uint32_t node_count = 0;
  std::string node_selector;
  bool round_robin = false;
  bool ping = false;
  std::string ping_program;
  std::vector<std::string> agent_endpoints;
  std::chrono::microseconds poll_interval{std::chrono::milliseconds(100)};
  std::chrono::microseconds stage_timeout{std::chrono::seconds(60)};
  int threads = 16;
  std::string report_html;
  std::string report_json;
  // Every attachment create and delete call and how it ended, a JSON line each, written as
  // it ends (so a test can check what the system kept against what it acknowledged).
  std::string ledger;
  // Marks for the report's timelines (a kill, a restart): a file of lines "EPOCH_MS LABEL"
  // that another process writes during the run, read at the end.
  std::string marks;
  bool keep = false;
  bool progress = true;
  uint32_t windows = 0;  // > 1: percentiles per window of creation order in the summary
};

// Checks the options alone (no I/O): kInvalid with a message naming the flag.
Result<void> validate(const DriverOptions& o);

// Runs the whole driver. `stop` (set by a signal) ends the creating phase early; the
// cool-down, the reports and the clean-up still happen. Errors: what prevented the run
// (the server unreachable, subnets not validated, an agent endpoint unreachable, ...).
Result<RunReport> run(const DriverOptions& o, const std::atomic<bool>& stop);

// The total of the failures of every measured stage.
uint64_t total_failures(const RunReport& r);

}  // namespace kos::driver
