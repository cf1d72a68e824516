#include "check/check.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <set>
#include <sstream>
#include <thread>

#include <boost/json.hpp>

#include "api/cidr.h"
#include "api/names.h"
#include "client/rest_client.h"
#include "cni/protocol.h"
#include "common/duration.h"

namespace kos::check {

namespace json = boost::json;

std::string_view protocol_name(Protocol p) {
  switch (p) {
    case Protocol::kTcp: return "tcp";
    case Protocol::kUdp: return "udp";
    case Protocol::kIcmp: return "icmp";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------
// The file

namespace {

// The problems found so far, each "SOURCE:LINE: PATH: message".
class Problems {
 public:
  explicit Problems(std::string source) : source_(std::move(source)) {}
  void add(int line, const std::string& path, const std::string& message, const char* reason = "FieldValueInvalid") {
    std::string where = source_ + (line > 0 ? ":" + std::to_string(line) : "") + ": ";
    lines_.push_back(where + (path.empty() ? "" : path + ": ") + message);
    causes_.push_back(FieldCause{reason, message, path});
  }
  bool empty() const { return lines_.empty(); }
  Error error() const {
    std::string msg;
    for (const auto& l : lines_) msg += (msg.empty() ? "" : "\n") + l;
    return Error{Errc::kInvalid, msg, causes_};
  }

 private:
  std::string source_;
  std::vector<std::string> lines_;
  std::vector<FieldCause> causes_;
};

int line_of(const YAML::Node& n) {
  const auto m = n.Mark();
  return m.is_null() ? 0 : m.line + 1;
}

// A mapping's entries by key, with unknown and repeated keys reported.
std::map<std::string, YAML::Node> entries(const YAML::Node& map, const std::string& path,
                                          const std::vector<std::string>& known, Problems& p) {
  std::map<std::string, YAML::Node> out;
  for (const auto& kv : map) {
    const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "";
    const std::string at = path.empty() ? key : path + "." + key;
    if (key.empty() || std::ranges::find(known, key) == known.end()) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      p.add(line_of(kv.first), path.empty() ? key : at, "unknown key (known: " + list + ")", "FieldValueUnknown");
      continue;
    }
    if (!out.emplace(key, kv.second).second) p.add(line_of(kv.first), at, "given twice", "FieldValueDuplicate");
  }
  return out;
}

// A scalar's text, or nullopt (with a problem) for a mapping, a list or a null.
std::optional<std::string> scalar(const YAML::Node& n, const std::string& path, Problems& p, const char* what) {
  if (!n.IsScalar() || (n.Tag() != "!" && (n.Scalar().empty() || n.Scalar() == "~" || n.Scalar() == "null"))) {
    p.add(line_of(n), path, std::string(what) + " expected", "FieldValueTypeInvalid");
    return std::nullopt;
  }
  return n.Scalar();
}

std::optional<std::chrono::milliseconds> timeout_of(const YAML::Node& n, const std::string& path, Problems& p) {
  auto s = scalar(n, path, p, "a duration (e.g. 500ms, 1s)");
  if (!s) return std::nullopt;
  auto d = parse_duration(*s);
  if (!d) {
    p.add(line_of(n), path, d.error().message);
    return std::nullopt;
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(*d);
  if (ms < kMinTimeout || ms > kMaxTimeout) {
    p.add(line_of(n), path, "'" + *s + "' is outside 100ms..10s");
    return std::nullopt;
  }
  return ms;
}

// "name" or "namespace/name".
std::optional<Ref> ref_of(const std::string& s, const std::string& ns, int line, const std::string& path, Problems& p) {
  Ref r{ns, s};
  if (auto slash = s.find('/'); slash != std::string::npos) r = Ref{s.substr(0, slash), s.substr(slash + 1)};
  if (r.name.find('/') != std::string::npos) {
    p.add(line, path, "'" + s + "': a NetworkAttachment is NAME or NAMESPACE/NAME");
    return std::nullopt;
  }
  if (auto e = api::dns1123_label_error(r.ns)) {
    p.add(line, path, "namespace '" + r.ns + "': " + *e);
    return std::nullopt;
  }
  if (auto e = api::dns1123_subdomain_error(r.name)) {
    p.add(line, path, "'" + r.name + "': " + *e);
    return std::nullopt;
  }
  return r;
}

bool looks_like_ipv4(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789.") == std::string::npos;
}

void parse_check(const YAML::Node& n, size_t i, const CheckFile& file, Problems& p, std::vector<Check>& out) {
  const std::string path = "checks[" + std::to_string(i) + "]";
  if (!n.IsMap()) {
    p.add(line_of(n), path, "a mapping expected (name, from, to, protocol, port, expect, timeout)", "FieldValueTypeInvalid");
    return;
  }
  auto e = entries(n, path, {"name", "from", "to", "protocol", "port", "expect", "timeout"}, p);
  Check c;
  c.line = line_of(n);
  c.timeout = file.timeout;
  bool ok = true;
  auto required = [&](const char* key) -> const YAML::Node* {
    auto it = e.find(key);
    if (it == e.end()) {
      p.add(c.line, path + "." + key, "required", "FieldValueRequired");
      ok = false;
      return nullptr;
    }
    return &it->second;
  };
  if (auto it = e.find("name"); it != e.end()) {
    if (auto s = scalar(it->second, path + ".name", p, "a string")) c.name = *s;
    else ok = false;
  }
  if (const auto* f = required("from")) {
    auto s = scalar(*f, path + ".from", p, "a NetworkAttachment (NAME or NAMESPACE/NAME)");
    auto r = s ? ref_of(*s, file.ns, line_of(*f), path + ".from", p) : std::nullopt;
    if (r) c.from = *r;
    else ok = false;
  }
  if (const auto* t = required("to")) {
    auto s = scalar(*t, path + ".to", p, "a NetworkAttachment (NAME or NAMESPACE/NAME) or an IPv4 address");
    if (s) c.to = *s;
    if (!s) {
      ok = false;
    } else if (looks_like_ipv4(*s)) {
      auto ip = api::parse_ipv4(*s);
      if (ip) c.to_ip = *ip;
      else p.add(line_of(*t), path + ".to", "'" + *s + "' is not an IPv4 address");
      ok = ok && ip.has_value();
    } else {
      c.to_ref = ref_of(*s, file.ns, line_of(*t), path + ".to", p);
      ok = ok && c.to_ref.has_value();
    }
  }
  bool have_protocol = false;
  if (const auto* pr = required("protocol")) {
    auto s = scalar(*pr, path + ".protocol", p, "tcp, udp or icmp");
    if (s && (*s == "tcp" || *s == "udp" || *s == "icmp")) {
      c.protocol = *s == "tcp" ? Protocol::kTcp : *s == "udp" ? Protocol::kUdp : Protocol::kIcmp;
      have_protocol = true;
    } else {
      if (s) p.add(line_of(*pr), path + ".protocol", "'" + *s + "': tcp, udp or icmp", "FieldValueNotSupported");
      ok = false;
    }
  }
  auto port = e.find("port");
  if (have_protocol && c.protocol == Protocol::kIcmp && port != e.end()) {
    p.add(line_of(port->second), path + ".port", "icmp takes no port", "FieldValueForbidden");
    ok = false;
  } else if (have_protocol && c.protocol != Protocol::kIcmp && port == e.end()) {
    p.add(c.line, path + ".port", "required for " + std::string(protocol_name(c.protocol)), "FieldValueRequired");
    ok = false;
  } else if (port != e.end()) {
    auto s = scalar(port->second, path + ".port", p, "a port number");
    int v = 0;
    const bool number = s && !s->empty() && std::from_chars(s->data(), s->data() + s->size(), v).ptr == s->data() + s->size();
    if (!number || v < 1 || v > 65535) {
      if (s) p.add(line_of(port->second), path + ".port", "'" + *s + "': a port number 1..65535");
      ok = false;
    } else {
      c.port = static_cast<uint16_t>(v);
    }
  }
  if (const auto* x = required("expect")) {
    auto s = scalar(*x, path + ".expect", p, "allow or deny");
    if (s && (*s == "allow" || *s == "deny")) {
      c.expect_allow = *s == "allow";
    } else {
      if (s) p.add(line_of(*x), path + ".expect", "'" + *s + "': allow or deny", "FieldValueNotSupported");
      ok = false;
    }
  }
  if (auto it = e.find("timeout"); it != e.end()) {
    auto t = timeout_of(it->second, path + ".timeout", p);
    if (t) c.timeout = *t;
    else ok = false;
  }
  if (ok) out.push_back(std::move(c));
}

}  // namespace

Result<CheckFile> parse_check_file(const std::string& text, const std::string& source, const std::string& ns_override) {
  Problems p(source);
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(text);
  } catch (const YAML::Exception& e) {
    p.add(e.mark.is_null() ? 0 : e.mark.line + 1, "", "not YAML or JSON: " + e.msg);
    return fail(p.error());
  }
  std::erase_if(docs, [](const YAML::Node& d) { return d.IsNull(); });
  if (docs.empty()) {
    p.add(0, "", "the file is empty (it needs a list of checks)");
    return fail(p.error());
  }
  if (docs.size() > 1) {
    p.add(line_of(docs[1]), "", "one document expected, not " + std::to_string(docs.size()));
    return fail(p.error());
  }
  const YAML::Node& root = docs[0];
  if (!root.IsMap()) {
    p.add(line_of(root), "", "a mapping expected (namespace, timeout, checks)", "FieldValueTypeInvalid");
    return fail(p.error());
  }
  auto e = entries(root, "", {"namespace", "timeout", "checks"}, p);
  CheckFile file;
  if (auto it = e.find("namespace"); it != e.end()) {
    if (auto s = scalar(it->second, "namespace", p, "a namespace name")) {
      if (auto err = api::dns1123_label_error(*s)) p.add(line_of(it->second), "namespace", "'" + *s + "': " + *err);
      else file.ns = *s;
    }
  }
  if (!ns_override.empty()) file.ns = ns_override;
  if (auto it = e.find("timeout"); it != e.end())
    if (auto t = timeout_of(it->second, "timeout", p)) file.timeout = *t;
  auto checks = e.find("checks");
  if (checks == e.end()) {
    p.add(line_of(root), "checks", "required: the list of checks", "FieldValueRequired");
  } else if (!checks->second.IsSequence()) {
    p.add(line_of(checks->second), "checks", "a list expected", "FieldValueTypeInvalid");
  } else if (checks->second.size() == 0) {
    p.add(line_of(checks->second), "checks", "empty: nothing to check");
  } else {
    try {  // yaml-cpp throws only on misuse, which would be a bug here; still, an error, never a crash
      for (size_t i = 0; i < checks->second.size(); ++i) parse_check(checks->second[i], i, file, p, file.checks);
    } catch (const YAML::Exception& e) {
      p.add(e.mark.is_null() ? 0 : e.mark.line + 1, "checks", "cannot be read: " + e.msg);
    }
  }
  if (!p.empty()) return fail(p.error());
  return file;
}

// ---------------------------------------------------------------------------------------
// Running

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& e : v) s += (s.empty() ? "" : "; ") + e;
  return s;
}

