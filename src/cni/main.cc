// kos-cni: see cni/plugin.h. The runtime runs it with CNI_* in the environment and the
// network config on stdin.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>

#include "cni/plugin.h"

extern char** environ;

int main() {
  kos::cni::Invocation inv;
  for (char** e = environ; e && *e; ++e) {
    std::string kv = *e;
    if (!kv.starts_with("CNI_")) continue;
    auto eq = kv.find('=');
    if (eq != std::string::npos) inv.env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  // VERSION may come without a config; an interactive terminal is never one.
  if (!isatty(STDIN_FILENO)) inv.stdin_data.assign(std::istreambuf_iterator<char>(std::cin), {});
  auto out = kos::cni::run(inv, kos::cni::call);
  std::fwrite(out.stdout_data.data(), 1, out.stdout_data.size(), stdout);
  if (!out.stdout_data.empty() && out.stdout_data.back() != '\n') std::fputc('\n', stdout);
  return out.exit_code;
}
