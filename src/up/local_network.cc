#include "up/local_network.h"

#include <algorithm>
#include <filesystem>

#include "common/subprocess.h"

namespace kos::up {

std::vector<std::string> LocalNetwork::existing(const std::string& prefix) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/var/run/netns", ec)) {
    std::string name = e.path().filename().string();
    if (name.starts_with(prefix + "-")) out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<void> LocalNetwork::create(const std::string& prefix, int nodes) {
  if (nodes < 1 || nodes > kMaxNodes)
    return fail(Errc::kInvalid, "nodes must be 1.." + std::to_string(kMaxNodes));
  const std::string ul = underlay_ns(prefix);
  std::vector<std::vector<std::string>> steps = {
      {"ip", "netns", "add", ul},
      {"ip", "-n", ul, "link", "set", "lo", "up"},
      {"ip", "-n", ul, "link", "add", "ulbr", "type", "bridge"},
      {"ip", "-n", ul, "link", "set", "ulbr", "up"},
  };
  for (int i = 0; i < nodes; ++i) {
    const std::string ns = node_ns(prefix, i), port = "n" + std::to_string(i);
    steps.push_back({"ip", "netns", "add", ns});
    steps.push_back({"ip", "-n", ns, "link", "set", "lo", "up"});
    steps.push_back({"ip", "-n", ul, "link", "add", port, "type", "veth", "peer", "name", "ul0", "netns", ns});
    steps.push_back({"ip", "-n", ul, "link", "set", port, "master", "ulbr", "up"});
    steps.push_back({"ip", "-n", ns, "addr", "add", host_ip(i) + "/24", "dev", "ul0"});
    steps.push_back({"ip", "-n", ns, "link", "set", "ul0", "up"});
  }
  for (const auto& argv : steps)
    if (auto r = run_checked(argv); !r) {
      (void)remove(prefix);
      return fail(r.error());
    }
  return {};
}

Result<void> LocalNetwork::remove(const std::string& prefix) {
  std::string failed;
  // Guests first, then nodes, then the underlay: each goes with its links.
  auto names = existing(prefix);
  std::stable_sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
    return a.size() > b.size();
  });
  for (const auto& ns : names)
    if (auto r = run_checked({"ip", "netns", "del", ns}); !r) failed += (failed.empty() ? "" : "; ") + r.error().message;
  if (!failed.empty()) return fail(Errc::kInternal, failed);
  return {};
}

}  // namespace kos::up
