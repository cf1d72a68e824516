// `kos check`: connectivity tests as code. A file of expectations ("from attachment A, a
// TCP connect to B's port 22 is allowed; to port 23 it is denied") is checked by probing
// from inside A's guest (the local API "probe" of A's node's agent, agent/probe.h) and
// comparing what came back with what was expected, so a CI job can gate a change on it.
//
// The file (YAML, or JSON):
//
//   namespace: demo            # the attachments' default namespace ("default")
//   timeout: 1s                # per probe (default 1s; 100ms..10s)
//   checks:
//   - name: sftp over ssh      # optional label
//     from: client             # a NetworkAttachment: name, or namespace/name
//     to: server               # a NetworkAttachment (its status.ipv4 is probed), or an IPv4 address
//     protocol: tcp            # tcp | udp | icmp
//     port: 22                 # tcp and udp only: 1..65535
//     expect: allow            # allow | deny
//     timeout: 500ms           # optional, this check's
//
// Parts: parse_check_file (the file, with precise errors), run_checks (the probes through
// a Cluster seam: the API for the attachments, the agents for the probes; the real one is
// AgentCluster), format_table / report_json (the output), Report::exit_code.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/json/value.hpp>

#include "api/types.h"
#include "common/error.h"

namespace kos::client {
class RestClient;
}

namespace kos::check {

enum class Protocol { kTcp, kUdp, kIcmp };
std::string_view protocol_name(Protocol p);

// An attachment named in the file: "name" or "namespace/name".
struct Ref {
  std::string ns, name;
  std::string key() const { return ns + "/" + name; }
  bool operator==(const Ref&) const = default;
  auto operator<=>(const Ref&) const = default;
};

struct Check {
  std::string name;  // the label ("" if none)
  Ref from;
  std::string to;              // as written
  std::optional<Ref> to_ref;   // `to` names an attachment
  uint32_t to_ip = 0;          // or an address (host byte order)
  Protocol protocol = Protocol::kTcp;
  uint16_t port = 0;  // tcp and udp
  bool expect_allow = true;
  std::chrono::milliseconds timeout{1000};
  int line = 0;  // where it starts in the file (1-based; 0: unknown)
};

struct CheckFile {
  std::string ns = "default";
  std::chrono::milliseconds timeout{1000};
  std::vector<Check> checks;
};

inline constexpr std::chrono::milliseconds kMinTimeout{100};
inline constexpr std::chrono::milliseconds kMaxTimeout{10000};

// Parses and validates a check file. `source` names it in errors; `ns_override` (if not
// empty) replaces the file's `namespace`. Errors: kInvalid whose message is one line per
// problem, "SOURCE:LINE: PATH: what is wrong" (e.g. "checks.yaml:14: checks[2].port:
// required for tcp"), with the problems also as causes (field = PATH); unknown keys are
// problems too.
Result<CheckFile> parse_check_file(const std::string& text, const std::string& source, const std::string& ns_override = "");

// What a probe asks of the agent of `node`.
struct ProbeRequest {
  std::string node;
  Ref from;
  std::string from_uid;
  uint32_t target = 0;
  Protocol protocol = Protocol::kTcp;
  uint16_t port = 0;
  std::chrono::milliseconds timeout{1000};
};

struct ProbeAnswer {
  bool allowed = false;
  std::string detail;  // the agent's words: "connected in 0.3 ms"
  std::string guest;   // where it ran: "eth0 in /var/run/netns/guest-a" ("" if unknown)
};

// The seam: where the attachments and the probes come from. Called from several threads
// at once (probe) and from the caller's (attachment).
class Cluster {
 public:
  virtual ~Cluster() = default;
  virtual Result<api::NetworkAttachment> attachment(const Ref& ref) = 0;
  virtual Result<ProbeAnswer> probe(const ProbeRequest& req) = 0;
};

struct Outcome {
  enum class State { kOk, kFailed, kError };
  State state = State::kError;
  std::optional<bool> got_allow;  // unset: the probe did not run
  std::string detail;             // the probe's detail, or the error
  std::string node;               // from's node ("" if unknown)
  std::string guest;              // where the probe ran (ProbeAnswer::guest)
  uint32_t target = 0;            // probed address (0: not resolved)
};

struct Report {
  std::vector<Check> checks;
  std::vector<Outcome> outcomes;  // outcomes[i] is checks[i]'s
  int count(Outcome::State s) const;
  // 0: every check got what it expected; 2: any check could not run; else 1.
  int exit_code() const;
};

// Runs every check of `file`, up to `parallel` probes at once; each attachment is read
// once. A check that cannot run (an attachment missing, unaddressed, unimplemented, an
// agent unreachable) is an error of its own and the others go on.
Report run_checks(const CheckFile& file, Cluster& cluster, int parallel = 4);

// The table, then the summary line ("3 checks: 2 ok, 1 failed").
std::string format_table(const Report& r);
boost::json::value report_json(const Report& r);

// Which unix socket reaches the agent of a node: `--agent-socket NODE=PATH` flags, else a
// `--agent-socket PATH` for all, else a kos up data dir's per-node socket
// (<dir>/agents/<node>.cni.sock), else the agent's default.
struct AgentSockets {
  std::map<std::string, std::string> by_node;
  std::string all;
  std::string up_dir;
  std::string fallback = "/var/lib/kos/agent/cni.sock";
  std::string for_node(const std::string& node) const;
  // Adds one --agent-socket value ("PATH" or "NODE=PATH"); kInvalid if malformed or repeated.
  Result<void> add_flag(const std::string& value);
};

// The real Cluster: the API through `client`, the probes through the agents' sockets.
class AgentCluster : public Cluster {
 public:
  AgentCluster(std::shared_ptr<client::RestClient> client, AgentSockets sockets);
  Result<api::NetworkAttachment> attachment(const Ref& ref) override;
  Result<ProbeAnswer> probe(const ProbeRequest& req) override;

 private:
  std::shared_ptr<client::RestClient> client_;
  AgentSockets sockets_;
};

}  // namespace kos::check
