// etcd-specific tests of EtcdStore against a real etcd (the shared semantics are covered by
// the conformance suite): endpoint fail-over, watch resumption across a SIGKILL of etcd and
// across lost connections, compaction mapping, and the outage behaviour of calls and watches.
#include "store/etcd/etcd_store.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "etcdserverpb/rpc.grpc.pb.h"
#include "pki/pki.h"
#include "test/support/etcd_process.h"
#include "test/support/process.h"

namespace kos::store {
namespace {

using namespace std::chrono_literals;
using kos::testing::EtcdProcess;
using Clock = std::chrono::steady_clock;

// A TCP forwarder from an ephemeral loopback port to an upstream loopback port, which a test
// can cut: pause() closes every forwarded connection and, until resume(), accepts new ones
// only to close them at once (so a client sees its endpoint fail, as if the server died).
class TcpProxy {
 public:
  explicit TcpProxy(int upstream_port) : upstream_port_(upstream_port) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr = loopback(0);
    if (listen_fd_ < 0 || bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        listen(listen_fd_, 64) != 0) {
      throw std::runtime_error("TcpProxy: cannot listen");
    }
    socklen_t len = sizeof addr;
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }

  ~TcpProxy() {
    stopping_ = true;
    shutdown(listen_fd_, SHUT_RDWR);  // wakes accept()
    acceptor_.join();
    close(listen_fd_);
    cut_all();
  }

  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

  void pause() {
    {
      std::lock_guard lk(mu_);
      paused_ = true;
    }
    cut_all();
  }

  void resume() {
    std::lock_guard lk(mu_);
    paused_ = false;
  }

 private:
  struct Conn {
    int client = -1;
    int upstream = -1;
    std::thread up, down;
  };

  static sockaddr_in loopback(int port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    return addr;
  }

