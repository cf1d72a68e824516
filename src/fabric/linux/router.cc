#include "fabric/linux/router.h"

#include <dirent.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <sys/mount.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "api/cidr.h"
#include "api/names.h"
#include "fabric/linux/netlink.h"

namespace kos::fabric {
namespace {

constexpr std::string_view kGatewayPort = "kosgw";
constexpr std::string_view kAliasPrefix = "kos gw ";
constexpr const char* kNetnsDir = "/var/run/netns";

std::string base_of(const std::string& fabric_netns) {
  if (fabric_netns.empty()) return "kos";
  const auto slash = fabric_netns.find_last_of('/');
  return slash == std::string::npos ? fabric_netns : fabric_netns.substr(slash + 1);
}

}  // namespace

std::string gateway_port_name(uint32_t vni) { return std::string(kGatewayPort) + std::to_string(vni); }
std::string router_gateway_name(uint32_t vni) { return "gw" + std::to_string(vni); }

std::optional<uint32_t> parse_gateway_port_name(std::string_view name) {
  if (!name.starts_with(kGatewayPort)) return std::nullopt;
  auto v = api::parse_decimal(name.substr(kGatewayPort.size()), api::kMaxVni);
  if (!v || *v == 0) return std::nullopt;
  return v;
}

std::string gateway_port_alias(const Routing& r) {
  return std::string(kAliasPrefix) + "vpc=" + std::to_string(r.vpc) + " ip=" + api::format_ipv4(r.gateway) + "/" +
         std::to_string(r.prefix_len);
}

std::optional<Routing> parse_gateway_port_alias(std::string_view s) {
  if (!s.starts_with(kAliasPrefix)) return std::nullopt;
  s.remove_prefix(kAliasPrefix.size());
  if (!s.starts_with("vpc=")) return std::nullopt;
  s.remove_prefix(4);
  const auto sp = s.find(" ip=");
  if (sp == std::string_view::npos) return std::nullopt;
  auto vpc = api::parse_decimal(s.substr(0, sp), api::kMaxVni);
  auto cidr = s.substr(sp + 4);
  const auto slash = cidr.find('/');
  if (!vpc || slash == std::string_view::npos) return std::nullopt;
  auto gw = api::parse_ipv4(cidr.substr(0, slash));
  auto len = api::parse_decimal(cidr.substr(slash + 1), 32);
  if (!gw || !len) return std::nullopt;
  return Routing{*vpc, *gw, static_cast<int>(*len)};
}

std::string router_netns_name(const std::string& fabric_netns, uint32_t vpc) {
  return base_of(fabric_netns) + "-vpc" + std::to_string(vpc);
}

std::optional<uint32_t> parse_router_netns_name(const std::string& fabric_netns, std::string_view name) {
  const std::string prefix = base_of(fabric_netns) + "-vpc";
  if (!name.starts_with(prefix)) return std::nullopt;
  auto v = api::parse_decimal(name.substr(prefix.size()), api::kMaxVni);
  if (!v || *v == 0) return std::nullopt;
  return v;
}

namespace nl {

Result<int> create_named_netns(const std::string& name) {
  const std::string path = std::string(kNetnsDir) + "/" + name;
  if (int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC); fd >= 0) {
    // A namespace (a bind mount of nsfs), or the empty file an interrupted create left.
    struct statfs fs{};
    if (::fstatfs(fd, &fs) == 0 && fs.f_type == NSFS_MAGIC) return fd;
    ::close(fd);
    ::unlink(path.c_str());
  }
  if (::mkdir(kNetnsDir, 0755) != 0 && errno != EEXIST)
    return fail(sys_error("cannot create " + std::string(kNetnsDir), errno));
  if (int f = ::open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444); f >= 0) ::close(f);
  else if (errno != EEXIST) return fail(sys_error("cannot create " + path, errno));
  // A new namespace on a thread of its own (the caller's stays where it is), bound to the
  // file so it outlives the thread.
  int err = 0;
  std::string step;
  std::thread t([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      err = errno;
      step = "unshare";
      return;
    }
    const std::string self = "/proc/self/task/" + std::to_string(::syscall(SYS_gettid)) + "/ns/net";
    if (::mount(self.c_str(), path.c_str(), "none", MS_BIND, nullptr) != 0) {
      err = errno;
      step = "bind-mount";
    }
  });
  t.join();
  if (err) {
    ::unlink(path.c_str());
    return fail(sys_error("cannot create network namespace " + name + " (" + step + ")", err));
  }
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(sys_error("cannot open network namespace " + name, errno));
  return fd;
}

Result<void> delete_named_netns(const std::string& name) {
  const std::string path = std::string(kNetnsDir) + "/" + name;
  if (::umount2(path.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT)
    return fail(sys_error("cannot unmount network namespace " + name, errno));
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return fail(sys_error("cannot remove " + path, errno));
  return {};
}

std::vector<std::string> named_netns() {
  std::vector<std::string> out;
  DIR* d = ::opendir(kNetnsDir);
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(std::move(n));
  }
  ::closedir(d);
  return out;
}

namespace {

Result<void> write_sysctl(const std::string& path, const char* value) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return fail(sys_error("cannot open " + path, errno));
  const ssize_t n = ::write(fd, value, std::strlen(value));
  const int err = errno;
  ::close(fd);
  if (n < 0) return fail(sys_error("cannot write " + path, err));
  return {};
}

}  // namespace

Result<void> configure_router(int netns_fd, const std::string& name) {
  return in_netns<void>(netns_fd, "router namespace " + name, [&](NetlinkSocket& sock) -> Result<void> {
    // /proc/sys/net is the calling thread's namespace's: this thread's, the router's.
    for (auto [path, value] : {std::pair{"/proc/sys/net/ipv4/conf/all/rp_filter", "0"},
                               std::pair{"/proc/sys/net/ipv4/conf/default/rp_filter", "0"},
                               std::pair{"/proc/sys/net/ipv4/conf/all/send_redirects", "0"},
                               std::pair{"/proc/sys/net/ipv4/conf/default/send_redirects", "0"},
                               std::pair{"/proc/sys/net/ipv4/ip_forward", "1"}})
      if (auto r = write_sysctl(path, value); !r) return r;
    const int lo = static_cast<int>(::if_nametoindex("lo"));
    if (lo == 0) return fail(sys_error("no lo in router namespace " + name, errno));
    auto r = one(sock, msg_set_up(lo, "lo"), " in router namespace " + name);
    if (!r) return fail(r.error());
    return {};
  });
}

}  // namespace nl
}  // namespace kos::fabric
