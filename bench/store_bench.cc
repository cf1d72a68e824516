// kos-bench-store: write throughput of both Store backends against their raw baselines,
// measured in one run on this machine, and watch delivery latency under that load.
//
//   raw SQLite:  one INSERT per transaction, WAL, synchronous=FULL (one fsync each)
//   embedded:    SqliteStore creates with 1 and 64 concurrent writers (group commit)
//   raw etcd:    Put over gRPC to the same etcd, with 1 and 64 concurrent clients
//   etcd store:  EtcdStore creates (Txn create-if-absent) with 1 and 64 writers
// Watch delivery latency = time the watcher received an event - time its write was
// acknowledged to the writer, over every create of the 64-writer runs.
//
// The etcd server is started by the benchmark on loopback ports chosen at run time in a
// temporary directory, and stopped at the end.
#include <grpcpp/grpcpp.h>
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <CLI/CLI.hpp>

#include "common/log.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "store/open.h"
#include "test/support/etcd_process.h"
#include "test/support/process.h"

namespace {

using Clock = std::chrono::steady_clock;
using kos::store::Revision;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Runs `op(thread, i)` `total` times spread over `threads` threads; returns ops/s.
template <class Op>
double run_parallel(int threads, int total, Op op) {
  std::atomic<int> next{0};
  std::atomic<int> errors{0};
  auto t0 = Clock::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      for (int i = next++; i < total; i = next++)
        if (!op(t, i)) ++errors;
    });
  for (auto& th : ts) th.join();
  double secs = seconds_since(t0);
  if (errors) std::fprintf(stderr, "  (%d operations failed)\n", errors.load());
  return (total - errors) / secs;
}

double raw_sqlite_rate(const std::string& path, int total) {
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
               "CREATE TABLE t(id INTEGER PRIMARY KEY, k BLOB, v BLOB)", nullptr, nullptr, nullptr);
  sqlite3_stmt* ins = nullptr;
  sqlite3_prepare_v2(db, "INSERT INTO t(k, v) VALUES (?1, ?2)", -1, &ins, nullptr);
  std::string value(512, 'x');
  auto t0 = Clock::now();
  for (int i = 0; i < total; ++i) {
    std::string k = "/raw/" + std::to_string(i);
    sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
    sqlite3_bind_blob(ins, 1, k.data(), static_cast<int>(k.size()), SQLITE_STATIC);
    sqlite3_bind_blob(ins, 2, value.data(), static_cast<int>(value.size()), SQLITE_STATIC);
    sqlite3_step(ins);
    sqlite3_reset(ins);
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  }
  double rate = total / seconds_since(t0);
  sqlite3_finalize(ins);
  sqlite3_close(db);
  return rate;
}

double raw_etcd_rate(const std::string& endpoint, int threads, int total, const std::string& tag) {
  auto channel = grpc::CreateChannel(endpoint.substr(7), grpc::InsecureChannelCredentials());
  auto stub = etcdserverpb::KV::NewStub(channel);
  std::string value(512, 'x');
  return run_parallel(threads, total, [&](int, int i) {
    etcdserverpb::PutRequest req;
    req.set_key("/raw/" + tag + "/" + std::to_string(i));
    req.set_value(value);
    etcdserverpb::PutResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return stub->Put(&ctx, req, &resp).ok();
  });
}

// Raw Txn with the shape of a create: If(mod_revision(key) == 0) Then(Put).
double raw_etcd_txn_rate(const std::string& endpoint, int threads, int total, const std::string& tag) {
  auto channel = grpc::CreateChannel(endpoint.substr(7), grpc::InsecureChannelCredentials());
  auto stub = etcdserverpb::KV::NewStub(channel);
  std::string value(512, 'x');
  return run_parallel(threads, total, [&](int, int i) {
    std::string key = "/rawtxn/" + tag + "/" + std::to_string(i);
    etcdserverpb::TxnRequest req;
    auto* cmp = req.add_compare();
    cmp->set_key(key);
    cmp->set_target(etcdserverpb::Compare::MOD);
    cmp->set_result(etcdserverpb::Compare::EQUAL);
    cmp->set_mod_revision(0);
    auto* put = req.add_success()->mutable_request_put();
    put->set_key(key);
    put->set_value(value);
    etcdserverpb::TxnResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return stub->Txn(&ctx, req, &resp).ok() && resp.succeeded();
  });
}

