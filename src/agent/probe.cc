#include "agent/probe.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <set>
#include <thread>

#include "api/cidr.h"
#include "fabric/linux/linux_fabric.h"
#include "fabric/linux/netlink.h"

namespace kos::agent {

namespace nl = fabric::nl;
using Steady = std::chrono::steady_clock;

std::optional<ProbeProtocol> parse_probe_protocol(std::string_view s) {
  if (s == "tcp") return ProbeProtocol::kTcp;
  if (s == "udp") return ProbeProtocol::kUdp;
  if (s == "icmp") return ProbeProtocol::kIcmp;
  return std::nullopt;
}

std::string_view protocol_name(ProbeProtocol p) {
  switch (p) {
    case ProbeProtocol::kTcp: return "tcp";
    case ProbeProtocol::kUdp: return "udp";
    case ProbeProtocol::kIcmp: return "icmp";
  }
  return "?";
}

namespace {

struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Runs fn on a new thread that has entered the namespace at `path`; this thread stays where
// it is.
template <class T>
Result<T> in_namespace(const std::string& path, const std::function<Result<T>()>& fn) {
  auto fd = nl::open_netns(path);
  if (!fd) return fail(fd.error());
  Fd closer(*fd);
  std::optional<Result<T>> out;
  std::thread t([&] {
    if (auto r = nl::enter_netns(*fd, path); !r) {
      out = fail(r.error());
      return;
    }
    out = fn();
  });
  t.join();
  return std::move(*out);
}

std::string ms_text(std::chrono::microseconds d) {
  const double ms = static_cast<double>(d.count()) / 1000.0;
  char buf[32];
  std::snprintf(buf, sizeof buf, ms < 1 ? "%.2f ms" : ms < 100 ? "%.1f ms" : "%.0f ms", ms);
  return buf;
}

std::chrono::microseconds since(Steady::time_point t0) {
  return std::chrono::duration_cast<std::chrono::microseconds>(Steady::now() - t0);
}

int remaining_ms(Steady::time_point deadline) {  // rounded up: poll's wait may end early otherwise
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(deadline - Steady::now()).count();
  return ms <= 0 ? 0 : static_cast<int>(std::min<int64_t>(ms, 1 << 30));
}

// Waits for `events` until the deadline: the revents, or 0 on timeout.
short wait_for(int fd, short events, Steady::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, remaining_ms(deadline));
    if (n > 0) return p.revents;
    if (n == 0 && Steady::now() >= deadline) return 0;
    if (n == 0) continue;
    if (errno != EINTR) return POLLERR;
  }
}

ProbeOutcome allowed(std::string what, std::chrono::microseconds d) { return {true, what + " in " + ms_text(d), d}; }
ProbeOutcome denied(std::string what, std::chrono::microseconds d) { return {false, what + " in " + ms_text(d), d}; }
ProbeOutcome no_answer(const ProbeSpec& spec, std::chrono::microseconds d) {
  return {false, "no answer in " + std::to_string(spec.timeout.count()) + " ms", d};
}

// An error of a connect, send or receive: what it says about the network.
ProbeOutcome verdict_of(int err, std::chrono::microseconds d) {
  switch (err) {
    case 0: return allowed("connected", d);
    case ECONNREFUSED: return allowed("refused (RST)", d);
    case EHOSTUNREACH: return denied("host unreachable", d);
    case ENETUNREACH: return denied("network unreachable", d);
    case ETIMEDOUT: return denied("timed out", d);
    case EPERM:
    case EACCES: return denied("dropped in the guest's own namespace (a firewall there)", d);
    default: return denied(std::string("failed: ") + std::strerror(err), d);
  }
}

// A socket of the guest, bound to its address: the probe leaves as the guest's own traffic
// would, by the namespace's routes. (Not bound to the interface: with SO_BINDTODEVICE the
// kernel takes a destination without a route as on-link and ARPs for it, where the guest
// would get "network unreachable".)
Result<int> guest_socket(int type, int protocol, uint32_t source, const std::string& ifname) {
  const int fd = ::socket(AF_INET, type | SOCK_CLOEXEC | SOCK_NONBLOCK, protocol);
  if (fd < 0) return fail(Errc::kInternal, std::string("socket: ") + std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(source);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EADDRNOTAVAIL)
      return fail(Errc::kConflict, "the guest's interface " + ifname + " does not have its address " +
                                       api::format_ipv4(source) + " (did its postCreateExec fail?)");
    return fail(Errc::kInternal, "binding a socket to " + api::format_ipv4(source) + ": " + std::strerror(err));
  }
  return fd;
}