  static void pump(int from, int to) {
    char buf[64 * 1024];
    while (true) {
      ssize_t n = read(from, buf, sizeof buf);
      if (n <= 0) break;
      ssize_t off = 0;
      while (off < n) {
        ssize_t w = send(to, buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
        if (w <= 0) {
          shutdown(from, SHUT_RDWR);
          shutdown(to, SHUT_RDWR);
          return;
        }
        off += w;
      }
    }
    shutdown(to, SHUT_WR);
  }

  void accept_loop() {
    while (!stopping_) {
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        return;
      }
      std::lock_guard lk(mu_);
      if (paused_ || stopping_) {
        close(fd);
        continue;
      }
      int up = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in addr = loopback(upstream_port_);
      if (up < 0 || connect(up, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        if (up >= 0) close(up);
        close(fd);
        continue;
      }
      auto c = std::make_unique<Conn>();
      c->client = fd;
      c->upstream = up;
      c->up = std::thread(pump, fd, up);
      c->down = std::thread(pump, up, fd);
      conns_.push_back(std::move(c));
    }
  }

  void cut_all() {
    std::vector<std::unique_ptr<Conn>> conns;
    {
      std::lock_guard lk(mu_);
      conns.swap(conns_);
    }
    for (auto& c : conns) {
      shutdown(c->client, SHUT_RDWR);
      shutdown(c->upstream, SHUT_RDWR);
      c->up.join();
      c->down.join();
      close(c->client);
      close(c->upstream);
    }
  }

  int upstream_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  bool paused_ = false;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::thread acceptor_;
};

std::string dead_endpoint() {
  return "http://127.0.0.1:" + std::to_string(kos::testing::free_loopback_port());
}

OpenOptions fast_options(std::chrono::milliseconds request_timeout = 2s) {
  OpenOptions o;
  o.dial_timeout = 2s;
  o.request_timeout = request_timeout;
  return o;
}

std::unique_ptr<Store> must_open(const std::vector<std::string>& endpoints,
                                 const OpenOptions& opts = fast_options()) {
  auto s = EtcdStore::open(endpoints, opts);
  if (!s) throw std::runtime_error("open failed: " + s.error().message);
  return std::move(*s);
}

// Reads events until `done(events)` or `timeout`; stops early on an error (returned).
Result<std::vector<Event>> collect(Watch& w, std::chrono::milliseconds timeout,
                                   const std::function<bool(const std::vector<Event>&)>& done) {
  std::vector<Event> all;
  const auto deadline = Clock::now() + timeout;
  while (!done(all) && Clock::now() < deadline) {
    auto got = w.next(100ms);
    if (!got) return fail(got.error());
    all.insert(all.end(), got->begin(), got->end());
  }
  return all;
}

auto at_least(size_t n) {
  return [n](const std::vector<Event>& evs) { return evs.size() >= n; };
}

auto reaches(Revision rev) {
  return [rev](const std::vector<Event>& evs) {
    return !evs.empty() && evs.back().revision() >= rev;
  };
}

class EtcdStoreTest : public ::testing::Test {
 protected:
  EtcdProcess etcd_;
};

TEST(EtcdStoreParse, Endpoints) {
  auto eps = EtcdStore::parse_endpoints("http://a:1, http://b:2,c:3");
  ASSERT_TRUE(eps) << eps.error().message;
  EXPECT_EQ(*eps, (std::vector<std::string>{"http://a:1", "http://b:2", "c:3"}));
  EXPECT_EQ(EtcdStore::parse_endpoints("http://a:1,,http://b:2").error().code, Errc::kInvalid);
  EXPECT_EQ(EtcdStore::parse_endpoints("").error().code, Errc::kInvalid);
}

TEST(EtcdStoreOpen, RejectsBadEndpointsAndUnreachableClusters) {
  EXPECT_EQ(EtcdStore::open({}).error().code, Errc::kInvalid);
  EXPECT_EQ(EtcdStore::open({"https://127.0.0.1:2379"}).error().code, Errc::kInvalid);  // https without TLS settings
  OpenOptions tls;
  tls.etcd_tls = OpenOptions::EtcdTls{};
  EXPECT_EQ(EtcdStore::open({"http://127.0.0.1:2379"}, tls).error().code, Errc::kInvalid);  // TLS settings, http
  EXPECT_EQ(EtcdStore::open({"ftp://127.0.0.1:2379"}).error().code, Errc::kInvalid);
  EXPECT_EQ(EtcdStore::open({"http://127.0.0.1"}).error().code, Errc::kInvalid);

  OpenOptions opts;
  opts.dial_timeout = 500ms;
  const auto start = Clock::now();
  auto s = EtcdStore::open({dead_endpoint(), dead_endpoint()}, opts);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, Errc::kUnavailable) << s.error().message;
  EXPECT_LT(Clock::now() - start, 5s);
}

// etcd with --client-cert-auth: the store speaks TLS, verifies etcd against its CA and
// presents its client certificate; without one, or trusting another CA, it gets nowhere.
TEST(EtcdStoreTls, WorksAgainstAClientCertAuthEtcdAndNotWithoutItsCertificate) {
  EtcdProcess etcd(EtcdProcess::TlsTag{});
  auto read = [](const std::filesystem::path& p) { return *pki::read_file(p.string()); };
  OpenOptions o;
  o.dial_timeout = 2s;
  o.etcd_tls = OpenOptions::EtcdTls{read(etcd.ca_file()), read(etcd.client_cert_file()), read(etcd.client_key_file())};
  auto s = EtcdStore::open({etcd.endpoint()}, o);
  ASSERT_TRUE(s) << s.error().message;
  auto c = (*s)->create("/tls/a", "1");
  ASSERT_TRUE(c) << c.error().message;
  auto g = (*s)->get("/tls/a");
  ASSERT_TRUE(g);
  EXPECT_EQ(g->value, "1");

  OpenOptions no_cert = o;
  no_cert.etcd_tls->cert_pem.clear();
  no_cert.etcd_tls->key_pem.clear();
  auto n = EtcdStore::open({etcd.endpoint()}, no_cert);
  ASSERT_FALSE(n) << "etcd --client-cert-auth accepted a client without a certificate";
  EXPECT_EQ(n.error().code, Errc::kUnavailable) << n.error().message;

  OpenOptions other_ca = o;
  other_ca.etcd_tls->ca_pem = pki::make_ca("another")->cert_pem;
  EXPECT_FALSE(EtcdStore::open({etcd.endpoint()}, other_ca)) << "an etcd the CA did not sign was trusted";

  OpenOptions plain;
  plain.dial_timeout = 1s;
  std::string http = etcd.endpoint();
  http.replace(0, 5, "http");
  EXPECT_FALSE(EtcdStore::open({http}, plain)) << "plain HTTP reached a TLS-only etcd";
}

TEST_F(EtcdStoreTest, CrudListAndRevisions) {
  auto store = must_open({etcd_.endpoint()});
  auto r0 = store->current_revision();
  ASSERT_TRUE(r0) << r0.error().message;

  auto a = store->create("/registry/t/a", "1");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->mod_revision, *r0 + 1);
  EXPECT_EQ(a->create_revision, a->mod_revision);
  EXPECT_EQ(a->version, 1);
  EXPECT_EQ(store->create("/registry/t/a", "x").error().code, Errc::kAlreadyExists);
  EXPECT_EQ(*store->get("/registry/t/a"), *a);

