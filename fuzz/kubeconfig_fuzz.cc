// Kubeconfig files: any bytes as the file's content.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "client/kubeconfig.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/kos-fuzz-kubeconfig-" + std::to_string(getpid());
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  (void)kos::client::load_kubeconfig(path);
  (void)kos::client::load_kubeconfig(path, "other");
  return 0;
}
