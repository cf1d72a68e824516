// Monitoring acceptance tests: the shipped Prometheus configuration (deploy/prometheus)
// scrapes every KOS component, and the shipped Grafana dashboards (deploy/grafana) query
// only metrics and labels the components really export.
//
// Each test starts `kos apiserver` (embedded store, temporary directory),
// `kos controller-manager` and two `kos agent --fabric fake` (nodes n1, n2), each with
// --metrics-listen on a free loopback port; `kos simulate --nodes 1` too once that command
// exists. It then runs Debian's `prometheus` (a required test dependency: the tests fail
// without it) on a configuration generated from deploy/prometheus/prometheus.yml: the same
// jobs, the targets rewritten to this run's ports, a 1 s scrape interval. Every process is
// killed when the test ends, failed or not (KosProcess and ChildProcess destructors; the
// children also get SIGKILL if the test process dies).
#include <unistd.h>

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <boost/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "client/kubeconfig.h"
#include "client/rest_client.h"
#include "client/transport.h"
#include "test/controllers/harness.h"

namespace kos::obstest {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace json = boost::json;
using ctltest::KosProcess;
using ctltest::poll_until;

const fs::path kSourceDir = KOS_SOURCE_DIR;
constexpr const char* kPrometheus = PROMETHEUS_BINARY;
constexpr const char* kPromtool = PROMTOOL_BINARY;

// The families only the linux fabric registers (agents here run on the fake fabric), and
// the file that must define each of them, so a rename still fails the dashboard test.
const std::map<std::string, fs::path> kLinuxFabricOnly = {
    {"kos_fabric_netlink_messages_total", "src/fabric/linux/linux_fabric.cc"},
    {"kos_fabric_netlink_sends_total", "src/fabric/linux/linux_fabric.cc"},
    {"kos_fabric_netlink_errors_total", "src/fabric/linux/linux_fabric.cc"},
    {"kos_fabric_batches_total", "src/fabric/linux/linux_fabric.cc"},
    {"kos_fabric_unchanged_total", "src/fabric/linux/linux_fabric.cc"},
    {"kos_fabric_resyncs_total", "src/fabric/linux/linux_fabric.cc"},
};

// The histograms of the stages the "KOS Externals" dashboard follows, in order.
const std::vector<std::string> kStageHistograms = {
    "kos_subnet_validator_create_to_validated_seconds", "kos_ipam_write_to_addressed_seconds",
    "kos_agent_write_to_local_ifc_seconds", "kos_agent_write_to_remote_ifc_seconds",
    "kos_agent_write_to_status_seconds"};

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}


// GETs to one loopback port: plain HTTP, or as `kubeconfig` says (the API server's TLS
// and credentials).
class Http {
 public:
  explicit Http(int port, const std::string& kubeconfig = "") {
    client::RestConfig c;
    c.server = "http://127.0.0.1:" + std::to_string(port);
    c.host = "127.0.0.1";
    c.port = static_cast<uint16_t>(port);
    if (!kubeconfig.empty()) {
      auto k = client::load_kubeconfig(kubeconfig);
      if (!k) throw std::runtime_error("kubeconfig: " + k.error().message);
      c = *k;
    }
    auto t = client::Transport::create(c);
    if (!t) throw std::runtime_error("transport: " + t.error().message);
    transport_ = *t;
  }
  // The body of a 200 answer; nullopt (and the reason in `why`) otherwise.
  std::optional<std::string> get(const std::string& target, std::string* why = nullptr) {
    client::HttpRequest req;
    req.target = target;
    req.accept = "*/*";
    req.timeout = 10s;
    auto r = transport_->request_sync(req);
    if (!r) {
      if (why) *why = r.error().message;
      return std::nullopt;
    }
    if (r->status != 200) {
      if (why) *why = "HTTP " + std::to_string(r->status) + ": " + r->body.substr(0, 500);
      return std::nullopt;
    }
    return r->body;
  }

 private:
  std::shared_ptr<client::Transport> transport_;
};