  auto a2 = store->update("/registry/t/a", "2", a->mod_revision);
  ASSERT_TRUE(a2) << a2.error().message;
  EXPECT_EQ(a2->create_revision, a->create_revision);
  EXPECT_EQ(a2->version, 2);
  EXPECT_EQ(a2->mod_revision, a->mod_revision + 1);
  EXPECT_EQ(*store->get("/registry/t/a"), *a2);
  EXPECT_EQ(store->update("/registry/t/a", "3", a->mod_revision).error().code, Errc::kConflict);
  EXPECT_EQ(store->update("/registry/t/nope", "3", 0).error().code, Errc::kNotFound);
  EXPECT_EQ(store->update("/registry/t/nope", "3", 5).error().code, Errc::kNotFound);
  auto a3 = store->update("/registry/t/a", "3", 0);
  ASSERT_TRUE(a3);
  EXPECT_EQ(a3->version, 3);
  EXPECT_EQ(store->get("/registry/t/a", a->mod_revision)->value, "1");

  for (const char* k : {"b", "c", "d"}) ASSERT_TRUE(store->create(std::string("/registry/t/") + k, k));
  ASSERT_TRUE(store->create("/registry/u/x", "other prefix"));
  ListOptions page;
  page.limit = 3;
  auto l1 = store->list("/registry/t/", page);
  ASSERT_TRUE(l1) << l1.error().message;
  ASSERT_EQ(l1->items.size(), 3u);
  EXPECT_EQ(l1->items[0].key, "/registry/t/a");
  EXPECT_TRUE(l1->more);
  page.start_key = l1->next_key;
  page.revision = l1->revision;
  auto l2 = store->list("/registry/t/", page);
  ASSERT_TRUE(l2);
  ASSERT_EQ(l2->items.size(), 1u);
  EXPECT_EQ(l2->items[0].key, "/registry/t/d");
  EXPECT_FALSE(l2->more);
  EXPECT_EQ(l2->revision, l1->revision);
  auto all = store->list("");
  ASSERT_TRUE(all);
  EXPECT_EQ(all->items.size(), 5u);

  Revision deleted_at = 0;
  EXPECT_EQ(store->remove("/registry/t/b", 1).error().code, Errc::kConflict);
  auto b = store->remove("/registry/t/b", 0, &deleted_at);
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_EQ(b->value, "b");
  EXPECT_EQ(deleted_at, *store->current_revision());
  EXPECT_EQ(store->get("/registry/t/b").error().code, Errc::kNotFound);
  EXPECT_EQ(store->remove("/registry/t/b", 0).error().code, Errc::kNotFound);
  EXPECT_EQ(store->get("/registry/t/b", deleted_at + 1000).error().code, Errc::kInvalid);
}