struct Percentiles {
  double p50 = 0, p99 = 0;
  size_t n = 0;
};

Percentiles percentiles(std::vector<double> v) {
  Percentiles p;
  p.n = v.size();
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  p.p50 = v[v.size() / 2];
  p.p99 = v[std::min(v.size() - 1, v.size() * 99 / 100)];
  return p;
}

struct StoreFigures {
  double one = 0, many = 0;
  Percentiles delivery;      // write acknowledged -> event received by the watcher
  Percentiles end_to_end;    // write requested -> event received by the watcher
};

// Creates with 1 writer, then with `writers` writers while a watcher measures delivery.
StoreFigures measure_store(kos::store::Store& s, const std::string& tag, int writers,
                           int total_one, int total_many) {
  StoreFigures f;
  std::string value(512, 'x');
  f.one = run_parallel(1, total_one, [&](int, int i) {
    return s.create("/bench/" + tag + "/one/" + std::to_string(i), value).has_value();
  });

  std::mutex mu;
  std::unordered_map<Revision, std::pair<Clock::time_point, Clock::time_point>> acked;
  std::unordered_map<Revision, Clock::time_point> received;
  acked.reserve(total_many);
  received.reserve(total_many);
  auto watch = s.watch("/bench/" + tag + "/many/", 0);
  if (!watch) {
    std::fprintf(stderr, "watch failed: %s\n", watch.error().message.c_str());
    return f;
  }
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    size_t got = 0;
    while (got < static_cast<size_t>(total_many)) {
      auto batch = (*watch)->next(std::chrono::milliseconds(200));
      auto now = Clock::now();
      if (!batch) break;
      if (batch->empty() && done) break;
      std::lock_guard lk(mu);
      for (auto& e : *batch) received.emplace(e.revision(), now);
      got += batch->size();
    }
  });
  f.many = run_parallel(writers, total_many, [&](int, int i) {
    auto start = Clock::now();
    auto kv = s.create("/bench/" + tag + "/many/" + std::to_string(i), value);
    auto now = Clock::now();
    if (!kv) return false;
    std::lock_guard lk(mu);
    acked.emplace(kv->mod_revision, std::pair{start, now});
    return true;
  });
  done = true;
  watcher.join();
  std::vector<double> lat, e2e;
  auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  for (auto& [rev, times] : acked) {
    auto it = received.find(rev);
    if (it == received.end()) continue;
    // An event can arrive before the writer thread sees its acknowledgement: that is 0.
    lat.push_back(std::max(0.0, ms(it->second - times.second)));
    e2e.push_back(ms(it->second - times.first));
  }
  if (lat.size() != acked.size())
    std::fprintf(stderr, "  watcher missed %zu of %zu events\n", acked.size() - lat.size(),
                 acked.size());
  f.delivery = percentiles(std::move(lat));
  f.end_to_end = percentiles(std::move(e2e));
  return f;
}

