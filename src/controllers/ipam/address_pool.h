// The IPAM's view of which addresses are busy, per VNI: taken (the lock informer shows a
// lock) or reserved (picked, the lock's create is in flight or its event not seen yet).
// Choosing a free address never scans addresses: each VNI's busy addresses sit in
// bitmaps of 65,536 addresses (one per /16 block that has any, created on first use),
// each a 64-ary tree whose inner bits mark full subtrees, so "the first free address at or
// after X" costs three word lookups per block, and a /8 has at most 256 blocks. Marking an
// address busy or free is O(1); nothing is rebuilt when a Subnet appears. A reservation
// whose lock never shows up (deleted before the informer saw it, or a relist folded its
// create and delete together) expires after a TTL. The pool only avoids collisions: the
// store's refusal of a second lock is the guarantee.
//
// Not thread-safe: the IPAM serializes calls under its mutex.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/clock.h"

namespace kos::controllers {

// Busy bits over [first, last], with "first free at or after" in O(levels).
class RangeBitmap {
 public:
  RangeBitmap(uint32_t first, uint32_t last);
  void set(uint32_t ip, bool busy);
  bool busy(uint32_t ip) const;
  // The first free address at or after `from` (in range), wrapping to `first`.
  std::optional<uint32_t> next_free(uint32_t from) const;
  // The first free address in [from, to] (both in range), no wrapping.
  std::optional<uint32_t> first_free(uint32_t from, uint32_t to) const;
  uint32_t first() const { return first_; }
  uint32_t last() const { return last_; }

 private:
  static constexpr uint64_t kNone = ~uint64_t{0};
  uint64_t find_from(uint64_t i) const;  // leaf index, or kNone
  uint32_t first_, last_;
  // levels_[0]: one bit per address (1 = busy); levels_[k][w] bit j: word 64*w+j of level
  // k-1 is full. Bits past the end are 1.
  std::vector<std::vector<uint64_t>> levels_;
};

class AddressPool {
 public:
  explicit AddressPool(const Clock& clock = RealClock::instance(),
                       std::chrono::milliseconds reservation_ttl = std::chrono::seconds(30));

  void taken(uint32_t vni, uint32_t ip);     // a lock appeared (ends a reservation)
  void released(uint32_t vni, uint32_t ip);  // a lock went away
  // A free address of [first, last] on `vni`, now reserved; round-robin from the last pick.
  std::optional<uint32_t> pick(uint32_t vni, uint32_t first, uint32_t last);
  void unreserve(uint32_t vni, uint32_t ip);
  size_t reservations() const;

 private:
  struct Vni {
    std::unordered_set<uint32_t> taken;
    std::unordered_map<uint32_t, std::chrono::steady_clock::time_point> reserved;  // -> expiry
    std::unordered_map<uint32_t, RangeBitmap> blocks;  // busy = taken or reserved, by ip >> 16
    std::map<std::pair<uint32_t, uint32_t>, uint32_t> cursors;  // next to try, by (first, last)
  };
  static void mark(Vni& v, uint32_t ip, bool busy);
  static std::optional<uint32_t> first_free(const Vni& v, uint32_t from, uint32_t to);
  void expire();

  const Clock& clock_;
  std::chrono::milliseconds ttl_;
  std::unordered_map<uint32_t, Vni> vnis_;
  struct Expiry {
    std::chrono::steady_clock::time_point at;
    uint32_t vni, ip;
  };
  std::deque<Expiry> expiries_;  // in order of `at` (one TTL for all)
};

}  // namespace kos::controllers
