// Issue 11's race: one VNI whose Subnet moves back and forth between two namespaces while
// attachments churn, under two IPAM controllers whose views of the world lag.
//
// One `kos apiserver`, one subnet validator talking to it directly, and two IPAM
// controllers (`kos controller-manager --controllers ipam`, no leader election), each
// behind its own LaggingProxy: a TCP proxy that holds every chunk of bytes from the server
// to its IPAM for a random time (order preserved), 50..100 ms for one IPAM and 250..300 ms
// for the other, so each IPAM's informers (its watches) see the world late, and late
// differently from the other's; its requests' answers come late too.
//
// Namespaces A and B, one VNI, one /27 (29 addresses, contended by both IPAMs). Writers
// keep creating attachments in the namespace whose turn it is and deleting their older
// ones. A move of the VNI from X to Y (one in three held, the others quick):
//  - held: X's Subnet is deleted, the writers go on in X for up to 300 ms, then pause, and
//    X's attachments keep their addresses (and the VNI) for 700 ms. A Subnet on the VNI in
//    Y is attempted then and must be refused with a clean 422 Invalid on spec.vni naming X.
//    Then X's attachments are deleted and the Subnet in Y is retried (every 20 ms, each
//    refusal a clean 422) until admitted; the writers move to Y.
//  - quick: a burst of attachments in X just before its Subnet is deleted; the writers
//    move to Y at once (their attachments wait for its Subnet); the Subnet in Y is retried
//    every 20 ms, deleting before each attempt only those attachments of X that hold an
//    address (a lock taken for one that does not show it is the IPAM's to release). Once it is admitted, a burst of attachments in Y. The lagging
//    IPAM may still address X's unaddressed attachments from its cached copy of X's Subnet
//    while the other addresses Y's: two namespaces taking addresses of one VNI at once,
//    where only the store's cluster-wide IPLock names keep (VNI, IP) unique.
// After each move X's locks are sampled for 1.5 s (locks taken there after the VNI moved),
// then all of X's attachments are deleted.
//
// Checks: the AddressWatcher (a direct informer on all attachments of all namespaces) sees
// no moment at which two live attachments share (addressVNI, ipv4); every refusal is a
// clean Kubernetes error and no Subnet is admitted while the other namespace holds
// addresses; at the end (churn stopped, the last namespace's attachments addressed up to
// the CIDR's capacity, the rest reporting contention, one lock each, none left in the
// other namespace) `kos ipam-check` is clean; after all is deleted no IPLock remains; the
// controllers are still running. About 45 s.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <list>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "client/informer.h"
#include "test/controllers/harness.h"

