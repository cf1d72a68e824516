// The implementation log: what agents have made real (a local interface created, a remote
// mapping programmed), numbered, in a bounded ring, for observers that poll it over HTTP
// (`kos driver` measures create -> implemented on every relevant node from it).
//
//   GET /debug/implementations?since=SEQ&limit=L
//   {"next":SEQ, "dropped":bool,
//    "items":[{"seq":N,"node":"...","key":"ns/name","uid":"...","vni":V,
//              "kind":"local"|"remote"|"member"|"policy","time":"2024-01-02T03:04:05.123456Z"}]}
//
// Records are numbered 0, 1, 2, ... in the order they were recorded. A page holds the
// records with seq >= since, oldest first, at most `limit` of them; `next` is the seq to
// ask for next (one past the last item, or `since` itself when there was nothing new).
// `dropped` says records the caller asked for are gone: the ring overwrote some of them
// (seq < the oldest retained one), or `since` lies beyond the newest record (the log
// belongs to a restarted process, whose numbering began again); then the page starts at
// the oldest retained record.
//
// Threading: every method is thread-safe; record() takes a mutex for a few copies and
// never blocks on I/O, so it may be called from an agent's worker (on_implemented).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/agent.h"
#include "common/error.h"
#include "common/http_server.h"

namespace kos::agent {

struct ImplementationRecord {
  uint64_t seq = 0;
  Implemented what;
};

struct ImplementationPage {
  uint64_t next = 0;
  bool dropped = false;
  std::vector<ImplementationRecord> items;
};

class ImplementationLog {
 public:
  static constexpr size_t kDefaultCapacity = 65536;
  static constexpr size_t kDefaultLimit = 1000;
  static constexpr size_t kMaxLimit = 10000;

  explicit ImplementationLog(size_t capacity = kDefaultCapacity);

  void record(const Implemented& what);
  // The records with seq >= since, at most `limit` (0: none, only `next` and `dropped`).
  ImplementationPage since(uint64_t since, size_t limit = kDefaultLimit) const;
  uint64_t next_seq() const;
  size_t capacity() const { return capacity_; }

  // Answers GET /debug/implementations?since=SEQ&limit=L (both optional: 0 and
  // kDefaultLimit; limit is capped at kMaxLimit); 400 for a malformed query, 405 for
  // another method.
  http::Response handle(const http::Request& req) const;

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  std::deque<Implemented> ring_;  // records next_ - ring_.size() .. next_ - 1
  uint64_t next_ = 0;
};

// The JSON of a page, and back (for clients such as `kos driver`).
std::string page_to_json(const ImplementationPage& page);
Result<ImplementationPage> page_from_json(std::string_view body);

// The path the handler serves.
inline constexpr std::string_view kImplementationsPath = "/debug/implementations";

}  // namespace kos::agent