sockaddr_in target_addr(const ProbeSpec& spec) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(spec.port);
  a.sin_addr.s_addr = htonl(spec.target);
  return a;
}

Result<ProbeOutcome> probe_tcp(int fd, const ProbeSpec& spec) {
  const linger lg{1, 0};  // close with a reset: nothing left behind in the guest (TIME_WAIT)
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  const sockaddr_in to = target_addr(spec);
  const auto t0 = Steady::now();
  const auto deadline = t0 + spec.timeout;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0) return verdict_of(0, since(t0));
  if (errno != EINPROGRESS) return verdict_of(errno, since(t0));
  if (wait_for(fd, POLLOUT, deadline) == 0) return no_answer(spec, since(t0));
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
    return fail(Errc::kInternal, std::string("getsockopt(SO_ERROR): ") + std::strerror(errno));
  return verdict_of(err, since(t0));
}

Result<ProbeOutcome> probe_udp(int fd, const ProbeSpec& spec) {
  const sockaddr_in to = target_addr(spec);
  const auto t0 = Steady::now();
  const auto deadline = t0 + spec.timeout;
  // Connected, so that an ICMP error about it comes back as this socket's error.
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0) return verdict_of(errno, since(t0));
  static constexpr char kPayload[] = "kos check probe\n";
  if (::send(fd, kPayload, sizeof kPayload - 1, MSG_NOSIGNAL) < 0) return verdict_of(errno, since(t0));
  char buf[2048];
  for (;;) {
    if (wait_for(fd, POLLIN, deadline) == 0) return no_answer(spec, since(t0));
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n >= 0) return allowed("answered (" + std::to_string(n) + " bytes)", since(t0));
    if (errno == EAGAIN || errno == EINTR) continue;
    if (errno == ECONNREFUSED) return allowed("port unreachable (nothing listens)", since(t0));
    return verdict_of(errno, since(t0));
  }
}

uint16_t checksum(const uint8_t* p, size_t n) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < n; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (n & 1) sum += static_cast<uint32_t>(p[n - 1] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t be32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 | static_cast<uint32_t>(p[2]) << 8 | p[3];
}

constexpr uint8_t kEchoReply = 0, kDestUnreachable = 3, kEchoRequest = 8, kTimeExceeded = 11;

std::string unreachable_text(uint8_t code) {
  switch (code) {
    case 0: return "network unreachable (ICMP)";
    case 1: return "host unreachable (ICMP)";
    case 2: return "protocol unreachable (ICMP)";
    case 3: return "port unreachable (ICMP)";
    case 9:
    case 10:
    case 13: return "administratively prohibited (ICMP)";
    default: return "destination unreachable (ICMP code " + std::to_string(code) + ")";
  }
}

