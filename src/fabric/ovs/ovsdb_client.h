// An OVSDB client (RFC 7047: JSON-RPC 1.0 over a stream socket), for the OVS fabric: it
// creates the bridge and ports and watches them. Its own code, not OVS's C library (Debian
// ships no OVS development package, and OVS's headers are not C++-clean).
//
// One connection to ovsdb-server (target "unix:PATH", its database socket). A reader thread
// parses the stream of JSON values (OVSDB sends them back to back, unframed), answers the
// server's "echo" keepalives, matches replies to calls by id and hands "update"
// notifications to the monitor's callback. Calls may come from any thread; each waits for
// its own reply. When the connection drops, pending calls fail with kUnavailable, later
// ones at once, and the disconnect callback runs; a new client is the reconnect.
//
// Callbacks run on the reader thread and must not call back into the client
// synchronously (post the work elsewhere): the reader would wait for itself.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <boost/json.hpp>

#include "common/error.h"

namespace kos::fabric::ovs {

class OvsdbClient {
 public:
  using Updates = std::function<void(const boost::json::object& table_updates)>;

  // kUnavailable when nobody listens at `target`, kInvalid for a malformed target.
  static Result<std::unique_ptr<OvsdbClient>> connect(const std::string& target, std::chrono::milliseconds timeout);
  ~OvsdbClient();  // closes the connection; pending calls fail with kCancelled
  OvsdbClient(const OvsdbClient&) = delete;
  OvsdbClient& operator=(const OvsdbClient&) = delete;

  // One JSON-RPC call; its "result", or its "error" as kInternal with the server's text.
  Result<boost::json::value> call(const std::string& method, boost::json::array params, std::chrono::milliseconds timeout);

  Result<std::vector<std::string>> list_dbs(std::chrono::milliseconds timeout);
  // "transact": the ops' results, one per op. An op that failed (the transaction was then
  // aborted by the server) is an error: kConflict for a failed "wait" or constraint
  // violation, kInvalid for the rest, with the op's index, error and details.
  Result<boost::json::array> transact(const std::string& db, boost::json::array ops, std::chrono::milliseconds timeout);
  // "monitor": the tables' current contents (as table-updates), then every change through
  // `fn`, until the connection ends. `requests` is RFC 7047's <monitor-requests>.
  Result<boost::json::object> monitor(const std::string& db, const std::string& id, boost::json::object requests,
                                      Updates fn, std::chrono::milliseconds timeout);

  bool connected() const { return connected_.load(); }
  // Runs once, on the reader thread, when the connection ends (not on destruction).
  void on_disconnect(std::function<void()> fn);

 private:
  explicit OvsdbClient(int fd);
  void read_loop();
  void handle(boost::json::value msg);
  bool send(const boost::json::object& msg);
  void fail_all(Errc code, const std::string& why);

  int fd_;
  std::atomic<bool> connected_{true};
  std::atomic<bool> closing_{false};
  std::thread reader_;
  std::mutex write_mu_;

  std::mutex mu_;
  std::condition_variable cv_;
  int64_t next_id_ = 1;
  struct Pending {
    std::optional<Result<boost::json::value>> reply;
  };
  std::map<int64_t, std::shared_ptr<Pending>> pending_;
  std::map<std::string, Updates> monitors_;  // monitor id (as JSON text) -> callback
  std::function<void()> on_disconnect_;
  std::string why_closed_;
};

// OVSDB's data encoding (RFC 7047 5.1), as the OVS fabric uses it.
// The condition "name == NAME": [["name", "==", NAME]].
boost::json::array where_name(const std::string& name);
// A map of strings: ["map", [[k, v], ...]].
boost::json::value ovsdb_map(const std::map<std::string, std::string>& m);
// A map of strings read back; anything else (an empty set, a malformed value) is empty.
std::map<std::string, std::string> parse_ovsdb_map(const boost::json::value& v);
// A string column's value; "" for anything else (e.g. the empty set of an unset optional).
std::string ovsdb_string(const boost::json::value& v);

}  // namespace kos::fabric::ovs
