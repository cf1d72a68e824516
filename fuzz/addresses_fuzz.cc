// CIDR, IPv4, MAC and IPLock name parsing: what parses formats back to itself.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "api/cidr.h"
#include "api/names.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view s(reinterpret_cast<const char*>(data), size);
  if (auto ip = kos::api::parse_ipv4(s)) {
    auto again = kos::api::parse_ipv4(kos::api::format_ipv4(*ip));
    if (!again || *again != *ip) std::abort();
  }
  if (auto c = kos::api::parse_cidr(s)) (void)c->overlaps(*c);
  (void)kos::api::parse_mac(s);
  if (auto n = kos::api::parse_iplock_name(s)) {
    auto again = kos::api::parse_iplock_name(kos::api::format_iplock_name(n->vni, n->ipv4));
    if (!again || !(*again == *n)) std::abort();
  }
  return 0;
}