Result<ProbeOutcome> probe_icmp(int fd, const ProbeSpec& spec) {
  // Only echo replies and the errors that may be about the request reach this socket.
  constexpr int kIcmpFilter = 1;  // ICMP_FILTER (linux/icmp.h, which clashes with glibc's)
  uint32_t filter = ~((1u << kEchoReply) | (1u << kDestUnreachable) | (1u << kTimeExceeded));
  ::setsockopt(fd, SOL_RAW, kIcmpFilter, &filter, sizeof filter);
  static std::atomic<uint16_t> next{static_cast<uint16_t>(::getpid() * 2654435761u >> 16)};
  const uint16_t id = next++;
  const uint16_t seq = 1;
  uint8_t req[8 + 16] = {kEchoRequest, 0, 0, 0, static_cast<uint8_t>(id >> 8), static_cast<uint8_t>(id),
                         static_cast<uint8_t>(seq >> 8), static_cast<uint8_t>(seq)};
  std::memcpy(req + 8, "kos check probe\n", 16);
  const uint16_t sum = checksum(req, sizeof req);
  req[2] = static_cast<uint8_t>(sum >> 8);
  req[3] = static_cast<uint8_t>(sum);
  const sockaddr_in to = target_addr(ProbeSpec{spec.protocol, spec.target, 0, spec.timeout});
  const auto t0 = Steady::now();
  const auto deadline = t0 + spec.timeout;
  if (::sendto(fd, req, sizeof req, MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&to), sizeof to) < 0)
    return verdict_of(errno, since(t0));
  // Is `icmp` (an error's quoted datagram: IP header, then our request's first 8 bytes) ours?
  auto quotes_ours = [&](const uint8_t* q, size_t n) {
    if (n < 20) return false;
    const size_t ihl = static_cast<size_t>(q[0] & 0x0f) * 4;
    return ihl >= 20 && n >= ihl + 8 && q[9] == IPPROTO_ICMP && be32(q + 16) == spec.target && q[ihl] == kEchoRequest &&
           be16(q + ihl + 4) == id && be16(q + ihl + 6) == seq;
  };
  uint8_t buf[2048];
  for (;;) {
    if (wait_for(fd, POLLIN, deadline) == 0) return no_answer(spec, since(t0));
    const ssize_t got = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (got < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return verdict_of(errno, since(t0));
    }
    const size_t n = static_cast<size_t>(got);
    if (n < 20) continue;
    const size_t ihl = static_cast<size_t>(buf[0] & 0x0f) * 4;  // raw sockets get the IP header
    if (ihl < 20 || n < ihl + 8) continue;
    const uint8_t* icmp = buf + ihl;
    const size_t len = n - ihl;
    if (icmp[0] == kEchoReply && be16(icmp + 4) == id && be16(icmp + 6) == seq && be32(buf + 12) == spec.target)
      return allowed("echo reply", since(t0));
    if ((icmp[0] == kDestUnreachable || icmp[0] == kTimeExceeded) && quotes_ours(icmp + 8, len - 8))
      return denied(icmp[0] == kTimeExceeded ? std::string("time exceeded (ICMP)") : unreachable_text(icmp[1]),
                    since(t0));
  }
}

// What one namespace has: the name of an interface with the guest MAC, and whether the
// host end is there too.
struct Seen {
  std::optional<std::string> guest;
  bool host_end = false;
};

Result<Seen> look_in(const std::string& path, const api::MacAddress& mac, const std::string& host_end) {
  auto fd = nl::open_netns(path);
  if (!fd) return fail(fd.error());
  Fd closer(*fd);
  return nl::in_netns<Seen>(*fd, path, [&](nl::NetlinkSocket& sock) -> Result<Seen> {
    for (int attempt = 0;; ++attempt) {
      Seen s;
      auto r = sock.dump(nl::msg_dump_links(), [&](const nlmsghdr* nlh) {
        auto l = nl::parse_link(nlh);
        if (!l) return;
        if (l->name == host_end) s.host_end = true;
        else if (l->mac == mac && !s.guest) s.guest = l->name;
      });
      if (r) return s;
      // Interrupted by a concurrent change: run it again.
      if (r.error().code != Errc::kUnavailable || attempt >= 3) return fail(r.error());
    }
  });
}

bool is_nsfs(const std::string& path, struct stat* st) {
  struct statfs fs{};
  return ::stat(path.c_str(), st) == 0 && ::statfs(path.c_str(), &fs) == 0 &&
         static_cast<unsigned long>(fs.f_type) == static_cast<unsigned long>(NSFS_MAGIC);
}

}  // namespace

std::vector<std::string> netns_candidates(const std::vector<std::string>& first, const std::vector<std::string>& dirs,
                                          bool processes) {
  std::set<std::pair<dev_t, ino_t>> seen;
  std::vector<std::string> out;
  auto add = [&](const std::string& path) {
    struct stat st{};
    // Only namespaces (a deleted one's mount point is an empty file), each once.
    if (is_nsfs(path, &st) && seen.insert({st.st_dev, st.st_ino}).second) out.push_back(path);
  };
  for (const auto& p : first) add(p);
  std::error_code ec;
  for (const auto& d : dirs) {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(d, ec)) names.push_back(e.path().filename().string());
    std::ranges::sort(names);
    for (const auto& n : names) add(d + "/" + n);
  }
  if (processes) {
    std::vector<long> pids;
    for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
      const std::string n = e.path().filename().string();
      if (!n.empty() && n.find_first_not_of("0123456789") == std::string::npos) pids.push_back(std::stol(n));
    }
    std::ranges::sort(pids);
    for (long pid : pids) add("/proc/" + std::to_string(pid) + "/ns/net");
  }
  return out;
}

