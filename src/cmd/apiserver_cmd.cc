// kos apiserver: serves the KOS API on a store (embedded SQLite by default, or etcd).
#include <signal.h>

#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>

#include <spdlog/spdlog.h>

#include "apiserver/server.h"
#include "cmd/commands.h"
#include "common/duration.h"
#include "store/compactor.h"
#include "store/metered_store.h"
#include "store/open.h"

namespace kos::cmd {
namespace {

struct Flags {
  std::string listen = "127.0.0.1:6443";
  std::string store;
  std::string data_dir = "/var/lib/kos";
  std::string kubeconfig;
  int io_threads = 2;
  int workers = 64;
  std::string compaction_interval = "5m";
  std::optional<int> compaction_minutes;  // the old flag, still accepted
  size_t watch_history = 10000;
  std::string watch_memory_budget = "1Gi";
};

// "1073741824", "512Mi", "1Gi", "64Ki": bytes, as Kubernetes quantities spell them.
Result<size_t> parse_bytes(const std::string& s) {
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0 || i > 15)
    return fail(Errc::kBadRequest, "\"" + s + "\": expected a byte count like 512Mi, 1Gi or 1048576");
  const size_t n = std::stoull(s.substr(0, i));
  const std::string unit = s.substr(i);
  size_t mult = 0;
  if (unit.empty()) mult = 1;
  else if (unit == "Ki") mult = size_t{1} << 10;
  else if (unit == "Mi") mult = size_t{1} << 20;
  else if (unit == "Gi") mult = size_t{1} << 30;
  if (mult == 0)
    return fail(Errc::kBadRequest, "\"" + s + "\": unknown unit \"" + unit + "\" (use Ki, Mi or Gi)");
  if (n > SIZE_MAX / mult) return fail(Errc::kBadRequest, "\"" + s + "\": too large");
  return n * mult;
}

Result<std::pair<std::string, uint16_t>> split_host_port(const std::string& s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return fail(Errc::kBadRequest, "--listen " + s + ": expected HOST:PORT");
  int port = -1;
  try {
    port = std::stoi(s.substr(colon + 1));
  } catch (...) {
  }
  if (port < 0 || port > 65535)
    return fail(Errc::kBadRequest, "--listen " + s + ": invalid port");
  return std::pair{s.substr(0, colon), static_cast<uint16_t>(port)};
}

Result<void> write_kubeconfig(const std::string& path, const std::string& server) {
  std::filesystem::path p(path);
  std::error_code ec;
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    if (!f) return fail(Errc::kInternal, "cannot write kubeconfig " + tmp);
    f << "apiVersion: v1\nkind: Config\nclusters:\n- name: kos\n  cluster:\n    server: " << server
      << "\ncontexts:\n- name: kos\n  context:\n    cluster: kos\n    user: kos\n"
         "    namespace: default\ncurrent-context: kos\nusers:\n- name: kos\n  user: {}\n";
    if (!f.flush()) return fail(Errc::kInternal, "cannot write kubeconfig " + tmp);
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) return fail(Errc::kInternal, "cannot write kubeconfig " + path + ": " + ec.message());
  return {};
}

