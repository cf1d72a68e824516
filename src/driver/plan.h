// The pure parts of `kos driver`'s plan: durations on the command line, the size of each
// virtual network (a power law, as the original driver's), the subnets that hold them,
// latency statistics. No I/O.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "api/cidr.h"
#include "common/duration.h"
#include "common/error.h"

namespace kos::driver {

using kos::format_duration;
using kos::parse_duration;

// Slots of network i (1-based) of `count`: ceil(top / i^exponent), at least 1. A slot
// holds at most one live attachment, so network i never has more than slots[i-1] live.
// kInvalid when count is 0, top < 1 or exponent < 0.
Result<std::vector<uint32_t>> slot_distribution(uint32_t count, double top, double exponent);

// The smallest block whose IPAM range (base+2 .. last-1, see api::Ipv4Cidr) holds
// `addresses`: a prefix of at most 29 (8 addresses, 5 usable).
int prefix_for(uint64_t addresses);

// One subnet per network, laid out from `base` upward, each aligned to its size and
// holding headroom x its slots (addresses are freed only once the deleted attachment's
// IPLock is collected, so a churning network needs more addresses than live attachments).
// kInvalid when they do not fit in the private range (10/8, 172.16/12, 192.168/16) that
// holds `base`.
Result<std::vector<api::Ipv4Cidr>> layout_subnets(const std::vector<uint32_t>& slots, uint32_t base,
                                                  double headroom = 2.0);

// Latency statistics in seconds. Percentiles are nearest-rank: the smallest sample with
// at least p% of the samples at or below it (p in (0, 100]); 0 when there are none.
double percentile(const std::vector<double>& sorted, double p);
struct Summary {
  size_t count = 0;
  double p50 = 0, p90 = 0, p99 = 0, max = 0, mean = 0;
};
Summary summarize(std::vector<double> samples);

}  // namespace kos::driver
