// What the API-level integration tests share: a real `kos apiserver` child process on a port
// chosen at run time (on the embedded store or on a real etcd), a kubectl runner, table and
// JSON helpers, and the marker for checks that a known server bug makes fail.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/value.hpp>

#include "test/support/etcd_process.h"
#include "test/support/process.h"

namespace kos::testing {

// kEtcdTls: etcd with --client-cert-auth, reached over https with a client certificate.
enum class Backend { kSqlite, kEtcd, kEtcdTls };

// "sqlite" or "etcd": the suffix of the parameterized test names.
std::string backend_name(Backend b);
// For GoogleTest's messages (and ctest's test list).
void PrintTo(Backend b, std::ostream* os);

// `kos apiserver --listen 127.0.0.1:0` as a child process, on its own store: the embedded
// SQLite store in a temporary directory, or a real etcd started for it. The server writes
// a kubeconfig once it serves; start() waits for that file (bounded). The destructor stops
// the server (SIGTERM, then SIGKILL) and then etcd, also when an assertion failed.
//
// Threading: create, restart and destroy it on the test's main thread (the parent-death
// signals of the children are tied to the thread that starts them).
class ApiServerProcess {
 public:
  // `server_flags` are added to the `kos apiserver` command line, `global_flags` before
  // the subcommand (`kos --scheduling normal apiserver ...`).
  explicit ApiServerProcess(Backend backend, std::vector<std::string> server_flags = {},
                            std::vector<std::string> global_flags = {});
  ~ApiServerProcess();
  ApiServerProcess(const ApiServerProcess&) = delete;
  ApiServerProcess& operator=(const ApiServerProcess&) = delete;

  // Starts etcd (for kEtcd) and the server; waits until the kubeconfig is written. Returns
  // an error message, empty on success.
  std::string start();
  // Stops the server and starts it again on the same store (a new port and kubeconfig).
  std::string restart();
  void stop_server();

  Backend backend() const { return backend_; }
  // The running server's process id (-1 when it is not running).
  pid_t server_pid() const;
  // A scratch directory for the test's files; removed with this object.
  std::filesystem::path dir() const { return dir_.path(); }
  std::filesystem::path kubeconfig() const { return dir_.path() / "kubeconfig"; }
  // The server's URL, as written in the kubeconfig.
  std::string url() const { return url_; }
  // The --store flag value: "sqlite:PATH" or "etcd:http://127.0.0.1:PORT".
  std::string store_url() const;
  // The etcd under the server, or null on the embedded store.
  EtcdProcess* etcd() { return etcd_.get(); }

 private:
  std::string start_server();

  Backend backend_;
  std::vector<std::string> server_flags_;
  std::vector<std::string> global_flags_;
  TempDir dir_;
  std::unique_ptr<EtcdProcess> etcd_;
  std::unique_ptr<ChildProcess> server_;
  std::string url_;
};

// Runs one kubectl binary against a server: KUBECONFIG, HOME (for kubectl's caches) and
// TMPDIR (where `kubectl edit` keeps its files) point into the test's directory.
class Kubectl {
 public:
  Kubectl(std::string binary, std::filesystem::path kubeconfig, std::filesystem::path home);

  RunResult operator()(std::vector<std::string> args, RunOptions opts = {}) const;
  // The same with extra environment variables (e.g. KUBE_EDITOR).
  RunResult with_env(std::vector<std::pair<std::string, std::string>> env,
                     std::vector<std::string> args) const;
  // The argv of a kubectl command with --kubeconfig and --cache-dir flags instead of
  // environment variables, for a long-running ChildProcess (a watch, a waiting delete).
  std::vector<std::string> argv(std::vector<std::string> args) const;

 private:
  std::string binary_;
  std::filesystem::path kubeconfig_;
  std::filesystem::path home_;
};

// For failure messages: exit code, stdout and stderr.
std::string describe(const RunResult& r);

// kubectl's table output (`kubectl get`, `api-resources`): rows keyed by column header.
// Columns are cut at the header's column starts, so empty cells are read as "".
struct Table {
  std::vector<std::string> headers;
  std::vector<std::map<std::string, std::string>> rows;
  // The row whose `column` is `value`, or null.
  const std::map<std::string, std::string>* find(const std::string& column,
                                                 const std::string& value) const;
  // The values of one column, in order.
  std::vector<std::string> column(const std::string& name) const;
};
Table parse_table(const std::string& out);

// The whitespace-separated words of a line.
std::vector<std::string> words(std::string_view line);

// Parses JSON; a null value (and a test failure) if it is not JSON.
boost::json::value parse_json(const std::string& text);
// A member by dotted path ("metadata.name"), or null.
const boost::json::value* at(const boost::json::value& v, std::string_view path);
// The string at a dotted path, or "" (absent or not a string).
std::string str_at(const boost::json::value& v, std::string_view path);
// A copy of the value at a dotted path; null if absent.
boost::json::value json_at(const boost::json::value& v, std::string_view path);
// The integer at a dotted path, or -1 (absent or not an integer).
int64_t int_at(const boost::json::value& v, std::string_view path);

// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
bool eventually(const std::function<bool()>& condition,
                std::chrono::milliseconds timeout = std::chrono::seconds(30));

// Writes `content` to `path`; returns the path.
std::filesystem::path write_file(const std::filesystem::path& path, const std::string& content);
// A whole file ("" if it cannot be read).
std::string read_file(const std::filesystem::path& path);

// The directory of the tests' YAML files (test/integration/testdata).
std::filesystem::path testdata(const std::string& name);

}  // namespace kos::testing
