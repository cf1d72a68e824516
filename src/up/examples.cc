#include "up/examples.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "api/cidr.h"
#include "common/subprocess.h"

namespace kos::up {

namespace json = boost::json;

namespace {

json::value scalar(const YAML::Node& n) {
  const std::string& s = n.Scalar();
  if (n.Tag() == "!") return json::value(s);  // quoted: a string, whatever it looks like
  static const std::regex integer("[-+]?[0-9]+"), real("[-+]?([0-9]+\\.[0-9]*|\\.[0-9]+)([eE][-+]?[0-9]+)?");
  if (s == "null" || s == "Null" || s == "NULL" || s == "~" || s.empty()) return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  if (std::regex_match(s, integer)) {
    try {
      return json::value(std::stoll(s));
    } catch (...) {
      return json::value(s);
    }
  }
  if (std::regex_match(s, real)) return json::value(std::stod(s));
  return json::value(s);
}

json::value to_json(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: {
      json::object o;
      for (const auto& kv : n) o[kv.first.as<std::string>()] = to_json(kv.second);
      return o;
    }
    case YAML::NodeType::Sequence: {
      json::array a;
      for (const auto& v : n) a.push_back(to_json(v));
      return a;
    }
    case YAML::NodeType::Scalar:
      return scalar(n);
    default:
      return nullptr;
  }
}

const json::object* obj_at(const json::value& v, const char* key) {
  const auto* o = v.if_object();
  if (!o) return nullptr;
  auto it = o->find(key);
  return it == o->end() ? nullptr : it->value().if_object();
}

std::string str_at(const json::object* o, const char* key) {
  if (!o) return {};
  auto it = o->find(key);
  if (it == o->end() || !it->value().is_string()) return {};
  return std::string(it->value().as_string());
}

// Why an attachment is not ready yet, or "" when it is.
std::string not_ready(const api::NetworkAttachment& na, std::chrono::system_clock::time_point execs_since) {
  const auto& st = na.status;
  if (!st.errors.ipam.empty()) return "IPAM: " + st.errors.ipam[0];
  if (st.ipv4.empty()) return "no address yet";
  if (!st.errors.host.empty()) return "node: " + st.errors.host[0];
  if (st.ifc_name.empty() || st.host_ip.empty()) return "not implemented on " + na.spec.node + " yet";
  if (!na.spec.post_create_exec.empty()) {
    if (!st.post_create_exec_report) return "postCreateExec has not run yet";
    if (st.post_create_exec_report->start_time < execs_since)
      return "postCreateExec has not run again since the nodes were made";
    if (st.post_create_exec_report->exit_status != 0)
      return "postCreateExec exited " + std::to_string(st.post_create_exec_report->exit_status) + ": " +
             st.post_create_exec_report->std_err;
  }
  return {};
}

// The guest namespace a `kos-guest-netns add IF ADDR NETNS` postCreateExec made.
std::string guest_netns(const api::NetworkAttachment& na) {
  const auto& rep = na.status.post_create_exec_report;
  if (!rep || rep->exit_status != 0 || rep->command.size() != 5 || rep->command[1] != "add") return {};
  if (std::filesystem::path(rep->command[0]).filename() != "kos-guest-netns") return {};
  return rep->command[4];
}

// The guest's on-link network ("10.10.0.0/24") from the address it was given (the fourth
// argument of the add: "${ipv4}/24" expanded), or "" when unknown.
std::string guest_network(const api::NetworkAttachment& na) {
  const auto& rep = na.status.post_create_exec_report;
  if (!rep || rep->command.size() != 5) return {};
  const std::string& a = rep->command[3];
  auto slash = a.find('/');
  if (slash == std::string::npos) return {};
  auto ip = api::parse_ipv4(a.substr(0, slash));
  auto len = api::parse_decimal(a.substr(slash + 1), 32);
  if (!ip || !len) return {};
  api::Ipv4Cidr c{0, static_cast<int>(*len)};
  c.addr = *ip & c.mask();
  return c.to_string();
}

}  // namespace

