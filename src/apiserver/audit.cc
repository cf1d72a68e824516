#include "apiserver/audit.h"

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include "api/types.h"

namespace kos::apiserver {
namespace json = boost::json;

Result<std::unique_ptr<AuditLog>> AuditLog::open(const Options& opts) {
  if (opts.path.empty()) return fail(Errc::kBadRequest, "the audit log needs a path");
  if (opts.max_bytes < 4096) return fail(Errc::kBadRequest, "the audit log's size cap must be at least 4 KiB");
  std::unique_ptr<AuditLog> a(new AuditLog(opts));
  if (auto r = a->reopen(); !r) return fail(r.error());
  return a;
}

AuditLog::~AuditLog() {
  if (f_) std::fclose(f_);
}

Result<void> AuditLog::reopen() {
  if (f_) std::fclose(f_);
  std::error_code ec;
  std::filesystem::path p(opts_.path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
  f_ = std::fopen(opts_.path.c_str(), "ae");
  if (!f_) return fail(Errc::kInternal, "cannot open the audit log " + opts_.path + ": " + std::strerror(errno));
  size_ = static_cast<size_t>(std::ftell(f_));
  return {};
}

bool AuditLog::wanted(const std::string& verb, unsigned code) {
  if (code == 401 || code == 403 || code == 429) return true;
  return verb == "create" || verb == "update" || verb == "patch" || verb == "delete" ||
         verb == "deletecollection";
}

std::string AuditLog::line(const AuditEntry& e) {
  json::object o;
  o["time"] = api::format_micro_time(std::chrono::time_point_cast<std::chrono::microseconds>(e.time));
  o["user"] = e.user;
  o["groups"] = json::array(e.groups.begin(), e.groups.end());
  o["verb"] = e.verb;
  if (!e.resource.empty()) {
    o["group"] = e.group;
    o["resource"] = e.resource;
    if (!e.subresource.empty()) o["subresource"] = e.subresource;
    if (!e.ns.empty()) o["namespace"] = e.ns;
    if (!e.name.empty()) o["name"] = e.name;
  } else {
    o["path"] = e.path;
  }
  o["code"] = e.code;
  o["latencyMs"] = static_cast<double>(e.latency.count()) / 1000.0;
  return json::serialize(o);
}

void AuditLog::rotate_locked() {
  std::fclose(f_);
  f_ = nullptr;
  std::error_code ec;
  for (int i = opts_.max_backups; i >= 1; --i) {
    const std::string from = i == 1 ? opts_.path : opts_.path + "." + std::to_string(i - 1);
    const std::string to = opts_.path + "." + std::to_string(i);
    if (std::filesystem::exists(from, ec)) std::filesystem::rename(from, to, ec);
  }
  if (opts_.max_backups <= 0) std::filesystem::remove(opts_.path, ec);
  if (auto r = reopen(); !r) spdlog::error("apiserver: {}", r.error().message);
}

void AuditLog::record(const AuditEntry& e) {
  std::string l = line(e) + "\n";
  std::lock_guard lk(mu_);
  if (!f_) return;
  if (size_ + l.size() > opts_.max_bytes && size_ > 0) {
    rotate_locked();
    if (!f_) return;
  }
  if (std::fwrite(l.data(), 1, l.size(), f_) == l.size()) size_ += l.size();
  std::fflush(f_);
}

}  // namespace kos::apiserver
