// Security groups in nftables: see policy.h for the layout and why.
#include "fabric/linux/policy.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include "api/cidr.h"
#include "common/metrics.h"

namespace kos::fabric::sg {

namespace json = boost::json;

// ---------------------------------------------------------------------------------------
// Names

namespace {

constexpr std::string_view kSetPrefix = "s-", kEgressPrefix = "e-", kIngressPrefix = "i-";
constexpr std::string_view kHeader = "kos-policy v1 ", kChunk = "kos:";
constexpr size_t kChunkSize = 120;  // + "kos:" within nft's 128-byte comments
constexpr std::string_view kBaseComment = "kos-base v1";

// The base chains: family, name, hook, priority, rules (each commented kBaseComment).
struct BaseChain {
  const char* family;
  const char* name;
  const char* hook;
  int prio;
  std::vector<std::string> rules;
};

const std::vector<BaseChain>& base_chains() {
  static const std::vector<BaseChain> chains = [] {
    const std::string ours = "meta mark & 0xffff0000 == 0x4b050000";  // kMarkMask, kMarkBase
    return std::vector<BaseChain>{
        {"inet", "set-zone", "prerouting", -300, {"ct zone set iifname map @bridge-zones"}},
        {"inet", "check-egress", "prerouting", -150, {"meta mark vmap @egress-chains"}},
        {"inet", "check-ingress", "forward", 0, {"meta mark vmap @ingress-chains"}},
        {"bridge", "mark-in", "prerouting", -200,
         {ours + " meta mark set 0", "meta mark set iifname map @port-marks", ours + " ether type != { ip, arp } drop"}},
        {"bridge", "mark-out", "forward", -200,
         {ours + " meta mark set 0", "meta mark set oifname map @port-marks", ours + " ether type != { ip, arp } drop"}},
    };
  }();
  return chains;
}

std::string mark_text(uint32_t m) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", m);
  return buf;
}

bool valid_mark(uint32_t m) {
  const uint32_t id = m & ~kMarkMask;
  return (m & kMarkMask) == kMarkBase && id >= 1 && id <= kMaxMarkId;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  if (s.empty()) return out;
  for (;;) {
    const size_t at = s.find(sep);
    out.push_back(s.substr(0, at));
    if (at == std::string_view::npos) return out;
    s.remove_prefix(at + 1);
  }
}

}  // namespace

std::string set_object_name(const std::string& set) { return std::string(kSetPrefix) + set; }
std::string egress_chain_name(const std::string& host_end) { return std::string(kEgressPrefix) + host_end; }
std::string ingress_chain_name(const std::string& host_end) { return std::string(kIngressPrefix) + host_end; }

// ---------------------------------------------------------------------------------------
// The encoding in comments

std::string encode_rules(const std::vector<PolicyRule>& rules) {
  std::string out;
  for (size_t k = 0; k < rules.size(); ++k) {
    const PolicyRule& r = rules[k];
    if (k) out += ';';
    out += std::to_string(r.protocol) + '|';
    for (size_t i = 0; i < r.ports.size(); ++i) {
      if (i) out += ',';
      out += std::to_string(r.ports[i].first);
      if (r.ports[i].last != r.ports[i].first) out += '-' + std::to_string(r.ports[i].last);
    }
    out += '|';
    for (size_t i = 0; i < r.cidrs.size(); ++i) {
      if (i) out += ',';
      out += api::format_ipv4(r.cidrs[i].first) + '/' + std::to_string(r.cidrs[i].second);
    }
    out += '|';
    for (size_t i = 0; i < r.sets.size(); ++i) {
      if (i) out += ',';
      out += r.sets[i];
    }
  }
  return out;
}