Result<std::vector<json::value>> yaml_documents(const std::string& text, const std::string& source) {
  std::vector<json::value> out;
  try {
    for (const auto& doc : YAML::LoadAll(text)) {
      if (!doc || doc.IsNull()) continue;
      out.push_back(to_json(doc));
    }
  } catch (const YAML::Exception& e) {
    return fail(Errc::kInvalid, source + ": line " + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  return out;
}

Result<std::vector<ExampleObject>> load_examples(const std::filesystem::path& dir) {
  std::error_code ec;
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec))
    if (e.path().extension() == ".yaml") files.push_back(e.path());
  if (ec) return fail(Errc::kNotFound, "examples directory " + dir.string() + ": " + ec.message());
  if (files.empty()) return fail(Errc::kNotFound, "examples directory " + dir.string() + " has no *.yaml file");
  std::sort(files.begin(), files.end());
  std::vector<ExampleObject> out;
  for (const auto& f : files) {
    std::ifstream in(f);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) return fail(Errc::kInternal, "cannot read " + f.string());
    auto docs = yaml_documents(text.str(), f.string());
    if (!docs) return fail(docs.error());
    for (auto& d : *docs) {
      const auto* o = d.if_object();
      std::string api_version = o ? str_at(o, "apiVersion") : "", kind_name = o ? str_at(o, "kind") : "";
      auto kind = api::kind_from_name(kind_name);
      if (!o || api_version != api::kApiVersion || !kind || *kind == api::Kind::kIPLock)
        return fail(Errc::kInvalid, f.string() + ": an object of apiVersion " + std::string(api::kApiVersion) +
                                        " and kind Subnet or NetworkAttachment expected, not " +
                                        (api_version.empty() ? "?" : api_version) + " " +
                                        (kind_name.empty() ? "?" : kind_name));
      const auto* m = obj_at(d, "metadata");
      std::string ns = str_at(m, "namespace"), name = str_at(m, "name");
      if (name.empty()) return fail(Errc::kInvalid, f.string() + ": a " + kind_name + " without metadata.name");
      if (ns.empty()) ns = "default";
      out.push_back(ExampleObject{*kind, ns, name, std::move(d), f.string()});
    }
  }
  return out;
}

Result<int> apply_examples(client::RestClient& c, const std::vector<ExampleObject>& objects, bool strip_execs) {
  int created = 0;
  for (const auto& o : objects) {
    json::value body = o.json;
    if (strip_execs && o.kind == api::Kind::kNetworkAttachment)
      if (auto* spec = body.as_object().if_contains("spec"); spec && spec->is_object()) {
        spec->as_object().erase("postCreateExec");
        spec->as_object().erase("postDeleteExec");
      }
    auto r = c.create(client::ResourceRef::of(o.kind), o.ns, body);
    if (r) {
      ++created;
      continue;
    }
    if (r.error().code == Errc::kAlreadyExists) continue;
    return fail(r.error().code, o.source + ": " + o.ns + "/" + o.name + ": " + r.error().message);
  }
  return created;
}

Result<std::vector<api::NetworkAttachment>> wait_ready(client::RestClient& c, const std::vector<ExampleObject>& objects,
                                                       std::chrono::system_clock::time_point execs_since,
                                                       std::chrono::milliseconds timeout,
                                                       const std::function<bool()>& cancelled) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string waiting;
  while (true) {
    std::vector<api::NetworkAttachment> ready;
    waiting.clear();
    for (const auto& o : objects) {
      if (o.kind != api::Kind::kNetworkAttachment) continue;
      auto na = c.get<api::NetworkAttachment>(o.ns, o.name);
      std::string why = na ? not_ready(*na, execs_since) : na.error().message;
      if (why.empty()) ready.push_back(std::move(*na));
      else waiting += (waiting.empty() ? "" : "; ") + o.ns + "/" + o.name + ": " + why;
    }
    if (waiting.empty()) return ready;
    if (cancelled && cancelled()) return fail(Errc::kCancelled, "stopped while waiting for the examples");
    if (std::chrono::steady_clock::now() >= deadline)
      return fail(Errc::kTimeout, "examples not ready after " + std::to_string(timeout.count() / 1000) + " s: " + waiting);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // polling the API for readiness
  }
}