// The families of a text exposition (# TYPE lines) and the label names seen on each
// family's samples (histogram samples are filed under the family, with `le`).
struct Exposition {
  std::map<std::string, std::string> types;            // family -> counter|gauge|histogram
  std::map<std::string, std::set<std::string>> labels;  // family -> label names on samples
};

Exposition parse_exposition(const std::string& text) {
  Exposition e;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream ls(line.substr(7));
      std::string name, type;
      ls >> name >> type;
      e.types[name] = type;
      continue;
    }
    if (line.empty() || line[0] == '#') continue;
    size_t end = line.find_first_of("{ ");
    std::string name = line.substr(0, end);
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      std::string s = suffix;
      if (name.size() > s.size() && name.ends_with(s) && e.types.count(name.substr(0, name.size() - s.size())) &&
          e.types[name.substr(0, name.size() - s.size())] == "histogram")
        name = name.substr(0, name.size() - s.size());
    }
    auto& ls = e.labels[name];
    if (end == std::string::npos || line[end] != '{') continue;
    // name{a="x",b="y\"z"} value
    size_t i = end + 1;
    while (i < line.size() && line[i] != '}') {
      size_t eq = line.find('=', i);
      if (eq == std::string::npos) break;
      ls.insert(line.substr(i, eq - i));
      i = eq + 2;  // past ="
      while (i < line.size() && line[i] != '"') i += line[i] == '\\' ? 2 : 1;
      i += 1;  // past the closing quote
      if (i < line.size() && line[i] == ',') ++i;
    }
  }
  return e;
}

// A PromQL expression with its string literals emptied ("..." -> ""), so names inside
// label values are not taken for metrics or labels.
std::string strip_strings(const std::string& expr) {
  std::string out;
  for (size_t i = 0; i < expr.size(); ++i) {
    char c = expr[i];
    out += c;
    if (c != '"' && c != '\'') continue;
    for (++i; i < expr.size() && expr[i] != c; ++i)
      if (expr[i] == '\\') ++i;
    if (i < expr.size()) out += c;
  }
  return out;
}

// The metric names an expression uses (every KOS and process metric is named kos_* or
// process_*; `up` is Prometheus' own).
std::set<std::string> metric_names(const std::string& expr) {
  std::set<std::string> out;
  static const std::regex re(R"((^|[^A-Za-z0-9_:])((kos|process)_[A-Za-z0-9_:]*|up)\b)");
  std::string s = strip_strings(expr);
  for (std::sregex_iterator it(s.begin(), s.end(), re), end; it != end; ++it) out.insert((*it)[2]);
  return out;
}

// The label names an expression uses: in by (...), without (...) and in {...} matchers.
std::set<std::string> label_names(const std::string& expr) {
  std::set<std::string> out;
  std::string s = strip_strings(expr);
  static const std::regex grouping(R"(\b(by|without|on|ignoring)\s*\(([^)]*)\))");
  static const std::regex matchers(R"(\{([^}]*)\})");
  static const std::regex ident(R"([A-Za-z_][A-Za-z0-9_]*)");
  static const std::regex matcher(R"(([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=))");
  for (std::sregex_iterator it(s.begin(), s.end(), grouping), end; it != end; ++it) {
    std::string inner = (*it)[2];
    for (std::sregex_iterator j(inner.begin(), inner.end(), ident); j != end; ++j) out.insert(j->str());
  }
  for (std::sregex_iterator it(s.begin(), s.end(), matchers), end; it != end; ++it) {
    std::string inner = (*it)[1];
    for (std::sregex_iterator j(inner.begin(), inner.end(), matcher); j != end; ++j) out.insert((*j)[1]);
  }
  return out;
}

struct DashboardQuery {
  std::string dashboard, panel, expr;
};

