// The IPAM's address pool: the bitmap tree against a plain set (random operations on
// ranges of several shapes), round-robin picking, reservations that expire.
#include "controllers/ipam/address_pool.h"

#include <random>
#include <set>

#include <gtest/gtest.h>

namespace kos::controllers {
namespace {

using namespace std::chrono_literals;

// The first free address at or after `from`, wrapping: the definition, by scanning.
std::optional<uint32_t> scan(const std::set<uint32_t>& busy, uint32_t first, uint32_t last,
                             uint32_t from) {
  if (from < first || from > last) from = first;
  for (uint64_t i = from; i <= last; ++i)
    if (!busy.count(static_cast<uint32_t>(i))) return static_cast<uint32_t>(i);
  for (uint64_t i = first; i < from; ++i)
    if (!busy.count(static_cast<uint32_t>(i))) return static_cast<uint32_t>(i);
  return std::nullopt;
}

TEST(RangeBitmap, AgreesWithAScanOnRandomOperations) {
  std::mt19937 rng(42);
  // Sizes around word and level boundaries: 1, 63, 64, 65, 4095, 4096, 4097, 262145.
  for (uint32_t size : {1u, 2u, 63u, 64u, 65u, 4095u, 4096u, 4097u, 262145u}) {
    const uint32_t first = 0x0a000000u + 7, last = first + size - 1;
    RangeBitmap bits(first, last);
    std::set<uint32_t> busy;
    std::uniform_int_distribution<uint32_t> any(first, last);
    int ops = size > 5000 ? 20000 : static_cast<int>(size) * 8 + 16;
    for (int k = 0; k < ops; ++k) {
      uint32_t ip = any(rng);
      // Mostly fills, so full words and full subtrees occur.
      bool set = rng() % 4 != 0;
      bits.set(ip, set);
      if (set) busy.insert(ip);
      else busy.erase(ip);
      uint32_t from = any(rng);
      ASSERT_EQ(bits.next_free(from), scan(busy, first, last, from)) << "size " << size << " op " << k;
      ASSERT_EQ(bits.busy(ip), set);
    }
    // Full, then one free at the very end.
    for (uint64_t ip = first; ip <= last; ++ip) bits.set(static_cast<uint32_t>(ip), true);
    EXPECT_EQ(bits.next_free(first), std::nullopt) << size;
    bits.set(last, false);
    EXPECT_EQ(bits.next_free(first), last) << size;
    EXPECT_EQ(bits.next_free(last), last) << size;
  }
}

TEST(AddressPool, PicksRoundRobinAndSkipsTakenAndReserved) {
  FakeClock clock;
  AddressPool pool(clock, 30s);
  pool.taken(5, 3);
  EXPECT_EQ(pool.pick(5, 2, 6), 2u);
  EXPECT_EQ(pool.pick(5, 2, 6), 4u);  // 3 is taken
  pool.taken(5, 4);                   // the lock of the pick showed up
  EXPECT_EQ(pool.reservations(), 1u);
  pool.released(5, 3);
  EXPECT_EQ(pool.pick(5, 2, 6), 5u);  // round robin: on from the last pick, not back to 3
  EXPECT_EQ(pool.pick(5, 2, 6), 6u);
  EXPECT_EQ(pool.pick(5, 2, 6), 3u);
  EXPECT_EQ(pool.pick(5, 2, 6), std::nullopt);
  // Another VNI is independent; an unreserved address is free again.
  EXPECT_EQ(pool.pick(6, 2, 6), 2u);
  pool.unreserve(5, 5);
  EXPECT_EQ(pool.pick(5, 2, 6), 5u);
  // Two ranges of one VNI share what is busy.
  pool.taken(7, 10);
  EXPECT_EQ(pool.pick(7, 8, 12), 8u);
  EXPECT_EQ(pool.pick(7, 9, 20), 9u);
  EXPECT_EQ(pool.pick(7, 8, 12), 11u);  // 9 reserved through the other range, 10 taken
}

// A reservation whose lock never shows up (created and deleted before the informer saw it)
// does not hold the address forever.
TEST(AddressPool, AReservationWhoseLockNeverShowsUpExpires) {
  FakeClock clock;
  AddressPool pool(clock, 30s);
  for (uint32_t ip = 2; ip <= 6; ++ip) EXPECT_EQ(pool.pick(9, 2, 6), ip);
  pool.taken(9, 4);  // this one's lock did show up
  EXPECT_EQ(pool.pick(9, 2, 6), std::nullopt);
  clock.advance(29s);
  EXPECT_EQ(pool.pick(9, 2, 6), std::nullopt);
  clock.advance(2s);
  std::set<uint32_t> again;
  while (auto ip = pool.pick(9, 2, 6)) again.insert(*ip);
  EXPECT_EQ(again, (std::set<uint32_t>{2, 3, 5, 6}));  // 4 stays taken
  // A reservation made after an expiry entry of the same address is not ended by it.
  clock.advance(31s);
  pool.unreserve(9, 2);
  EXPECT_EQ(pool.pick(9, 2, 6), 2u);
  EXPECT_EQ(pool.pick(9, 2, 6), 3u);  // the others expired
  clock.advance(15s);
  EXPECT_EQ(pool.reservations(), 2u);
}

}  // namespace
}  // namespace kos::controllers