std::vector<PingCheck> plan_pings(const std::vector<api::NetworkAttachment>& ready) {
  std::map<uint32_t, std::vector<const api::NetworkAttachment*>> by_vni;
  for (const auto& na : ready)
    if (!guest_netns(na).empty()) by_vni[na.status.address_vni].push_back(&na);
  auto key = [](const api::NetworkAttachment& na) { return na.metadata.namespace_ + "/" + na.metadata.name; };
  auto check = [&](const api::NetworkAttachment& from, const api::NetworkAttachment& to, bool expect) {
    return PingCheck{key(from), key(to), from.spec.node, to.spec.node, guest_netns(from), from.status.ipv4, to.status.ipv4, expect, false};
  };
  std::vector<PingCheck> out;
  for (const auto& [vni, nas] : by_vni)
    for (size_t i = 1; i < nas.size(); ++i)
      if (nas[i]->spec.node != nas[0]->spec.node) out.push_back(check(*nas[0], *nas[i], true));
  // Isolation: to an address on the source guest's own on-link network (the CIDRs are the
  // same) that only the other VNI has. Without isolation it would answer.
  for (auto a = by_vni.begin(); a != by_vni.end(); ++a)
    for (auto b = by_vni.begin(); b != by_vni.end(); ++b) {
      if (a == b) continue;
      const auto& from = *a->second[0];
      std::set<std::string> own;
      for (const auto* na : a->second) own.insert(na->status.ipv4);
      for (const auto* target : b->second)
        if (!own.count(target->status.ipv4) && guest_network(*target) == guest_network(from) &&
            !guest_network(from).empty()) {
          out.push_back(check(from, *target, false));
          break;
        }
    }
  return out;
}

void run_pings(std::vector<PingCheck>& checks, std::chrono::seconds settle) {
  auto ping = [](const PingCheck& c) {
    auto r = run_command({"ip", "netns", "exec", c.from_netns, "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1",
                          c.to_ip},
                         std::chrono::seconds(10));
    return r && r->exit_status == 0;
  };
  // Replies first, each retried for up to `settle` (the nodes may still be programming the
  // last mappings); then the checks that must get none, once the network carries packets.
  for (auto& c : checks) {
    if (!c.expect_reply) continue;
    const auto deadline = std::chrono::steady_clock::now() + settle;
    while (!(c.replied = ping(c)) && std::chrono::steady_clock::now() < deadline) {
    }
  }
  for (auto& c : checks)
    if (!c.expect_reply) c.replied = ping(c);
}

std::string ping_table(const std::vector<PingCheck>& checks) {
  std::ostringstream o;
  auto cell = [](std::string s, size_t w) { return s.size() < w ? s + std::string(w - s.size(), ' ') : s + " "; };
  o << cell("FROM", 38) << cell("TO", 38) << cell("EXPECTED", 10) << cell("GOT", 10) << "\n";
  for (const auto& c : checks)
    o << cell(c.from + " " + c.from_ip + " (" + c.from_node + ")", 38) << cell(c.to + " " + c.to_ip + " (" + c.to_node + ")", 38)
      << cell(c.expect_reply ? "reply" : "no reply", 10) << cell(c.replied ? "reply" : "no reply", 10)
      << (c.ok() ? "ok" : "FAILED") << "\n";
  return o.str();
}

}  // namespace kos::up