// Every target expression of every dashboard in deploy/grafana, with its panel's title.
// Also checks what makes a dashboard importable anywhere: a title, a uid, and every
// datasource reference templated (no uid of one particular Grafana).
std::vector<DashboardQuery> dashboard_queries(std::vector<std::string>& problems) {
  std::vector<DashboardQuery> out;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(kSourceDir / "deploy/grafana"))
    if (e.path().extension() == ".json") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  if (files.empty()) problems.push_back("no dashboards (*.json) in deploy/grafana");
  for (const auto& f : files) {
    json::value doc;
    try {
      doc = json::parse(read_file(f));
    } catch (const std::exception& e) {
      problems.push_back(f.filename().string() + ": not JSON: " + e.what());
      continue;
    }
    const auto& d = doc.as_object();
    std::string name = f.filename().string();
    if (!d.contains("title") || !d.contains("uid")) problems.push_back(name + ": no title or uid");
    bool has_ds_var = d.contains("__inputs");
    if (auto* t = d.if_contains("templating"))
      for (const auto& v : t->at("list").as_array())
        if (v.at("type") == "datasource") has_ds_var = true;
    if (!has_ds_var) problems.push_back(name + ": no datasource template variable (or __inputs)");
    size_t before = out.size();
    std::function<void(const json::value&, const std::string&)> walk = [&](const json::value& v,
                                                                             const std::string& panel) {
      if (v.is_array()) {
        for (const auto& x : v.as_array()) walk(x, panel);
        return;
      }
      if (!v.is_object()) return;
      const auto& o = v.as_object();
      std::string title = panel;
      if (auto* t = o.if_contains("title"); t && t->is_string()) title = std::string(t->as_string());
      if (auto* ds = o.if_contains("datasource"); ds && ds->is_object())
        if (auto* uid = ds->as_object().if_contains("uid");
            uid && (!uid->is_string() || !uid->as_string().starts_with("${")))
          problems.push_back(name + ": panel '" + title + "': datasource uid " + json::serialize(*uid) +
                             " is not a template variable");
      if (auto* e = o.if_contains("expr"); e && e->is_string())
        out.push_back({name, title, std::string(e->as_string())});
      for (const auto& [k, x] : o)
        if (k != "datasource") walk(x, title);
    };
    walk(d.at("panels"), "");
    if (out.size() == before) problems.push_back(name + ": no queries");
  }
  return out;
}

class Observability : public ::testing::Test {
 protected:
  void SetUp() override {
    // Required: the monitoring configuration is only tested with a real Prometheus.
    for (const char* tool : {kPrometheus, kPromtool})
      ASSERT_EQ(access(tool, X_OK), 0)
          << tool << " is missing: the observability tests need Prometheus (Debian package "
          << "`prometheus`; scripts/install-deps.sh installs it)";
    if (auto e = server_.start(); !e.empty()) FAIL() << e;
    auto rc = client::load_kubeconfig(server_.kubeconfig().string());
    ASSERT_TRUE(rc) << rc.error().message;
    ports_["kos-apiserver"] = {rc->port};
    client_ = server_.client();

    int cm_port = testing::free_loopback_port();
    ports_["kos-controller-manager"] = {cm_port};
    cm_ = ctltest::controller_manager(server_, "controller-manager", "subnet-validator,ipam", 2,
                                      {"--metrics-listen", "127.0.0.1:" + std::to_string(cm_port)});
    cm_->start();
    for (int i = 1; i <= 2; ++i) {
      std::string node = "n" + std::to_string(i);
      int port = testing::free_loopback_port();
      ports_["kos-agent"].push_back(port);
      agents_.push_back(std::make_unique<KosProcess>(
          "agent-" + node,
          std::vector<std::string>{"agent", "--kubeconfig", server_.credential("node", node).string(), "--fabric", "fake",
                                   "--node", node, "--host-ip", "10.0.0." + std::to_string(i), "--state-dir",
                                   (server_.dir() / ("state-" + node)).string(), "--workers", "2",
                                   "--metrics-listen", "127.0.0.1:" + std::to_string(port)},
          server_.dir() / ("agent-" + node + ".log")));
      agents_.back()->start();
    }
    // `kos simulate` joins once the command exists (it serves the kos_agent_* families).
    testing::RunOptions ro;
    ro.timeout = 20s;
    if (testing::run({ctltest::kKos, "simulate", "--help"}, ro).exit_code == 0) {
      int port = testing::free_loopback_port();
      ports_["kos-simulate"] = {port};
      simulate_ = std::make_unique<KosProcess>(
          "simulate",
          std::vector<std::string>{"simulate", "--kubeconfig", server_.kubeconfig().string(), "--nodes", "1", "--node-credentials", (server_.dir() / "data" / "pki").string(),
                                   "--metrics-listen", "127.0.0.1:" + std::to_string(port)},
          server_.dir() / "simulate.log");
      simulate_->start();
    }
    ASSERT_NO_FATAL_FAILURE(start_prometheus());
  }

