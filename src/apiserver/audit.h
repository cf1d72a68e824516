// A pipeline stage after the handler: the audit log. One JSON line per mutating request and
// per denied one (401, 403, 429): time, user, groups, verb, resource, namespace/name,
// response code, latency. The file is rotated by size: FILE -> FILE.1 -> ... -> FILE.N,
// the oldest dropped, so it never holds more than (N + 1) x max_bytes.
//
// Threading: record() may be called from any thread; lines are written whole, in order.
#pragma once

#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/error.h"

namespace kos::apiserver {

struct AuditEntry {
  std::chrono::system_clock::time_point time;
  std::string user;
  std::vector<std::string> groups;
  std::string verb, group, resource, subresource, ns, name, path;
  unsigned code = 0;
  std::chrono::microseconds latency{0};
};

class AuditLog {
 public:
  struct Options {
    std::string path;
    size_t max_bytes = 100 << 20;
    int max_backups = 3;
  };
  // Errors: kInternal when the file cannot be opened for appending.
  static Result<std::unique_ptr<AuditLog>> open(const Options& opts);
  ~AuditLog();

  // Whether a request with this verb and code is audited: mutating verbs, and denials.
  static bool wanted(const std::string& verb, unsigned code);
  void record(const AuditEntry& e);
  // The JSON line for `e` (without the newline).
  static std::string line(const AuditEntry& e);

 private:
  explicit AuditLog(Options o) : opts_(std::move(o)) {}
  Result<void> reopen();
  void rotate_locked();

  Options opts_;
  std::mutex mu_;
  std::FILE* f_ = nullptr;
  size_t size_ = 0;
};

}  // namespace kos::apiserver