TEST_F(EtcdStoreTest, FailsOverWhenTheFirstEndpointIsDead) {
  auto store = must_open({dead_endpoint(), etcd_.endpoint()});
  auto w = store->watch("/f/", 0);
  ASSERT_TRUE(w) << w.error().message;
  for (int i = 0; i < 10; ++i) {
    auto kv = store->create("/f/k" + std::to_string(i), "v");
    ASSERT_TRUE(kv) << kv.error().message;
  }
  auto l = store->list("/f/");
  ASSERT_TRUE(l);
  EXPECT_EQ(l->items.size(), 10u);
  auto evs = collect(**w, 10s, at_least(10));
  ASSERT_TRUE(evs) << evs.error().message;
  EXPECT_EQ(evs->size(), 10u);
}

TEST_F(EtcdStoreTest, FailsOverWhenTheCurrentEndpointDies) {
  // Two proxies to one etcd look like two members of a cluster to the client.
  TcpProxy first(etcd_.client_port()), second(etcd_.client_port());
  auto store = must_open({first.endpoint(), second.endpoint()});
  auto direct = must_open({etcd_.endpoint()});
  auto w = store->watch("/f/", 0);
  ASSERT_TRUE(w);
  ASSERT_TRUE(store->create("/f/before", "v"));
  auto evs = collect(**w, 10s, at_least(1));
  ASSERT_TRUE(evs);
  ASSERT_EQ(evs->size(), 1u);

  first.pause();
  // Reads are retried on the next endpoint; a write may fail once (it may have been sent
  // on the dying connection), then goes to the next endpoint too.
  ASSERT_TRUE(store->get("/f/before"));
  ASSERT_TRUE(store->create("/f/after", "v"));
  auto last = direct->create("/f/direct", "v");
  ASSERT_TRUE(last);
  evs = collect(**w, 10s, reaches(last->mod_revision));
  ASSERT_TRUE(evs) << evs.error().message;
  ASSERT_EQ(evs->size(), 2u);
  EXPECT_EQ((*evs)[0].kv.key, "/f/after");
  EXPECT_EQ((*evs)[1].kv.key, "/f/direct");
}

TEST_F(EtcdStoreTest, WatchResumesAfterEtcdIsKilledWithoutGapOrDuplicate) {
  auto store = must_open({etcd_.endpoint()}, fast_options(1s));
  auto start = store->current_revision();
  ASSERT_TRUE(start);
  auto w = store->watch("/w/", 0);
  ASSERT_TRUE(w);

  std::mutex mu;
  std::condition_variable acked_more;
  std::map<Revision, std::string> acked;  // acknowledged creates
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::thread writer([&] {
    for (int i = 0; !stop; ++i) {
      std::string key = "/w/k" + std::to_string(i);
      auto kv = store->create(key, "v");
      if (!kv) {
        ++failures;
        continue;
      }
      std::lock_guard lk(mu);
      acked[kv->mod_revision] = key;
      acked_more.notify_all();
    }
  });
  auto acked_count = [&] {
    std::lock_guard lk(mu);
    return acked.size();
  };
  auto wait_acked = [&](size_t n) {
    std::unique_lock lk(mu);
    return acked_more.wait_for(lk, 30s, [&] { return acked.size() >= n; });
  };

  std::vector<Event> events;
  auto got = collect(**w, 20s, at_least(30));
  ASSERT_TRUE(got) << got.error().message;
  events = *got;

  etcd_.kill9();
  // The watch is quiet (no error) while etcd is down.
  for (int i = 0; i < 3; ++i) {
    auto quiet = (*w)->next(100ms);
    ASSERT_TRUE(quiet) << quiet.error().message;
    events.insert(events.end(), quiet->begin(), quiet->end());
  }
  etcd_.restart();
  const size_t after_restart = acked_count();
  bool wrote = wait_acked(after_restart + 50);
  stop = true;
  writer.join();
  ASSERT_TRUE(wrote) << "writes did not resume after the restart";

  auto last = store->current_revision();
  ASSERT_TRUE(last);
  got = collect(**w, 30s, reaches(*last));
  ASSERT_TRUE(got) << got.error().message;
  events.insert(events.end(), got->begin(), got->end());

  // Only the writer writes: every revision after the start is one create, delivered once.
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.front().revision(), *start + 1);
  EXPECT_EQ(events.back().revision(), *last);
  for (size_t i = 1; i < events.size(); ++i) {
    ASSERT_EQ(events[i].revision(), events[i - 1].revision() + 1) << "gap or duplicate at " << i;
  }
  std::map<Revision, std::string> seen;
  for (const auto& ev : events) {
    EXPECT_TRUE(ev.is_create());
    seen[ev.revision()] = ev.kv.key;
  }
  std::lock_guard lk(mu);
  for (const auto& [rev, key] : acked) {
    auto it = seen.find(rev);
    ASSERT_NE(it, seen.end()) << "acknowledged write at revision " << rev << " not delivered";
    EXPECT_EQ(it->second, key);
  }
  std::cout << "events=" << events.size() << " acknowledged=" << acked.size()
            << " failed_writes=" << failures << "\n";
}