int run_apiserver(const Flags& f) {
  auto hp = split_host_port(f.listen);
  if (!hp) {
    std::fprintf(stderr, "kos apiserver: %s\n", hp.error().message.c_str());
    return 2;
  }
  std::chrono::milliseconds compaction;
  if (f.compaction_minutes) {
    if (*f.compaction_minutes < 0) {
      std::fprintf(stderr, "kos apiserver: --compaction-interval-minutes must not be negative\n");
      return 2;
    }
    spdlog::warn("apiserver: --compaction-interval-minutes is deprecated; use --compaction-interval {}m",
                 *f.compaction_minutes);
    compaction = std::chrono::minutes(*f.compaction_minutes);
  } else {
    auto d = parse_duration(f.compaction_interval);
    if (!d) {
      std::fprintf(stderr, "kos apiserver: --compaction-interval: %s\n", d.error().message.c_str());
      return 2;
    }
    compaction = std::chrono::duration_cast<std::chrono::milliseconds>(*d);
    if (d->count() > 0 && compaction.count() == 0) {
      std::fprintf(stderr, "kos apiserver: --compaction-interval %s: at least 1ms (or 0 to disable)\n",
                   f.compaction_interval.c_str());
      return 2;
    }
  }
  auto budget = parse_bytes(f.watch_memory_budget);
  if (!budget) {
    std::fprintf(stderr, "kos apiserver: --watch-memory-budget %s\n", budget.error().message.c_str());
    return 2;
  }
  std::string url = f.store;
  if (url.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(f.data_dir, ec);
    if (ec) {
      std::fprintf(stderr, "kos apiserver: cannot create data dir %s: %s\n", f.data_dir.c_str(),
                   ec.message().c_str());
      return 1;
    }
    url = "sqlite:" + (std::filesystem::path(f.data_dir) / "kos.db").string();
  }
  store::OpenOptions so;
  so.compaction_interval = std::chrono::milliseconds(0);  // the Compactor below does it
  auto opened = store::open_store(url, so);
  if (!opened) {
    std::fprintf(stderr, "kos apiserver: %s\n", opened.error().message.c_str());
    return 1;
  }
  auto store = std::make_unique<store::MeteredStore>(std::move(*opened));
  // Block the stop signals before any thread starts, so only sigwait below sees them.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  apiserver::ServerOptions opts;
  opts.address = hp->first;
  opts.port = hp->second;
  opts.io_threads = f.io_threads;
  opts.worker_threads = f.workers;
  opts.cache.history = f.watch_history;
  opts.watch_memory_budget = *budget;
  auto server = apiserver::ApiServer::start(*store, opts);
  if (!server) {
    std::fprintf(stderr, "kos apiserver: %s\n", server.error().message.c_str());
    return 1;
  }
  store::Compactor compactor(*store, compaction);
  compactor.start();
  spdlog::info("apiserver: ready store={} url={} compaction-interval={}", url, (*server)->url(),
               compaction.count() ? format_duration(compaction) : std::string("off"));
  if (!f.kubeconfig.empty()) {
    if (auto r = write_kubeconfig(f.kubeconfig, (*server)->url()); !r) {
      std::fprintf(stderr, "kos apiserver: %s\n", r.error().message.c_str());
      return 1;
    }
    spdlog::info("apiserver: wrote kubeconfig path={}", f.kubeconfig);
  }
  int sig = 0;
  sigwait(&sigs, &sig);
  spdlog::info("apiserver: stopping signal={}", sig);
  compactor.stop();
  (*server)->stop();
  return 0;
}

}  // namespace

void add_apiserver_command(CLI::App& app, std::function<int()>& run) {
  auto f = std::make_shared<Flags>();
  auto* c = app.add_subcommand("apiserver",
                               "Serve the KOS API (network.example.com/v1alpha1) with Kubernetes "
                               "semantics, for kubectl and Kubernetes clients");
  c->add_option("--listen", f->listen, "HOST:PORT to listen on (port 0: any free port)")
      ->capture_default_str();
  c->add_option("--store", f->store,
                "storage: sqlite:PATH or etcd:http://HOST:PORT[,...] (default: sqlite in --data-dir)");
  c->add_option("--data-dir", f->data_dir, "directory of the embedded store")->capture_default_str();
  c->add_option("--write-kubeconfig", f->kubeconfig,
                "write a kubeconfig for this server to FILE (for kubectl and kos components)");
  c->add_option("--io-threads", f->io_threads, "threads serving sockets")->capture_default_str();
  c->add_option("--workers", f->workers, "threads handling requests")->capture_default_str();
  c->add_option("--watch-cache-history", f->watch_history,
                "recent events kept per resource for watches that resume from a "
                "resourceVersion (older ones get 410 Gone and relist)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--watch-memory-budget", f->watch_memory_budget,
                "bytes all watches together may have queued, initial states included (e.g. "
                "512Mi, 1Gi; 0 = no cap). Near the cap, a watch holding more than its share "
                "is closed with 410 Gone (its client relists); watches that keep up are not")
      ->capture_default_str();
  auto* interval = c->add_option("--compaction-interval", f->compaction_interval,
                "compact the store's history (embedded store and etcd) every DURATION, keeping "
                "one interval of it for watches that resume (e.g. 30s, 5m, 1h; 0 = never). "
                "With several API servers on one etcd, one of them compacts per interval")
      ->capture_default_str();
  c->add_option("--compaction-interval-minutes", f->compaction_minutes,
                "deprecated: --compaction-interval Nm")
      ->excludes(interval);
  c->callback([&run, f] { run = [f] { return run_apiserver(*f); }; });
}

}  // namespace kos::cmd
