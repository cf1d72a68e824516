// kos-test-store-writer --store URL --prefix P [--count N]
// Creates keys P000000, P000001, ... one after another and prints "KEY REVISION" for each
// create the store acknowledged, flushing after every line. Durability tests kill -9 this
// process (or the store) mid-stream and then check that every printed write is present.
#include <cstdio>
#include <cstring>
#include <string>

#include "common/log.h"
#include "store/open.h"

int main(int argc, char** argv) {
  std::string url, prefix;
  long count = 1000000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--store")) url = argv[i + 1];
    else if (!std::strcmp(argv[i], "--prefix")) prefix = argv[i + 1];
    else if (!std::strcmp(argv[i], "--count")) count = std::stol(argv[i + 1]);
  }
  if (url.empty() || prefix.empty()) {
    std::fprintf(stderr, "usage: kos-test-store-writer --store URL --prefix P [--count N]\n");
    return 2;
  }
  (void)kos::log::init("warn");
  kos::store::OpenOptions opts;
  opts.compaction_interval = std::chrono::milliseconds(0);
  auto store = kos::store::open_store(url, opts);
  if (!store) {
    std::fprintf(stderr, "kos-test-store-writer: %s\n", store.error().message.c_str());
    return 1;
  }
  for (long i = 0; i < count; ++i) {
    char key[256];
    std::snprintf(key, sizeof key, "%s%06ld", prefix.c_str(), i);
    auto kv = (*store)->create(key, "value-" + std::to_string(i));
    if (!kv) {
      std::fprintf(stderr, "kos-test-store-writer: %s\n", kv.error().message.c_str());
      return 1;
    }
    std::printf("%s %lld\n", key, static_cast<long long>(kv->mod_revision));
    std::fflush(stdout);
  }
  return 0;
}