TEST_F(EtcdStoreTest, CompactedReadsAndWatchesReportCompacted) {
  auto store = must_open({etcd_.endpoint()});
  auto v1 = store->create("/c/a", "1");
  ASSERT_TRUE(v1);
  auto v2 = store->update("/c/a", "2", 0);
  auto v3 = store->update("/c/a", "3", 0);
  auto b = store->create("/c/b", "b");
  ASSERT_TRUE(v2 && v3 && b);

  ASSERT_TRUE(store->compact(v3->mod_revision));
  EXPECT_EQ(store->get("/c/a", v2->mod_revision).error().code, Errc::kCompacted);
  EXPECT_EQ(store->get("/c/a", v3->mod_revision)->value, "3");
  ListOptions at_v2;
  at_v2.revision = v2->mod_revision;
  EXPECT_EQ(store->list("/c/", at_v2).error().code, Errc::kCompacted);

  // A watch needs the history after `after`: after = compaction point - 1 still works.
  auto too_old = store->watch("/c/", v3->mod_revision - 2);
  ASSERT_FALSE(too_old);
  EXPECT_EQ(too_old.error().code, Errc::kCompacted) << too_old.error().message;
  auto ok = store->watch("/c/", v3->mod_revision - 1);
  ASSERT_TRUE(ok) << ok.error().message;
  auto evs = collect(**ok, 10s, reaches(b->mod_revision));
  ASSERT_TRUE(evs) << evs.error().message;
  ASSERT_EQ(evs->size(), 2u);
  EXPECT_EQ((*evs)[0].kv.value, "3");
  // etcd cannot give the previous value of an event at the compaction point itself (it is
  // looked up at the revision before, which is gone), so prev is absent here.
  EXPECT_FALSE((*evs)[0].prev.has_value());
  EXPECT_EQ((*evs)[1].kv.key, "/c/b");
  auto v4 = store->update("/c/a", "4", 0);
  ASSERT_TRUE(v4);
  evs = collect(**ok, 10s, at_least(1));
  ASSERT_TRUE(evs);
  ASSERT_EQ(evs->size(), 1u);
  ASSERT_TRUE((*evs)[0].prev.has_value());
  EXPECT_EQ((*evs)[0].prev->value, "3");

  // Compacting again, or to an older revision, is a no-op; the future is invalid.
  EXPECT_TRUE(store->compact(v3->mod_revision));
  EXPECT_TRUE(store->compact(v1->mod_revision));
  auto future = store->compact(b->mod_revision + 100);
  ASSERT_FALSE(future);
  EXPECT_EQ(future.error().code, Errc::kInvalid);
}

