// The JSON decoders of every kind (Subnet, NetworkAttachment, IPLock) and their
// validation, strict and lenient, on any bytes.
#include <cstdint>
#include <string_view>

#include "api/json.h"
#include "api/types.h"
#include "api/validation.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto v = kos::api::parse_json(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!v) return 0;
  std::vector<std::string> warnings;
  for (const auto& k : kos::api::all_kinds()) {
    kos::api::DecodeOptions strict;
    strict.strict = true;
    (void)kos::api::object_from_json(k.kind, *v, strict);
    kos::api::DecodeOptions lenient;
    lenient.warnings = &warnings;
    auto o = kos::api::object_from_json(k.kind, *v, lenient);
    if (o) (void)kos::api::validate(*o);
  }
  return 0;
}