  void TearDown() override {
    if (HasFailure()) std::cerr << logs();
  }

  // The logs of every process started, for failure messages.
  std::string logs() {
    std::string out = ctltest::logs({&server_.process(), cm_.get(), agents_.size() > 0 ? agents_[0].get() : nullptr,
                                     agents_.size() > 1 ? agents_[1].get() : nullptr, simulate_.get()});
    out += "\n---- prometheus (" + (prom_dir_.path() / "prometheus.log").string() + "), last lines ----\n";
    std::string p = read_file(prom_dir_.path() / "prometheus.log");
    return out + (p.size() > 3000 ? "..." + p.substr(p.size() - 3000) : p);
  }

  // deploy/prometheus/prometheus.yml with this run's targets and a 1 s scrape interval;
  // every job must be one this test knows how to serve.
  void write_config(const fs::path& to) {
    YAML::Node cfg = YAML::LoadFile((kSourceDir / "deploy/prometheus/prometheus.yml").string());
    cfg["global"]["scrape_interval"] = "1s";
    cfg["global"]["scrape_timeout"] = "1s";
    cfg["global"]["evaluation_interval"] = "1s";
    std::set<std::string> jobs;
    YAML::Node kept(YAML::NodeType::Sequence);
    for (auto sc : cfg["scrape_configs"]) {
      std::string job = sc["job_name"].as<std::string>();
      jobs.insert(job);
      ASSERT_TRUE(ports_.count(job) || job == "kos-simulate")
          << "deploy/prometheus/prometheus.yml has job " << job << ", which this test does not start";
      if (!ports_.count(job)) continue;  // kos simulate not built yet
      YAML::Node targets(YAML::NodeType::Sequence);
      for (int p : ports_[job]) targets.push_back("127.0.0.1:" + std::to_string(p));
      if (job == "kos-apiserver") {
        // The API server's TLS and a viewer's bearer token, as the file's comments say.
        ASSERT_TRUE(sc["tls_config"]["ca_file"] && sc["authorization"]["credentials_file"])
            << "the kos-apiserver job needs tls_config.ca_file and authorization.credentials_file";
        sc["tls_config"]["ca_file"] = (server_.dir() / "data" / "pki" / "ca.crt").string();
        const fs::path token = prom_dir_.path() / "kos-viewer.token";
        std::ofstream(token) << server_.token("viewer");
        sc["authorization"]["credentials_file"] = token.string();
      }
      YAML::Node sc_static(YAML::NodeType::Sequence);
      YAML::Node one;
      one["targets"] = targets;
      sc_static.push_back(one);
      sc["static_configs"] = sc_static;
      kept.push_back(sc);
    }
    for (const char* job : {"kos-apiserver", "kos-controller-manager", "kos-agent", "kos-simulate"})
      ASSERT_TRUE(jobs.count(job)) << "deploy/prometheus/prometheus.yml has no job " << job;
    cfg["scrape_configs"] = kept;
    YAML::Emitter em;
    em << cfg;
    std::ofstream(to) << em.c_str() << "\n";
  }