// WatchOptions::prev = false: etcd is asked for no previous values (prev_kv), so the
// updates and deletes come without them; by default they come with them.
TEST_F(EtcdStoreTest, WatchWithoutPreviousValuesGetsNone) {
  auto store = must_open({etcd_.endpoint()});
  auto a = store->create("/p/a", "1");
  ASSERT_TRUE(a);
  auto with = store->watch("/p/", a->mod_revision);
  auto bare = store->watch("/p/", a->mod_revision, Store::WatchOptions{.prev = false});
  ASSERT_TRUE(with && bare);
  auto u = store->update("/p/a", "2", 0);
  ASSERT_TRUE(u);
  Revision deleted_at = 0;
  ASSERT_TRUE(store->remove("/p/a", 0, &deleted_at));
  auto got_with = collect(**with, 10s, reaches(deleted_at));
  auto got_bare = collect(**bare, 10s, reaches(deleted_at));
  ASSERT_TRUE(got_with && got_bare);
  ASSERT_EQ(got_with->size(), 2u);
  ASSERT_EQ(got_bare->size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_TRUE((*got_with)[i].prev.has_value()) << i;
    EXPECT_FALSE((*got_bare)[i].prev.has_value()) << i;
    EXPECT_EQ((*got_bare)[i].kv, (*got_with)[i].kv) << i;
  }
}

TEST_F(EtcdStoreTest, WatchCompactedWhileDisconnectedReportsCompacted) {
  TcpProxy proxy(etcd_.client_port());
  auto store = must_open({proxy.endpoint()});
  auto direct = must_open({etcd_.endpoint()});
  auto w = store->watch("/c/", 0);
  ASSERT_TRUE(w);
  ASSERT_TRUE(direct->create("/c/1", "v"));
  auto evs = collect(**w, 10s, at_least(1));
  ASSERT_TRUE(evs);

  proxy.pause();
  ASSERT_TRUE(direct->create("/c/2", "v"));
  auto last = direct->create("/c/3", "v");
  ASSERT_TRUE(last);
  ASSERT_TRUE(direct->compact(last->mod_revision));
  proxy.resume();

  evs = collect(**w, 20s, [](const auto&) { return false; });
  ASSERT_FALSE(evs);
  EXPECT_EQ(evs.error().code, Errc::kCompacted) << evs.error().message;
}

TEST_F(EtcdStoreTest, CallsFailWithinTheTimeoutWhileEtcdIsDownAndRecover) {
  auto store = must_open({etcd_.endpoint()}, fast_options(1s));
  ASSERT_TRUE(store->create("/d/a", "v"));
  etcd_.kill9();
  auto start = Clock::now();
  auto r = store->get("/d/a");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kUnavailable) << r.error().message;
  auto c = store->create("/d/b", "v");
  ASSERT_FALSE(c);
  EXPECT_TRUE(c.error().code == Errc::kUnavailable || c.error().code == Errc::kTimeout)
      << c.error().message;
  EXPECT_LT(Clock::now() - start, 4s);

  etcd_.restart();
  // The channel reconnects (gRPC's reconnect backoff is at most about a second).
  const auto deadline = Clock::now() + 10s;
  Result<KeyValue> back = fail(Errc::kUnavailable, "not tried");
  while (!back && Clock::now() < deadline) back = store->get("/d/a");
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->value, "v");
  ASSERT_TRUE(store->create("/d/b", "v"));
}

