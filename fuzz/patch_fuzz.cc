// JSON patch and merge patch: the first byte picks the target document, the rest is the
// patch.
#include <cstdint>
#include <string_view>

#include "api/json.h"
#include "apiserver/patch.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const char* targets[] = {
      R"({"apiVersion":"network.example.com/v1alpha1","kind":"Subnet","metadata":{"name":"s1","labels":{"a":"b"}},"spec":{"vni":7,"ipv4":"10.0.0.0/16"},"status":{"errors":["x"]}})",
      R"({"a":[1,2,{"b":[3,{"c":null}]}],"d":{"e~f":"/g"}})",
      R"([])",
  };
  auto target = kos::api::parse_json(targets[data[0] % 3]);
  auto patch = kos::api::parse_json(std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
  if (!patch) return 0;
  (void)kos::apiserver::apply_merge_patch(*target, *patch);
  (void)kos::apiserver::apply_json_patch(*target, *patch);
  return 0;
}
