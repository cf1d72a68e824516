#include "driver/plan.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <numeric>

namespace kos::driver {

Result<std::vector<uint32_t>> slot_distribution(uint32_t count, double top, double exponent) {
  if (count == 0) return fail(Errc::kInvalid, "there must be at least one network");
  if (!(top >= 1) || top > 1e7) return fail(Errc::kInvalid, "the largest network must have 1 to 10,000,000 slots");
  if (!(exponent >= 0) || exponent > 100) return fail(Errc::kInvalid, "the exponent must lie in [0, 100]");
  std::vector<uint32_t> out;
  out.reserve(count);
  for (uint32_t i = 1; i <= count; ++i) {
    // A little slack so that an exact quotient (100 / 2^1) is not rounded up by float error.
    double s = std::ceil(top / std::pow(static_cast<double>(i), exponent) - 1e-9);
    out.push_back(static_cast<uint32_t>(std::max(1.0, s)));
  }
  return out;
}

int prefix_for(uint64_t addresses) {
  int prefix = 29;
  while (prefix > 0 && (uint64_t{1} << (32 - prefix)) - 3 < addresses) --prefix;
  return prefix;
}

Result<std::vector<api::Ipv4Cidr>> layout_subnets(const std::vector<uint32_t>& slots, uint32_t base,
                                                  double headroom) {
  static const api::Ipv4Cidr kPrivate[] = {{0x0A000000u, 8}, {0xAC100000u, 12}, {0xC0A80000u, 16}};
  const api::Ipv4Cidr* range = nullptr;
  for (const auto& r : kPrivate)
    if (r.contains(base)) range = &r;
  if (!range) return fail(Errc::kInvalid, "the base address " + api::format_ipv4(base) +
                                              " is not in 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16");
  std::vector<api::Ipv4Cidr> out;
  uint64_t next = base;
  for (uint32_t s : slots) {
    int prefix = prefix_for(static_cast<uint64_t>(std::ceil(s * std::max(1.0, headroom))));
    uint64_t size = uint64_t{1} << (32 - prefix);
    next = (next + size - 1) / size * size;  // aligned
    if (next + size - 1 > range->last())
      return fail(Errc::kInvalid, "the subnets do not fit in " + range->to_string() + " from " +
                                      api::format_ipv4(base) + ": fewer networks or slots, or a lower base");
    out.push_back(api::Ipv4Cidr{static_cast<uint32_t>(next), prefix});
    next += size;
  }
  return out;
}

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  double rank = std::ceil(p / 100.0 * static_cast<double>(sorted.size()) - 1e-9);
  size_t i = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return sorted[std::min(i, sorted.size() - 1)];
}

Summary summarize(std::vector<double> samples) {
  Summary s;
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  s.count = samples.size();
  s.p50 = percentile(samples, 50);
  s.p90 = percentile(samples, 90);
  s.p99 = percentile(samples, 99);
  s.max = samples.back();
  s.mean = std::accumulate(samples.begin(), samples.end(), 0.0) / static_cast<double>(samples.size());
  return s;
}

}  // namespace kos::driver
