#include "fabric/ovs/ovsdb_client.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include "common/unix_socket.h"

namespace kos::fabric::ovs {
namespace json = boost::json;

Result<std::unique_ptr<OvsdbClient>> OvsdbClient::connect(const std::string& target, std::chrono::milliseconds timeout) {
  if (!target.starts_with("unix:"))
    return fail(Errc::kInvalid, "OVSDB target \"" + target + "\" must be unix:PATH (ovsdb-server's socket)");
  auto fd = connect_unix(target.substr(5), "ovsdb-server");
  if (!fd) return fail(fd.error());
  std::unique_ptr<OvsdbClient> c(new OvsdbClient(*fd));
  // The server answers before we rely on it.
  if (auto r = c->call("echo", json::array{"kos"}, timeout); !r) return fail(r.error());
  return c;
}

OvsdbClient::OvsdbClient(int fd) : fd_(fd) { reader_ = std::thread([this] { read_loop(); }); }

OvsdbClient::~OvsdbClient() {
  closing_ = true;
  ::shutdown(fd_, SHUT_RDWR);  // wakes the reader
  if (reader_.joinable()) reader_.join();
  ::close(fd_);
  fail_all(Errc::kCancelled, "the OVSDB client is closing");
}

void OvsdbClient::on_disconnect(std::function<void()> fn) {
  std::lock_guard lk(mu_);
  on_disconnect_ = std::move(fn);
}

bool OvsdbClient::send(const json::object& msg) {
  const std::string text = json::serialize(msg);
  std::lock_guard lk(write_mu_);
  return write_all(fd_, text);
}

void OvsdbClient::fail_all(Errc code, const std::string& why) {
  std::lock_guard lk(mu_);
  for (auto& [_, p] : pending_)
    if (!p->reply) p->reply = fail(code, why);
  cv_.notify_all();
}

void OvsdbClient::read_loop() {
  json::stream_parser parser;
  std::vector<char> buf(1 << 16);
  std::string why = "ovsdb-server closed the connection";
  for (;;) {
    ssize_t n = ::read(fd_, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) why = std::string("reading from ovsdb-server: ") + std::strerror(errno);
    if (n <= 0) break;
    size_t off = 0;
    bool bad = false;
    while (off < static_cast<size_t>(n)) {
      boost::system::error_code ec;
      off += parser.write_some(buf.data() + off, static_cast<size_t>(n) - off, ec);
      if (ec) {
        why = "ovsdb-server sent malformed JSON: " + ec.message();
        bad = true;
        break;
      }
      if (parser.done()) {
        handle(parser.release());
        parser.reset();
      }
    }
    if (bad) break;
  }
  connected_ = false;
  if (closing_) return;
  spdlog::warn("ovsdb: {}", why);
  fail_all(Errc::kUnavailable, why);
  std::function<void()> cb;
  {
    std::lock_guard lk(mu_);
    why_closed_ = why;
    cb = on_disconnect_;
  }
  if (cb) cb();
}

void OvsdbClient::handle(json::value v) {
  if (!v.is_object()) return;
  auto& msg = v.as_object();
  if (const auto* m = msg.if_contains("method"); m && m->is_string()) {
    const json::value* params = msg.if_contains("params");
    if (m->as_string() == "echo") {
      json::object reply{{"result", params ? *params : json::value(json::array{})}, {"error", nullptr}};
      reply["id"] = msg.contains("id") ? msg.at("id") : json::value(nullptr);
      (void)send(reply);
    } else if (m->as_string() == "update" && params && params->is_array() && params->as_array().size() == 2 &&
               params->as_array()[1].is_object()) {
      Updates fn;
      {
        std::lock_guard lk(mu_);
        if (auto it = monitors_.find(json::serialize(params->as_array()[0])); it != monitors_.end()) fn = it->second;
      }
      if (fn) fn(params->as_array()[1].as_object());
    }
    return;
  }
  const auto* id = msg.if_contains("id");
  if (!id || !id->is_int64()) return;
  std::lock_guard lk(mu_);
  auto it = pending_.find(id->as_int64());
  if (it == pending_.end()) return;  // its caller gave up
  const auto* err = msg.if_contains("error");
  if (err && !err->is_null())
    it->second->reply = fail(Errc::kInternal, "ovsdb-server: " + json::serialize(*err));
  else
    it->second->reply = msg.contains("result") ? msg.at("result") : json::value(nullptr);
  cv_.notify_all();
}

Result<json::value> OvsdbClient::call(const std::string& method, json::array params, std::chrono::milliseconds timeout) {
  auto p = std::make_shared<Pending>();
  int64_t id;
  {
    std::lock_guard lk(mu_);
    if (!connected_) return fail(Errc::kUnavailable, why_closed_.empty() ? "not connected to ovsdb-server" : why_closed_);
    id = next_id_++;
    pending_[id] = p;
  }
  json::object msg{{"method", method}, {"params", std::move(params)}, {"id", id}};
  if (!send(msg)) {
    std::lock_guard lk(mu_);
    pending_.erase(id);
    return fail(Errc::kUnavailable, "cannot write to ovsdb-server");
  }
  std::unique_lock lk(mu_);
  const bool answered = cv_.wait_for(lk, timeout, [&] { return p->reply.has_value(); });
  pending_.erase(id);
  if (!answered)
    return fail(Errc::kTimeout, "ovsdb-server did not answer " + method + " within " + std::to_string(timeout.count()) + " ms");
  return std::move(*p->reply);
}

Result<std::vector<std::string>> OvsdbClient::list_dbs(std::chrono::milliseconds timeout) {
  auto r = call("list_dbs", {}, timeout);
  if (!r) return fail(r.error());
  std::vector<std::string> out;
  if (r->is_array())
    for (const auto& d : r->as_array())
      if (d.is_string()) out.emplace_back(d.as_string());
  return out;
}

Result<json::array> OvsdbClient::transact(const std::string& db, json::array ops, std::chrono::milliseconds timeout) {
  json::array params{db};
  for (auto& op : ops) params.push_back(std::move(op));
  auto r = call("transact", std::move(params), timeout);
  if (!r) return fail(r.error());
  if (!r->is_array()) return fail(Errc::kInternal, "ovsdb-server answered transact with " + json::serialize(*r));
  auto& results = r->as_array();
  for (size_t i = 0; i < results.size(); ++i) {
    if (!results[i].is_object()) continue;
    const auto& o = results[i].as_object();
    const auto* e = o.if_contains("error");
    if (!e || e->is_null()) continue;
    const std::string error = e->is_string() ? std::string(e->as_string()) : json::serialize(*e);
    std::string details;
    if (const auto* d = o.if_contains("details"); d && d->is_string()) details = std::string(d->as_string());
    const Errc code = error == "timed out" || error == "constraint violation" || error == "referential integrity violation"
                          ? Errc::kConflict
                          : Errc::kInvalid;
    return fail(code, "OVSDB transaction failed at operation " + std::to_string(i) + ": " + error +
                          (details.empty() ? "" : " (" + details + ")"));
  }
  return std::move(results);
}

Result<json::object> OvsdbClient::monitor(const std::string& db, const std::string& id, json::object requests,
                                          Updates fn, std::chrono::milliseconds timeout) {
  const std::string key = json::serialize(json::value(id));
  {
    std::lock_guard lk(mu_);
    monitors_[key] = std::move(fn);  // before the call: updates may follow its reply at once
  }
  auto r = call("monitor", json::array{db, id, std::move(requests)}, timeout);
  if (!r || !r->is_object()) {
    std::lock_guard lk(mu_);
    monitors_.erase(key);
    if (!r) return fail(r.error());
    return fail(Errc::kInternal, "ovsdb-server answered monitor with " + json::serialize(*r));
  }
  return std::move(r->as_object());
}

json::array where_name(const std::string& name) { return json::array{json::array{"name", "==", json::string(name)}}; }

json::value ovsdb_map(const std::map<std::string, std::string>& m) {
  json::array pairs;
  for (const auto& [k, v] : m) pairs.push_back(json::array{json::string(k), json::string(v)});
  return json::array{"map", std::move(pairs)};
}

std::map<std::string, std::string> parse_ovsdb_map(const json::value& v) {
  std::map<std::string, std::string> out;
  if (!v.is_array() || v.as_array().size() != 2 || v.as_array()[0] != "map" || !v.as_array()[1].is_array()) return out;
  for (const auto& kv : v.as_array()[1].as_array())
    if (kv.is_array() && kv.as_array().size() == 2) out[ovsdb_string(kv.as_array()[0])] = ovsdb_string(kv.as_array()[1]);
  return out;
}

std::string ovsdb_string(const json::value& v) { return v.is_string() ? std::string(v.as_string()) : std::string(); }

}  // namespace kos::fabric::ovs
