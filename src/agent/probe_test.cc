// Probes against the real kernel: two network namespaces the test makes (kosprb-<pid>-*),
// joined by a veth pair, a guest interface with a known MAC in one (the client) and
// listeners in the other (the server), nft rules in the server's namespace to drop what a
// test wants denied. Needs root, `ip` and `nft`; skips otherwise (fails under CI).
#include "agent/probe.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <filesystem>
#include <memory>
#include <thread>

#include <gtest/gtest.h>

#include "api/cidr.h"
#include "fabric/linux/linux_fabric.h"
#include "test/support/netns.h"
#include "test/support/process.h"
#include "test/support/skip.h"

namespace kos::agent {
namespace {

using namespace std::chrono_literals;
using kos::testing::run;

const uint32_t kClientIp = api::parse_ipv4("10.99.0.1").value();
const uint32_t kServerIp = api::parse_ipv4("10.99.0.2").value();

std::string join(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

void sh(const std::vector<std::string>& argv) {
  auto r = run(argv);
  ASSERT_EQ(r.exit_code, 0) << join(argv) << ": " << r.err;
}

// Namespaces of earlier test processes that were killed (their pid is gone).
void sweep() {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/var/run/netns", ec)) {
    const std::string n = e.path().filename().string();
    if (!n.starts_with("kosprb-")) continue;
    const auto dash = n.find('-', 7);
    const std::string pid = n.substr(7, dash == std::string::npos ? std::string::npos : dash - 7);
    if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    if (::kill(std::stoi(pid), 0) != 0 && errno == ESRCH) run({"ip", "netns", "del", n});
  }
}

// A socket made in namespace `ns` (it stays there; any thread may use it).
int socket_in(const std::string& ns, int type, uint16_t* port) {
  int fd = -1;
  std::thread t([&] {
    auto nsfd = ::open(("/var/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (nsfd < 0 || ::setns(nsfd, CLONE_NEWNET) != 0) return;
    ::close(nsfd);
    fd = ::socket(AF_INET, type | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(kServerIp);
    socklen_t len = sizeof a;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        (type == SOCK_STREAM && ::listen(fd, 16) != 0) || ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      ::close(fd);
      fd = -1;
      return;
    }
    *port = ntohs(a.sin_port);
  });
  t.join();
  return fd;
}

class ProbeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) KOS_SKIP_UNLESS_CI() << "needs root (network namespaces)";
    if (run({"nft", "--version"}).exit_code != 0) KOS_SKIP_UNLESS_CI() << "needs nft";
    sweep();
    static std::atomic<int> n{0};
    const int seq = n++;
    const std::string base = "kosprb-" + std::to_string(getpid()) + "-" + std::to_string(seq);
    // A MAC of this process and test: test processes running side by side (ctest -j) each
    // find their own guest.
    const auto pid = static_cast<uint32_t>(getpid());
    mac_ = {0x02, 0x6b, static_cast<uint8_t>(pid >> 16), static_cast<uint8_t>(pid >> 8), static_cast<uint8_t>(pid),
            static_cast<uint8_t>(seq * 2)};
    other_mac_ = mac_;
    other_mac_[5] = static_cast<uint8_t>(seq * 2 + 1);
    try {
      client_ = std::make_unique<kos::testing::ScopedNetns>(base + "-c");
      server_ = std::make_unique<kos::testing::ScopedNetns>(base + "-s");
    } catch (const std::exception& e) {
      KOS_SKIP_UNLESS_CI() << "cannot make network namespaces: " << e.what();
    }
    const std::string& c = client_->name();
    const std::string& s = server_->name();
    sh({"ip", "-n", c, "link", "add", "guest0", "address", api::format_mac(mac_), "type", "veth", "peer", "name", "srv0", "netns", s});
    sh({"ip", "-n", c, "addr", "add", "10.99.0.1/24", "dev", "guest0"});
    sh({"ip", "-n", c, "link", "set", "guest0", "up"});
    sh({"ip", "-n", s, "addr", "add", "10.99.0.2/24", "dev", "srv0"});
    sh({"ip", "-n", s, "link", "set", "srv0", "up"});
    client_path_ = "/var/run/netns/" + c;
    // `ip link set up` returns before the kernel has given the veth its queue (linkwatch
    // work, which waits for the RTNL while other tests delete namespaces); until then the
    // ends drop what they send, ARP requests included, and a probe's first second is lost
    // to ARP's retry interval. Wait until the path carries a ping.
    bool path_up = false;
    for (int i = 0; i < 20 && !path_up; ++i)
      if (!(path_up = run({"ip", "netns", "exec", c, "ping", "-c", "1", "-W", "1", "-q", "10.99.0.2"}).exit_code == 0))
        std::this_thread::sleep_for(100ms);
    ASSERT_TRUE(path_up) << "no ping from " << c << " to 10.99.0.2 in 20 tries";

    tcp_ = socket_in(s, SOCK_STREAM, &tcp_port_);
    ASSERT_GE(tcp_, 0);
    udp_ = socket_in(s, SOCK_DGRAM, &udp_port_);
    ASSERT_GE(udp_, 0);
    // A UDP echo server.
    echo_ = std::thread([this] {
      char buf[2048];
      while (!stop_) {
        pollfd p{udp_, POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        sockaddr_in from{};
        socklen_t len = sizeof from;
        ssize_t n = ::recvfrom(udp_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
        if (n >= 0) ::sendto(udp_, buf, static_cast<size_t>(n), 0, reinterpret_cast<sockaddr*>(&from), len);
      }
    });
    // A port nothing listens on: one that was just free.
    uint16_t p = 0;
    int closed = socket_in(s, SOCK_STREAM, &p);
    ASSERT_GE(closed, 0);
    ::close(closed);
    closed_port_ = p;
  }
  void TearDown() override {
    stop_ = true;
    if (echo_.joinable()) echo_.join();
    if (tcp_ >= 0) ::close(tcp_);
    if (udp_ >= 0) ::close(udp_);
    server_.reset();
    client_.reset();
  }

  // nft in the server's namespace: an input chain dropping `rule`.
  void drop_in_server(const std::string& rule) {
    const std::string& s = server_->name();
    sh({"ip", "netns", "exec", s, "nft", "add", "table", "inet", "kosprb"});
    sh({"ip", "netns", "exec", s, "nft", "add chain inet kosprb in { type filter hook input priority 0 ; policy accept ; }"});
    sh({"ip", "netns", "exec", s, "nft", "add rule inet kosprb in " + rule + " drop"});
  }

  Result<ProbeOutcome> probe(ProbeProtocol proto, uint16_t port, std::chrono::milliseconds timeout = 1000ms,
                             uint32_t target = kServerIp) {
    return probe_from(client_path_, kClientIp, "guest0", ProbeSpec{proto, target, port, timeout});
  }

  std::unique_ptr<kos::testing::ScopedNetns> client_, server_;
  api::MacAddress mac_{}, other_mac_{};  // the guest's; one nothing has
  std::string client_path_;
  int tcp_ = -1, udp_ = -1;
  uint16_t tcp_port_ = 0, udp_port_ = 0, closed_port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread echo_;
};

TEST_F(ProbeTest, FindsTheGuestNamespaceByItsMac) {
  auto candidates = netns_candidates({}, {"/var/run/netns", "/run/netns"}, false);
  EXPECT_EQ(std::ranges::count(candidates, client_path_), 1);
  EXPECT_EQ(std::ranges::count(candidates, "/run/netns/" + client_->name()), 0) << "each namespace once";
  auto found = find_guest_netns(mac_, fabric::host_end_name(mac_), candidates);
  ASSERT_TRUE(found) << found.error().message;
  EXPECT_EQ(*found, (GuestNetns{client_path_, "guest0"}));

  // The processes' namespaces come last, and include this process's.
  auto all = netns_candidates({client_path_}, {}, true);
  ASSERT_FALSE(all.empty());
  EXPECT_EQ(all.front(), client_path_);
  EXPECT_GE(all.size(), 2u);

  // Not the fabric's namespace, where a guest end waits next to its host end.
  kos::testing::ScopedNetns fabric(server_->name() + "f");
  sh({"ip", "-n", fabric.name(), "link", "add", api::interface_name(mac_), "address", api::format_mac(mac_), "type", "veth",
      "peer", "name", fabric::host_end_name(mac_)});
  const std::string fabric_path = "/var/run/netns/" + fabric.name();
  auto skipped = find_guest_netns(mac_, fabric::host_end_name(mac_), {fabric_path, client_path_});
  ASSERT_TRUE(skipped) << skipped.error().message;
  EXPECT_EQ(skipped->path, client_path_);
  auto only_fabric = find_guest_netns(mac_, fabric::host_end_name(mac_), {fabric_path});
  ASSERT_FALSE(only_fabric);
  EXPECT_EQ(only_fabric.error().code, Errc::kNotFound);
  EXPECT_NE(only_fabric.error().message.find("in the fabric's namespace " + fabric_path), std::string::npos)
      << only_fabric.error().message;

  auto none = find_guest_netns(other_mac_, fabric::host_end_name(other_mac_), candidates);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, Errc::kNotFound);
  EXPECT_NE(none.error().message.find(api::format_mac(other_mac_)), std::string::npos) << none.error().message;
}

TEST_F(ProbeTest, TheLinuxProberFindsTheGuestAndProbesFromIt) {
  LinuxGuestProber prober;
  Guest g{"ns1/client", "uid-1", mac_, kClientIp};
  for (int i = 0; i < 2; ++i) {  // the second time from where it was found the first time
    auto a = prober.probe(g, ProbeSpec{ProbeProtocol::kTcp, kServerIp, tcp_port_, 1000ms});
    ASSERT_TRUE(a) << a.error().message;
    EXPECT_EQ(a->where, (GuestNetns{client_path_, "guest0"}));
    EXPECT_TRUE(a->outcome.allowed) << a->outcome.detail;
  }
  // The guest moved (renamed): found again.
  sh({"ip", "-n", client_->name(), "link", "set", "guest0", "name", "eth1"});
  sh({"ip", "-n", client_->name(), "link", "set", "eth1", "up"});
  auto a = prober.probe(g, ProbeSpec{ProbeProtocol::kIcmp, kServerIp, 0, 1000ms});
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->where.ifname, "eth1");