// Why `na` cannot be probed from (from) or to, or "".
std::string not_ready(const api::NetworkAttachment& na, bool from) {
  const auto& st = na.status;
  if (na.metadata.deletion_timestamp) return "is being deleted";
  if (na.spec.node.empty()) return "has no node (spec.node)";
  if (!st.errors.ipam.empty()) return "has no address: the IPAM says: " + join(st.errors.ipam);
  if (st.ipv4.empty()) return "has no address yet (status.ipv4; is the IPAM controller running?)";
  if (!st.errors.host.empty()) return "is not implemented: node " + na.spec.node + " says: " + join(st.errors.host);
  if (st.host_ip.empty())
    return "is not implemented on node " + na.spec.node + " yet (status.hostIP unset" +
           (from ? std::string("; is its agent running?)") : std::string(")"));
  return {};
}

}  // namespace

int Report::count(Outcome::State s) const {
  return static_cast<int>(std::ranges::count_if(outcomes, [&](const Outcome& o) { return o.state == s; }));
}

int Report::exit_code() const {
  if (count(Outcome::State::kError) > 0) return 2;
  return count(Outcome::State::kFailed) > 0 ? 1 : 0;
}

Report run_checks(const CheckFile& file, Cluster& cluster, int parallel) {
  Report r;
  r.checks = file.checks;
  r.outcomes.resize(file.checks.size());
  // Each attachment read once.
  std::map<Ref, Result<api::NetworkAttachment>> seen;
  auto read = [&](const Ref& ref) -> const Result<api::NetworkAttachment>& {
    auto it = seen.find(ref);
    if (it == seen.end()) it = seen.emplace(ref, cluster.attachment(ref)).first;
    return it->second;
  };
  auto problem = [&](const char* role, const Ref& ref, bool from) -> std::string {
    const auto& na = read(ref);
    if (!na) {
      if (na.error().code == Errc::kNotFound) return std::string(role) + ": NetworkAttachment " + ref.key() + " does not exist";
      return std::string(role) + ": cannot read NetworkAttachment " + ref.key() + ": " + na.error().message;
    }
    auto why = not_ready(*na, from);
    return why.empty() ? "" : std::string(role) + ": NetworkAttachment " + ref.key() + " " + why;
  };
  std::vector<std::pair<size_t, const api::NetworkAttachment*>> runnable;  // check, its from
  for (size_t i = 0; i < file.checks.size(); ++i) {
    const Check& c = file.checks[i];
    Outcome& o = r.outcomes[i];
    std::string why = problem("from", c.from, true);
    if (read(c.from)) o.node = read(c.from)->spec.node;
    if (why.empty() && c.to_ref) why = problem("to", *c.to_ref, false);
    if (!why.empty()) {
      o.state = Outcome::State::kError;
      o.detail = why;
      if (c.to_ref && read(*c.to_ref)) o.target = api::parse_ipv4(read(*c.to_ref)->status.ipv4).value_or(0);
      continue;
    }
    o.target = c.to_ref ? api::parse_ipv4(read(*c.to_ref)->status.ipv4).value_or(0) : c.to_ip;
    if (o.target == 0) {
      o.state = Outcome::State::kError;
      o.detail = "to: NetworkAttachment " + c.to_ref->key() + " has an invalid address '" + read(*c.to_ref)->status.ipv4 + "'";
      continue;
    }
    runnable.emplace_back(i, &*read(c.from));
  }
  // The probes, a few at once; each writes only its own outcome.
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t k; (k = next++) < runnable.size();) {
      const auto [i, na] = runnable[k];
      const Check& c = file.checks[i];
      Outcome& o = r.outcomes[i];
      const api::NetworkAttachment& from = *na;
      ProbeRequest q{from.spec.node, c.from, from.metadata.uid, o.target, c.protocol, c.port, c.timeout};
      auto a = cluster.probe(q);
      if (!a) {
        o.state = Outcome::State::kError;
        o.detail = a.error().message;
        continue;
      }
      o.got_allow = a->allowed;
      o.detail = a->detail;
      o.guest = a->guest;
      o.state = a->allowed == c.expect_allow ? Outcome::State::kOk : Outcome::State::kFailed;
    }
  };
  const size_t n = std::min(runnable.size(), static_cast<size_t>(std::max(parallel, 1)));
  std::vector<std::thread> threads;
  for (size_t t = 1; t < n; ++t) threads.emplace_back(work);
  work();
  for (auto& t : threads) t.join();
  return r;
}