  void start_prometheus() {
    fs::path cfg = prom_dir_.path() / "prometheus.yml";
    ASSERT_NO_FATAL_FAILURE(write_config(cfg));
    auto check = testing::run({kPromtool, "check", "config", cfg.string()});
    ASSERT_EQ(check.exit_code, 0) << "generated configuration:\n"
                                  << read_file(cfg) << "\n" << ctltest::describe(check);
    prom_port_ = testing::free_loopback_port();
    fs::path log = prom_dir_.path() / "prometheus.log";
    // The shell only redirects the logs and then execs prometheus: the pid is its own.
    prometheus_ = std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{"/bin/sh", "-c", "exec \"$@\" >>'" + log.string() + "' 2>&1", "sh", kPrometheus,
                                 "--config.file=" + cfg.string(),
                                 "--storage.tsdb.path=" + (prom_dir_.path() / "tsdb").string(),
                                 "--web.listen-address=127.0.0.1:" + std::to_string(prom_port_)},
        /*capture_stdout=*/false);
    prom_ = std::make_unique<Http>(prom_port_);
    bool ready = poll_until(
        [&] {
          if (!prometheus_->running()) return true;
          return prom_->get("/-/ready").has_value();
        },
        30s);
    ASSERT_TRUE(prometheus_->running()) << "prometheus exited while starting";
    ASSERT_TRUE(ready) << "prometheus not ready within 30 s";
  }

  // Prometheus' answer to an instant query: data.result, or nullopt with the error.
  std::optional<json::array> query(const std::string& promql, std::string* why = nullptr) {
    auto body = prom_->get("/api/v1/query?query=" + client::url_escape(promql), why);
    if (!body) return std::nullopt;
    auto v = json::parse(*body);
    if (v.at("status") != "success") {
      if (why) *why = *body;
      return std::nullopt;
    }
    return v.at("data").at("result").as_array();
  }

  // The value of a one-sample query result; NaN if there is no single sample.
  double scalar(const std::string& promql) {
    auto r = query(promql);
    if (!r || r->size() != 1) return std::nan("");
    return std::stod(std::string(r->at(0).at("value").as_array().at(1).as_string()));
  }

  // Waits until Prometheus has scraped every target successfully; describes the targets
  // that are not up if that does not happen within `timeout`.
  std::string wait_all_up(std::chrono::milliseconds timeout) {
    std::string state;
    size_t want = 0;
    for (const auto& [_, ps] : ports_) want += ps.size();
    bool ok = poll_until(
        [&] {
          std::string why;
          auto body = prom_->get("/api/v1/targets?state=active", &why);
          if (!body) {
            state = "GET /api/v1/targets: " + why;
            return false;
          }
          auto doc = json::parse(*body);
          const auto& targets = doc.at("data").at("activeTargets").as_array();
          state.clear();
          size_t up = 0;
          for (const auto& t : targets) {
            std::string job(t.at("labels").at("job").as_string()), health(t.at("health").as_string());
            state += "  " + job + " " + std::string(t.at("scrapeUrl").as_string()) + " " + health + " " +
                     std::string(t.at("lastError").as_string()) + "\n";
            if (health == "up") ++up;
          }
          return targets.size() == want && up == want;
        },
        timeout, 200ms);
    return ok ? std::string() : "targets not all up within the time limit:\n" + state;
  }

  // Creates a Subnet on `vni` with one attachment on each of n1 and n2 (so each agent has
  // a local attachment and a remote one) and waits until both attachments are ready.
  void bring_up(const std::string& subnet, const std::string& cidr, uint32_t vni) {
    ASSERT_TRUE(client_->create(ctltest::make_subnet("obs", subnet, cidr, vni)));
    for (const char* node : {"n1", "n2"})
      ASSERT_TRUE(client_->create(ctltest::make_attachment("obs", subnet + "-" + node, subnet, node)));
    bool ready = poll_until(
        [&] {
          for (const char* node : {"n1", "n2"}) {
            auto na = client_->get<api::NetworkAttachment>("obs", subnet + "-" + node);
            if (!na || na->status.host_ip.empty()) return false;
          }
          return true;
        },
        30s);
    ASSERT_TRUE(ready) << "attachments of " << subnet << " not ready within 30 s";
  }

  // Waits until Prometheus has scraped at least `n` observations of every stage histogram.
  std::string wait_stage_counts(double n, std::chrono::milliseconds timeout) {
    std::string missing;
    bool ok = poll_until(
        [&] {
          missing.clear();
          for (const auto& h : kStageHistograms) {
            double v = scalar("sum(" + h + "_count)");
            if (!(v >= n)) missing += "  sum(" + h + "_count) = " + std::to_string(v) + "\n";
          }
          return missing.empty();
        },
        timeout, 250ms);
    return ok ? std::string() : "stage histograms below " + std::to_string(n) + " observations:\n" + missing;
  }

  ctltest::ApiServer server_;
  std::shared_ptr<client::RestClient> client_;
  std::unique_ptr<KosProcess> cm_;
  std::vector<std::unique_ptr<KosProcess>> agents_;
  std::unique_ptr<KosProcess> simulate_;
  std::map<std::string, std::vector<int>> ports_;  // job -> its targets' ports
  testing::TempDir prom_dir_{"kos-obs-prometheus"};
  std::unique_ptr<testing::ChildProcess> prometheus_;
  int prom_port_ = 0;
  std::unique_ptr<Http> prom_;
};