  Guest ghost{"ns1/ghost", "uid-2", other_mac_, kClientIp};
  auto none = prober.probe(ghost, ProbeSpec{ProbeProtocol::kTcp, kServerIp, tcp_port_, 1000ms});
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, Errc::kNotFound);
}

TEST_F(ProbeTest, TcpToAListenerOrAClosedPortIsAllowedAndToADroppedPortDenied) {
  auto open = probe(ProbeProtocol::kTcp, tcp_port_);
  ASSERT_TRUE(open) << open.error().message;
  EXPECT_TRUE(open->allowed);
  EXPECT_TRUE(open->detail.starts_with("connected in ")) << open->detail;
  EXPECT_LT(open->elapsed, 1s);

  auto closed = probe(ProbeProtocol::kTcp, closed_port_);
  ASSERT_TRUE(closed) << closed.error().message;
  EXPECT_TRUE(closed->allowed) << "a reset came back: the network delivered it";
  EXPECT_TRUE(closed->detail.starts_with("refused (RST) in ")) << closed->detail;

  drop_in_server("tcp dport " + std::to_string(tcp_port_));
  const auto t0 = std::chrono::steady_clock::now();
  auto dropped = probe(ProbeProtocol::kTcp, tcp_port_, 300ms);
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(dropped) << dropped.error().message;
  EXPECT_FALSE(dropped->allowed);
  EXPECT_EQ(dropped->detail, "no answer in 300 ms");
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 2s);
  // Other ports still answer.
  auto other = probe(ProbeProtocol::kTcp, closed_port_);
  ASSERT_TRUE(other);
  EXPECT_TRUE(other->allowed);
}

