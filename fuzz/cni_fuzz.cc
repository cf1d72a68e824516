// The CNI plugin's input: the environment (lines NAME=VALUE until an empty line) and the
// network config (the rest, stdin). The agent is a stub that answers every call.
#include <cstdint>
#include <sstream>
#include <string>

#include "cni/plugin.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in(reinterpret_cast<const char*>(data), size);
  kos::cni::Invocation inv;
  auto split = in.find("\n\n");
  std::istringstream env(in.substr(0, split));
  for (std::string line; std::getline(env, line);) {
    auto eq = line.find('=');
    if (eq != std::string::npos) inv.env[line.substr(0, eq)] = line.substr(eq + 1);
  }
  inv.stdin_data = split == std::string::npos ? std::string() : in.substr(split + 2);
  auto stub = [](const std::string&, const kos::cni::Request&, std::chrono::milliseconds)
      -> kos::Result<kos::cni::Response> { return kos::cni::Response{}; };
  (void)kos::cni::run(inv, stub);
  return 0;
}