// ---------------------------------------------------------------------------------------
// Output

namespace {

std::string label(const Report& r, size_t i) {
  return r.checks[i].name.empty() ? "#" + std::to_string(i + 1) : r.checks[i].name;
}

// An attachment as the file's namespace makes it shortest.
std::string ref_text(const Ref& ref, const std::string& ns) { return ref.ns == ns ? ref.name : ref.key(); }

std::string to_text(const Check& c, const Outcome& o, const std::string& ns) {
  if (!c.to_ref) return c.to;
  std::string s = ref_text(*c.to_ref, ns);
  return o.target ? s + " (" + api::format_ipv4(o.target) + ")" : s;
}

std::string probe_text(const Check& c) {
  return c.protocol == Protocol::kIcmp ? "icmp" : std::to_string(c.port) + "/" + std::string(protocol_name(c.protocol));
}

const char* result_text(Outcome::State s) {
  switch (s) {
    case Outcome::State::kOk: return "ok";
    case Outcome::State::kFailed: return "FAIL!";
    case Outcome::State::kError: return "ERROR";
  }
  return "?";
}

std::string got_text(const Outcome& o) { return o.got_allow ? (*o.got_allow ? "allow" : "deny") : "-"; }

// The namespace the table abbreviates: the one most checks' from is in.
std::string common_ns(const Report& r) {
  std::map<std::string, int> n;
  for (const auto& c : r.checks) ++n[c.from.ns];
  std::string best;
  for (const auto& [ns, k] : n)
    if (best.empty() || k > n[best]) best = ns;
  return best;
}

std::string summary(const Report& r) {
  const size_t total = r.checks.size();
  std::string s = std::to_string(total) + (total == 1 ? " check: " : " checks: ") +
                  std::to_string(r.count(Outcome::State::kOk)) + " ok, " +
                  std::to_string(r.count(Outcome::State::kFailed)) + " failed";
  if (int e = r.count(Outcome::State::kError)) s += ", " + std::to_string(e) + (e == 1 ? " error" : " errors");
  return s;
}

}  // namespace