void print_latency(const std::string& name, const StoreFigures& f) {
  std::printf("%-44s p50 %.3f ms  p99 %.3f ms  (n=%zu)\n",
              (name + " watch delivery after ack").c_str(), f.delivery.p50, f.delivery.p99,
              f.delivery.n);
  std::printf("%-44s p50 %.3f ms  p99 %.3f ms\n", (name + " create request -> watch event").c_str(),
              f.end_to_end.p50, f.end_to_end.p99);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Measures KOS store write throughput against raw SQLite and raw etcd."};
  int writers = 64, ops_one = 2000, ops_many = 20000;
  bool skip_etcd = false;
  app.add_option("--writers", writers, "concurrent writers in the parallel runs")->capture_default_str();
  app.add_option("--ops-one", ops_one, "creates in the single-writer runs")->capture_default_str();
  app.add_option("--ops-many", ops_many, "creates in the parallel runs")->capture_default_str();
  app.add_flag("--skip-etcd", skip_etcd, "measure the embedded store only");
  std::string raw_etcd;
  app.add_option("--raw-etcd-only", raw_etcd,
                 "measure only raw etcd Put (1 and --writers clients) against this endpoint "
                 "(http://HOST:PORT; keys under /raw/), e.g. the etcd a scale run uses");
  CLI11_PARSE(app, argc, argv);
  (void)kos::log::init("warn");
  if (!raw_etcd.empty()) {
    double one = raw_etcd_rate(raw_etcd, 1, ops_one, "raw-one");
    double many = raw_etcd_rate(raw_etcd, writers, ops_many, "raw-many");
    std::printf("raw etcd Put (1 client): %.0f/s\n", one);
    std::printf("raw etcd Put (%d clients): %.0f/s\n", writers, many);
    return 0;
  }

  kos::testing::TempDir dir("kos-bench");
  std::printf("KOS store benchmark: %d writers, %d creates single, %d creates parallel, "
              "512-byte values, %u cores\n\n", writers, ops_one, ops_many,
              std::thread::hardware_concurrency());

  double raw_sqlite = raw_sqlite_rate((dir.path() / "raw.db").string(), ops_one);
  StoreFigures sq;
  {
    kos::store::OpenOptions o;
    o.compaction_interval = std::chrono::milliseconds(0);
    auto s = kos::store::open_store("sqlite:" + (dir.path() / "kos.db").string(), o);
    if (!s) {
      std::fprintf(stderr, "open sqlite: %s\n", s.error().message.c_str());
      return 1;
    }
    sq = measure_store(**s, "sqlite", writers, ops_one, ops_many);
  }
  std::printf("%-44s %12s %10s\n", "measurement", "rate", "ratio");
  std::printf("%-44s %10.0f/s %10s\n", "raw SQLite insert+fsync (1 thread)", raw_sqlite, "1.00");
  std::printf("%-44s %10.0f/s %9.2fx\n", "embedded store creates, 1 writer", sq.one, sq.one / raw_sqlite);
  std::printf("%-44s %10.0f/s %9.2fx\n", ("embedded store creates, " + std::to_string(writers) + " writers").c_str(), sq.many, sq.many / raw_sqlite);
  print_latency("embedded store", sq);
  std::fflush(stdout);

  if (!skip_etcd) {
    kos::testing::EtcdProcess etcd;
    double raw_one = raw_etcd_rate(etcd.endpoint(), 1, ops_one, "one");
    double raw_many = raw_etcd_rate(etcd.endpoint(), writers, ops_many, "many");
    double txn_many = raw_etcd_txn_rate(etcd.endpoint(), writers, ops_many, "many");
    auto s = kos::store::open_store("etcd:" + etcd.endpoint());
    if (!s) {
      std::fprintf(stderr, "open etcd: %s\n", s.error().message.c_str());
      return 1;
    }
    auto ed = measure_store(**s, "etcd", writers, ops_one, ops_many);
    std::printf("%-44s %10.0f/s %10s\n", "raw etcd Put (1 client)", raw_one, "1.00");
    std::printf("%-44s %10.0f/s %10s\n", ("raw etcd Put (" + std::to_string(writers) + " clients)").c_str(), raw_many, "1.00");
    std::printf("%-44s %10.0f/s %9.2fx\n", "etcd store creates, 1 writer", ed.one, ed.one / raw_one);
    std::printf("%-44s %10.0f/s %10s\n", ("raw etcd create-shaped Txn (" + std::to_string(writers) + " clients)").c_str(), txn_many, "");
    std::printf("%-44s %10.0f/s %9.2fx  (%.2fx the raw Txn)\n", ("etcd store creates, " + std::to_string(writers) + " writers").c_str(), ed.many, ed.many / raw_many, ed.many / txn_many);
    print_latency("etcd store", ed);
  }
  std::printf("\ngoals: embedded %d writers >= 5000/s; etcd store >= 0.5x raw etcd; watch p99 < 5 ms\n",
              writers);
  return 0;
}
