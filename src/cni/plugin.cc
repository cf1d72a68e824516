#include "cni/plugin.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <set>

#include <boost/json.hpp>

namespace kos::cni {
namespace json = boost::json;

namespace {

struct Failure {
  int code;
  std::string msg, details;
};

// Versions compare as numbers: "0.4.0" < "1.0.0" < "1.1.0".
std::vector<int> version_parts(const std::string& v) {
  std::vector<int> out;
  size_t i = 0;
  while (i <= v.size()) {
    size_t j = v.find('.', i);
    if (j == std::string::npos) j = v.size();
    std::string part = v.substr(i, j - i);
    if (part.empty() || part.size() > 4 || !std::all_of(part.begin(), part.end(), ::isdigit)) return {};
    out.push_back(std::stoi(part));
    i = j + 1;
  }
  return out;
}
bool at_least(const std::string& v, const std::string& min) { return version_parts(v) >= version_parts(min); }

Outcome error_out(const std::string& version, const Failure& f) {
  json::object o;
  o["cniVersion"] = version;
  o["code"] = f.code;
  o["msg"] = f.msg;
  if (!f.details.empty()) o["details"] = f.details;
  return Outcome{1, json::serialize(o)};
}

std::string env_or(const Invocation& inv, const std::string& k) {
  auto it = inv.env.find(k);
  return it == inv.env.end() ? std::string() : it->second;
}

struct Config {
  std::string version, name, ns, subnet, socket;
  int64_t timeout_s = 30;
  json::object raw;
};

std::optional<Failure> string_field(const json::object& o, const char* k, std::string& out, bool required) {
  const auto* v = o.if_contains(k);
  if (!v) {
    if (required) return Failure{kInvalidConfig, std::string("the network config has no \"") + k + "\"", {}};
    return std::nullopt;
  }
  if (!v->is_string()) return Failure{kInvalidConfig, std::string("the network config's \"") + k + "\" is not a string", {}};
  out = std::string(v->as_string());
  if (required && out.empty()) return Failure{kInvalidConfig, std::string("the network config's \"") + k + "\" is empty", {}};
  return std::nullopt;
}

// CNI_ARGS: "K=V;K2=V2".
std::optional<Failure> parse_args(const std::string& s, std::map<std::string, std::string>& out) {
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(';', i);
    if (j == std::string::npos) j = s.size();
    std::string kv = s.substr(i, j - i);
    i = j + 1;
    if (kv.empty()) continue;
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0)
      return Failure{kInvalidEnvironment, "CNI_ARGS: \"" + kv + "\" is not KEY=VALUE", {}};
    out[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return std::nullopt;
}

bool truthy(const std::string& v) {
  std::string l = v;
  std::ranges::transform(l, l.begin(), ::tolower);
  return l == "1" || l == "true";
}

}  // namespace

Outcome run(const Invocation& inv, const AgentCall& call) {
  const std::string command = env_or(inv, "CNI_COMMAND");
  static const std::set<std::string> kCommands = {"ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"};
  std::string version = kSupportedVersions.back();  // for errors before the config is read

  if (command == "VERSION") {
    json::object o;
    std::string asked;
    if (!inv.stdin_data.empty()) {
      boost::system::error_code ec;
      auto v = json::parse(inv.stdin_data, ec);
      if (!ec && v.is_object())
        if (const auto* cv = v.as_object().if_contains("cniVersion"); cv && cv->is_string()) asked = cv->as_string();
    }
    o["cniVersion"] = std::ranges::find(kSupportedVersions, asked) != kSupportedVersions.end() ? asked : version;
    json::array a;
    for (const auto& s : kSupportedVersions) a.emplace_back(s);
    o["supportedVersions"] = std::move(a);
    return Outcome{0, json::serialize(o)};
  }
  if (command.empty())
    return error_out(version, {kInvalidEnvironment, "CNI_COMMAND is not set: kos-cni is run by a container runtime "
                                                    "(ADD, DEL, CHECK, STATUS, GC, VERSION)", {}});
  if (!kCommands.contains(command))
    return error_out(version, {kInvalidEnvironment, "CNI_COMMAND \"" + command + "\" is not one of ADD, DEL, CHECK, STATUS, GC, VERSION", {}});

  // The network config.
  Config c;
  {
    boost::system::error_code ec;
    json::value v = json::parse(inv.stdin_data, ec);
    if (ec) return error_out(version, {kDecodeFailure, "the network config on stdin is not JSON: " + ec.message(), {}});
    if (!v.is_object()) return error_out(version, {kDecodeFailure, "the network config on stdin is not a JSON object", {}});
    c.raw = std::move(v.as_object());
  }
  if (auto f = string_field(c.raw, "cniVersion", c.version, true)) return error_out(version, *f);
  if (std::ranges::find(kSupportedVersions, c.version) == kSupportedVersions.end())
    return error_out(version, {kIncompatibleVersion, "kos-cni supports CNI 0.4.0, 1.0.0 and 1.1.0, not " + c.version, {}});
  version = c.version;
  std::string type;
  if (auto f = string_field(c.raw, "type", type, true)) return error_out(version, *f);
  if (type.find('/') != std::string::npos || type.find("..") != std::string::npos)
    return error_out(version, {kInvalidConfig, "the network config's type \"" + type + "\" is not a plugin name", {}});
  if (auto f = string_field(c.raw, "name", c.name, true)) return error_out(version, *f);
  if (auto f = string_field(c.raw, "namespace", c.ns, command != "GC" && command != "STATUS")) return error_out(version, *f);
  if (auto f = string_field(c.raw, "subnet", c.subnet, command != "GC" && command != "STATUS")) return error_out(version, *f);
  c.socket = kDefaultAgentSocket;
  if (auto f = string_field(c.raw, "agentSocket", c.socket, false)) return error_out(version, *f);
  if (c.socket.empty() || c.socket.front() != '/')
    return error_out(version, {kInvalidConfig, "the network config's agentSocket \"" + c.socket + "\" is not an absolute path", {}});
  if (const auto* t = c.raw.if_contains("timeoutSeconds")) {
    if (!t->is_number() || t->to_number<double>() <= 0 || t->to_number<double>() > 300)
      return error_out(version, {kInvalidConfig, "the network config's timeoutSeconds must be a number in (0, 300]", {}});
    c.timeout_s = std::max<int64_t>(1, static_cast<int64_t>(t->to_number<double>()));
  }
  if (const auto* rc = c.raw.if_contains("runtimeConfig"); rc && rc->is_object()) {
    for (const char* k : {"ips", "mac"})
      if (const auto* v = rc->as_object().if_contains(k); v && !(v->is_array() && v->as_array().empty()) && !v->is_null())
        return error_out(version, {kUnsupportedField, std::string("runtimeConfig.") + k +
                                                          ": kos-cni takes addresses and MACs from the subnet's IPAM "
                                                          "and does not accept requested ones", {}});
  }
  if ((command == "STATUS" || command == "GC") && !at_least(c.version, "1.1.0"))
    return error_out(version, {kIncompatibleVersion, command + " needs cniVersion 1.1.0; the config says " + c.version, {}});
  if (command == "CHECK" && !c.raw.if_contains("prevResult"))
    return error_out(version, {kInvalidConfig, "CHECK needs prevResult in the network config", {}});

  Request req;
  req.network = c.name;
  req.ns = c.ns;
  req.subnet = c.subnet;
  req.timeout_ms = c.timeout_s * 1000;
  const auto socket_timeout = std::chrono::milliseconds(req.timeout_ms + 5000);

  if (command == "ADD" || command == "DEL" || command == "CHECK") {
    req.container_id = env_or(inv, "CNI_CONTAINERID");
    req.ifname = env_or(inv, "CNI_IFNAME");
    req.netns = env_or(inv, "CNI_NETNS");
    if (req.container_id.empty()) return error_out(version, {kInvalidEnvironment, "CNI_CONTAINERID is not set", {}});
    if (req.ifname.empty()) return error_out(version, {kInvalidEnvironment, "CNI_IFNAME is not set", {}});
    if (command != "DEL" && req.netns.empty()) return error_out(version, {kInvalidEnvironment, "CNI_NETNS is not set", {}});
    std::map<std::string, std::string> args;
    if (auto f = parse_args(env_or(inv, "CNI_ARGS"), args)) return error_out(version, *f);
    const bool ignore_unknown = args.contains("IgnoreUnknown") && truthy(args["IgnoreUnknown"]);
    for (const auto& [k, v] : args) {
      if (k == "IgnoreUnknown") continue;
      if (k == "IP" || k == "MAC")
        return error_out(version, {kUnsupportedField, "CNI_ARGS " + k + "=: kos-cni takes addresses and MACs from the "
                                                      "subnet's IPAM and does not accept requested ones", {}});
      if (k == "KOS_NAMESPACE") req.ns = v;
      else if (k == "KOS_SUBNET") req.subnet = v;
      else if (k.starts_with("K8S_POD_")) req.args[k] = v;
      else if (!ignore_unknown)
        return error_out(version, {kUnsupportedField, "CNI_ARGS: unknown key " + k + " (set IgnoreUnknown=1 to allow it)", {}});
    }
    if (command == "CHECK") {
      // The interface in the container and its address, as the chain's result says.
      const auto& prev = c.raw.at("prevResult");
      if (!prev.is_object()) return error_out(version, {kDecodeFailure, "prevResult is not an object", {}});
      const auto& po = prev.as_object();
      int index = -1;
      if (const auto* ifs = po.if_contains("interfaces"); ifs && ifs->is_array())
        for (size_t i = 0; i < ifs->as_array().size(); ++i) {
          const auto& e = ifs->as_array()[i];
          if (!e.is_object()) continue;
          std::string n, sb, mac;
          (void)string_field(e.as_object(), "name", n, false);
          (void)string_field(e.as_object(), "sandbox", sb, false);
          (void)string_field(e.as_object(), "mac", mac, false);
          if (n == req.ifname && !sb.empty()) {
            index = static_cast<int>(i);
            req.prev_mac = mac;
          }
        }
      if (index < 0)
        return error_out(version, {kMismatch, "prevResult has no interface " + req.ifname + " in a sandbox", {}});
      if (const auto* ips = po.if_contains("ips"); ips && ips->is_array())
        for (const auto& e : ips->as_array()) {
          if (!e.is_object()) continue;
          const auto* i = e.as_object().if_contains("interface");
          if (i && i->is_int64() && i->as_int64() == index) (void)string_field(e.as_object(), "address", req.prev_address, false);
        }
      if (req.prev_address.empty())
        return error_out(version, {kMismatch, "prevResult has no address on interface " + req.ifname, {}});
    }
    if (command == "DEL" && !req.netns.empty()) {
      struct stat st{};
      if (::stat(req.netns.c_str(), &st) != 0) req.netns.clear();  // gone: DEL cleans up without it
    }
  }
  if (command == "GC") {
    const json::value* valid = c.raw.if_contains("cni.dev/valid-attachments");
    if (!valid) valid = c.raw.if_contains("cni.dev/attachments");
    if (valid) {
      if (!valid->is_array()) return error_out(version, {kDecodeFailure, "cni.dev/valid-attachments is not an array", {}});
      for (const auto& e : valid->as_array()) {
        if (!e.is_object()) return error_out(version, {kDecodeFailure, "cni.dev/valid-attachments holds a non-object", {}});
        std::string id, ifn;
        (void)string_field(e.as_object(), "containerID", id, false);
        (void)string_field(e.as_object(), "ifname", ifn, false);
        req.valid.emplace_back(id, ifn);
      }
    }
  }
  req.op = command == "ADD" ? "add" : command == "DEL" ? "del" : command == "CHECK" ? "check" : command == "GC" ? "gc" : "status";

  auto answer = call(c.socket, req, socket_timeout);
  if (!answer) {
    const int code = command == "STATUS" ? kNotAvailable
                     : answer.error().code == Errc::kTimeout ? kTryAgainLater
                                                             : kAgentUnreachable;
    return error_out(version, {code, answer.error().message, {}});
  }
  if (answer->code != kOk) return error_out(version, {answer->code, answer->msg, answer->details});
  if (command != "ADD") return Outcome{0, {}};

  json::object result;
  result["cniVersion"] = version;
  json::object ifc{{"name", answer->ifname}, {"mac", answer->mac}, {"sandbox", answer->sandbox}};
  if (answer->mtu) ifc["mtu"] = answer->mtu;
  result["interfaces"] = json::array{ifc};
  json::object ip{{"address", answer->address}, {"interface", 0}};
  if (!answer->gateway.empty()) ip["gateway"] = answer->gateway;
  if (!at_least(version, "1.0.0")) ip["version"] = "4";
  result["ips"] = json::array{ip};
  json::array routes;
  for (const auto& r : answer->routes) routes.push_back(json::object{{"dst", r}});
  for (const auto& r : answer->gateway_routes) routes.push_back(json::object{{"dst", r}, {"gw", answer->gateway}});
  result["routes"] = std::move(routes);
  result["dns"] = json::object{};
  return Outcome{0, json::serialize(result)};
}

}  // namespace kos::cni
