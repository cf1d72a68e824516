// The examples of `kos up --examples`: the YAML files of examples/ (the same ones the
// README applies with kubectl), applied through the API, then checked by pinging between
// guests: within a tenant's network across nodes (replies expected) and from one tenant
// to an address only the other tenant has (no reply expected: the VNIs isolate them even
// though their CIDRs are the same).
#pragma once

#include <boost/json.hpp>

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "api/types.h"
#include "client/rest_client.h"
#include "common/error.h"

namespace kos::up {

// A YAML stream ("---" separated documents) as JSON values, in order; empty documents are
// skipped. Plain scalars become numbers, booleans or null as YAML 1.2's core schema says;
// quoted ones stay strings. Errors name `source` and the line.
Result<std::vector<boost::json::value>> yaml_documents(const std::string& text, const std::string& source);

struct ExampleObject {
  api::Kind kind;
  std::string ns, name;
  boost::json::value json;
  std::string source;  // file it came from
};

// Every object of the *.yaml files in `dir`, files in name order. Errors: an unreadable
// file, bad YAML, or an object that is not a Subnet or NetworkAttachment of our group.
Result<std::vector<ExampleObject>> load_examples(const std::filesystem::path& dir);

// Creates the objects that do not exist (those that do are left as they are: a restart of
// kos up keeps them). With strip_execs, attachments lose postCreateExec/postDeleteExec
// (the fake fabric has no interfaces to hand to them). Returns how many were created.
Result<int> apply_examples(client::RestClient& c, const std::vector<ExampleObject>& objects, bool strip_execs);

// Waits until every example attachment is ready (an address, implemented on its node, and
// a postCreateExec, if it has one, that exited 0 and started at `execs_since` or later:
// after a restart the status still shows the previous run's), up to `timeout`, or until
// `cancelled`. Returns them; the error describes what is not ready.
Result<std::vector<api::NetworkAttachment>> wait_ready(client::RestClient& c, const std::vector<ExampleObject>& objects,
                                                       std::chrono::system_clock::time_point execs_since,
                                                       std::chrono::milliseconds timeout,
                                                       const std::function<bool()>& cancelled);

struct PingCheck {
  std::string from, to;  // "namespace/name"
  std::string from_node, to_node, from_netns, from_ip, to_ip;
  bool expect_reply = true;
  bool replied = false;
  bool ok() const { return replied == expect_reply; }
};

// The checks for ready attachments whose guest namespace is known (the last argument of a
// `kos-guest-netns add` postCreateExec): per VNI, from its first attachment to each other
// one on another node; per pair of VNIs, from the first's first attachment to an address
// of the second that the first does not have.
std::vector<PingCheck> plan_pings(const std::vector<api::NetworkAttachment>& ready);
// Runs them (`ip netns exec FROM ping`), filling `replied`: a check that expects a reply is
// retried for up to `settle`; those that expect none run once, after those.
void run_pings(std::vector<PingCheck>& checks, std::chrono::seconds settle = std::chrono::seconds(15));
// The results as a small table, one check per line.
std::string ping_table(const std::vector<PingCheck>& checks);

}  // namespace kos::up