// The shipped configuration (only its targets and interval changed) scrapes every
// component, and the latency histograms of every stage are queryable as the dashboards
// query them: a percentile of a rate over the buckets.
TEST_F(Observability, PrometheusScrapesEveryComponent) {
  // The shipped file as it is, but for the CA and token files it names under /var/lib/kos
  // (promtool checks that they exist).
  std::string text = read_file(kSourceDir / "deploy/prometheus/prometheus.yml");
  for (const auto& [from, to] : {std::pair<std::string, fs::path>{"/var/lib/kos/pki/ca.crt", server_.dir() / "data" / "pki" / "ca.crt"},
                                 {"/var/lib/kos/prometheus.token", prom_dir_.path() / "kos-viewer.token"}}) {
    ASSERT_NE(text.find(from), std::string::npos) << "deploy/prometheus/prometheus.yml no longer names " << from;
    for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.string().size()))
      text.replace(at, from.size(), to.string());
  }
  const fs::path copy = prom_dir_.path() / "shipped.yml";
  std::ofstream(copy) << text;
  auto shipped = testing::run({kPromtool, "check", "config", copy.string()});
  EXPECT_EQ(shipped.exit_code, 0) << ctltest::describe(shipped);
  auto e = wait_all_up(30s);
  ASSERT_TRUE(e.empty()) << e;
  for (const auto& [job, ps] : ports_) {
    auto r = query("count(up{job=\"" + job + "\"} == 1)");
    ASSERT_TRUE(r && r->size() == 1) << job;
    EXPECT_EQ(std::stod(std::string(r->at(0).at("value").as_array().at(1).as_string())), static_cast<double>(ps.size()))
        << "targets of " << job << " up";
  }

  // Round 1 creates the series (a histogram without labels exports nothing before its
  // first observation); round 2, once Prometheus has seen round 1, makes them increase,
  // so a rate over the buckets is not zero.
  ASSERT_NO_FATAL_FAILURE(bring_up("s1", "10.91.0.0/24", 9101));
  e = wait_stage_counts(1, 30s);
  ASSERT_TRUE(e.empty()) << e;
  ASSERT_NO_FATAL_FAILURE(bring_up("s2", "10.92.0.0/24", 9102));
  e = wait_stage_counts(2, 30s);
  ASSERT_TRUE(e.empty()) << e;
  for (const auto& h : kStageHistograms) {
    std::string promql = "histogram_quantile(0.99, sum by (le) (rate(" + h + "_bucket[1m])))";
    double v = std::nan("");
    poll_until([&] { return std::isfinite(v = scalar(promql)); }, 10s, 250ms);
    EXPECT_TRUE(std::isfinite(v) && v > 0 && v < 60) << promql << " = " << v;
  }
  double api_p99 = scalar("histogram_quantile(0.99, sum by (le) (rate(kos_apiserver_request_duration_seconds_bucket[1m])))");
  EXPECT_TRUE(std::isfinite(api_p99) && api_p99 > 0) << "API request p99 = " << api_p99;
  EXPECT_GT(scalar("sum(kos_apiserver_open_watches)"), 0);
}

