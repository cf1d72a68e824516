// kos-bench-apiserver: the API server measured from outside, as a separate process.
//
//  1. creates/s through HTTP with N concurrent clients (persistent connections), with
//     p50/p99 create latency, on the embedded store and on etcd;
//  2. watch fan-out: W watchers, each with its own spec.node field selector; each
//     NetworkAttachment created matches exactly one of them. Reports the time from the
//     create request to its watcher receiving the event (p50/p99), and the server's CPU
//     time per event, for W = 10, 100, 1000 (flat means the fan-out is indexed).
//
// The server and etcd run on loopback ports chosen at run time and are stopped at the end.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <CLI/CLI.hpp>

#include "test/support/etcd_process.h"
#include "test/support/process.h"

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Pct {
  double p50 = 0, p99 = 0;
};
Pct pct(std::vector<double> v) {
  if (v.empty()) return {};
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v[std::min(v.size() - 1, v.size() * 99 / 100)]};
}

// A running `kos apiserver`.
class Server {
 public:
  Server(const std::string& kos, const std::string& store) : dir_("kos-bench-api") {
    // Plain HTTP: this benchmark's clients are raw Beast connections (the request path and
    // fan-out, without TLS).
    std::vector<std::string> args{kos, "--log-level", "warn", "apiserver", "--insecure-listen", "127.0.0.1:0",
                                  "--data-dir", dir_.path().string(), "--write-kubeconfig",
                                  (dir_.path() / "kubeconfig").string()};
    if (!store.empty()) args.insert(args.end(), {"--store", store});
    proc_ = std::make_unique<kos::testing::ChildProcess>(args, false);
    auto deadline = Clock::now() + 30s;
    while (Clock::now() < deadline) {
      std::ifstream f(dir_.path() / "kubeconfig");
      std::string line;
      while (std::getline(f, line)) {
        auto p = line.find("://127.0.0.1:");
        if (line.find("server: ") != std::string::npos && p != std::string::npos)
          port_ = std::stoi(line.substr(p + 13));
      }
      if (port_) return;
      std::this_thread::sleep_for(20ms);  // polling for the server's kubeconfig
    }
    throw std::runtime_error("kos apiserver did not start");
  }
  int port() const { return port_; }
  double cpu_seconds() const {
    std::ifstream stat("/proc/" + std::to_string(proc_->pid()) + "/stat");
    std::string tok;
    double cpu = 0;
    for (int i = 1; stat >> tok && i <= 15; ++i)
      if (i == 14 || i == 15) cpu += std::stod(tok) / static_cast<double>(sysconf(_SC_CLK_TCK));
    return cpu;
  }

 private:
  kos::testing::TempDir dir_;
  std::unique_ptr<kos::testing::ChildProcess> proc_;
  int port_ = 0;
};

// One persistent HTTP/1.1 connection.
class Conn {
 public:
  explicit Conn(int port) : stream_(ioc_) { stream_.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port))); }
  unsigned request(http::verb verb, const std::string& target, const std::string& body) {
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();
    http::write(stream_, req);
    beast::flat_buffer buf;
    http::response<http::string_body> res;
    http::read(stream_, buf, res);
    return res.result_int();
  }

 private:
  net::io_context ioc_;
  beast::tcp_stream stream_;
};

const std::string kNs = "/apis/network.example.com/v1alpha1/namespaces/bench/";

std::string na_body(const std::string& name, const std::string& node) {
  return R"({"apiVersion":"network.example.com/v1alpha1","kind":"NetworkAttachment","metadata":{"name":")" +
         name + R"("},"spec":{"node":")" + node + R"(","subnet":"s1"}})";
}

struct CreateFigures {
  double rate = 0;
  Pct latency;
};

CreateFigures measure_creates(int port, int clients, int total, const std::string& tag) {
  std::atomic<int> next{0}, errors{0};
  std::vector<std::vector<double>> lat(static_cast<size_t>(clients));
  auto t0 = Clock::now();
  std::vector<std::thread> ts;
  for (int c = 0; c < clients; ++c)
    ts.emplace_back([&, c] {
      Conn conn(port);
      for (int i = next++; i < total; i = next++) {
        auto s = Clock::now();
        unsigned code = conn.request(http::verb::post, kNs + "networkattachments",
                                     na_body(tag + "-" + std::to_string(i), "n" + std::to_string(i % 100)));
        lat[static_cast<size_t>(c)].push_back(ms(Clock::now() - s));
        if (code != 201) ++errors;
      }
    });
  for (auto& t : ts) t.join();
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  if (errors) std::fprintf(stderr, "  %d creates failed\n", errors.load());
  return {(total - errors) / secs, pct(std::move(all))};
}

