// kos-bench-ipam: how fast the IPAM chooses a free address, in process (no API calls: the
// choice is what runs under the IPAM's mutex). Baseline: the address choice KOS used before
// the bitmap pool (a cursor over hash sets of taken and reserved addresses, scanning until a
// free one), measured in the same run on the same workloads:
//   /24 churn: 250 of the 253 usable addresses taken; each step releases a random taken one
//              and allocates one (a nearly full subnet under attachment churn).
//   /8 fill:   100,000 addresses taken (the first ones, as sequential allocation leaves
//              them), a freshly started IPAM (cursor at the start) allocates N more.
//   /8 fill, restarts: the same with an IPAM restart (cursor back at the start) every 100.
//   /8 churn:  100,000 taken at random; each step releases one and allocates one, and every
//              1,000 steps the IPAM restarts.
//   /16 churn: 65,000 of 65,533 taken, release one and allocate one per step.
// Printed: allocations per second over the whole workload and the slowest single choice.
#include <chrono>
#include <cstdio>
#include <optional>
#include <random>
#include <unordered_set>
#include <vector>

#include <CLI/CLI.hpp>

#include "controllers/ipam/address_pool.h"

namespace {

using SteadyClock = std::chrono::steady_clock;

// The previous choice, kept as the baseline.
struct ScanPool {
  std::unordered_set<uint32_t> taken, reserved;
  uint32_t cursor = 0;
  std::optional<uint32_t> pick(uint32_t, uint32_t first, uint32_t last) {
    uint64_t n = static_cast<uint64_t>(last) - first + 1;
    if (cursor < first || cursor > last) cursor = first;
    for (uint64_t i = 0; i < n; ++i) {
      uint32_t ip = cursor;
      cursor = cursor == last ? first : cursor + 1;
      if (!taken.count(ip) && !reserved.count(ip)) {
        reserved.insert(ip);
        return ip;
      }
    }
    return std::nullopt;
  }
  void make_taken(uint32_t, uint32_t ip) {
    reserved.erase(ip);
    taken.insert(ip);
  }
  void release(uint32_t, uint32_t ip) { taken.erase(ip); }
  void restart() { cursor = 0; }
};

struct BitmapPool {
  kos::controllers::AddressPool pool;
  std::optional<uint32_t> pick(uint32_t vni, uint32_t first, uint32_t last) {
    return pool.pick(vni, first, last);
  }
  void make_taken(uint32_t vni, uint32_t ip) { pool.taken(vni, ip); }
  void release(uint32_t vni, uint32_t ip) { pool.released(vni, ip); }
  void restart() {}  // the cursor's position costs nothing here
};

struct Figure {
  double per_second = 0;
  double worst_us = 0;
};

template <class Pool>
Figure churn(uint32_t first, uint32_t last, size_t taken_n, int steps, int restart_every,
             bool contiguous, bool release) {
  Pool p;
  std::mt19937 rng(7);
  std::vector<uint32_t> held;
  std::unordered_set<uint32_t> seen;
  std::uniform_int_distribution<uint32_t> any(first, last);
  while (held.size() < taken_n) {
    uint32_t ip = contiguous ? first + static_cast<uint32_t>(held.size()) : any(rng);
    if (!seen.insert(ip).second) continue;
    p.make_taken(1, ip);
    held.push_back(ip);
  }
  double worst = 0;
  auto t0 = SteadyClock::now();
  for (int s = 0; s < steps; ++s) {
    if (restart_every && s % restart_every == 0) p.restart();
    if (release) {
      size_t k = rng() % held.size();
      p.release(1, held[k]);
      held[k] = held.back();
      held.pop_back();
    }
    auto a = SteadyClock::now();
    auto ip = p.pick(1, first, last);
    worst = std::max(worst, std::chrono::duration<double, std::micro>(SteadyClock::now() - a).count());
    if (!ip) {
      std::fprintf(stderr, "no free address at step %d\n", s);
      return {};
    }
    p.make_taken(1, *ip);
    held.push_back(*ip);
  }
  double secs = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  return {steps / secs, worst};
}

void row(const char* name, Figure before, Figure after) {
  std::printf("%-34s %14.0f %14.0f %8.1fx %12.1f %12.1f\n", name, before.per_second,
              after.per_second, after.per_second / before.per_second, before.worst_us,
              after.worst_us);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kos-bench-ipam: addresses chosen per second, bitmap pool against the old scan"};
  int steps = 100000;
  app.add_option("--steps", steps, "allocations per workload")->check(CLI::Range(1000, 10000000));
  CLI11_PARSE(app, argc, argv);

  const uint32_t s24 = 0x0a010000u, s8 = 0x0a000000u;  // 10.1.0.0, 10.0.0.0
  std::printf("%-34s %14s %14s %9s %12s %12s\n", "workload", "before/s", "after/s", "ratio",
              "before max us", "after max us");
  row("/24 churn, 250 of 253 taken", churn<ScanPool>(s24 + 2, s24 + 254, 250, steps, 0, false, true),
      churn<BitmapPool>(s24 + 2, s24 + 254, 250, steps, 0, false, true));
  row("/8 fill after 100k taken", churn<ScanPool>(s8 + 2, s8 + 0xfffffe, 100000, steps, 0, true, false),
      churn<BitmapPool>(s8 + 2, s8 + 0xfffffe, 100000, steps, 0, true, false));
  row("/8 fill after 100k, restart/100", churn<ScanPool>(s8 + 2, s8 + 0xfffffe, 100000, steps, 100, true, false),
      churn<BitmapPool>(s8 + 2, s8 + 0xfffffe, 100000, steps, 100, true, false));
  row("/8 churn, 100k random, restart/1k",
      churn<ScanPool>(s8 + 2, s8 + 0xfffffe, 100000, steps, 1000, false, true),
      churn<BitmapPool>(s8 + 2, s8 + 0xfffffe, 100000, steps, 1000, false, true));
  row("/16 churn, 65,000 of 65,533 taken",
      churn<ScanPool>(s24 + 2, s24 + 0xfffe, 65000, steps, 0, false, true),
      churn<BitmapPool>(s24 + 2, s24 + 0xfffe, 65000, steps, 0, false, true));
  return 0;
}