Result<GuestNetns> find_guest_netns(const api::MacAddress& mac, const std::string& host_end,
                                    const std::vector<std::string>& candidates) {
  std::string unplugged;  // a namespace with the guest end and the host end: the fabric's
  std::vector<std::string> unreadable;
  for (const auto& path : candidates) {
    auto seen = look_in(path, mac, host_end);
    if (!seen) {
      if (seen.error().code != Errc::kNotFound) unreadable.push_back(seen.error().message);
      continue;
    }
    if (!seen->guest) continue;
    if (seen->host_end) {
      if (unplugged.empty()) unplugged = path;
      continue;
    }
    return GuestNetns{path, *seen->guest};
  }
  std::string msg = "no network namespace on this node has a guest interface with MAC " + api::format_mac(mac) +
                    " (searched " + std::to_string(candidates.size()) + ")";
  if (!unplugged.empty())
    msg += "; it is in the fabric's namespace " + unplugged +
           ", plugged into no guest (a postCreateExec such as kos-guest-netns, or a CNI ADD, moves it into one)";
  if (!unreadable.empty())
    msg += "; " + std::to_string(unreadable.size()) + " could not be searched: " + unreadable.front();
  return fail(Errc::kNotFound, msg);
}

Result<ProbeOutcome> probe_from(const std::string& netns_path, uint32_t source, const std::string& ifname,
                                const ProbeSpec& spec) {
  if (spec.protocol != ProbeProtocol::kIcmp && spec.port == 0)
    return fail(Errc::kInvalid, std::string("a ") + std::string(protocol_name(spec.protocol)) + " probe needs a port");
  if (spec.timeout <= std::chrono::milliseconds(0)) return fail(Errc::kInvalid, "the probe's timeout must be positive");
  return in_namespace<ProbeOutcome>(netns_path, [&]() -> Result<ProbeOutcome> {
    const bool icmp = spec.protocol == ProbeProtocol::kIcmp;
    auto fd = guest_socket(icmp ? SOCK_RAW : spec.protocol == ProbeProtocol::kTcp ? SOCK_STREAM : SOCK_DGRAM,
                           icmp ? IPPROTO_ICMP : 0, source, ifname);
    if (!fd) return fail(fd.error());
    Fd closer(*fd);
    switch (spec.protocol) {
      case ProbeProtocol::kTcp: return probe_tcp(*fd, spec);
      case ProbeProtocol::kUdp: return probe_udp(*fd, spec);
      case ProbeProtocol::kIcmp: return probe_icmp(*fd, spec);
    }
    return fail(Errc::kInternal, "unknown protocol");
  });
}

LinuxGuestProber::LinuxGuestProber(LinuxGuestProberOptions opts) : opts_(std::move(opts)) {}

Result<GuestProber::Answer> LinuxGuestProber::probe(const Guest& guest, const ProbeSpec& spec) {
  const std::string cache_key = guest.key + "/" + guest.uid;
  const std::string host_end = fabric::host_end_name(guest.mac);
  std::vector<std::string> last;
  {
    std::lock_guard lk(mu_);
    if (auto it = found_.find(cache_key); it != found_.end()) last.push_back(it->second);
  }
  // Where it was last time (checked again: it may have moved), else the whole search.
  Result<GuestNetns> where = fail(Errc::kNotFound, "");
  if (!last.empty()) where = find_guest_netns(guest.mac, host_end, netns_candidates(last, {}, false));
  if (!where) where = find_guest_netns(guest.mac, host_end, netns_candidates({}, opts_.netns_dirs, opts_.scan_processes));
  if (!where) {
    std::lock_guard lk(mu_);
    found_.erase(cache_key);
    return fail(where.error());
  }
  {
    std::lock_guard lk(mu_);
    if (found_.size() >= 4096) found_.clear();  // attachments long gone; cheap to find again
    found_[cache_key] = where->path;
  }
  auto outcome = probe_from(where->path, guest.ip, where->ifname, spec);
  if (!outcome) {
    Error e = outcome.error();
    e.message = "probing from " + where->ifname + " in " + where->path + ": " + e.message;
    return fail(std::move(e));
  }
  return Answer{*where, *outcome};
}

}  // namespace kos::agent