TEST_F(ProbeTest, IcmpEchoIsAllowedUntilDropped) {
  auto ping = probe(ProbeProtocol::kIcmp, 0);
  ASSERT_TRUE(ping) << ping.error().message;
  EXPECT_TRUE(ping->allowed) << ping->detail;
  EXPECT_TRUE(ping->detail.starts_with("echo reply in ")) << ping->detail;

  drop_in_server("icmp type echo-request");
  auto dropped = probe(ProbeProtocol::kIcmp, 0, 300ms);
  ASSERT_TRUE(dropped) << dropped.error().message;
  EXPECT_FALSE(dropped->allowed);
  EXPECT_EQ(dropped->detail, "no answer in 300 ms");
}

TEST_F(ProbeTest, UdpEchoAndPortUnreachableAreAllowedAndADroppedPortDenied) {
  auto echo = probe(ProbeProtocol::kUdp, udp_port_);
  ASSERT_TRUE(echo) << echo.error().message;
  EXPECT_TRUE(echo->allowed) << echo->detail;
  EXPECT_TRUE(echo->detail.starts_with("answered (16 bytes) in ")) << echo->detail;

  auto closed = probe(ProbeProtocol::kUdp, closed_port_);
  ASSERT_TRUE(closed) << closed.error().message;
  EXPECT_TRUE(closed->allowed) << closed->detail;
  EXPECT_TRUE(closed->detail.starts_with("port unreachable (nothing listens) in ")) << closed->detail;

  drop_in_server("udp dport " + std::to_string(udp_port_));
  auto dropped = probe(ProbeProtocol::kUdp, udp_port_, 300ms);
  ASSERT_TRUE(dropped) << dropped.error().message;
  EXPECT_FALSE(dropped->allowed);
  EXPECT_EQ(dropped->detail, "no answer in 300 ms");
}

TEST_F(ProbeTest, NoRouteIsDeniedAndAMissingSourceAddressIsAnError) {
  auto unrouted = probe(ProbeProtocol::kTcp, 80, 1000ms, api::parse_ipv4("10.98.0.1").value());
  ASSERT_TRUE(unrouted) << unrouted.error().message;
  EXPECT_FALSE(unrouted->allowed);
  EXPECT_TRUE(unrouted->detail.starts_with("network unreachable in ")) << unrouted->detail;

  auto wrong_source = probe_from(client_path_, api::parse_ipv4("10.99.0.77").value(), "guest0",
                                 ProbeSpec{ProbeProtocol::kTcp, kServerIp, tcp_port_, 1000ms});
  ASSERT_FALSE(wrong_source);
  EXPECT_EQ(wrong_source.error().code, Errc::kConflict);
  EXPECT_NE(wrong_source.error().message.find("does not have its address 10.99.0.77"), std::string::npos)
      << wrong_source.error().message;

  auto gone = probe_from("/var/run/netns/kosprb-none-such", kClientIp, "guest0",
                         ProbeSpec{ProbeProtocol::kTcp, kServerIp, tcp_port_, 1000ms});
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, Errc::kNotFound);
}

}  // namespace
}  // namespace kos::agent