std::string format_table(const Report& r) {
  const std::string ns = common_ns(r);
  std::vector<std::vector<std::string>> rows = {{"CHECK", "FROM", "TO", "PROBE", "EXPECT", "GOT", "RESULT"}};
  for (size_t i = 0; i < r.checks.size(); ++i) {
    const Check& c = r.checks[i];
    const Outcome& o = r.outcomes[i];
    rows.push_back({label(r, i), ref_text(c.from, ns), to_text(c, o, ns), probe_text(c), c.expect_allow ? "allow" : "deny",
                    got_text(o), result_text(o.state)});
  }
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows)
    for (size_t k = 0; k < row.size(); ++k) width[k] = std::max(width[k], row[k].size());
  std::ostringstream out;
  for (size_t j = 0; j < rows.size(); ++j) {
    std::string line;
    for (size_t k = 0; k < rows[j].size(); ++k) {
      line += rows[j][k];
      if (k + 1 < rows[j].size()) line += std::string(width[k] - rows[j][k].size() + 2, ' ');
    }
    if (j > 0 && r.outcomes[j - 1].state != Outcome::State::kOk && !r.outcomes[j - 1].detail.empty())
      line += std::string(width.back() - rows[j].back().size() + 2, ' ') + "(" + r.outcomes[j - 1].detail + ")";
    out << line << "\n";
  }
  out << summary(r) << "\n";
  return out.str();
}