// W watchers, one connection and thread each, reading chunked watch streams.
class Watchers {
 public:
  Watchers(int port, int count, const std::string& tag) {
    for (int i = 0; i < count; ++i) {
      auto w = std::make_unique<W>();
      w->stream = std::make_unique<beast::tcp_stream>(ioc_);
      w->stream->connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)));
      http::request<http::empty_body> req{http::verb::get,
                                          kNs + "networkattachments?watch=true&resourceVersion=0&fieldSelector=spec.node%3D" + tag + "-" + std::to_string(i), 11};
      req.set(http::field::host, "127.0.0.1");
      http::write(*w->stream, req);
      watchers_.push_back(std::move(w));
    }
    for (auto& w : watchers_) {
      W* raw = w.get();
      raw->thread = std::thread([this, raw] { read(*raw); });
    }
  }
  ~Watchers() {
    for (auto& w : watchers_) {
      beast::error_code ec;
      w->stream->socket().shutdown(tcp::socket::shutdown_both, ec);
    }
    for (auto& w : watchers_) w->thread.join();
  }
  // Name -> time the event arrived.
  std::unordered_map<std::string, Clock::time_point> arrivals() {
    std::lock_guard lk(mu_);
    return arrivals_;
  }
  size_t count() {
    std::lock_guard lk(mu_);
    return arrivals_.size();
  }

 private:
  struct W {
    std::unique_ptr<beast::tcp_stream> stream;
    std::thread thread;
  };
  void read(W& w) {
    beast::flat_buffer buf;
    http::response_parser<http::empty_body> p;
    p.body_limit(boost::none);
    std::string pending;
    auto on_chunk = [&](std::uint64_t, beast::string_view body, beast::error_code&) -> std::size_t {
      pending.append(body.data(), body.size());
      size_t nl;
      while ((nl = pending.find('\n')) != std::string::npos) {
        std::string line = pending.substr(0, nl);
        pending.erase(0, nl + 1);
        auto now = Clock::now();
        auto n = line.find("\"name\":\"");
        if (line.find("\"ADDED\"") != std::string::npos && n != std::string::npos) {
          auto e = line.find('"', n + 8);
          std::lock_guard lk(mu_);
          arrivals_.emplace(line.substr(n + 8, e - n - 8), now);
        }
      }
      return body.size();
    };
    p.on_chunk_body(on_chunk);
    beast::error_code ec;
    http::read_header(*w.stream, buf, p, ec);
    while (!ec && !p.is_done()) http::read(*w.stream, buf, p, ec);
  }

  net::io_context ioc_;
  std::vector<std::unique_ptr<W>> watchers_;
  std::mutex mu_;
  std::unordered_map<std::string, Clock::time_point> arrivals_;
};

struct FanoutFigures {
  int watchers;
  Pct latency;
  double cpu_us_per_event;
};

FanoutFigures measure_fanout(Server& srv, int watchers, int events) {
  std::string tag = "w" + std::to_string(watchers);
  Watchers ws(srv.port(), watchers, tag);
  // Let every watch register: one probe object per watcher, all must arrive.
  Conn conn(srv.port());
  for (int i = 0; i < watchers; ++i)
    conn.request(http::verb::post, kNs + "networkattachments", na_body(tag + "-probe-" + std::to_string(i), tag + "-" + std::to_string(i)));
  auto deadline = Clock::now() + 60s;
  while (ws.count() < static_cast<size_t>(watchers) && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
  double cpu0 = srv.cpu_seconds();
  std::unordered_map<std::string, Clock::time_point> sent;
  for (int i = 0; i < events; ++i) {
    std::string name = tag + "-ev-" + std::to_string(i);
    sent[name] = Clock::now();
    conn.request(http::verb::post, kNs + "networkattachments", na_body(name, tag + "-" + std::to_string(i % watchers)));
  }
  while (ws.count() < static_cast<size_t>(watchers + events) && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
  double cpu1 = srv.cpu_seconds();
  auto arr = ws.arrivals();
  std::vector<double> lat;
  for (auto& [name, t] : sent)
    if (auto it = arr.find(name); it != arr.end()) lat.push_back(ms(it->second - t));
  if (lat.size() != sent.size()) std::fprintf(stderr, "  %zu of %zu events never arrived\n", sent.size() - lat.size(), sent.size());
  return {watchers, pct(std::move(lat)), (cpu1 - cpu0) * 1e6 / events};
}

void run_backend(const std::string& kos, const std::string& label, const std::string& store,
                 int clients, int creates, bool fanout) {
  Server srv(kos, store);
  Conn c(srv.port());
  c.request(http::verb::post, kNs + "subnets",
            R"({"apiVersion":"network.example.com/v1alpha1","kind":"Subnet","metadata":{"name":"s1"},"spec":{"vni":1,"ipv4":"10.0.0.0/16"}})");
  auto f = measure_creates(srv.port(), clients, creates, label);
  std::printf("%-10s creates through HTTP, %d clients: %8.0f/s   p50 %.2f ms   p99 %.2f ms\n",
              label.c_str(), clients, f.rate, f.latency.p50, f.latency.p99);
  std::fflush(stdout);
  if (!fanout) return;
  for (int w : {10, 100, 1000}) {
    auto ff = measure_fanout(srv, w, 500);
    std::printf("%-10s %5d watchers (distinct spec.node): create->event p50 %.2f ms  p99 %.2f ms   server CPU %.1f us/event\n",
                label.c_str(), ff.watchers, ff.latency.p50, ff.latency.p99, ff.cpu_us_per_event);
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Measures the KOS API server over HTTP: create throughput and watch fan-out."};
  std::string kos;
  int clients = 64, creates = 20000;
  bool skip_etcd = false;
  app.add_option("--kos", kos, "path of the kos binary")->required();
  app.add_option("--clients", clients)->capture_default_str();
  app.add_option("--creates", creates)->capture_default_str();
  app.add_flag("--skip-etcd", skip_etcd);
  CLI11_PARSE(app, argc, argv);
  signal(SIGPIPE, SIG_IGN);
  std::printf("KOS API server benchmark (%u cores)\n", std::thread::hardware_concurrency());
  run_backend(kos, "embedded", "", clients, creates, true);
  if (!skip_etcd) {
    kos::testing::EtcdProcess etcd;
    run_backend(kos, "etcd", "etcd:" + etcd.endpoint(), clients, creates, false);
  }
  std::printf("goals: >= 3000 creates/s through HTTP on the embedded store with p99 < 20 ms; "
              "CPU per event flat from 10 to 1000 watchers\n");
  return 0;
}
