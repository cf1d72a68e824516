#include "test/support/etcd_process.h"

#include "pki/pki.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

namespace kos::testing {
namespace {

constexpr int kStartAttempts = 3;  // fresh ports each time: a "free" port can be taken
constexpr auto kProbeInterval = std::chrono::milliseconds(20);
constexpr auto kProbeTimeout = std::chrono::milliseconds(1000);

std::string etcd_binary() {
  const char* env = std::getenv("KOS_ETCD_BIN");
  if (env && *env) return env;
  if (access("/usr/bin/etcd", X_OK) == 0) return "/usr/bin/etcd";
  return "etcd";  // from PATH
}

std::string unique_name() {
  static std::atomic<int> counter{0};
  return "kos-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
}

std::string url(int port) { return "http://127.0.0.1:" + std::to_string(port); }

// Waits for `fd` to be ready for `events` until `deadline`.
bool wait_fd(int fd, short events, std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return false;
  pollfd p{fd, events, 0};
  return poll(&p, 1, static_cast<int>(left.count())) == 1;
}

// Closes a file descriptor when it goes out of scope.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

// One HTTP/1.1 request to 127.0.0.1:port; the whole response, or empty on any failure.
std::string http_request(const std::string& method, int port, const std::string& path, const std::string& body) {
  const auto deadline = std::chrono::steady_clock::now() + kProbeTimeout;
  Fd sock{socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)};
  if (sock.fd < 0) return {};
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(sock.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 &&
      errno != EINPROGRESS) {
    return {};
  }
  int err = 0;
  socklen_t len = sizeof err;
  if (!wait_fd(sock.fd, POLLOUT, deadline) ||
      getsockopt(sock.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
    return {};
  }
  const std::string request = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
                              "Content-Type: application/json\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
                              body;
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(sock.fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && errno == EAGAIN) {
      if (!wait_fd(sock.fd, POLLOUT, deadline)) return {};
    } else {
      return {};
    }
  }
  std::string response;
  while (true) {
    char buf[4096];
    ssize_t n = ::recv(sock.fd, buf, sizeof buf, 0);
    if (n > 0) {
      response.append(buf, static_cast<size_t>(n));
    } else if (n == 0) {
      return response;
    } else if (errno != EAGAIN || !wait_fd(sock.fd, POLLIN, deadline)) {
      return {};
    }
  }
}

}  // namespace

EtcdProcess::EtcdProcess(std::chrono::milliseconds start_timeout)
    : dir_("kos-etcd"), name_(unique_name()), start_timeout_(start_timeout) {
  init();
}

EtcdProcess::EtcdProcess(TlsTag, std::chrono::milliseconds start_timeout)
    : dir_("kos-etcd"), name_(unique_name()), tls_(true), start_timeout_(start_timeout) {
  // A CA, etcd's serving certificate for 127.0.0.1, and a client certificate.
  auto ca = pki::make_ca("kos-test-etcd-ca");
  if (!ca) throw std::runtime_error("etcd test CA: " + ca.error().message);
  pki::IssueOptions server;
  server.subject = {"etcd", {}};
  server.server = true;
  server.ip_addresses = {"127.0.0.1"};
  server.dns_names = {"localhost"};
  auto srv = pki::issue(*ca, server);
  auto client = pki::issue(*ca, {.subject = {"kos-apiserver", {}}});
  if (!srv || !client) throw std::runtime_error("etcd test certificates");
  for (const auto& [name, data] : std::vector<std::pair<std::string, std::string>>{
           {"ca.crt", ca->cert_pem}, {"server.crt", srv->cert_pem}, {"server.key", srv->key_pem},
           {"client.crt", client->cert_pem}, {"client.key", client->key_pem}})
    if (auto w = pki::write_file((dir_.path() / name).string(), data, 0600); !w)
      throw std::runtime_error(w.error().message);
  init();
}

void EtcdProcess::init() {
  std::string error;
  for (int attempt = 0; attempt < kStartAttempts; ++attempt) {
    client_port_ = free_loopback_port();
    peer_port_ = free_loopback_port();
    while (peer_port_ == client_port_) peer_port_ = free_loopback_port();
    metrics_port_ = free_loopback_port();
    while (metrics_port_ == client_port_ || metrics_port_ == peer_port_) metrics_port_ = free_loopback_port();
    error = start_once();
    if (error.empty()) return;
    // Probably a port taken between choosing and binding it: start over, fresh.
    stop();
    std::error_code ec;
    std::filesystem::remove_all(data_dir(), ec);
  }
  throw std::runtime_error(error);
}

EtcdProcess::~EtcdProcess() { stop(); }

std::string EtcdProcess::endpoint() const {
  return (tls_ ? "https://127.0.0.1:" : "http://127.0.0.1:") + std::to_string(client_port_);
}

EtcdProcess::EtcdProcess(Member m, std::chrono::milliseconds start_timeout)
    : dir_("kos-etcd"), name_(std::move(m.name)), client_port_(m.client_port), peer_port_(m.peer_port),
      initial_cluster_(std::move(m.initial_cluster)), token_(std::move(m.token)), start_timeout_(start_timeout) {
  spawn();
}

std::string EtcdProcess::start_once() {
  spawn();
  return wait_until_serving();
}