json::value report_json(const Report& r) {
  json::array checks;
  for (size_t i = 0; i < r.checks.size(); ++i) {
    const Check& c = r.checks[i];
    const Outcome& o = r.outcomes[i];
    json::object e;
    e["name"] = label(r, i);
    e["from"] = c.from.key();
    e["to"] = c.to_ref ? c.to_ref->key() : c.to;
    e["target"] = o.target ? json::value(api::format_ipv4(o.target)) : json::value(nullptr);
    e["protocol"] = protocol_name(c.protocol);
    if (c.protocol != Protocol::kIcmp) e["port"] = static_cast<int64_t>(c.port);
    e["expect"] = c.expect_allow ? "allow" : "deny";
    e["got"] = o.got_allow ? json::value(*o.got_allow ? "allow" : "deny") : json::value(nullptr);
    e["result"] = o.state == Outcome::State::kOk ? "ok" : o.state == Outcome::State::kFailed ? "failed" : "error";
    e["detail"] = o.detail;
    e["node"] = o.node;
    if (!o.guest.empty()) e["guest"] = o.guest;
    if (c.line) e["line"] = static_cast<int64_t>(c.line);
    checks.push_back(std::move(e));
  }
  json::object out;
  out["checks"] = std::move(checks);
  out["total"] = static_cast<int64_t>(r.checks.size());
  out["ok"] = r.count(Outcome::State::kOk);
  out["failed"] = r.count(Outcome::State::kFailed);
  out["errors"] = r.count(Outcome::State::kError);
  out["exitCode"] = r.exit_code();
  return out;
}

