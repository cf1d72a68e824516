#include "cni/protocol.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <boost/json.hpp>

#include "common/unix_socket.h"

namespace kos::cni {
namespace json = boost::json;

namespace {

constexpr size_t kMaxMessage = 1 << 20;

std::string str(const json::object& o, std::string_view k) {
  if (const auto* v = o.if_contains(k); v && v->is_string()) return std::string(v->as_string());
  return {};
}
int64_t num(const json::object& o, std::string_view k) {
  if (const auto* v = o.if_contains(k); v && v->is_int64()) return v->as_int64();
  return 0;
}
std::vector<std::string> strs(const json::object& o, std::string_view k) {
  std::vector<std::string> out;
  if (const auto* v = o.if_contains(k); v && v->is_array())
    for (const auto& e : v->as_array())
      if (e.is_string()) out.emplace_back(e.as_string());
  return out;
}
json::array arr(const std::vector<std::string>& v) {
  json::array a;
  for (const auto& s : v) a.emplace_back(s);
  return a;
}

Result<json::object> parse_object(std::string_view text, const char* what) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) return fail(Errc::kBadRequest, std::string(what) + " is not JSON: " + ec.message());
  if (!v.is_object()) return fail(Errc::kBadRequest, std::string(what) + " is not a JSON object");
  return std::move(v.as_object());
}

using Clock = std::chrono::steady_clock;

int remaining_ms(Clock::time_point deadline) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return ms <= 0 ? 0 : static_cast<int>(std::min<int64_t>(ms, 1 << 30));
}

// Waits for `events` on fd until the deadline: false on timeout.
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, remaining_ms(deadline));
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) return true;  // let the read/write report it
  }
}

// Reads to EOF within the deadline.
Result<std::string> read_all(int fd, Clock::time_point deadline, const char* what) {
  std::string out;
  char buf[16384];
  for (;;) {
    if (!wait_fd(fd, POLLIN, deadline)) return fail(Errc::kTimeout, std::string("timed out reading the ") + what);
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(Errc::kUnavailable, std::string("reading the ") + what + ": " + std::strerror(errno));
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > kMaxMessage) return fail(Errc::kBadRequest, std::string("the ") + what + " is larger than 1 MiB");
  }
}

}  // namespace

std::string encode(const Request& r) {
  json::object o;
  o["op"] = r.op;
  if (!r.container_id.empty()) o["containerId"] = r.container_id;
  if (!r.ifname.empty()) o["ifName"] = r.ifname;
  if (!r.netns.empty()) o["netns"] = r.netns;
  if (!r.network.empty()) o["network"] = r.network;
  if (!r.ns.empty()) o["namespace"] = r.ns;
  if (!r.subnet.empty()) o["subnet"] = r.subnet;
  if (r.timeout_ms) o["timeoutMs"] = r.timeout_ms;
  if (!r.args.empty()) {
    json::object a;
    for (const auto& [k, v] : r.args) a[k] = v;
    o["args"] = std::move(a);
  }
  if (!r.prev_address.empty()) o["prevAddress"] = r.prev_address;
  if (!r.prev_mac.empty()) o["prevMac"] = r.prev_mac;
  if (!r.valid.empty() || r.op == "gc") {
    json::array a;
    for (const auto& [c, i] : r.valid) a.push_back(json::object{{"containerId", c}, {"ifName", i}});
    o["valid"] = std::move(a);
  }
  if (!r.attachment.empty()) o["attachment"] = r.attachment;
  if (!r.uid.empty()) o["uid"] = r.uid;
  if (!r.target.empty()) o["target"] = r.target;
  if (!r.protocol.empty()) o["protocol"] = r.protocol;
  if (r.port) o["port"] = r.port;
  return json::serialize(o);
}

