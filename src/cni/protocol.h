// The agent's local API, between the kos-cni plugin and the connection agent of its node.
//
// Transport: a unix stream socket in the agent's state dir (root only, mode 0600). One
// request per connection: the plugin writes a JSON object and shuts down its sending side;
// the agent answers with one JSON object and closes. No HTTP, no framing beyond EOF: the
// plugin stays small, and the agent holds the credentials and the watches (the plugin
// never talks to the API server).
//
// Operations (Request::op): "add", "del", "check", "status", "gc" (the plugin's) and
// "probe" (`kos check`'s: a connection attempt from inside a local guest); see the agent's
// local_api.h for what each does. A Response with code 0 succeeded; any other code is a
// CNI error code (the plugin prints it as the CNI error JSON unchanged).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.h"

namespace kos::cni {

// CNI error codes (SPEC.md "Error"); 100 and above are kos-cni's own.
enum Code : int {
  kOk = 0,
  kIncompatibleVersion = 1,
  kUnsupportedField = 2,
  kUnknownContainer = 3,
  kInvalidEnvironment = 4,
  kIoFailure = 5,
  kDecodeFailure = 6,
  kInvalidConfig = 7,
  kTryAgainLater = 11,
  kNotAvailable = 50,       // STATUS: cannot serve ADD now
  kAgentUnreachable = 100,  // the agent's socket does not answer
  kApiServer = 101,         // the agent could not read or write the API
  kMismatch = 102,          // CHECK: the container's interface differs from prevResult
  kNotLocal = 103,          // probe: the attachment does not exist or is not implemented here
  kNoGuest = 104,           // probe: no network namespace holds the attachment's guest end
  kProbeFailed = 105,       // probe: the probe could not be run (a socket call failed)
};

struct Request {
  std::string op;
  std::string container_id, ifname, netns;  // CNI_CONTAINERID, CNI_IFNAME, CNI_NETNS
  std::string network;                      // the network config's "name"
  std::string ns, subnet;                   // the KOS namespace and subnet
  int64_t timeout_ms = 0;                   // add/del: how long the agent may wait
  std::map<std::string, std::string> args;  // CNI_ARGS the agent records (K8S_POD_*)
  std::string prev_address, prev_mac;       // check: from prevResult ("a.b.c.d/len")
  std::vector<std::pair<std::string, std::string>> valid;  // gc: (container id, ifname)
  // probe: from attachment `ns`/`attachment` (of incarnation `uid`, if the caller knows
  // it: then the agent need not read the API) to IPv4 address `target`, `protocol` tcp,
  // udp or icmp, `port` 1..65535 (tcp and udp; 0 for icmp). timeout_ms is the probe's
  // (default 1000, clamped to 100..10000).
  std::string attachment, uid, target, protocol;
  int port = 0;
  bool operator==(const Request&) const = default;
};

struct Response {
  int code = kOk;
  std::string msg, details;
  // add, check
  std::string attachment;  // namespace/name of the NetworkAttachment
  std::string ifname, mac, sandbox;
  int mtu = 0;
  std::string address, gateway;     // "a.b.c.d/len", "a.b.c.d" (empty: none)
  std::vector<std::string> routes;  // destinations reached through the interface
  std::vector<std::string> gateway_routes;  // destinations reached through the gateway
  // gc
  std::vector<std::string> deleted;  // namespace/name
  // probe (also attachment; ifname and sandbox: the guest's interface and the namespace
  // the probe ran in): "allow" (the network delivered it: TCP connected or refused, a UDP
  // reply or port unreachable, an ICMP echo reply) or "deny" (no answer within the
  // timeout, or unreachable), how ("connected in 0.3 ms") and how long it took.
  std::string verdict, detail;
  int64_t elapsed_us = 0;
  bool operator==(const Response&) const = default;

  static Response error(int code, std::string msg, std::string details = {}) {
    Response r;
    r.code = code;
    r.msg = std::move(msg);
    r.details = std::move(details);
    return r;
  }
};

std::string encode(const Request& r);
std::string encode(const Response& r);
Result<Request> decode_request(std::string_view json);
Result<Response> decode_response(std::string_view json);

// The client side: connect to `socket_path`, send, read the answer, all within `timeout`.
// Errors: kUnavailable when nobody listens there (or the socket is missing), kTimeout.
Result<Response> call(const std::string& socket_path, const Request& req, std::chrono::milliseconds timeout);

// The server side of one accepted connection: reads the request (up to 1 MiB, within
// `timeout`), or an error to answer with.
Result<Request> read_request(int fd, std::chrono::milliseconds timeout);
// Writes the response; false if the peer went away.
bool write_response(int fd, const Response& r);

}  // namespace kos::cni
