// Label and field selectors: parse, and a parsed selector's canonical text parses to the
// same selector.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "api/selectors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view s(reinterpret_cast<const char*>(data), size);
  if (auto l = kos::api::LabelSelector::parse(s)) {
    auto again = kos::api::LabelSelector::parse(l->to_string());
    if (!again || !(*again == *l)) std::abort();
    (void)l->matches({{"a", "b"}, {"k", ""}});
  }
  if (auto f = kos::api::FieldSelector::parse(s)) {
    auto again = kos::api::FieldSelector::parse(f->to_string());
    if (!again || !(*again == *f)) std::abort();
    (void)f->exact_value("spec.node");
  }
  return 0;
}