std::string encode(const Response& r) {
  json::object o;
  o["code"] = r.code;
  if (!r.msg.empty()) o["msg"] = r.msg;
  if (!r.details.empty()) o["details"] = r.details;
  if (!r.attachment.empty()) o["attachment"] = r.attachment;
  if (!r.ifname.empty()) o["ifName"] = r.ifname;
  if (!r.mac.empty()) o["mac"] = r.mac;
  if (!r.sandbox.empty()) o["sandbox"] = r.sandbox;
  if (r.mtu) o["mtu"] = r.mtu;
  if (!r.address.empty()) o["address"] = r.address;
  if (!r.gateway.empty()) o["gateway"] = r.gateway;
  if (!r.routes.empty()) o["routes"] = arr(r.routes);
  if (!r.gateway_routes.empty()) o["gatewayRoutes"] = arr(r.gateway_routes);
  if (!r.deleted.empty()) o["deleted"] = arr(r.deleted);
  if (!r.verdict.empty()) o["verdict"] = r.verdict;
  if (!r.detail.empty()) o["detail"] = r.detail;
  if (r.elapsed_us) o["elapsedUs"] = r.elapsed_us;
  return json::serialize(o);
}

Result<Request> decode_request(std::string_view text) {
  auto o = parse_object(text, "the request");
  if (!o) return fail(o.error());
  Request r;
  r.op = str(*o, "op");
  r.container_id = str(*o, "containerId");
  r.ifname = str(*o, "ifName");
  r.netns = str(*o, "netns");
  r.network = str(*o, "network");
  r.ns = str(*o, "namespace");
  r.subnet = str(*o, "subnet");
  r.timeout_ms = num(*o, "timeoutMs");
  if (const auto* a = o->if_contains("args"); a && a->is_object())
    for (const auto& [k, v] : a->as_object())
      if (v.is_string()) r.args[std::string(k)] = std::string(v.as_string());
  r.prev_address = str(*o, "prevAddress");
  r.prev_mac = str(*o, "prevMac");
  if (const auto* a = o->if_contains("valid"); a && a->is_array())
    for (const auto& e : a->as_array())
      if (e.is_object()) r.valid.emplace_back(str(e.as_object(), "containerId"), str(e.as_object(), "ifName"));
  r.attachment = str(*o, "attachment");
  r.uid = str(*o, "uid");
  r.target = str(*o, "target");
  r.protocol = str(*o, "protocol");
  r.port = static_cast<int>(std::clamp<int64_t>(num(*o, "port"), -1, 1 << 20));
  return r;
}

Result<Response> decode_response(std::string_view text) {
  auto o = parse_object(text, "the agent's answer");
  if (!o) return fail(o.error());
  Response r;
  r.code = static_cast<int>(num(*o, "code"));
  r.msg = str(*o, "msg");
  r.details = str(*o, "details");
  r.attachment = str(*o, "attachment");
  r.ifname = str(*o, "ifName");
  r.mac = str(*o, "mac");
  r.sandbox = str(*o, "sandbox");
  r.mtu = static_cast<int>(num(*o, "mtu"));
  r.address = str(*o, "address");
  r.gateway = str(*o, "gateway");
  r.routes = strs(*o, "routes");
  r.gateway_routes = strs(*o, "gatewayRoutes");
  r.deleted = strs(*o, "deleted");
  r.verdict = str(*o, "verdict");
  r.detail = str(*o, "detail");
  r.elapsed_us = num(*o, "elapsedUs");
  return r;
}

Result<Response> call(const std::string& socket_path, const Request& req, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  auto conn = connect_unix(socket_path, "the KOS agent");
  if (!conn) {
    Error e = conn.error();
    if (e.code == Errc::kUnavailable) e.message += " (is `kos agent` running on this node?)";
    return fail(std::move(e));
  }
  const int fd = *conn;
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  if (!write_all(fd, encode(req)) || ::shutdown(fd, SHUT_WR) != 0)
    return fail(Errc::kUnavailable, "the KOS agent at " + socket_path + " closed the connection");
  auto text = read_all(fd, deadline, "agent's answer");
  if (!text) {
    if (text.error().code == Errc::kTimeout)
      return fail(Errc::kTimeout, "the KOS agent at " + socket_path + " did not answer within " +
                                      std::to_string(timeout.count()) + " ms");
    return fail(text.error());
  }
  if (text->empty()) return fail(Errc::kUnavailable, "the KOS agent at " + socket_path + " closed the connection without an answer");
  return decode_response(*text);
}

Result<Request> read_request(int fd, std::chrono::milliseconds timeout) {
  auto text = read_all(fd, Clock::now() + timeout, "request");
  if (!text) return fail(text.error());
  return decode_request(*text);
}

bool write_response(int fd, const Response& r) { return write_all(fd, encode(r)); }

}  // namespace kos::cni