std::optional<std::vector<PolicyRule>> decode_rules(std::string_view text, size_t count) {
  std::vector<PolicyRule> out;
  if (count == 0) {
    if (!text.empty()) return std::nullopt;
    return out;
  }
  auto parts = split(text, ';');
  if (parts.size() != count) return std::nullopt;
  for (std::string_view part : parts) {
    auto f = split(part, '|');
    if (f.size() != 4) return std::nullopt;
    PolicyRule r;
    auto proto = api::parse_decimal(f[0], 255);
    if (!proto) return std::nullopt;
    r.protocol = static_cast<uint8_t>(*proto);
    for (std::string_view p : split(f[1], ',')) {
      const size_t dash = p.find('-');
      auto first = api::parse_decimal(p.substr(0, dash), 65535);
      auto last = dash == std::string_view::npos ? first : api::parse_decimal(p.substr(dash + 1), 65535);
      if (!first || !last) return std::nullopt;
      r.ports.push_back(PortRange{static_cast<uint16_t>(*first), static_cast<uint16_t>(*last)});
    }
    for (std::string_view c : split(f[2], ',')) {
      const size_t slash = c.find('/');
      if (slash == std::string_view::npos) return std::nullopt;
      auto addr = api::parse_ipv4(c.substr(0, slash));
      auto len = api::parse_decimal(c.substr(slash + 1), 32);
      if (!addr || !len) return std::nullopt;
      r.cidrs.emplace_back(*addr, static_cast<int>(*len));
    }
    for (std::string_view s : split(f[3], ',')) {
      if (check_set_name(std::string(s))) return std::nullopt;
      r.sets.emplace_back(s);
    }
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<std::string> rule_comments(const std::vector<PolicyRule>& rules) {
  const std::string payload = encode_rules(rules);
  std::vector<std::string> out{std::string(kHeader) + std::to_string(rules.size()) + ' ' + std::to_string(payload.size())};
  for (size_t at = 0; at < payload.size(); at += kChunkSize) out.push_back(std::string(kChunk) + payload.substr(at, kChunkSize));
  return out;
}

std::optional<std::vector<PolicyRule>> rules_from_comments(const std::vector<std::string>& comments) {
  auto h = std::ranges::find_if(comments, [](const std::string& c) { return c.starts_with(kHeader); });
  if (h == comments.end()) return std::nullopt;
  auto fields = split(std::string_view(*h).substr(kHeader.size()), ' ');
  if (fields.size() != 2) return std::nullopt;
  auto count = api::parse_decimal(fields[0], 1u << 20), length = api::parse_decimal(fields[1], 1u << 30);
  if (!count || !length) return std::nullopt;
  std::string payload;
  for (auto it = h + 1; it != comments.end() && it->starts_with(kChunk); ++it) payload += it->substr(kChunk.size());
  if (payload.size() != *length) return std::nullopt;
  return decode_rules(payload, *count);
}

// ---------------------------------------------------------------------------------------
// Rules

namespace {

std::string ports_text(std::vector<PortRange> ports) {
  std::ranges::sort(ports);
  std::vector<PortRange> merged;
  for (const PortRange& p : ports) {
    if (!merged.empty() && p.first <= static_cast<uint32_t>(merged.back().last) + 1) {
      merged.back().last = std::max(merged.back().last, p.last);
      continue;
    }
    merged.push_back(p);
  }
  std::string out = "{ ";
  for (size_t i = 0; i < merged.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(merged[i].first);
    if (merged[i].last != merged[i].first) out += '-' + std::to_string(merged[i].last);
  }
  return out + " }";
}

// The matches of one rule (one per peer group), each to be followed by "accept".
std::vector<std::string> rule_matches(const PolicyRule& r, bool ingress) {
  const std::string field = ingress ? "ip saddr " : "ip daddr ";
  const char* l4 = r.protocol == 6 ? "tcp" : r.protocol == 17 ? "udp" : r.protocol == 1 ? "icmp" : nullptr;
  std::string proto;
  if (l4 && !r.ports.empty()) proto = std::string(l4) + " dport " + ports_text(r.ports);
  else if (l4) proto = std::string("ip protocol ") + l4;

  std::vector<std::pair<uint32_t, int>> cidrs;
  bool any = false;
  for (auto [addr, len] : r.cidrs) {
    if (len <= 0) any = true;
    const uint32_t mask = len <= 0 ? 0 : len >= 32 ? ~0u : ~0u << (32 - len);
    cidrs.emplace_back(addr & mask, std::clamp(len, 0, 32));
  }
  std::ranges::sort(cidrs);
  cidrs.erase(std::unique(cidrs.begin(), cidrs.end()), cidrs.end());
  std::vector<std::string> peers;
  if (any) {
    peers.emplace_back();
  } else {
    if (!cidrs.empty()) {
      std::string set = "{ ";
      for (size_t i = 0; i < cidrs.size(); ++i) {
        if (i) set += ", ";
        set += api::format_ipv4(cidrs[i].first) + '/' + std::to_string(cidrs[i].second);
      }
      peers.push_back(field + set + " }");
    }
    std::set<std::string> seen;
    for (const auto& s : r.sets)
      if (seen.insert(s).second) peers.push_back(field + "@" + set_object_name(s));
  }
  std::vector<std::string> out;
  for (const auto& p : peers) {
    std::string m = p;
    if (!proto.empty()) m += (m.empty() ? "" : " ") + proto;
    if (m.empty()) m = "meta nfproto ipv4";
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace

std::string chain_commands(const std::string& chain, const std::vector<PolicyRule>& rules, bool ingress) {
  const std::string prefix = std::string("add rule inet ") + kTable + " " + chain + " ";
  std::string t = std::string("add chain inet ") + kTable + " " + chain + "\nflush chain inet " + kTable + " " + chain + "\n";
  t += prefix + "ct state established,related accept\n";
  t += prefix + "ct state invalid drop\n";
  for (const auto& r : rules)
    for (const auto& m : rule_matches(r, ingress)) t += prefix + m + " accept\n";
  t += prefix + "drop\n";
  for (const auto& c : rule_comments(rules)) t += prefix + "continue comment \"" + c + "\"\n";
  return t;
}

// ---------------------------------------------------------------------------------------
// Reading the tables

namespace {

std::optional<std::string> string_at(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (!v || !v->is_string()) return std::nullopt;
  return std::string(v->as_string());
}

std::optional<uint64_t> number(const json::value& v) {
  if (v.is_uint64()) return v.as_uint64();
  if (v.is_int64() && v.as_int64() >= 0) return static_cast<uint64_t>(v.as_int64());
  return std::nullopt;
}

// An element as listed: a value, or {"elem": {"val": value, ...}} when it carries more.
const json::value& element_value(const json::value& v) {
  if (v.is_object())
    if (const auto* e = v.as_object().if_contains("elem"); e && e->is_object())
      if (const auto* val = e->as_object().if_contains("val")) return *val;
  return v;
}

// The pairs of a map: [[key, value], ...].
std::vector<std::pair<const json::value*, const json::value*>> map_elements(const json::object& m) {
  std::vector<std::pair<const json::value*, const json::value*>> out;
  const auto* elems = m.if_contains("elem");
  if (!elems || !elems->is_array()) return out;
  for (const auto& e : elems->as_array()) {
    if (!e.is_array() || e.as_array().size() != 2) continue;
    out.emplace_back(&element_value(e.as_array()[0]), &e.as_array()[1]);
  }
  return out;
}

struct Listing {
  std::map<std::string, const json::object*> chains;        // by "family:name"
  std::map<std::string, std::vector<std::string>> comments;  // by "family:name", rule by rule
  std::set<std::string> maps;                               // "family:name"
};

void scan(const json::value& v, const char* family, Listing& l, State& s, std::map<std::string, std::set<uint32_t>>& sets) {
  const auto* arr = v.is_object() ? v.as_object().if_contains("nftables") : nullptr;
  if (!arr || !arr->is_array()) return;
  const std::string fam = family;
  for (const auto& item : arr->as_array()) {
    if (!item.is_object()) continue;
    const auto& o = item.as_object();
    if (const auto* c = o.if_contains("chain"); c && c->is_object()) {
      auto name = string_at(c->as_object(), "name");
      if (name) l.chains[fam + ":" + *name] = &c->as_object();
    } else if (const auto* r = o.if_contains("rule"); r && r->is_object()) {
      auto chain = string_at(r->as_object(), "chain");
      if (chain) l.comments[fam + ":" + *chain].push_back(string_at(r->as_object(), "comment").value_or(""));
    } else if (const auto* st = o.if_contains("set"); st && st->is_object() && fam == "inet") {
      auto name = string_at(st->as_object(), "name");
      if (!name || !name->starts_with(kSetPrefix)) continue;
      auto& addrs = sets[name->substr(kSetPrefix.size())];
      if (const auto* elems = st->as_object().if_contains("elem"); elems && elems->is_array()) {
        for (const auto& e : elems->as_array()) {
          const auto& val = element_value(e);
          auto ip = val.is_string() ? api::parse_ipv4(std::string(val.as_string())) : Result<uint32_t>(fail(Errc::kInvalid, ""));
          if (ip) addrs.insert(*ip);
          else spdlog::warn("nftables: set {} has an element that is not an IPv4 address: {}", *name, json::serialize(e));
        }
      }
    } else if (const auto* m = o.if_contains("map"); m && m->is_object()) {
      auto name = string_at(m->as_object(), "name");
      if (!name) continue;
      l.maps.insert(fam + ":" + *name);
      for (auto [k, val] : map_elements(m->as_object())) {
        if (fam == "inet" && (*name == "egress-chains" || *name == "ingress-chains")) {
          auto mark = number(*k);
          const json::value* target = nullptr;
          if (val->is_object())
            if (const auto* j = val->as_object().if_contains("jump"); j && j->is_object())
              target = j->as_object().if_contains("target");
          if (!mark || !target || !target->is_string()) continue;
          (*name == "egress-chains" ? s.egress : s.ingress)[static_cast<uint32_t>(*mark)] = std::string(target->as_string());
        } else if (fam == "inet" && *name == "bridge-zones") {
          auto zone = number(*val);
          if (k->is_string() && zone) s.zones[std::string(k->as_string())] = static_cast<uint32_t>(*zone);
        } else if (fam == "bridge" && *name == "port-marks") {
          auto mark = number(*val);
          if (k->is_string() && mark) s.ports[std::string(k->as_string())] = static_cast<uint32_t>(*mark);
        }
      }
    }
  }
}

}  // namespace

Result<void> parse_tables(const json::value* inet, const json::value* bridge, State& s,
                          std::map<std::string, std::set<uint32_t>>& sets) {
  s = State{};
  sets.clear();
  s.inet = inet != nullptr;
  s.bridge = bridge != nullptr;
  Listing l;
  try {
    if (inet) scan(*inet, "inet", l, s, sets);
    if (bridge) scan(*bridge, "bridge", l, s, sets);
  } catch (const std::exception& e) {
    return fail(Errc::kInternal, std::string("cannot read the kos tables' listing: ") + e.what());
  }
  for (const auto& [key, _] : l.chains) {
    if (!key.starts_with("inet:")) continue;
    const std::string name = key.substr(5);
    if (!name.starts_with(kEgressPrefix) && !name.starts_with(kIngressPrefix)) continue;
    auto c = l.comments.find(key);
    s.chains[name] = c == l.comments.end() ? std::nullopt : rules_from_comments(c->second);
  }
  bool ok = s.inet && s.bridge;
  for (const char* m : {"inet:egress-chains", "inet:ingress-chains", "inet:bridge-zones", "bridge:port-marks"})
    ok = ok && l.maps.contains(m);
  for (const BaseChain& b : base_chains()) {
    const std::string key = std::string(b.family) + ":" + b.name;
    auto c = l.chains.find(key);
    if (c == l.chains.end()) {
      ok = false;
      continue;
    }
    const auto& o = *c->second;
    const auto* prio = o.if_contains("prio");
    const bool prio_ok = prio && ((prio->is_int64() && prio->as_int64() == b.prio) ||
                                  (prio->is_uint64() && b.prio >= 0 && prio->as_uint64() == static_cast<uint64_t>(b.prio)));
    const auto comments = l.comments.contains(key) ? l.comments[key] : std::vector<std::string>{};
    ok = ok && string_at(o, "hook") == b.hook && string_at(o, "type") == "filter" && prio_ok &&
         string_at(o, "policy").value_or("accept") == "accept" &&
         comments == std::vector<std::string>(b.rules.size(), std::string(kBaseComment));
  }
  s.base_ok = ok;
  return {};
}

std::optional<Policy> policy_of(const State& s, const std::string& host_end) {
  auto p = s.ports.find(host_end);
  if (p == s.ports.end() || !valid_mark(p->second)) return std::nullopt;
  const std::string e = egress_chain_name(host_end), i = ingress_chain_name(host_end);
  auto em = s.egress.find(p->second), im = s.ingress.find(p->second);
  if (em == s.egress.end() || em->second != e || im == s.ingress.end() || im->second != i) return std::nullopt;
  auto ec = s.chains.find(e), ic = s.chains.find(i);
  if (ec == s.chains.end() || !ec->second || ic == s.chains.end() || !ic->second) return std::nullopt;
  return Policy{*ic->second, *ec->second};
}

// ---------------------------------------------------------------------------------------
// Metrics (process-wide)

namespace {

struct PolicyMetrics {
  metrics::Counter& transactions = metrics::Registry::global()
                                       .counter("kos_fabric_nft_transactions_total",
                                                "nftables transactions run by the linux fabric (security groups).")
                                       .get();
  metrics::Counter& errors =
      metrics::Registry::global().counter("kos_fabric_nft_errors_total", "nftables transactions refused.").get();
  metrics::Counter& policy_updates = metrics::Registry::global()
                                         .counter("kos_fabric_policy_updates_total",
                                                  "Security-group policies of local interfaces programmed or removed.")
                                         .get();
  metrics::Counter& set_elements = metrics::Registry::global()
                                       .counter("kos_fabric_set_elements_changed_total",
                                                "Addresses added to or removed from security-group address sets.")
                                       .get();
};

PolicyMetrics& policy_metrics() {
  static PolicyMetrics m;
  return m;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// PolicyTables

struct PolicyTables::Tx {
  std::string text;
  State next;
  std::vector<std::string> new_sets, deleted_sets;
  // set -> (addresses to add, addresses to delete)
  std::map<std::string, std::pair<std::vector<uint32_t>, std::vector<uint32_t>>> elements;
  bool policy_changed = false;
  void add(const std::string& line) {
    text += line;
    text += '\n';
  }
};

Result<void> PolicyTables::open() {
  if (auto r = nft_.open(where_); !r) {
    open_error_ = r.error();
    return r;
  }
  open_error_.reset();
  return adopt();
}

Result<void> PolicyTables::ready() {
  if (!nft_.is_open()) {
    if (auto r = nft_.open(where_); !r) {
      open_error_ = r.error();
      return r;
    }
  }
  open_error_.reset();
  if (!adopted_) return adopt();
  return {};
}

Result<void> PolicyTables::read() {
  auto tables = nft_.list("list tables");
  if (!tables) return fail(tables.error());
  bool inet = false, bridge = false;
  if (const auto* arr = tables->is_object() ? tables->as_object().if_contains("nftables") : nullptr; arr && arr->is_array()) {
    for (const auto& item : arr->as_array()) {
      const auto* t = item.is_object() ? item.as_object().if_contains("table") : nullptr;
      if (!t || !t->is_object()) continue;
      if (string_at(t->as_object(), "name") != kTable) continue;
      auto family = string_at(t->as_object(), "family");
      if (family == "inet") inet = true;
      if (family == "bridge") bridge = true;
    }
  }
  std::optional<json::value> iv, bv;
  if (inet) {
    auto r = nft_.list(std::string("list table inet ") + kTable);
    if (!r) return fail(r.error());
    iv = std::move(*r);
  }
  if (bridge) {
    auto r = nft_.list(std::string("list table bridge ") + kTable);
    if (!r) return fail(r.error());
    bv = std::move(*r);
  }
  if (auto r = parse_tables(iv ? &*iv : nullptr, bv ? &*bv : nullptr, state_, sets_); !r) return r;
  for (const auto& [h, _] : state_.ports)
    if (auto b = bridge_of_(h)) state_.bridges[h] = *b;
  stats_.adoptions++;
  return {};
}

Result<void> PolicyTables::adopt() {
  adopted_ = false;
  if (auto r = read(); !r) return r;
  if (!state_.inet && !state_.bridge) {
    adopted_ = true;
    return {};
  }
  Tx tx;
  tx.next = state_;
  tx.next.bridges.clear();
  std::set<std::string> hosts;
  for (const auto& [h, _] : state_.ports) hosts.insert(h);
  for (const auto& [c, _] : state_.chains) hosts.insert(c.substr(2));
  for (const auto* m : {&state_.egress, &state_.ingress})
    for (const auto& [_, target] : *m)
      if (target.starts_with(kEgressPrefix) || target.starts_with(kIngressPrefix)) hosts.insert(target.substr(2));
  size_t kept = 0, removed = 0;
  for (const auto& h : hosts) {
    auto bridge = bridge_of_(h);
    auto e = state_.chains.find(egress_chain_name(h)), i = state_.chains.find(ingress_chain_name(h));
    if (bridge && e != state_.chains.end() && e->second && i != state_.chains.end() && i->second) {
      if (auto r = plan_policy(tx, h, *bridge, Policy{*i->second, *e->second}); r) {
        ++kept;
        continue;
      }
    }
    spdlog::info("linux fabric: removing the security-group policy of {}{}: {}", h, where_,
                 bridge ? "its rules cannot be read back" : "no such local interface");
    plan_removal(tx, h);
    ++removed;
  }
  // Marks pointing at chains of no interface (and zones of bridges without policed ports).
  for (auto* m : {&tx.next.egress, &tx.next.ingress}) {
    const char* map = m == &tx.next.egress ? "egress-chains" : "ingress-chains";
    for (auto it = m->begin(); it != m->end();) {
      if (tx.next.chains.contains(it->second)) {
        ++it;
        continue;
      }
      tx.add(std::string("delete element inet ") + kTable + " " + map + " { " + mark_text(it->first) + " }");
      it = m->erase(it);
    }
  }
  std::set<std::string> used;
  for (const auto& [_, b] : tx.next.bridges) used.insert(b);
  for (auto it = tx.next.zones.begin(); it != tx.next.zones.end();) {
    if (used.contains(it->first)) {
      ++it;
      continue;
    }
    tx.add(std::string("delete element inet ") + kTable + " bridge-zones { \"" + it->first + "\" }");
    it = tx.next.zones.erase(it);
  }
  if (auto r = run(tx); !r) return r;
  if (auto r = drop_tables_if_empty(); !r) return r;
  if (!state_.ports.empty())
    if (auto r = ensure_bridge_netfilter(where_); !r) spdlog::warn("linux fabric: {}", r.error().message);
  adopted_ = true;
  spdlog::info("linux fabric: security groups adopted{}: sets={} policies={} removed={}", where_, sets_.size(), kept,
               removed);
  return {};
}

Result<void> PolicyTables::run(Tx& tx) {
  if (!tx.text.empty()) {
    stats_.transactions++;
    policy_metrics().transactions.inc();
    if (auto r = nft_.run(tx.text); !r) {
      stats_.errors++;
      policy_metrics().errors.inc();
      spdlog::debug("linux fabric: nftables refused{}:\n{}", where_, tx.text.size() > 4000 ? tx.text.substr(0, 4000) : tx.text);
      return r;
    }
  }
  state_ = std::move(tx.next);
  for (const auto& s : tx.new_sets) sets_.try_emplace(s);
  for (const auto& s : tx.deleted_sets) sets_.erase(s);
  uint64_t changed = 0;
  for (const auto& [name, change] : tx.elements) {
    auto& addrs = sets_[name];
    for (uint32_t a : change.second) addrs.erase(a);
    for (uint32_t a : change.first) addrs.insert(a);
    changed += change.first.size() + change.second.size();
  }
  if (changed) {
    stats_.set_elements_changed += changed;
    policy_metrics().set_elements.inc(static_cast<double>(changed));
  }
  if (tx.policy_changed) {
    stats_.policy_updates++;
    policy_metrics().policy_updates.inc();
  }
  return {};
}

// Plans with a fresh copy of the state, runs; on an nftables error reads the kernel again
// (adopt) and tries once more.
Result<void> PolicyTables::retrying(const std::function<Result<void>(Tx&)>& plan) {
  std::optional<Error> last;
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (auto r = ready(); !r) return r;
    Tx tx;
    tx.next = state_;
    if (auto r = plan(tx); !r) return r;
    auto r = run(tx);
    if (r) return drop_tables_if_empty();
    last = r.error();
    adopted_ = false;
  }
  return fail(std::move(*last));
}

bool PolicyTables::empty() const {
  return sets_.empty() && state_.ports.empty() && state_.chains.empty() && state_.egress.empty() &&
         state_.ingress.empty();
}

Result<void> PolicyTables::drop_tables_if_empty() {
  if ((!state_.inet && !state_.bridge) || !empty()) return {};
  Tx tx;
  if (state_.inet) tx.add(std::string("delete table inet ") + kTable);
  if (state_.bridge) tx.add(std::string("delete table bridge ") + kTable);
  // tx.next: nothing
  return run(tx);
}

void PolicyTables::plan_base(Tx& tx) const {
  State& n = tx.next;
  if (n.inet && n.bridge && n.base_ok) return;
  const std::string t = kTable;
  for (const char* family : {"inet", "bridge"}) {
    tx.add(std::string("add table ") + family + " " + t);
    if (std::string(family) == "inet") {
      tx.add("add map inet " + t + " egress-chains { type mark : verdict; }");
      tx.add("add map inet " + t + " ingress-chains { type mark : verdict; }");
      tx.add("add map inet " + t + " bridge-zones { typeof iifname : ct zone; }");
    } else {
      tx.add("add map bridge " + t + " port-marks { type ifname : mark; }");
    }
    for (const BaseChain& b : base_chains()) {
      if (std::string(b.family) != family) continue;
      const std::string chain = std::string(family) + " " + t + " " + b.name;
      // Rewritten whole (deleted first if it exists: its hook or priority may be wrong);
      // within the transaction, so no packet sees it missing.
      if ((std::string(family) == "inet" ? n.inet : n.bridge)) {
        tx.add("add chain " + chain);
        tx.add("delete chain " + chain);
      }
      tx.add("add chain " + chain + " { type filter hook " + b.hook + " priority " + std::to_string(b.prio) +
             "; policy accept; }");
      for (const auto& r : b.rules) tx.add("add rule " + chain + " " + r + " comment \"" + std::string(kBaseComment) + "\"");
    }
  }
  n.inet = n.bridge = n.base_ok = true;
}

Result<void> PolicyTables::plan_policy(Tx& tx, const std::string& h, const std::string& bridge, const Policy& p) const {
  plan_base(tx);
  State& n = tx.next;
  const std::string t = kTable;
  for (const auto* rules : {&p.ingress, &p.egress})
    for (const auto& r : *rules)
      for (const auto& s : r.sets)
        if (!sets_.contains(s) && std::ranges::find(tx.new_sets, s) == tx.new_sets.end()) {
          tx.add("add set inet " + t + " " + set_object_name(s) + " { type ipv4_addr; }");
          tx.new_sets.push_back(s);
        }
  const std::string e = egress_chain_name(h), i = ingress_chain_name(h);
  // The port's mark: the one it has if it is ours and no other port's, else the lowest free.
  std::set<uint32_t> used;
  for (const auto& [host, m] : n.ports)
    if (host != h) used.insert(m);
  for (const auto& [m, target] : n.egress)
    if (target != e) used.insert(m);
  for (const auto& [m, target] : n.ingress)
    if (target != i) used.insert(m);
  uint32_t mark = 0;
  if (auto it = n.ports.find(h); it != n.ports.end() && valid_mark(it->second) && !used.contains(it->second))
    mark = it->second;
  for (uint32_t id = 1; mark == 0 && id <= kMaxMarkId; ++id)
    if (!used.contains(kMarkBase | id)) mark = kMarkBase | id;
  if (mark == 0)
    return fail(Errc::kUnavailable, "no packet mark left for another policed interface" + where_ + " (" +
                                        std::to_string(kMaxMarkId) + " in use)");

  for (auto [chain, rules, ingress] : {std::tuple{&e, &p.egress, false}, std::tuple{&i, &p.ingress, true}}) {
    auto c = n.chains.find(*chain);
    if (c != n.chains.end() && c->second == *rules) continue;
    tx.text += chain_commands(*chain, *rules, ingress);
    n.chains[*chain] = *rules;
    tx.policy_changed = true;
  }
  for (auto [map, name, chain] :
       {std::tuple{&n.egress, "egress-chains", &e}, std::tuple{&n.ingress, "ingress-chains", &i}}) {
    const std::string obj = "element inet " + t + " " + name + " { ";
    for (auto it = map->begin(); it != map->end();) {  // the chain under another mark
      if (it->second == *chain && it->first != mark) {
        tx.add("delete " + obj + mark_text(it->first) + " }");
        it = map->erase(it);
      } else {
        ++it;
      }
    }
    auto it = map->find(mark);
    if (it != map->end() && it->second == *chain) continue;
    if (it != map->end()) tx.add("delete " + obj + mark_text(mark) + " }");
    tx.add("add " + obj + mark_text(mark) + " : jump " + *chain + " }");
    (*map)[mark] = *chain;
    tx.policy_changed = true;
  }
  if (auto it = n.ports.find(h); it == n.ports.end() || it->second != mark) {
    const std::string obj = "element bridge " + t + " port-marks { \"" + h + "\"";
    if (it != n.ports.end()) tx.add("delete " + obj + " }");
    tx.add("add " + obj + " : " + mark_text(mark) + " }");
    n.ports[h] = mark;
    tx.policy_changed = true;
  }
  if (!n.zones.contains(bridge)) {
    std::set<uint32_t> zones;
    for (const auto& [_, z] : n.zones) zones.insert(z);
    uint32_t zone = 1;
    while (zones.contains(zone) && zone < 65535) ++zone;
    tx.add("add element inet " + t + " bridge-zones { \"" + bridge + "\" : " + std::to_string(zone) + " }");
    n.zones[bridge] = zone;
  }
  n.bridges[h] = bridge;
  return {};
}

void PolicyTables::plan_removal(Tx& tx, const std::string& h) const {
  State& n = tx.next;
  const std::string t = kTable, e = egress_chain_name(h), i = ingress_chain_name(h);
  if (n.ports.erase(h)) {
    tx.add("delete element bridge " + t + " port-marks { \"" + h + "\" }");
    tx.policy_changed = true;
  }
  for (auto [map, name, chain] :
       {std::tuple{&n.egress, "egress-chains", &e}, std::tuple{&n.ingress, "ingress-chains", &i}}) {
    for (auto it = map->begin(); it != map->end();) {
      if (it->second != *chain) {
        ++it;
        continue;
      }
      tx.add("delete element inet " + t + " " + name + " { " + mark_text(it->first) + " }");
      it = map->erase(it);
    }
  }
  for (const auto& c : {e, i})
    if (n.chains.erase(c)) {
      tx.add("delete chain inet " + t + " " + c);
      tx.policy_changed = true;
    }
  n.bridges.erase(h);
}

bool PolicyTables::has_policy_pieces(const std::string& h) const {
  if (state_.ports.contains(h) || state_.chains.contains(egress_chain_name(h)) ||
      state_.chains.contains(ingress_chain_name(h)))
    return true;
  return false;
}

Result<void> PolicyTables::set_policy(const std::string& h, const std::string& bridge, const Policy& policy) {
  if (auto e = check(policy)) return fail(std::move(*e));
  if (auto r = ready(); !r) return r;
  if (auto r = ensure_bridge_netfilter(where_); !r) return r;
  return retrying([&](Tx& tx) -> Result<void> {
    if (auto r = plan_policy(tx, h, bridge, policy); !r) return r;
    // The bridge this host end was on before, if its zone is no longer needed.
    if (auto old = state_.bridges.find(h); old != state_.bridges.end() && old->second != bridge) {
      bool used = false;
      for (const auto& [host, b] : tx.next.bridges) used = used || b == old->second;
      if (!used && tx.next.zones.erase(old->second))
        tx.add(std::string("delete element inet ") + kTable + " bridge-zones { \"" + old->second + "\" }");
    }
    return {};
  });
}

Result<void> PolicyTables::remove_policy(const std::string& h) {
  if (auto r = ready(); !r) {
    if (r.error().code == Errc::kUnsupported) return {};  // no nftables: no policy either
    return r;
  }
  if (!has_policy_pieces(h)) return {};
  return retrying([&](Tx& tx) -> Result<void> {
    const auto bridge = tx.next.bridges.find(h);
    const std::optional<std::string> b = bridge == tx.next.bridges.end() ? std::nullopt : std::optional(bridge->second);
    plan_removal(tx, h);
    if (b) {
      bool used = false;
      for (const auto& [_, other] : tx.next.bridges) used = used || other == *b;
      if (!used && tx.next.zones.erase(*b))
        tx.add(std::string("delete element inet ") + kTable + " bridge-zones { \"" + *b + "\" }");
    }
    return {};
  });
}

Result<void> PolicyTables::update_set(const std::string& name, const std::vector<uint32_t>& add,
                                      const std::vector<uint32_t>& remove) {
  if (auto e = check_set_name(name)) return fail(std::move(*e));
  return retrying([&](Tx& tx) -> Result<void> {
    const std::string obj = std::string("inet ") + kTable + " " + set_object_name(name);
    auto cur = sets_.find(name);
    if (cur == sets_.end()) {
      plan_base(tx);
      tx.add("add set " + obj + " { type ipv4_addr; }");
      tx.new_sets.push_back(name);
    }
    static const std::set<uint32_t> none;
    const std::set<uint32_t>& have = cur == sets_.end() ? none : cur->second;
    const std::set<uint32_t> adding(add.begin(), add.end());
    std::vector<uint32_t> to_add, to_delete;
    for (uint32_t a : adding)
      if (!have.contains(a)) to_add.push_back(a);
    for (uint32_t a : std::set<uint32_t>(remove.begin(), remove.end()))
      if (have.contains(a) && !adding.contains(a)) to_delete.push_back(a);
    auto list = [](const std::vector<uint32_t>& v) {
      std::string s = "{ ";
      for (size_t k = 0; k < v.size(); ++k) s += (k ? ", " : "") + api::format_ipv4(v[k]);
      return s + " }";
    };
    if (!to_delete.empty()) tx.add("delete element " + obj + " " + list(to_delete));
    if (!to_add.empty()) tx.add("add element " + obj + " " + list(to_add));
    if (!to_add.empty() || !to_delete.empty()) tx.elements[name] = {std::move(to_add), std::move(to_delete)};
    return {};
  });
}

Result<void> PolicyTables::delete_set(const std::string& name) {
  if (auto e = check_set_name(name)) return fail(std::move(*e));
  if (auto r = ready(); !r) {
    if (r.error().code == Errc::kUnsupported) return {};
    return r;
  }
  for (const auto& [chain, rules] : state_.chains) {
    if (!rules) continue;
    for (const auto& r : *rules)
      if (std::ranges::find(r.sets, name) != r.sets.end())
        return fail(Errc::kConflict, "address set " + name + " is in the security-group policy of " +
                                         chain.substr(2) + where_);
  }
  if (!sets_.contains(name)) return {};
  return retrying([&](Tx& tx) -> Result<void> {
    if (!sets_.contains(name)) return {};
    tx.add(std::string("delete set inet ") + kTable + " " + set_object_name(name));
    tx.deleted_sets.push_back(name);
    return {};
  });
}

Result<bool> PolicyTables::read_for_listing() {
  if (auto r = ready(); !r) {
    if (r.error().code == Errc::kUnsupported) return false;
    return fail(r.error());
  }
  if (auto r = read(); !r) {
    adopted_ = false;
    return fail(r.error());
  }
  return true;
}

Result<std::map<std::string, std::vector<uint32_t>>> PolicyTables::list_sets() {
  std::map<std::string, std::vector<uint32_t>> out;
  auto have = read_for_listing();
  if (!have) return fail(have.error());
  if (!*have) return out;
  for (const auto& [name, addrs] : sets_) out[name] = std::vector<uint32_t>(addrs.begin(), addrs.end());
  return out;
}

Result<std::map<std::string, Policy>> PolicyTables::list_policies() {
  std::map<std::string, Policy> out;
  auto have = read_for_listing();
  if (!have) return fail(have.error());
  if (!*have) return out;
  for (const auto& [h, _] : state_.ports)
    if (auto p = policy_of(state_, h)) out[h] = std::move(*p);
  return out;
}

// ---------------------------------------------------------------------------------------
// br_netfilter

Result<void> ensure_bridge_netfilter(const std::string& where) {
  static constexpr const char* kPath = "/proc/sys/net/bridge/bridge-nf-call-iptables";
  const int fd = ::open(kPath, O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT)
      return fail(Errc::kUnsupported, "security groups need the br_netfilter module (modprobe br_netfilter): " +
                                          std::string(kPath) + " does not exist" + where);
    return fail(Errc::kInternal, "cannot open " + std::string(kPath) + where + ": " + std::strerror(err));
  }
  char c = 0;
  const ssize_t n = ::read(fd, &c, 1);
  Result<void> out;
  if (n != 1 || c != '1') {
    if (::pwrite(fd, "1\n", 2, 0) != 2)
      out = fail(Errc::kInternal, "cannot set net.bridge.bridge-nf-call-iptables to 1" + where + ": " + std::strerror(errno));
    else
      spdlog::info("linux fabric: set net.bridge.bridge-nf-call-iptables to 1{} (security groups need it)", where);
  }
  ::close(fd);
  return out;
}

}  // namespace kos::fabric::sg
