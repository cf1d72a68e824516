// The simulated machines of `kos up`: an underlay and N nodes, each a network namespace.
//
//   <prefix>-ul     the underlay: a Linux bridge `ulbr` joining the nodes
//   <prefix>-n<i>   node i: a veth `ul0` on the bridge with underlay address 10.254.0.(i+1)/24;
//                   its agent (in the host namespace, `kos agent --netns <prefix>-n<i>`)
//                   makes the VXLAN devices and guest interfaces here
//   <prefix>-n<i>-g-<name>   guest namespaces, made by kos-guest-netns on the agent's behalf
//
// Nothing is made in the host's own network namespace, and no route leads out of these
// namespaces. Every namespace whose name starts with "<prefix>-" is removed by remove(),
// which is how `kos up` cleans up at exit and `kos down` after a crash.
#pragma once

#include <string>
#include <vector>

#include "common/error.h"

namespace kos::up {

class LocalNetwork {
 public:
  static std::string underlay_ns(const std::string& prefix) { return prefix + "-ul"; }
  static std::string node_ns(const std::string& prefix, int i) { return prefix + "-n" + std::to_string(i); }
  static std::string node_name(int i) { return "node-" + std::to_string(i); }
  static std::string host_ip(int i) { return "10.254.0." + std::to_string(i + 1); }
  static constexpr int kMaxNodes = 64;

  // The network namespaces whose names start with "<prefix>-", sorted.
  static std::vector<std::string> existing(const std::string& prefix);
  // Makes the underlay and `nodes` node namespaces. On failure what was made is removed.
  static Result<void> create(const std::string& prefix, int nodes);
  // Deletes every namespace existing(prefix) lists (with them, every link in them).
  // Errors: a namespace that could not be deleted (the others still are).
  static Result<void> remove(const std::string& prefix);
};

}  // namespace kos::up
