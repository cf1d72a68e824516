// Probes from inside a local guest, for `kos check` (the local API's "probe" operation): a
// TCP connect, a UDP datagram or an ICMP echo request sent from the guest's own network
// namespace and address, as the guest would send it, so the answer says what the network
// (its VNIs, routes and security groups) does to the guest's traffic.
//
// Finding the guest. The agent knows a local interface by its guest MAC; the guest end may
// have been moved anywhere (a postCreateExec such as kos-guest-netns moves it into a named
// namespace and renames it; a CNI ADD plugs it into the container's namespace). The
// candidates are searched in order, each distinct namespace once: the one where the guest
// was found last (per attachment and uid), then every entry of /var/run/netns and
// /run/netns, then the namespace of every process (/proc/PID/ns/net: containers whose
// namespace is not bind-mounted in /var/run/netns). In each, a netlink dump of the links
// looks for the guest MAC; a namespace that also holds the interface's host end
// (host_end_name(mac)) is the fabric's, where an unplugged guest end waits, not a guest's.
//
// Threads: the caller's thread never changes namespace. Every namespace visited, and the
// probe itself, run on a short-lived thread of their own that setns'es there and is
// joined before the call returns; a call takes at most the probe's timeout plus the search.
// probe() may be called from several threads at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/names.h"
#include "common/error.h"

namespace kos::agent {

enum class ProbeProtocol { kTcp, kUdp, kIcmp };
std::optional<ProbeProtocol> parse_probe_protocol(std::string_view s);  // "tcp", "udp", "icmp"
std::string_view protocol_name(ProbeProtocol p);

// The probe timeout when a request names none, and the range a request's is clamped to.
inline constexpr std::chrono::milliseconds kDefaultProbeTimeout{1000};
inline constexpr std::chrono::milliseconds kMinProbeTimeout{100};
inline constexpr std::chrono::milliseconds kMaxProbeTimeout{10000};

struct ProbeSpec {
  ProbeProtocol protocol = ProbeProtocol::kTcp;
  uint32_t target = 0;  // IPv4, host byte order
  uint16_t port = 0;    // tcp and udp
  std::chrono::milliseconds timeout = kDefaultProbeTimeout;
};

// What came back. allowed: the network delivered the probe (TCP connected, or refused with
// a reset; UDP answered, or ICMP port unreachable; an ICMP echo reply). Not allowed: no
// answer within the timeout, or the destination was reported unreachable.
struct ProbeOutcome {
  bool allowed = false;
  std::string detail;  // "connected in 0.3 ms", "refused (RST) in 0.2 ms", "no answer in 1000 ms"
  std::chrono::microseconds elapsed{0};
};

// Where a guest's interface is.
struct GuestNetns {
  std::string path;    // the namespace, as found (e.g. /var/run/netns/guest-a)
  std::string ifname;  // the guest interface's name there
  bool operator==(const GuestNetns&) const = default;
};

// The source of a probe: a local interface the agent has implemented.
struct Guest {
  std::string key;  // namespace/name of the attachment
  std::string uid;
  api::MacAddress mac{};
  uint32_t ip = 0;  // the guest's address: the probe's source
};

// The seam between the local API and the kernel.
class GuestProber {
 public:
  virtual ~GuestProber() = default;
  struct Answer {
    GuestNetns where;
    ProbeOutcome outcome;
  };
  // Errors: kNotFound when no namespace holds the guest's interface (the message says where
  // it looked, and whether the interface waits unplugged in the fabric's namespace);
  // kConflict when the guest's interface lacks the guest's address; kInternal when a
  // socket call failed.
  virtual Result<Answer> probe(const Guest& guest, const ProbeSpec& spec) = 0;
};

struct LinuxGuestProberOptions {
  std::vector<std::string> netns_dirs = {"/var/run/netns", "/run/netns"};
  bool scan_processes = true;  // /proc/*/ns/net when the directories have no match
};

// The real one: the search above, then probe_from().
class LinuxGuestProber : public GuestProber {
 public:
  explicit LinuxGuestProber(LinuxGuestProberOptions opts = {});
  Result<Answer> probe(const Guest& guest, const ProbeSpec& spec) override;

 private:
  LinuxGuestProberOptions opts_;
  std::mutex mu_;
  std::map<std::string, std::string> found_;  // key + "/" + uid -> namespace path last found in
};

// The candidate namespaces in search order: `first`, then the entries of `dirs`, then (with
// `processes`) /proc/*/ns/net; each namespace once (by device and inode), unreadable entries
// left out.
std::vector<std::string> netns_candidates(const std::vector<std::string>& first, const std::vector<std::string>& dirs,
                                          bool processes);

// The first candidate whose namespace has an interface with MAC `mac` and no interface
// named `host_end`. kNotFound (saying how many namespaces were searched, and why any could
// not be entered) if none has.
Result<GuestNetns> find_guest_netns(const api::MacAddress& mac, const std::string& host_end,
                                    const std::vector<std::string>& candidates);

// Runs the probe in namespace `netns_path` from address `source` (the socket is bound to
// it; the namespace's routes choose the way out) of the guest's interface `ifname` (named
// in errors). kConflict if the namespace lacks the address; kNotFound if the namespace is
// gone; kInternal if a socket call failed.
Result<ProbeOutcome> probe_from(const std::string& netns_path, uint32_t source, const std::string& ifname,
                                const ProbeSpec& spec);

}  // namespace kos::agent
