#include "test/integration/harness.h"

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include <boost/json/parse.hpp>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

namespace kos::testing {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {

constexpr auto kServerStartTimeout = 30s;

std::string trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

}  // namespace

std::string backend_name(Backend b) {
  return b == Backend::kSqlite ? "sqlite" : b == Backend::kEtcd ? "etcd" : "etcd_tls";
}

void PrintTo(Backend b, std::ostream* os) { *os << backend_name(b); }

// ---- ApiServerProcess -------------------------------------------------------------------

ApiServerProcess::ApiServerProcess(Backend backend, std::vector<std::string> server_flags,
                                   std::vector<std::string> global_flags)
    : backend_(backend), server_flags_(std::move(server_flags)), global_flags_(std::move(global_flags)),
      dir_("kos-it") {}

pid_t ApiServerProcess::server_pid() const { return server_ ? server_->pid() : -1; }

ApiServerProcess::~ApiServerProcess() {
  stop_server();
  etcd_.reset();
}

std::string ApiServerProcess::store_url() const {
  if (backend_ != Backend::kSqlite) return "etcd:" + (etcd_ ? etcd_->endpoint() : std::string());
  return "sqlite:" + (dir_.path() / "data" / "kos.db").string();
}

std::string ApiServerProcess::start() {
  if (backend_ != Backend::kSqlite && !etcd_) {
    try {
      etcd_ = backend_ == Backend::kEtcdTls ? std::make_unique<EtcdProcess>(EtcdProcess::TlsTag{})
                                            : std::make_unique<EtcdProcess>();
    } catch (const std::exception& e) {
      return std::string("etcd did not start: ") + e.what();
    }
  }
  return start_server();
}

std::string ApiServerProcess::restart() {
  stop_server();
  return start_server();
}

void ApiServerProcess::stop_server() {
  if (!server_) return;
  server_->stop(5s);
  server_.reset();
}

std::string ApiServerProcess::start_server() {
  std::error_code ec;
  fs::remove(kubeconfig(), ec);
  fs::create_directories(dir_.path() / "data", ec);
  std::vector<std::string> argv = {KOS_BINARY};
  argv.insert(argv.end(), global_flags_.begin(), global_flags_.end());
  argv.insert(argv.end(), {"apiserver", "--listen", "127.0.0.1:0", "--data-dir", (dir_.path() / "data").string(),
                           "--write-kubeconfig", kubeconfig().string(), "--workers", "16"});
  if (backend_ != Backend::kSqlite) argv.insert(argv.end(), {"--store", store_url()});
  if (backend_ == Backend::kEtcdTls)
    argv.insert(argv.end(), {"--etcd-cafile", etcd_->ca_file().string(), "--etcd-certfile",
                             etcd_->client_cert_file().string(), "--etcd-keyfile", etcd_->client_key_file().string()});
  argv.insert(argv.end(), server_flags_.begin(), server_flags_.end());
  // stderr (the server's log) goes to the test's output.
  server_ = std::make_unique<ChildProcess>(argv, /*capture_stdout=*/false);
  const auto deadline = std::chrono::steady_clock::now() + kServerStartTimeout;
  while (!fs::exists(kubeconfig())) {
    if (!server_->running())
      return "kos apiserver exited while starting (store " + store_url() + "); see its log above";
    if (std::chrono::steady_clock::now() >= deadline)
      return "kos apiserver did not write " + kubeconfig().string() + " within 30 s";
    std::this_thread::sleep_for(10ms);  // polling for a file, bounded by the deadline
  }
  // The file is renamed into place complete; the server line holds the URL.
  std::istringstream in(read_file(kubeconfig()));
  std::string line;
  url_.clear();
  while (std::getline(in, line)) {
    auto pos = line.find("server: ");
    if (pos != std::string::npos) url_ = trim(line.substr(pos + 8));
  }
  if (url_.empty()) return "no server URL in the kubeconfig " + kubeconfig().string();
  return {};
}

// ---- Kubectl --------------------------------------------------------------------------

Kubectl::Kubectl(std::string binary, fs::path kubeconfig, fs::path home)
    : binary_(std::move(binary)), kubeconfig_(std::move(kubeconfig)), home_(std::move(home)) {
  std::error_code ec;
  fs::create_directories(home_, ec);
}

RunResult Kubectl::operator()(std::vector<std::string> args, RunOptions opts) const {
  std::vector<std::string> argv{binary_};
  argv.insert(argv.end(), args.begin(), args.end());
  opts.env.emplace_back("KUBECONFIG", kubeconfig_.string());
  opts.env.emplace_back("HOME", home_.string());
  opts.env.emplace_back("TMPDIR", home_.string());
  return run(argv, opts);
}

RunResult Kubectl::with_env(std::vector<std::pair<std::string, std::string>> env,
                            std::vector<std::string> args) const {
  RunOptions opts;
  opts.env = std::move(env);
  return (*this)(std::move(args), std::move(opts));
}

std::vector<std::string> Kubectl::argv(std::vector<std::string> args) const {
  std::vector<std::string> out{binary_, "--kubeconfig", kubeconfig_.string(), "--cache-dir",
                               (home_ / ".kube" / "cache").string()};
  out.insert(out.end(), args.begin(), args.end());
  return out;
}

std::string describe(const RunResult& r) {
  std::string out = "exit code " + std::to_string(r.exit_code);
  if (r.timed_out) out += " (timed out)";
  out += "\n--- stdout ---\n" + r.out + "\n--- stderr ---\n" + r.err + "\n";
  return out;
}

// ---- tables and JSON ------------------------------------------------------------------

const std::map<std::string, std::string>* Table::find(const std::string& column,
                                                      const std::string& value) const {
  for (const auto& r : rows) {
    auto it = r.find(column);
    if (it != r.end() && it->second == value) return &r;
  }
  return nullptr;
}

std::vector<std::string> Table::column(const std::string& name) const {
  std::vector<std::string> out;
  for (const auto& r : rows) {
    auto it = r.find(name);
    out.push_back(it == r.end() ? "" : it->second);
  }
  return out;
}

Table parse_table(const std::string& out) {
  Table t;
  std::istringstream in(out);
  std::string header;
  while (std::getline(in, header) && trim(header).empty()) {
  }
  if (trim(header).empty()) return t;
  std::vector<size_t> starts;
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i] != ' ' && (i == 0 || header[i - 1] == ' ')) {
      size_t end = header.find(' ', i);
      // Multi-word headers ("LAST SEEN") are joined by one space; columns by two or more.
      while (end != std::string::npos && end + 1 < header.size() && header[end + 1] != ' ')
        end = header.find(' ', end + 1);
      starts.push_back(i);
      t.headers.push_back(trim(header.substr(i, end == std::string::npos ? std::string::npos
                                                                          : end - i)));
      if (end == std::string::npos) break;
      i = end;
    }
  }
  std::string line;
  while (std::getline(in, line)) {
    if (trim(line).empty()) break;  // `get a,b` prints one table per kind
    std::map<std::string, std::string> row;
    for (size_t c = 0; c < starts.size(); ++c) {
      size_t b = starts[c];
      size_t e = c + 1 < starts.size() ? starts[c + 1] : std::string::npos;
      row[t.headers[c]] = b < line.size() ? trim(line.substr(b, e == std::string::npos
                                                                    ? std::string::npos
                                                                    : e - b))
                                          : "";
    }
    t.rows.push_back(std::move(row));
  }
  return t;
}

