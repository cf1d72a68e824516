#include "agent/implementation_log.h"

#include <algorithm>

#include <boost/json.hpp>

#include "api/json.h"
#include "api/types.h"

namespace kos::agent {

namespace json = boost::json;

ImplementationLog::ImplementationLog(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {}

void ImplementationLog::record(const Implemented& what) {
  std::lock_guard lk(mu_);
  if (ring_.size() == capacity_) ring_.pop_front();
  ring_.push_back(what);
  ++next_;
}

uint64_t ImplementationLog::next_seq() const {
  std::lock_guard lk(mu_);
  return next_;
}

ImplementationPage ImplementationLog::since(uint64_t since, size_t limit) const {
  std::lock_guard lk(mu_);
  const uint64_t oldest = next_ - ring_.size();
  ImplementationPage page;
  uint64_t from = since;
  if (since < oldest || since > next_) {
    page.dropped = true;
    from = oldest;
  }
  uint64_t to = std::min<uint64_t>(next_, from + limit);
  for (uint64_t s = from; s < to; ++s) page.items.push_back({s, ring_[s - oldest]});
  page.next = to;
  return page;
}

namespace {

std::string_view kind_name(Implemented::Kind k) {
  switch (k) {
    case Implemented::Kind::kLocal: return "local";
    case Implemented::Kind::kRemote: return "remote";
    case Implemented::Kind::kMember: return "member";
    case Implemented::Kind::kPolicy: return "policy";
  }
  return "local";
}

api::MicroTime micro(std::chrono::system_clock::time_point t) {
  return std::chrono::time_point_cast<std::chrono::microseconds>(t);
}

// The value of `name` in a query string ("a=1&b=2"), if present.
std::optional<std::string_view> query_param(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view part = query.substr(0, amp);
    size_t eq = part.find('=');
    if (part.substr(0, eq) == name) return eq == std::string_view::npos ? std::string_view{} : part.substr(eq + 1);
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

std::optional<uint64_t> parse_u64(std::string_view s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

http::Response error(unsigned status, const std::string& message) {
  json::object o{{"error", message}};
  return http::Response{status, "application/json", json::serialize(o) + "\n", {}};
}

}  // namespace

std::string page_to_json(const ImplementationPage& page) {
  json::array items;
  items.reserve(page.items.size());
  for (const auto& r : page.items) {
    items.push_back(json::object{{"seq", r.seq},
                                 {"node", r.what.node},
                                 {"key", r.what.key},
                                 {"uid", r.what.uid},
                                 {"vni", r.what.vni},
                                 {"kind", kind_name(r.what.kind)},
                                 {"time", api::format_micro_time(micro(r.what.at))}});
  }
  json::object o{{"next", page.next}, {"dropped", page.dropped}, {"items", std::move(items)}};
  return json::serialize(o);
}

Result<ImplementationPage> page_from_json(std::string_view body) {
  auto v = api::parse_json(body);
  if (!v) return fail(v.error());
  auto bad = [](const std::string& what) {
    return fail(Errc::kBadRequest, "implementation log page: " + what);
  };
  const auto* o = v->if_object();
  if (!o) return bad("not a JSON object");
  ImplementationPage page;
  const auto* next = o->if_contains("next");
  const auto* dropped = o->if_contains("dropped");
  const auto* items = o->if_contains("items");
  if (!next || !next->is_number()) return bad("no numeric \"next\"");
  if (!dropped || !dropped->is_bool()) return bad("no boolean \"dropped\"");
  if (!items || !items->is_array()) return bad("no \"items\" array");
  std::error_code ec;
  page.next = next->to_number<uint64_t>(ec);
  if (ec) return bad("\"next\" is not an unsigned integer");
  page.dropped = dropped->get_bool();
  for (const auto& it : items->get_array()) {
    const auto* io = it.if_object();
    if (!io) return bad("an item is not an object");
    ImplementationRecord r;
    auto str = [&](const char* k) -> const json::string* {
      const auto* x = io->if_contains(k);
      return x ? x->if_string() : nullptr;
    };
    const auto* node = str("node");
    const auto* key = str("key");
    const auto* uid = str("uid");
    const auto* kind = str("kind");
    const auto* time = str("time");
    const auto* seq = io->if_contains("seq");
    const auto* vni = io->if_contains("vni");
    if (!node || !key || !uid || !kind || !time || !vni || !vni->is_number())
      return bad("an item lacks node, key, uid, vni, kind or time");
    if (seq && seq->is_number()) r.seq = seq->to_number<uint64_t>(ec);
    r.what.vni = vni->to_number<uint32_t>(ec);
    if (ec) return bad("an item's vni or seq is not an unsigned integer");
    if (*kind == "local") r.what.kind = Implemented::Kind::kLocal;
    else if (*kind == "remote") r.what.kind = Implemented::Kind::kRemote;
    else if (*kind == "member") r.what.kind = Implemented::Kind::kMember;
    else if (*kind == "policy") r.what.kind = Implemented::Kind::kPolicy;
    else return bad("an item's kind is not local, remote, member or policy");
    auto t = api::parse_micro_time(std::string_view(time->data(), time->size()));
    if (!t) return bad("an item's time: " + t.error().message);
    r.what.at = *t;
    r.what.node = std::string(node->data(), node->size());
    r.what.key = std::string(key->data(), key->size());
    r.what.uid = std::string(uid->data(), uid->size());
    page.items.push_back(std::move(r));
  }
  return page;
}

http::Response ImplementationLog::handle(const http::Request& req) const {
  if (req.method() != boost::beast::http::verb::get) return error(405, "only GET is served here");
  std::string_view target(req.target().data(), req.target().size());
  size_t q = target.find('?');
  std::string_view query = q == std::string_view::npos ? std::string_view{} : target.substr(q + 1);
  uint64_t since = 0;
  size_t limit = kDefaultLimit;
  if (auto s = query_param(query, "since")) {
    auto v = parse_u64(*s);
    if (!v) return error(400, "since must be a non-negative integer");
    since = *v;
  }
  if (auto l = query_param(query, "limit")) {
    auto v = parse_u64(*l);
    if (!v) return error(400, "limit must be a non-negative integer");
    limit = static_cast<size_t>(std::min<uint64_t>(*v, kMaxLimit));
  }
  return http::Response{200, "application/json", page_to_json(this->since(since, limit)) + "\n", {}};
}

}  // namespace kos::agent