namespace kos::ctltest {
namespace {

using namespace std::chrono_literals;

constexpr uint32_t kVni = 7300;
constexpr const char* kCidr = "10.73.0.0/27";  // 29 usable addresses
constexpr const char* kSubnetName = "s";
const std::string kNs[2] = {"nsrace-a", "nsrace-b"};
constexpr int kWriters = 4;
constexpr size_t kLivePerWriter = 6;  // 24 live of 29
constexpr auto kCreatePeriod = 250ms;  // per writer: 16 creates/s in all; each lives about 1.5 s
constexpr int kBurst = 12;  // attachments created back to back at a quick move, in each namespace
constexpr auto kChurnFor = 40s;
// Each IPAM's lag, per chunk: the first's 50..100 ms, the second's 250..300 ms, so that at
// every move one IPAM still works from the old Subnet while the other starts on the new.
constexpr int kLagMs[2][2] = {{50, 100}, {250, 300}};
constexpr int kIpamWorkers = 32;  // requests wait out the lag: many in flight

// ---- a TCP proxy that delays what the server sends ------------------------------------

bool send_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Listens on 127.0.0.1 (a free port) and connects each client to 127.0.0.1:upstream.
// Bytes from the client go through at once; every chunk read from the server is handed
// to the client a random min_ms..max_ms after it arrived, never before an earlier
// chunk (per connection: a reader thread queues (due time, bytes), a writer thread sends
// them when due). Three threads per connection; finished connections are reaped.
class LaggingProxy {
 public:
  LaggingProxy(uint16_t upstream, int min_ms, int max_ms, uint32_t seed)
      : upstream_(upstream), min_ms_(min_ms), max_ms_(max_ms), rng_(seed) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd_ < 0) throw std::runtime_error("proxy: socket failed");
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listen_fd_, 64) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      ::close(listen_fd_);
      throw std::runtime_error("proxy: bind/listen failed");
    }
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~LaggingProxy() { stop(); }
  LaggingProxy(const LaggingProxy&) = delete;
  LaggingProxy& operator=(const LaggingProxy&) = delete;

  uint16_t port() const { return port_; }
  uint64_t connections() const { return connections_.load(); }
  uint64_t chunks() const { return chunks_.load(); }
  uint64_t bytes() const { return bytes_.load(); }

  void stop() {
    if (stopped_.exchange(true)) return;
    acceptor_.join();
    std::list<std::unique_ptr<Conn>> conns;
    {
      std::lock_guard lk(mu_);
      conns.swap(conns_);
    }
    for (auto& c : conns) c->abort();
    for (auto& c : conns) c->join();
    ::close(listen_fd_);
  }

 private:
  struct Chunk {
    Clock::time_point due;
    std::string bytes;
    bool eof = false;
  };
  struct Conn {
    int client = -1, upstream = -1;
    std::thread up, reader, writer;
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Chunk> q;
    bool aborted = false;
    std::atomic<int> finished{0};
    void abort() {
      {
        std::lock_guard lk(mu);
        aborted = true;
      }
      cv.notify_all();
      ::shutdown(client, SHUT_RDWR);
      ::shutdown(upstream, SHUT_RDWR);
    }
    void join() {
      for (auto* t : {&up, &reader, &writer})
        if (t->joinable()) t->join();
      ::close(client);
      ::close(upstream);
    }
  };

  std::chrono::milliseconds lag() {
    std::lock_guard lk(rng_mu_);
    return std::chrono::milliseconds(std::uniform_int_distribution<int>(min_ms_, max_ms_)(rng_));
  }

  void accept_loop() {
    while (!stopped_.load()) {
      pollfd p{listen_fd_, POLLIN, 0};
      int n = ::poll(&p, 1, 100);
      reap();
      if (n <= 0) continue;
      int cfd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (cfd < 0) continue;
      int ufd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(upstream_);
      if (ufd < 0 || ::connect(ufd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        if (ufd >= 0) ::close(ufd);
        ::close(cfd);
        continue;
      }
      int one = 1;
      ::setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      ::setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto c = std::make_unique<Conn>();
      c->client = cfd;
      c->upstream = ufd;
      Conn* p2 = c.get();
      ++connections_;
      p2->up = std::thread([p2] {
        pump_up(*p2);
        ++p2->finished;
      });
      p2->reader = std::thread([this, p2] {
        read_down(*p2);
        ++p2->finished;
      });
      p2->writer = std::thread([p2] {
        write_down(*p2);
        ++p2->finished;
      });
      std::lock_guard lk(mu_);
      conns_.push_back(std::move(c));
    }
  }

  void reap() {
    std::lock_guard lk(mu_);
    for (auto it = conns_.begin(); it != conns_.end();) {
      if ((*it)->finished.load() == 3) {
        (*it)->join();
        it = conns_.erase(it);
      } else {
        ++it;
      }
    }
  }

  // Client to server, undelayed; the client's end of sending passes on as a half-close.
  static void pump_up(Conn& c) {
    char buf[65536];
    while (true) {
      ssize_t n = ::recv(c.client, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n == 0) {
        ::shutdown(c.upstream, SHUT_WR);
        return;
      }
      if (n < 0 || !send_all(c.upstream, buf, static_cast<size_t>(n))) {
        c.abort();
        return;
      }
    }
  }

  void read_down(Conn& c) {
    char buf[65536];
    Clock::time_point last_due{};
    while (true) {
      ssize_t n = ::recv(c.upstream, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      last_due = std::max(last_due, Clock::now() + lag());
      ++chunks_;
      bytes_ += static_cast<uint64_t>(n);
      {
        std::lock_guard lk(c.mu);
        c.q.push_back(Chunk{last_due, std::string(buf, static_cast<size_t>(n)), false});
      }
      c.cv.notify_all();
    }
    {
      std::lock_guard lk(c.mu);
      c.q.push_back(Chunk{std::max(last_due, Clock::now()), {}, true});
    }
    c.cv.notify_all();
  }

  static void write_down(Conn& c) {
    std::unique_lock lk(c.mu);
    while (true) {
      c.cv.wait(lk, [&] { return c.aborted || !c.q.empty(); });
      if (c.aborted) return;
      const auto due = c.q.front().due;
      if (Clock::now() < due) {
        c.cv.wait_until(lk, due, [&] { return c.aborted; });  // holding the chunk back
        continue;
      }
      Chunk ch = std::move(c.q.front());
      c.q.pop_front();
      lk.unlock();
      if (ch.eof) {
        ::shutdown(c.client, SHUT_WR);
        return;
      }
      if (!send_all(c.client, ch.bytes.data(), ch.bytes.size())) {
        c.abort();
        return;
      }
      lk.lock();
    }
  }

  uint16_t upstream_;
  int min_ms_, max_ms_;
  uint16_t port_ = 0;
  int listen_fd_ = -1;
  std::atomic<bool> stopped_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::list<std::unique_ptr<Conn>> conns_;
  std::mutex rng_mu_;
  std::mt19937 rng_;
  std::atomic<uint64_t> connections_{0}, chunks_{0}, bytes_{0};
};

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const std::regex kServerLine(R"(server: (https?)://127\.0\.0\.1:(\d+))");

// The API server's port, from its kubeconfig (0 if it is not https://127.0.0.1:P or http).
uint16_t server_port(const fs::path& kubeconfig) {
  std::smatch m;
  const std::string text = read_text(kubeconfig);
  if (!std::regex_search(text, m, kServerLine)) return 0;
  return static_cast<uint16_t>(std::stoi(m[2].str()));
}

// A copy of the server's kubeconfig whose server is 127.0.0.1:port (TLS passes through the
// proxy: the serving certificate names 127.0.0.1).
fs::path proxied_kubeconfig(const fs::path& kubeconfig, uint16_t port, const fs::path& out) {
  std::ofstream f(out, std::ios::trunc);
  f << std::regex_replace(read_text(kubeconfig), kServerLine, "server: $1://127.0.0.1:" + std::to_string(port));
  return out;
}

// `kos controller-manager --controllers ipam` on another kubeconfig (its proxy's).
std::unique_ptr<KosProcess> ipam_via(ApiServer& server, const std::string& name, const fs::path& kubeconfig) {
  const char* env_level = std::getenv("KOS_TEST_CONTROLLER_LOG_LEVEL");
  const std::string log_level = env_level && *env_level ? env_level : "info";
  std::vector<std::string> args = {"--log-level", log_level, "controller-manager", "--kubeconfig",
                                   kubeconfig.string(), "--controllers", "ipam",
                                   "--workers", std::to_string(kIpamWorkers)};
  return std::make_unique<KosProcess>(name, args, server.dir() / (name + ".log"));
}

// Why a refusal of a Subnet on kVni in another namespace than `holder` is not the clean
// Kubernetes error it should be (422 Invalid, a spec.vni cause, naming `holder`); empty
// if it is.
std::string unclean_refusal(const Error& e, const std::string& holder) {
  const std::string held = "is still in use in namespace " + holder;
  const std::string used = "is already used by Subnet " + holder + "/";
  if (e.code != Errc::kInvalid || e.reason() != "Invalid") return "not a 422 Invalid: " + e.to_string();
  if (e.causes.size() != 1 || e.causes[0].field != "spec.vni" || e.causes[0].reason != "FieldValueInvalid")
    return "not one FieldValueInvalid cause on spec.vni: " + e.to_string();
  if (e.message.find(held) == std::string::npos && e.message.find(used) == std::string::npos)
    return "does not name namespace " + holder + ": " + e.to_string();
  return {};
}

TEST(IpamNamespaceRace, TwoLaggingIpamsSubnetsMovingBetweenNamespaces) {
  const auto t_start = Clock::now();
  ApiServer server;
  ASSERT_EQ(server.start(), "");
  auto c = server.client();
  const uint16_t upstream = server_port(server.kubeconfig());
  ASSERT_NE(upstream, 0) << "no https://127.0.0.1:PORT server in the kubeconfig:\n" << read_text(server.kubeconfig());

  const uint32_t seed = std::random_device{}();
  std::printf("[ ns-race ] seed %u\n", seed);
  std::vector<std::unique_ptr<LaggingProxy>> proxies;
  std::vector<std::unique_ptr<KosProcess>> ipams;
  for (int i = 0; i < 2; ++i) {
    proxies.push_back(std::make_unique<LaggingProxy>(upstream, kLagMs[i][0], kLagMs[i][1], seed + i));
    auto kc = proxied_kubeconfig(server.kubeconfig(), proxies.back()->port(),
                                 server.dir() / ("kubeconfig-ipam-" + std::to_string(i)));
    ipams.push_back(ipam_via(server, "ipam-" + std::to_string(i) + "-lagging", kc));
  }
  auto validator = controller_manager(server, "validator", "subnet-validator");
  validator->start();
  for (auto& p : ipams) p->start();
  auto all_logs = [&] { return logs({&server.process(), validator.get(), ipams[0].get(), ipams[1].get()}); };

  AddressWatcher watcher(server.client(), /*track_locks=*/true);
  ASSERT_TRUE(watcher.start());

  // Addressing as it happens (a direct informer): per namespace, how many attachments
  // got an address, how many while their namespace's Subnet was deleted (a lagging IPAM
  // still saw it) and how many while the other namespace's Subnet existed.
  std::atomic<bool> subnet_live[2] = {false, false};
  std::atomic<uint64_t> addressed[2] = {0, 0}, addressed_without_subnet{0}, addressed_while_other_live{0};
  client::InformerOptions io;
  io.kind = api::Kind::kNetworkAttachment;
  client::Informer addressing(server.client(), io);
  auto ns_index = [](const std::string& ns) { return ns == kNs[0] ? 0 : ns == kNs[1] ? 1 : -1; };
  auto newly_addressed = [&](const api::NetworkAttachment& na) {
    int i = ns_index(na.metadata.namespace_);
    if (i < 0) return;
    ++addressed[i];
    if (!subnet_live[i].load()) ++addressed_without_subnet;
    if (subnet_live[1 - i].load()) ++addressed_while_other_live;
  };
  auto na_of = [](const client::ObjectPtr& o) -> const api::NetworkAttachment& {
    return std::get<api::NetworkAttachment>(*o);
  };
  addressing.add_handlers(client::EventHandlers{
      [&](const client::ObjectPtr& o) {
        if (!na_of(o).status.ipv4.empty()) newly_addressed(na_of(o));
      },
      [&](const client::ObjectPtr& old_obj, const client::ObjectPtr& o) {
        const auto &was = na_of(old_obj), &now = na_of(o);
        if (!now.status.ipv4.empty() && (was.status.ipv4.empty() || was.metadata.uid != now.metadata.uid))
          newly_addressed(now);
      },
      nullptr});
  addressing.start();
  ASSERT_TRUE(addressing.wait_for_sync(30s));

  std::atomic<uint64_t> na_creates{0}, na_deletes{0}, write_failures{0};
  std::mutex fail_mu;
  std::string first_failure;
  auto note_failure = [&](const std::string& what, const Error& e) {
    if (write_failures++ == 0) {
      std::lock_guard lk(fail_mu);
      first_failure = what + ": " + e.to_string();
    }
  };

  int cur = 0;
  uint64_t subnet_creates = 0, subnet_deletes = 0, moves = 0, held_moves = 0, quick_moves = 0;
  uint64_t held_refusals = 0, move_refusals = 0, unclean = 0, admitted_while_held = 0, late_locks = 0;
  uint64_t addressed_at_deletes = 0;
  std::string first_unclean;
  auto check_refusal = [&](const Error& e, const std::string& holder) {
    auto why = unclean_refusal(e, holder);
    if (!why.empty() && unclean++ == 0) first_unclean = why;
  };

  ASSERT_TRUE(with_retries([&] { return c->create(make_subnet(kNs[cur], kSubnetName, kCidr, kVni)); }))
      << all_logs();
  ++subnet_creates;
  subnet_live[cur] = true;

  // The writers: in the namespace whose turn it is (none while `active` is -1), paced,
  // each keeping its kLivePerWriter newest attachments.
  std::atomic<int> active{cur};
  std::atomic<bool> stop_writers{false};
  std::vector<std::thread> writers;
  std::thread stragglers;
  struct JoinOnExit {
    std::atomic<bool>& stop;
    std::vector<std::thread>& ts;
    std::thread& more;
    ~JoinOnExit() {
      stop = true;
      for (auto& t : ts)
        if (t.joinable()) t.join();
      if (more.joinable()) more.join();
    }
  } join_writers{stop_writers, writers, stragglers};
  for (int t = 0; t < kWriters; ++t)
    writers.emplace_back([&, t] {
      std::deque<std::pair<int, std::string>> mine;
      auto next = Clock::now();
      for (int k = 0; !stop_writers.load(); ++k) {
        std::this_thread::sleep_until(next);  // pacing the load, not synchronizing
        next += kCreatePeriod;
        const int ns = active.load();
        if (ns < 0) continue;  // paused: the attachments there keep their addresses
        std::string name = "w" + std::to_string(t) + "-" + std::to_string(k);
        auto r = with_retries([&] {
          return c->create(make_attachment(kNs[ns], name, kSubnetName, "node-" + std::to_string(t)));
        });
        if (r) {
          ++na_creates;
          mine.emplace_back(ns, name);
        } else if (r.error().code != Errc::kAlreadyExists) {
          note_failure("create " + kNs[ns] + "/" + name, r.error());
        }
        while (mine.size() > kLivePerWriter) {
          auto [dns, dname] = mine.front();
          mine.pop_front();
          auto d = with_retries([&] { return c->remove<api::NetworkAttachment>(kNs[dns], dname); });
          if (d) ++na_deletes;
          else if (d.error().code != Errc::kNotFound) note_failure("delete " + kNs[dns] + "/" + dname, d.error());
        }
      }
    });

  auto locks_in = [&](int ns) -> int {
    auto l = with_retries([&] { return c->list<api::IPLock>(kNs[ns]); });
    return l ? static_cast<int>(l->size()) : -1;
  };
  // Deletes the attachments of namespace `ns`; with holders_only, only those that hold an
  // address (status.ipv4). A lock taken whose address the status does not show, because
  // the Subnet went before the status write, is the IPAM's to release.
  auto delete_attachments_in = [&](int ns, bool holders_only = false) {
    auto l = with_retries([&] { return c->list<api::NetworkAttachment>(kNs[ns]); });
    if (!l) return note_failure("list " + kNs[ns], l.error());
    parallel_for(static_cast<int>(l->size()), 4, [&](int i) {
      const std::string& name = (*l)[i].metadata.name;
      if (holders_only && (*l)[i].status.ipv4.empty()) return;
      auto d = with_retries([&] { return c->remove<api::NetworkAttachment>(kNs[ns], name); });
      if (d) ++na_deletes;
      else if (d.error().code != Errc::kNotFound) note_failure("delete " + kNs[ns] + "/" + name, d.error());
    });
  };
  // The IPLocks of namespace `ns` and their owners, for failure messages.
  auto describe_locks = [&](int ns) {
    std::string out;
    auto locks = c->list<api::IPLock>(kNs[ns]);
    if (!locks) return "listing locks: " + locks.error().to_string();
    for (const auto& lock : *locks) {
      out += "\n  " + kNs[ns] + "/" + lock.metadata.name + " uid=" + lock.metadata.uid + " owner ";
      for (const auto& r : lock.metadata.owner_references) {
        out += r.name + " uid=" + r.uid;
        if (auto na = c->get<api::NetworkAttachment>(kNs[ns], r.name))
          out += " (live uid=" + na->metadata.uid + " ipv4=" + na->status.ipv4 + " lockUID=" + na->status.lock_uid +
                 " errors=" + (na->status.errors.ipam.empty() ? "" : na->status.errors.ipam[0]) + ")";
        else
          out += " (" + na.error().to_string() + ")";
      }
    }
    return out;
  };

  // kBurst attachments in namespace `ns`, created back to back (5 ms apart).
  auto burst = [&](int ns, const std::string& prefix) {
    for (int i = 0; i < kBurst; ++i) {
      std::string name = prefix + "-" + std::to_string(i);
      auto r = with_retries([&] { return c->create(make_attachment(kNs[ns], name, kSubnetName)); });
      if (r) ++na_creates;
      else if (r.error().code != Errc::kAlreadyExists) note_failure("create " + kNs[ns] + "/" + name, r.error());
      std::this_thread::sleep_for(5ms);  // pacing the burst
    }
  };

  std::mt19937 rng(seed);
  auto rand_ms = [&](int lo, int hi) { return std::chrono::milliseconds(std::uniform_int_distribution<int>(lo, hi)(rng)); };
  const auto churn_end = Clock::now() + kChurnFor;
  while (Clock::now() < churn_end) {
    const int from = cur, to = 1 - cur;
    const bool held = moves % 3 == 0;
    std::this_thread::sleep_for(rand_ms(1000, 2000));  // churn in `from`

    const size_t addressed_now = watcher.addressed();
    addressed_at_deletes += addressed_now;
    std::string held_outcome = "no attempt while held";
    if (!held) {
      // A client that missed the news: a burst of attachments in `from` just before its
      // Subnet is deleted. An IPAM whose cache shows the deletion late still addresses
      // them, after the VNI has moved.
      burst(from, "late-" + std::to_string(moves));
    }
    subnet_live[from] = false;
    auto d = with_retries([&] { return c->remove<api::Subnet>(kNs[from], kSubnetName); });
    ASSERT_TRUE(d) << "deleting Subnet " << kNs[from] << "/" << kSubnetName << ": " << d.error().to_string();
    ++subnet_deletes;

    bool admitted = false;
    if (held) {
      ++held_moves;
      std::this_thread::sleep_for(rand_ms(0, 300));  // stragglers
      active = -1;
      std::this_thread::sleep_for(700ms);  // the Subnet is gone, its attachments keep their addresses
      const int before = locks_in(from);
      auto r = c->create(make_subnet(kNs[to], kSubnetName, kCidr, kVni));
      const int after = locks_in(from);
      held_outcome = "attempt with " + std::to_string(before) + " addresses held: " +
                     (r ? std::string("ADMITTED") : "refused (" + std::string(r.error().reason()) + ")");
      if (r) {
        admitted = true;
        ++subnet_creates;
        if (before > 0 && after > 0 && admitted_while_held++ == 0)
          ADD_FAILURE() << "a Subnet on VNI " << kVni << " in " << kNs[to] << " was admitted while " << kNs[from]
                        << " held " << before << " (before) and " << after << " (after) of its addresses";
      } else if (before > 0) {
        ++held_refusals;
        check_refusal(r.error(), kNs[from]);
      } else if (r.error().code != Errc::kInvalid) {
        check_refusal(r.error(), kNs[from]);
      }
    } else {
      ++quick_moves;
      // The writers move on at once: their attachments in `to` wait for its Subnet, and
      // get addresses as soon as the IPAMs see it, while stragglers in `from` may still
      // be getting theirs.
      active = to;
    }

    // Release the VNI: delete `from`'s attachments, and retry the Subnet in `to` until
    // admitted. In a quick move only those holding an address go (they are what keeps the
    // VNI bound to `from`); the others stay, as attachments of a
    // deleted Subnet that can get no address, unless an IPAM decides with a cached copy
    // of the Subnet.
    const auto t_move = Clock::now();
    const auto give_up = t_move + 20s;
    const uint64_t refusals_before = move_refusals;
    while (!admitted && Clock::now() < give_up) {
      delete_attachments_in(from, /*holders_only=*/!held);
      auto r = c->create(make_subnet(kNs[to], kSubnetName, kCidr, kVni));
      if (r || r.error().code == Errc::kAlreadyExists) {
        admitted = true;
        ++subnet_creates;
        break;
      }
      ++move_refusals;
      check_refusal(r.error(), kNs[from]);
      std::this_thread::sleep_for(20ms);  // retrying admission, bounded by give_up
    }
    ASSERT_TRUE(admitted) << "the Subnet in " << kNs[to] << " was refused for 20 s after " << kNs[from]
                          << "'s attachments were deleted; locks left in " << kNs[from] << ":" << describe_locks(from)
                          << all_logs();
    subnet_live[to] = true;
    // The new namespace's attachments that waited for its Subnet: a batch at once, for
    // the IPAM with the fresher view, while the other may still address stragglers.
    if (!held) stragglers = std::thread([burst, to, move = moves] { burst(to, "batch-" + std::to_string(move)); });
    active = to;
    cur = to;
    ++moves;
    const double admit_ms = seconds_since(t_move) * 1000;

    // Locks taken in `from` after the VNI moved (a lagging IPAM addressing stragglers of
    // the deleted Subnet): there the store is the guarantee. Then the stragglers go.
    std::set<std::string> seen;
    for (int i = 0; i < 15; ++i) {
      if (auto l = c->list<api::IPLock>(kNs[from]))
        for (const auto& lock : *l) seen.insert(lock.metadata.uid);
      std::this_thread::sleep_for(100ms);  // sampling, not synchronizing
    }
    if (stragglers.joinable()) stragglers.join();
    late_locks += seen.size();
    delete_attachments_in(from);
    std::printf("[ ns-race ] %5.1f s move %llu %s -> %s (%s): %zu addressed at the Subnet delete, %s, admitted after "
                "%llu refusals in %.0f ms, %zu late locks in %s\n",
                seconds_since(t_start), (unsigned long long)moves, kNs[from].c_str(), kNs[to].c_str(),
                held ? "held" : "quick", addressed_now, held_outcome.c_str(),
                (unsigned long long)(move_refusals - refusals_before), admit_ms, seen.size(), kNs[from].c_str());
  }

  // Stop the churn; settle in the last namespace.
  stop_writers = true;
  for (auto& t : writers) t.join();
  const int other = 1 - cur;
  delete_attachments_in(other);
  // Every attachment there addressed, or (past the CIDR's capacity) reporting contention;
  // one lock per address; none left in the other namespace.
  const size_t capacity = usable_addresses(kCidr);
  std::string progress;
  EXPECT_TRUE(poll_until(
      [&] {
        auto nas = c->list<api::NetworkAttachment>(kNs[cur]);
        const int here = locks_in(cur), there = locks_in(other);
        if (!nas) return false;
        size_t with_address = 0, contended = 0;
        for (const auto& na : *nas) {
          with_address += !na.status.ipv4.empty();
          contended += na.status.ipv4.empty() && na.status.address_contention;
        }
        progress = std::to_string(nas->size()) + " attachments in " + kNs[cur] + ", " +
                   std::to_string(with_address) + " addressed, " + std::to_string(contended) +
                   " reporting contention, " + std::to_string(here) + " locks there, " + std::to_string(there) +
                   " locks in " + kNs[other];
        return !nas->empty() && with_address == std::min(nas->size(), capacity) &&
               with_address + contended == nas->size() && here == static_cast<int>(with_address) && there == 0;
      },
      30s, 200ms))
      << "not settled after 30 s: " << progress << "\n" << watcher.describe_violations() << all_logs();
  auto check = ipam_check(server);
  EXPECT_EQ(check.exit_code, 0) << describe(check);
  const size_t final_live = watcher.size();

  // Everything goes; so do the locks.
  delete_attachments_in(cur);
  EXPECT_TRUE(with_retries([&] { return c->remove<api::Subnet>(kNs[cur], kSubnetName); }));
  int left = -1;
  EXPECT_TRUE(poll_until([&] { return (left = locks_in(0) + locks_in(1)) == 0; }, 30s, 200ms))
      << left << " IPLocks left 30 s after every attachment was deleted" << all_logs();

  EXPECT_EQ(write_failures.load(), 0u) << first_failure;
  EXPECT_EQ(unclean, 0u) << "refusals that were not clean Kubernetes errors, the first: " << first_unclean;
  EXPECT_GT(held_refusals, 0u) << "no held move found the old namespace holding addresses";
  EXPECT_GT(addressed[0].load(), 0u);
  EXPECT_GT(addressed[1].load(), 0u);
  EXPECT_TRUE(watcher.violations().empty()) << watcher.describe_violations() << all_logs();
  EXPECT_EQ(watcher.lists(), 1u) << "the watcher re-listed: the continuous check has gaps";
  EXPECT_TRUE(validator->running()) << all_logs();
  for (auto& p : ipams) EXPECT_TRUE(p->running()) << p->name() << " exited" << all_logs();

  std::printf(
      "[ ns-race ] VNI %u (%s) moved %llu times between %s and %s (%llu held, %llu quick) in %.1f s: "
      "%llu subnet creates, %llu subnet deletes, %llu held refusals, %llu refusals while moving, %llu admitted "
      "while held, %llu unclean; %llu attachment creates, %llu deletes; addressed %llu in %s, %llu in %s "
      "(%llu while their Subnet was deleted, %llu while the other namespace's Subnet existed; %llu late locks "
      "in the old namespace); %llu addressed at the Subnet deletes; "
      "%zu live at the end; watcher checked %llu "
      "events, %llu re-addressings, %zu violations; proxies delayed %llu+%llu chunks over %llu+%llu "
      "connections; total %.1f s\n",
      kVni, kCidr, (unsigned long long)moves, kNs[0].c_str(), kNs[1].c_str(), (unsigned long long)held_moves,
      (unsigned long long)quick_moves, seconds_since(t_start), (unsigned long long)subnet_creates,
      (unsigned long long)subnet_deletes, (unsigned long long)held_refusals, (unsigned long long)move_refusals,
      (unsigned long long)admitted_while_held, (unsigned long long)unclean, (unsigned long long)na_creates.load(),
      (unsigned long long)na_deletes.load(), (unsigned long long)addressed[0].load(), kNs[0].c_str(),
      (unsigned long long)addressed[1].load(), kNs[1].c_str(), (unsigned long long)addressed_without_subnet.load(),
      (unsigned long long)addressed_while_other_live.load(), (unsigned long long)late_locks,
      (unsigned long long)addressed_at_deletes, final_live, (unsigned long long)watcher.events(),
      (unsigned long long)watcher.readdressed(), watcher.violations().size(),
      (unsigned long long)proxies[0]->chunks(), (unsigned long long)proxies[1]->chunks(),
      (unsigned long long)proxies[0]->connections(), (unsigned long long)proxies[1]->connections(),
      seconds_since(t_start));
}

}  // namespace
}  // namespace kos::ctltest