void EtcdProcess::spawn() {
  // /bin/sh only sends etcd's stdout and stderr (zap's log and what its embedded gRPC
  // clients print) to the log file, then execs, so the child's pid stays etcd's.
  std::vector<std::string> argv = {"/bin/sh", "-c", "log=$1; shift; exec \"$@\" >>\"$log\" 2>&1",
                                   "sh", log_path().string()};
  // Kill etcd when the thread that started it (and so the test) dies.
  if (access("/usr/bin/setpriv", X_OK) == 0) {
    argv.insert(argv.end(), {"/usr/bin/setpriv", "--pdeathsig", "KILL", "--"});
  }
  const std::vector<std::string> etcd_args = {
      etcd_binary(),
      "--name", name_,
      "--data-dir", data_dir().string(),
      "--listen-client-urls", endpoint(),
      "--advertise-client-urls", endpoint(),
      "--listen-peer-urls", url(peer_port_),
      "--initial-advertise-peer-urls", url(peer_port_),
      "--initial-cluster", initial_cluster_.empty() ? name_ + "=" + url(peer_port_) : initial_cluster_,
      "--initial-cluster-state", "new",
      "--initial-cluster-token", token_.empty() ? name_ : token_,
      // Loopback: short timeouts speed up elections (the first, and after a member dies).
      "--heartbeat-interval", "50",
      "--election-timeout", "500",
      "--logger", "zap",
      "--log-outputs", "stderr",
  };
  argv.insert(argv.end(), etcd_args.begin(), etcd_args.end());
  if (tls_) {
    const auto d = dir_.path();
    argv.insert(argv.end(), {"--cert-file", (d / "server.crt").string(), "--key-file", (d / "server.key").string(),
                             "--client-cert-auth", "--trusted-ca-file", (d / "ca.crt").string(),
                             "--listen-metrics-urls", url(metrics_port_)});
  }
  proc_ = std::make_unique<ChildProcess>(argv, /*capture_stdout=*/false);
}

std::string EtcdProcess::wait_until_serving() {
  const auto deadline = std::chrono::steady_clock::now() + start_timeout_;
  while (true) {
    if (serving()) return {};
    if (!proc_->running()) {
      return "etcd " + name_ + " exited while starting (client " + endpoint() +
             "); log tail:\n" + log_tail();
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return "etcd " + name_ + " did not serve " + endpoint() + " within " +
             std::to_string(start_timeout_.count()) + " ms; log tail:\n" + log_tail();
    }
    std::this_thread::sleep_for(kProbeInterval);  // polling a port, not synchronizing
  }
}

bool EtcdProcess::serving() const {
  // A Range through etcd's JSON gateway: answers only once the member has a leader and
  // serves the v3 API. {"key": "\0"} in base64.
  if (tls_) {  // the plain metrics URL's /health: a linearizable read too
    std::string resp = http_request("GET", metrics_port_, "/health", "");
    return resp.starts_with("HTTP/1.1 200") && resp.find("\"health\":\"true\"") != std::string::npos;
  }
  std::string resp = http_request("POST", client_port_, "/v3/kv/range", R"({"key":"AA=="})");
  return resp.starts_with("HTTP/1.1 200") && resp.find("\"revision\"") != std::string::npos;
}

void EtcdProcess::kill9() {
  if (!proc_ || !proc_->running()) return;
  proc_->signal(SIGKILL);
  proc_->wait(std::chrono::hours(1));
}

void EtcdProcess::stop() {
  if (!proc_) return;
  proc_->stop(std::chrono::seconds(5));
}

void EtcdProcess::restart() {
  if (proc_ && proc_->running()) kill9();
  std::string error = start_once();
  if (!error.empty()) {
    stop();
    throw std::runtime_error(error);
  }
}

bool EtcdProcess::running() { return proc_ && proc_->running(); }

bool EtcdProcess::is_leader() const {
  if (tls_) return false;
  // {"header":{"member_id":"N",...},...,"leader":"N",...} from the JSON gateway.
  std::string resp = http_request("POST", client_port_, "/v3/maintenance/status", "{}");
  auto field = [&](const std::string& name) {
    auto at = resp.find("\"" + name + "\":\"");
    if (at == std::string::npos) return std::string();
    at += name.size() + 4;
    return resp.substr(at, resp.find('"', at) - at);
  };
  const std::string me = field("member_id"), leader = field("leader");
  return !me.empty() && me == leader;
}

std::string EtcdProcess::log_tail(size_t max_lines) const {
  std::ifstream in(log_path());
  if (!in) return "(no log at " + log_path().string() + ")\n";
  std::deque<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    lines.push_back(std::move(line));
    if (lines.size() > max_lines) lines.pop_front();
  }
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

EtcdCluster::EtcdCluster(int members, std::chrono::milliseconds start_timeout) {
  std::string error;
  for (int attempt = 0; attempt < kStartAttempts; ++attempt) {
    members_.clear();
    const std::string token = unique_name();
    std::vector<EtcdProcess::Member> specs;
    std::set<int> ports;
    auto fresh_port = [&] {
      int p = free_loopback_port();
      while (!ports.insert(p).second) p = free_loopback_port();
      return p;
    };
    std::string initial;
    for (int i = 0; i < members; ++i) {
      EtcdProcess::Member m{token + "-m" + std::to_string(i), fresh_port(), fresh_port(), "", token};
      initial += (i ? "," : "") + m.name + "=" + url(m.peer_port);
      specs.push_back(std::move(m));
    }
    for (auto& m : specs) {
      m.initial_cluster = initial;
      members_.push_back(std::make_unique<EtcdProcess>(std::move(m), start_timeout));
    }
    error.clear();
    for (auto& m : members_) error += m->wait_until_serving();
    if (error.empty()) return;
  }
  members_.clear();
  throw std::runtime_error(error);
}

int EtcdCluster::leader() const {
  for (size_t i = 0; i < members_.size(); ++i)
    if (members_[i]->is_leader()) return static_cast<int>(i);
  return -1;
}

std::string EtcdCluster::endpoints() const {
  std::string out;
  for (const auto& m : members_) out += (out.empty() ? "" : ",") + m->endpoint();
  return out;
}

}  // namespace kos::testing