std::vector<std::string> words(std::string_view line) {
  std::vector<std::string> out;
  std::istringstream in{std::string(line)};
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

boost::json::value parse_json(const std::string& text) {
  boost::system::error_code ec;
  auto v = boost::json::parse(text, ec);
  if (ec) {
    ADD_FAILURE() << "not JSON (" << ec.message() << "):\n" << text;
    return nullptr;
  }
  return v;
}

const boost::json::value* at(const boost::json::value& v, std::string_view path) {
  const boost::json::value* cur = &v;
  while (!path.empty()) {
    auto dot = path.find('.');
    std::string_view part = path.substr(0, dot);
    const auto* o = cur->if_object();
    if (!o) return nullptr;
    cur = o->if_contains(boost::json::string_view(part.data(), part.size()));
    if (!cur) return nullptr;
    path = dot == std::string_view::npos ? std::string_view() : path.substr(dot + 1);
  }
  return cur;
}

std::string str_at(const boost::json::value& v, std::string_view path) {
  const auto* p = at(v, path);
  return p && p->is_string() ? std::string(p->get_string()) : std::string();
}

boost::json::value json_at(const boost::json::value& v, std::string_view path) {
  const auto* p = at(v, path);
  return p ? *p : boost::json::value(nullptr);
}

int64_t int_at(const boost::json::value& v, std::string_view path) {
  const auto* p = at(v, path);
  if (!p) return -1;
  if (p->is_int64()) return p->get_int64();
  if (p->is_uint64()) return static_cast<int64_t>(p->get_uint64());
  return -1;
}

// ---- misc -----------------------------------------------------------------------------

bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(20ms);  // bounded polling
  }
}

fs::path write_file(const fs::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::trunc);
  out << content;
  return path;
}

fs::path testdata(const std::string& name) { return fs::path(KOS_TESTDATA_DIR) / name; }


}  // namespace kos::testing
