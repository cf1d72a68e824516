#include "controllers/ipam/address_pool.h"

#include <algorithm>
#include <bit>

namespace kos::controllers {

RangeBitmap::RangeBitmap(uint32_t first, uint32_t last) : first_(first), last_(last) {
  uint64_t n = static_cast<uint64_t>(last) - first + 1;
  while (true) {
    uint64_t words = (n + 63) / 64;
    std::vector<uint64_t> level(words, 0);
    if (n % 64) level.back() = ~uint64_t{0} << (n % 64);  // past the end: busy
    levels_.push_back(std::move(level));
    if (words == 1) break;
    n = words;
  }
}

bool RangeBitmap::busy(uint32_t ip) const {
  uint64_t i = ip - first_;
  return (levels_[0][i >> 6] >> (i & 63)) & 1;
}

void RangeBitmap::set(uint32_t ip, bool busy) {
  uint64_t i = ip - first_;
  for (auto& level : levels_) {
    uint64_t& w = level[i >> 6];
    bool was_full = w == kNone;
    if (busy) w |= uint64_t{1} << (i & 63);
    else w &= ~(uint64_t{1} << (i & 63));
    bool full = w == kNone;
    if (full == was_full) return;  // the levels above do not change
    busy = full;
    i >>= 6;
  }
}

uint64_t RangeBitmap::find_from(uint64_t i) const {
  // Up: the first level whose word, from i on, has a non-full entry.
  size_t l = 0;
  uint64_t j = kNone;
  for (; l < levels_.size(); ++l) {
    uint64_t w = i >> 6;
    if (w >= levels_[l].size()) return kNone;
    uint64_t x = levels_[l][w] | ((uint64_t{1} << (i & 63)) - 1);
    if (x != kNone) {
      j = (w << 6) + std::countr_zero(~x);
      break;
    }
    i = w + 1;  // the next word of this level is entry w+1 of the level above
  }
  if (j == kNone) return kNone;
  // Down: the first free entry of each non-full word.
  while (l-- > 0) j = (j << 6) + std::countr_zero(~levels_[l][j]);
  return j;
}

std::optional<uint32_t> RangeBitmap::next_free(uint32_t from) const {
  uint64_t start = from < first_ || from > last_ ? 0 : from - first_;
  uint64_t i = find_from(start);
  if (i == kNone && start != 0) i = find_from(0);
  if (i == kNone) return std::nullopt;
  return static_cast<uint32_t>(first_ + i);
}

std::optional<uint32_t> RangeBitmap::first_free(uint32_t from, uint32_t to) const {
  uint64_t i = find_from(from - first_);
  if (i == kNone || first_ + i > to) return std::nullopt;
  return static_cast<uint32_t>(first_ + i);
}

AddressPool::AddressPool(const Clock& clock, std::chrono::milliseconds reservation_ttl)
    : clock_(clock), ttl_(reservation_ttl) {}

void AddressPool::mark(Vni& v, uint32_t ip, bool busy) {
  auto it = v.blocks.find(ip >> 16);
  if (it == v.blocks.end()) {
    if (!busy) return;
    uint32_t base = ip & 0xffff0000u;
    it = v.blocks.emplace(ip >> 16, RangeBitmap(base, base | 0xffffu)).first;
  }
  it->second.set(ip, busy);
}

std::optional<uint32_t> AddressPool::first_free(const Vni& v, uint32_t from, uint32_t to) {
  for (uint64_t b = from >> 16; b <= (to >> 16); ++b) {
    uint32_t lo = std::max<uint32_t>(from, static_cast<uint32_t>(b << 16));
    uint32_t hi = std::min<uint32_t>(to, static_cast<uint32_t>(b << 16) | 0xffffu);
    auto it = v.blocks.find(static_cast<uint32_t>(b));
    if (it == v.blocks.end()) return lo;  // nothing busy in this block
    if (auto ip = it->second.first_free(lo, hi)) return ip;
  }
  return std::nullopt;
}

void AddressPool::taken(uint32_t vni, uint32_t ip) {
  auto& v = vnis_[vni];
  v.reserved.erase(ip);
  if (v.taken.insert(ip).second) mark(v, ip, true);
}

void AddressPool::released(uint32_t vni, uint32_t ip) {
  auto it = vnis_.find(vni);
  if (it == vnis_.end()) return;
  auto& v = it->second;
  if (v.taken.erase(ip) && !v.reserved.count(ip)) mark(v, ip, false);
}

void AddressPool::unreserve(uint32_t vni, uint32_t ip) {
  auto it = vnis_.find(vni);
  if (it == vnis_.end()) return;
  auto& v = it->second;
  if (v.reserved.erase(ip) && !v.taken.count(ip)) mark(v, ip, false);
}

size_t AddressPool::reservations() const {
  size_t n = 0;
  for (const auto& [_, v] : vnis_) n += v.reserved.size();
  return n;
}

void AddressPool::expire() {
  auto now = clock_.steady_now();
  while (!expiries_.empty() && expiries_.front().at <= now) {
    auto e = expiries_.front();
    expiries_.pop_front();
    auto it = vnis_.find(e.vni);
    if (it == vnis_.end()) continue;
    auto r = it->second.reserved.find(e.ip);
    // Only the reservation this entry was made for (the address may have been released
    // and reserved again since).
    if (r != it->second.reserved.end() && r->second == e.at) unreserve(e.vni, e.ip);
  }
}

std::optional<uint32_t> AddressPool::pick(uint32_t vni, uint32_t first, uint32_t last) {
  expire();
  auto& v = vnis_[vni];
  uint32_t& cursor = v.cursors.try_emplace({first, last}, first).first->second;
  if (cursor < first || cursor > last) cursor = first;
  auto ip = first_free(v, cursor, last);
  if (!ip && cursor > first) ip = first_free(v, first, cursor - 1);
  if (!ip) return std::nullopt;
  cursor = *ip == last ? first : *ip + 1;
  auto at = clock_.steady_now() + ttl_;
  v.reserved[*ip] = at;
  expiries_.push_back({at, vni, *ip});
  mark(v, *ip, true);
  return ip;
}

}  // namespace kos::controllers