// Every query of every dashboard is valid PromQL (Prometheus evaluates it), names only
// metric families that some running component exports (or, for the linux fabric's
// counters, that its source defines), and groups or filters only by labels those families
// carry. A renamed metric or label fails here, not silently on a dashboard.
TEST_F(Observability, DashboardsQueryOnlyExistingMetrics) {
  std::vector<std::string> problems;
  auto queries = dashboard_queries(problems);
  EXPECT_TRUE(problems.empty()) << ::testing::PrintToString(problems);
  ASSERT_FALSE(queries.empty());

  // Let every component export its labelled series (an agent's informers, IPAM's locks).
  ASSERT_NO_FATAL_FAILURE(bring_up("s1", "10.91.0.0/24", 9101));
  auto e = wait_all_up(30s);
  ASSERT_TRUE(e.empty()) << e;

  Exposition all;
  for (const auto& [job, ps] : ports_)
    for (int p : ps) {
      std::string why;
      auto body = Http(p, job == "kos-apiserver" ? server_.kubeconfig().string() : "").get("/metrics", &why);
      ASSERT_TRUE(body) << job << " 127.0.0.1:" << p << "/metrics: " << why;
      auto one = parse_exposition(*body);
      for (const auto& [n, t] : one.types) all.types[n] = t;
      for (const auto& [n, ls] : one.labels) all.labels[n].insert(ls.begin(), ls.end());
    }
  const std::set<std::string> everywhere = {"le", "job", "instance", "__name__"};

  for (const auto& q : queries) {
    SCOPED_TRACE(q.dashboard + " / " + q.panel + ": " + q.expr);
    auto names = metric_names(q.expr);
    EXPECT_FALSE(names.empty()) << "the query names no kos_*, process_* or up metric";
    std::set<std::string> labels_known = everywhere;
    bool labels_checkable = true;
    for (std::string n : names) {
      if (n == "up") continue;
      if (!all.types.count(n))
        for (const char* suffix : {"_bucket", "_sum", "_count"})
          if (n.ends_with(suffix) && all.types.count(n.substr(0, n.size() - std::strlen(suffix))) &&
              all.types[n.substr(0, n.size() - std::strlen(suffix))] == "histogram")
            n = n.substr(0, n.size() - std::strlen(suffix));
      if (auto it = kLinuxFabricOnly.find(n); it != kLinuxFabricOnly.end()) {
        EXPECT_NE(read_file(kSourceDir / it->second).find("\"" + n + "\""), std::string::npos)
            << n << " is not defined in " << it->second;
        continue;
      }
      EXPECT_TRUE(all.types.count(n)) << "no running component exports " << n;
      if (!all.types.count(n)) {
        labels_checkable = false;
        continue;
      }
      if (all.labels.count(n)) {
        labels_known.insert(all.labels[n].begin(), all.labels[n].end());
      } else {
        labels_checkable = false;  // no samples yet: its labels are unknown
      }
    }
    if (labels_checkable) {
      for (const auto& l : label_names(q.expr))
        EXPECT_TRUE(labels_known.count(l)) << "label " << l << " is on none of the query's metrics";
    }

    std::string promql = q.expr;
    for (const char* var : {"$__rate_interval", "$__interval", "$__range"})
      for (size_t p = promql.find(var); p != std::string::npos; p = promql.find(var))
        promql.replace(p, std::strlen(var), "1m");
    EXPECT_EQ(promql.find('$'), std::string::npos) << "unknown template variable";
    std::string why;
    EXPECT_TRUE(query(promql, &why)) << "Prometheus refuses the query: " << why;
  }
}

}  // namespace
}  // namespace kos::obstest
