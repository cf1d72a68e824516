// kos apiserver: serves the KOS API on a store (embedded SQLite by default, or etcd).
#include <signal.h>

#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>

#include <spdlog/spdlog.h>

#include "apiserver/server.h"
#include "client/kubeconfig.h"
#include "pki/pki.h"
#include "cmd/commands.h"
#include "common/duration.h"
#include "store/compactor.h"
#include "store/metered_store.h"
#include "store/open.h"

namespace kos::cmd {
namespace {

struct Flags {
  std::string listen = "127.0.0.1:6443";
  std::string insecure_listen;
  std::string pki_dir;  // default: DATA_DIR/pki
  std::string tls_cert_file, tls_key_file, client_ca_file;
  std::vector<std::string> tls_sans;
  std::string token_file;  // default: PKI_DIR/tokens.csv
  std::string audit_path = "default";  // DATA_DIR/audit.log
  size_t audit_max_mib = 100;
  int audit_max_backups = 3;
  std::string etcd_ca, etcd_cert, etcd_key;
  double user_rps = 1000;
  int user_watches = 2000;
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

// The TLS set-up: the given files, or the cluster PKI in the PKI dir (created on first
// start). Fills opts.tls and the CA the written kubeconfig carries.
struct Security {
  std::string pki_dir;
  std::string ca_pem;
};

Result<Security> set_up_tls(const Flags& f, const std::string& host, apiserver::ServerOptions& opts) {
  Security sec;
  sec.pki_dir = f.pki_dir.empty() ? (std::filesystem::path(f.data_dir) / "pki").string() : f.pki_dir;
  http::TlsOptions tls;
  const bool given = !f.tls_cert_file.empty() || !f.tls_key_file.empty();
  if (given && (f.tls_cert_file.empty() || f.tls_key_file.empty()))
    return fail(Errc::kBadRequest, "--tls-cert-file and --tls-private-key-file go together");
  if (!given || f.client_ca_file.empty()) {
    std::vector<std::string> hosts = f.tls_sans;
    hosts.push_back(host);
    auto pki = pki::ensure_cluster_pki(sec.pki_dir, hosts);
    if (!pki) return fail(pki.error().code, "the cluster PKI in " + sec.pki_dir + ": " + pki.error().message);
    tls.cert_pem = pki->serving.cert_pem;
    tls.key_pem = pki->serving.key_pem;
    tls.client_ca_pem = pki->ca.cert_pem;
    sec.ca_pem = pki->ca.cert_pem;
    spdlog::info("apiserver: TLS from the cluster PKI dir={} ca={}", sec.pki_dir, pki->ca_cert_file());
  }
  if (given) {
    auto c = pki::read_file(f.tls_cert_file);
    if (!c) return fail(Errc::kNotFound, "--tls-cert-file: " + c.error().message);
    auto k = pki::read_file(f.tls_key_file);
    if (!k) return fail(Errc::kNotFound, "--tls-private-key-file: " + k.error().message);
    tls.cert_pem = *c;
    tls.key_pem = *k;
  }
  if (!f.client_ca_file.empty()) {
    auto ca = pki::read_file(f.client_ca_file);
    if (!ca) return fail(Errc::kNotFound, "--client-ca-file: " + ca.error().message);
    tls.client_ca_pem = *ca;
    if (sec.ca_pem.empty()) sec.ca_pem = *ca;
  }
  opts.tls = std::move(tls);
  return sec;
}

// The admin kubeconfig: the CA, and a client certificate for kos-admin (kos:admins) issued
// by the cluster CA.
Result<void> write_admin_kubeconfig(const std::string& path, const std::string& server,
                                    const std::optional<Security>& sec) {
  client::KubeconfigContent kc;
  kc.server = server;
  if (sec) {
    kc.ca_pem = sec->ca_pem;
    auto ca = pki::load_ca(sec->pki_dir);
    if (!ca) return fail(ca.error().code, "--write-kubeconfig needs the cluster CA's key to issue an admin certificate: " + ca.error().message);
    auto admin = apiserver::user_for_role("admin", "");
    pki::IssueOptions io;
    io.subject = {admin->name, admin->groups};
    auto cert = pki::issue(*ca, io);
    if (!cert) return fail(cert.error());
    kc.cert_pem = cert->cert_pem;
    kc.key_pem = cert->key_pem;
  }
  return client::write_kubeconfig(path, kc);
}

int run_apiserver(const Flags& f) {
  const bool insecure = !f.insecure_listen.empty();
  if (insecure && (!f.tls_cert_file.empty() || !f.client_ca_file.empty())) {
    std::fprintf(stderr, "kos apiserver: --insecure-listen serves plain HTTP: it takes no TLS files\n");
    return 2;
  }
  auto hp = split_host_port(insecure ? f.insecure_listen : f.listen);
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
  if (!f.etcd_ca.empty() || !f.etcd_cert.empty() || !f.etcd_key.empty()) {
    if (f.etcd_cert.empty() != f.etcd_key.empty()) {
      std::fprintf(stderr, "kos apiserver: --etcd-certfile and --etcd-keyfile go together\n");
      return 2;
    }
    store::OpenOptions::EtcdTls t;
    for (auto [flag, file, out] : {std::tuple{"--etcd-cafile", &f.etcd_ca, &t.ca_pem},
                                   std::tuple{"--etcd-certfile", &f.etcd_cert, &t.cert_pem},
                                   std::tuple{"--etcd-keyfile", &f.etcd_key, &t.key_pem}}) {
      if (file->empty()) continue;
      auto data = pki::read_file(*file);
      if (!data) {
        std::fprintf(stderr, "kos apiserver: %s: %s\n", flag, data.error().message.c_str());
        return 2;
      }
      *out = *data;
    }
    so.etcd_tls = std::move(t);
  }
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
  std::optional<Security> sec;
  if (!insecure) {
    auto s = set_up_tls(f, hp->first, opts);
    if (!s) {
      std::fprintf(stderr, "kos apiserver: %s\n", s.error().message.c_str());
      return 1;
    }
    sec = std::move(*s);
    opts.token_file = f.token_file.empty() ? pki::tokens_file(sec->pki_dir) : f.token_file;
    if (f.token_file.empty() && !std::filesystem::exists(opts.token_file))
      if (auto w = pki::write_file(opts.token_file, "", 0600); !w) {
        std::fprintf(stderr, "kos apiserver: %s\n", w.error().message.c_str());
        return 1;
      }
  } else {
    spdlog::warn("apiserver: --insecure-listen: plain HTTP, and requests without credentials act as an admin; for tests only");
    opts.token_file = f.token_file;
  }
  opts.limits.requests_per_second = f.user_rps;
  opts.limits.watches = f.user_watches;
  if (f.audit_path != "-" && !f.audit_path.empty()) {
    opts.audit.path = f.audit_path == "default" ? (std::filesystem::path(f.data_dir) / "audit.log").string() : f.audit_path;
    opts.audit.max_bytes = f.audit_max_mib << 20;
    opts.audit.max_backups = f.audit_max_backups;
  }
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
    if (auto r = write_admin_kubeconfig(f.kubeconfig, (*server)->url(), sec); !r) {
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
  c->add_option("--listen", f->listen,
                "HOST:PORT to serve HTTPS on (port 0: any free port). Clients authenticate with "
                "client certificates signed by the cluster CA or bearer tokens")
      ->capture_default_str();
  c->add_option("--insecure-listen", f->insecure_listen,
                "serve plain HTTP on HOST:PORT instead, where requests without credentials act "
                "as an admin: for tests only");
  c->add_option("--pki-dir", f->pki_dir,
                "the cluster CA and serving certificate, created on first start (default: "
                "DATA_DIR/pki); `kos credentials create` issues credentials from it");
  c->add_option("--tls-cert-file", f->tls_cert_file, "serving certificate (PEM) instead of the PKI dir's");
  c->add_option("--tls-private-key-file", f->tls_key_file, "the serving certificate's key (PEM)");
  c->add_option("--client-ca-file", f->client_ca_file,
                "CA (PEM) that client certificates must chain to (default: the PKI dir's CA)");
  c->add_option("--tls-san", f->tls_sans,
                "an extra DNS name or IP address for the generated serving certificate (repeatable)");
  c->add_option("--token-auth-file", f->token_file,
                "bearer tokens, one per line: token,user,uid,\"group1,group2\" (default: "
                "PKI_DIR/tokens.csv, re-read when it changes)");
  c->add_option("--store", f->store,
                "storage: sqlite:PATH or etcd:http(s)://HOST:PORT[,...] (default: sqlite in --data-dir)");
  c->add_option("--data-dir", f->data_dir, "directory of the embedded store")->capture_default_str();
  c->add_option("--etcd-cafile", f->etcd_ca, "etcd over TLS (etcd:https://...): the CA that signed etcd's certificate");
  c->add_option("--etcd-certfile", f->etcd_cert, "etcd over TLS: the client certificate (for etcd --client-cert-auth)");
  c->add_option("--etcd-keyfile", f->etcd_key, "etcd over TLS: the client certificate's key");
  c->add_option("--write-kubeconfig", f->kubeconfig,
                "write an admin kubeconfig for this server to FILE (the CA and an admin client "
                "certificate; for kubectl and kos components)");
  c->add_option("--audit-log-path", f->audit_path,
                "the audit log: a JSON line per mutating or denied request (default: "
                "DATA_DIR/audit.log; - for none)");
  c->add_option("--audit-log-maxsize", f->audit_max_mib, "MiB the audit log grows to before it is rotated")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--audit-log-maxbackup", f->audit_max_backups, "rotated audit logs kept (FILE.1 .. FILE.N)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  c->add_option("--max-requests-per-second-per-user", f->user_rps,
                "requests per second one user may make (a burst of twice that); more get 429 "
                "with Retry-After. Admins and controllers are exempt; 0 = no limit")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  c->add_option("--max-watches-per-user", f->user_watches,
                "watches one user may hold open at once; more get 429. Admins and controllers are exempt; 0 = no limit")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
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