// ---------------------------------------------------------------------------------------
// The agents

std::string AgentSockets::for_node(const std::string& node) const {
  if (auto it = by_node.find(node); it != by_node.end()) return it->second;
  if (!all.empty()) return all;
  if (!up_dir.empty()) return up_dir + "/agents/" + node + ".cni.sock";
  return fallback;
}

Result<void> AgentSockets::add_flag(const std::string& value) {
  const auto eq = value.find('=');
  if (eq != std::string::npos && value.front() != '/' && value.front() != '.') {
    const std::string node = value.substr(0, eq), path = value.substr(eq + 1);
    if (auto e = api::dns1123_subdomain_error(node)) return fail(Errc::kInvalid, "--agent-socket " + value + ": node '" + node + "': " + *e);
    if (path.empty()) return fail(Errc::kInvalid, "--agent-socket " + value + ": no path after '='");
    if (!by_node.emplace(node, path).second) return fail(Errc::kInvalid, "--agent-socket: node " + node + " given twice");
    return {};
  }
  if (value.empty()) return fail(Errc::kInvalid, "--agent-socket: empty path");
  if (!all.empty()) return fail(Errc::kInvalid, "--agent-socket PATH given twice (" + all + ", " + value + "); name nodes with NODE=PATH");
  all = value;
  return {};
}

AgentCluster::AgentCluster(std::shared_ptr<client::RestClient> client, AgentSockets sockets)
    : client_(std::move(client)), sockets_(std::move(sockets)) {}

Result<api::NetworkAttachment> AgentCluster::attachment(const Ref& ref) {
  return client_->get<api::NetworkAttachment>(ref.ns, ref.name);
}

Result<ProbeAnswer> AgentCluster::probe(const ProbeRequest& q) {
  cni::Request req;
  req.op = "probe";
  req.ns = q.from.ns;
  req.attachment = q.from.name;
  req.uid = q.from_uid;
  req.target = api::format_ipv4(q.target);
  req.protocol = std::string(protocol_name(q.protocol));
  req.port = q.port;
  req.timeout_ms = q.timeout.count();
  const std::string socket = sockets_.for_node(q.node);
  // The probe's time, and some for finding the guest.
  auto a = cni::call(socket, req, q.timeout + std::chrono::seconds(10));
  if (!a) {
    std::string msg = "node " + q.node + ": " + a.error().message;
    if (msg.find("Permission denied") != std::string::npos)
      msg += "; the agent's socket is root's: run kos check as root";
    else if (a.error().code == Errc::kUnavailable)
      msg += "; give its socket with --agent-socket " + q.node + "=PATH";
    return fail(a.error().code, msg);
  }
  if (a->code != cni::kOk) {
    if (a->code == cni::kDecodeFailure && a->msg.find("unknown operation") != std::string::npos)
      return fail(Errc::kUnsupported, "the agent of node " + q.node + " at " + socket +
                                          " cannot probe (a kos agent older than kos check?): " + a->msg);
    return fail(Errc::kUnavailable, "the agent of node " + q.node + ": " + a->msg + (a->details.empty() ? "" : " (" + a->details + ")"));
  }
  if (a->verdict != "allow" && a->verdict != "deny")
    return fail(Errc::kInternal, "the agent of node " + q.node + " answered verdict '" + a->verdict + "'");
  return ProbeAnswer{a->verdict == "allow", a->detail,
                     a->ifname.empty() ? std::string() : a->ifname + " in " + a->sandbox};
}

}  // namespace kos::check