// A watch rides out an etcd outage of any length and resumes where it left off, so the
// watch caches above it do not all relist when etcd comes back. request_timeout is 2 s: the
// watch used to give up after 3 x 2 s without a stream (next() failed with kUnavailable).
TEST_F(EtcdStoreTest, WatchSurvivesAnOutageLongerThan30Seconds) {
  auto store = must_open({etcd_.endpoint()}, fast_options(2s));
  auto w = store->watch("/s/", 0);
  ASSERT_TRUE(w) << w.error().message;
  std::vector<KeyValue> written;  // every write under /s/, in order
  auto write = [&](Store& s, const std::string& key) {
    auto kv = s.create(key, "v");
    ASSERT_TRUE(kv) << key << ": " << kv.error().message;
    written.push_back(*kv);
  };
  for (int i = 0; i < 5; ++i) write(*store, "/s/before-" + std::to_string(i));
  auto got = collect(**w, 10s, reaches(written.back().mod_revision));
  ASSERT_TRUE(got) << got.error().message;
  ASSERT_EQ(got->size(), written.size());
  std::vector<Event> events = *got;
  // Written just before the outage: the watch may deliver it before or after.
  write(*store, "/s/last-before-outage");

  etcd_.kill9();
  const auto down = Clock::now();
  while (Clock::now() - down < 35s) {
    auto quiet = (*w)->next(500ms);
    ASSERT_TRUE(quiet) << "next() failed "
                       << std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - down)
                              .count()
                       << " s into the outage: " << quiet.error().message;
    events.insert(events.end(), quiet->begin(), quiet->end());
  }
  etcd_.restart();

  auto writer = must_open({etcd_.endpoint()});  // a fresh client: writes need not retry
  for (int i = 0; i < 5; ++i) write(*writer, "/s/after-" + std::to_string(i));
  got = collect(**w, 30s, reaches(written.back().mod_revision));
  ASSERT_TRUE(got) << got.error().message;
  events.insert(events.end(), got->begin(), got->end());

  // Exactly the writes, in order: nothing lost, nothing repeated.
  ASSERT_EQ(events.size(), written.size());
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_TRUE(events[i].is_create()) << i;
    EXPECT_EQ(events[i].kv, written[i]) << "event " << i;
  }
}

// A watch that keeps trying through an outage still ends at once when its store closes.
TEST_F(EtcdStoreTest, WatchClosedDuringAnOutageEndsPromptly) {
  auto store = must_open({etcd_.endpoint()}, fast_options(300ms));
  auto w = store->watch("/q/", 0);
  ASSERT_TRUE(w);
  ASSERT_TRUE(store->create("/q/a", "v"));
  auto first = collect(**w, 10s, at_least(1));  // the stream is up
  ASSERT_TRUE(first) << first.error().message;
  etcd_.kill9();
  auto quiet = collect(**w, 2s, [](const auto&) { return false; });
  ASSERT_TRUE(quiet) << quiet.error().message;
  EXPECT_TRUE(quiet->empty());

  const auto start = Clock::now();
  store.reset();
  auto after = (*w)->next(5s);
  ASSERT_FALSE(after);
  EXPECT_EQ(after.error().code, Errc::kCancelled) << after.error().message;
  w->reset();  // joins the reader thread
  EXPECT_LT(Clock::now() - start, 1s);
}

TEST_F(EtcdStoreTest, WatchOutlivesItsStoreAndReportsCancelled) {
  auto store = must_open({etcd_.endpoint()});
  auto w = store->watch("/o/", 0);
  ASSERT_TRUE(w);
  ASSERT_TRUE(store->create("/o/a", "v"));
  auto evs = collect(**w, 10s, at_least(1));
  ASSERT_TRUE(evs);
  store.reset();
  auto after = (*w)->next(5s);
  ASSERT_FALSE(after);
  EXPECT_EQ(after.error().code, Errc::kCancelled);
  w->reset();  // joins the reader thread
}

TEST_F(EtcdStoreTest, ConcurrentWritersGetDistinctRevisions) {
  auto store = must_open({etcd_.endpoint()});
  constexpr int kThreads = 16, kPerThread = 40;
  std::mutex mu;
  std::set<Revision> revs;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto kv = store->create("/p/" + std::to_string(t) + "/" + std::to_string(i), "v");
        ASSERT_TRUE(kv) << kv.error().message;
        std::lock_guard lk(mu);
        revs.insert(kv->mod_revision);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(revs.size(), static_cast<size_t>(kThreads * kPerThread));
  auto l = store->list("/p/");
  ASSERT_TRUE(l);
  EXPECT_EQ(l->items.size(), static_cast<size_t>(kThreads * kPerThread));
}


}  // namespace
}  // namespace kos::store
