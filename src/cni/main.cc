// kos-cni: see cni/plugin.h. The runtime runs it with CNI_* in the environment and the
// network config on stdin.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>

#include "cni/plugin.h"

extern char** environ;

namespace {
constexpr const char* kUsage = R"(kos-cni: the KOS CNI plugin (CNI 0.4.0, 1.0.0, 1.1.0).

A container runtime runs it with CNI_COMMAND (ADD, DEL, CHECK, STATUS, GC, VERSION),
CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS and CNI_PATH in the environment and the
network config on stdin:

  {"cniVersion": "1.0.0", "name": "tenant-a", "type": "kos-cni",
   "namespace": "tenant-a", "subnet": "net",
   "agentSocket": "/var/lib/kos/agent/cni.sock", "timeoutSeconds": 30}

It asks the KOS agent of its node (kos agent --cni-socket) to attach the container to the
subnet's virtual network and prints the CNI Result, or a CNI error JSON with its code and a
non-zero exit. CNI_ARGS may set KOS_NAMESPACE and KOS_SUBNET.
)";
}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) {
    const std::string a = argv[1];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    std::fprintf(stderr, "kos-cni: unknown argument %s (it takes none; see --help)\n", a.c_str());
    return 2;
  }
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
