// A small end-to-end run: `kos apiserver`, `kos controller-manager` and
// `kos simulate --nodes 3` as processes, then `kos driver` creating 200 attachments on the
// three simulated nodes over four VNIs at 100/s, with ping tests (/bin/true) and the
// implementation log; then its exit code, summary, JSON and HTML report are checked, and
// so is what `kos simulate` serves. Then a short run with churn (a cap on live
// attachments, so the driver deletes as it creates).
#include <sys/wait.h>

#include <fstream>
#include <iostream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "agent/implementation_log.h"
#include "api/json.h"
#include "client/transport.h"
#include "test/controllers/harness.h"

namespace kos::ctltest {
namespace {

using namespace std::chrono_literals;

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// GET http://127.0.0.1:PORT/TARGET: the status and body (status 0 if it failed).
std::pair<unsigned, std::string> http_get(uint16_t port, const std::string& target) {
  client::RestConfig c;
  c.host = "127.0.0.1";
  c.port = port;
  c.server = "http://127.0.0.1:" + std::to_string(port);
  auto t = client::Transport::create(c);
  if (!t) return {0, t.error().message};
  client::HttpRequest req;
  req.target = target;
  req.accept = "*/*";
  req.timeout = 5s;
  auto r = (*t)->request_sync(req);
  (*t)->shutdown();
  if (!r) return {0, r.error().message};
  return {r->status, r->body};
}

// The value of the unlabelled sample `name` in a Prometheus text exposition (-1: absent).
double sample(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  return -1;
}

testing::RunResult kos_run(std::vector<std::string> args, std::chrono::seconds timeout = 60s) {
  args.insert(args.begin(), kKos);
  testing::RunOptions o;
  o.timeout = timeout;
  return testing::run(args, o);
}

TEST(DriverRun, TwoHundredAttachmentsOnThreeSimulatedNodes) {
  const auto t0 = Clock::now();
  ApiServer server;
  ASSERT_EQ(server.start(), "");
  auto cm = controller_manager(server, "controller-manager", "subnet-validator,ipam", 4);
  cm->start();
  KosProcess sim("simulate",
                 {"--log-level", "info", "simulate", "--kubeconfig", server.kubeconfig().string(), "--nodes", "3",
                  "--node-credentials", (server.dir() / "data" / "pki").string(),
                  "--metrics-listen", "127.0.0.1:0", "--allowed-programs", "/bin/true"},
                 server.dir() / "simulate.log");
  sim.start();
  // Its start line names the metrics port it bound.
  uint16_t port = 0;
  const std::regex started("simulate: started nodes=3 .*metrics=127\\.0\\.0\\.1:([0-9]+)");
  ASSERT_TRUE(poll_until(
      [&] {
        std::smatch m;
        std::string log = slurp(sim.log());
        if (!std::regex_search(log, m, started)) return !sim.running();
        port = static_cast<uint16_t>(std::stoi(m[1].str()));
        return true;
      },
      30s, 20ms));
  ASSERT_NE(port, 0) << logs({&server.process(), cm.get(), &sim});
  EXPECT_EQ(http_get(port, "/healthz").first, 200u);

  const std::string url = "http://127.0.0.1:" + std::to_string(port);
  const fs::path html = server.dir() / "report.html", json = server.dir() / "summary.json";
  auto r = kos_run({"--log-level", "warn", "driver", "--kubeconfig", server.kubeconfig().string(), "--node-prefix", "sim",
                    "--node-count", "3", "--vnis", "4", "--slots-top", "100", "--slots-exponent", "0.5", "--rate",
                    "100", "--count", "200", "--cooldown", "20s", "--stage-timeout", "20s", "--seed", "7",
                    "--agent-endpoints", url, "--ping", "--ping-program", "/bin/true", "--report", html.string(),
                    "--json", json.string(), "--no-progress"});
  ASSERT_EQ(r.exit_code, 0) << describe(r) << logs({&server.process(), cm.get(), &sim});

  // The summary table.
  EXPECT_TRUE(std::regex_search(r.out, std::regex("create call +200 +0 +0 ")) ) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("create -> ready +200 +0 +0 "))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("create -> implemented \\(all nodes\\) +200 +0 +0 "))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("create -> tested +200 +0 +0 "))) << r.out;
  std::cout << r.out;

  // The JSON summary.
  auto j = api::parse_json(slurp(json));
  ASSERT_TRUE(j) << slurp(json);
  const auto& o = j->as_object();
  EXPECT_EQ(o.at("measured_attachments").to_number<uint64_t>(), 200u);
  const auto& stages = o.at("stages").as_object();
  for (const char* s : {"create", "addressed", "ready", "implemented", "tested"}) {
    EXPECT_EQ(stages.at(s).as_object().at("count").to_number<uint64_t>(), 200u) << s;
    EXPECT_EQ(stages.at(s).as_object().at("failures").to_number<uint64_t>(), 0u) << s;
  }
  // Implemented on all nodes comes after the local interface and no earlier than ready's
  // prerequisites: its median is at least the addressed median; and every relevant node
  // (3 nodes, 4 VNIs, 200 attachments: nearly every attachment has some) programmed it.
  const auto& impl = stages.at("implemented").as_object();
  const auto& addressed = stages.at("addressed").as_object();
  EXPECT_GE(impl.at("p50_ms").to_number<double>(), addressed.at("p50_ms").to_number<double>());
  EXPECT_LT(impl.at("max_ms").to_number<double>(), 20000.0);
  const auto& rel = o.at("relevant_nodes").as_object();
  EXPECT_GT(rel.at("required").to_number<uint64_t>(), 200u);
  EXPECT_LE(rel.at("required").to_number<uint64_t>(), 400u);  // at most the 2 other nodes each
  EXPECT_EQ(rel.at("programmed").to_number<uint64_t>(), rel.at("required").to_number<uint64_t>());
  EXPECT_EQ(rel.at("dropped").to_number<uint64_t>(), 0u);
  EXPECT_GT(o.at("achieved_rate").to_number<double>(), 50.0);

  // The HTML report.
  std::string page = slurp(html);
  EXPECT_EQ(page.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(page.find("<svg"), std::string::npos);
  EXPECT_NE(page.find("<polyline"), std::string::npos);
  EXPECT_NE(page.find("create -&gt; implemented (all nodes)"), std::string::npos);

  // What simulate serves: the implementation log holds every local interface and remote
  // mapping.
  auto [st, body] = http_get(port, "/debug/implementations?since=0&limit=10000");
  ASSERT_EQ(st, 200u) << body;
  auto log = agent::page_from_json(body);
  ASSERT_TRUE(log) << body;
  size_t locals = 0;
  for (const auto& rec : log->items) locals += rec.what.kind == agent::Implemented::Kind::kLocal;
  EXPECT_EQ(locals, 200u);
  EXPECT_GE(log->items.size(), 200u + rel.at("required").to_number<uint64_t>());

  // Churn: at most 40 live, so the driver deletes the oldest before each create (after a
  // 1 s warm-up that fills the cap). Deletes are measured; an attachment deleted before a
  // stage counts as cancelled, never as failed. Every attachment is in one of 2 security
  // groups (each taking tcp 22 from its own members): create -> rules in force is measured.
  const fs::path churn_json = server.dir() / "churn.json", ledger = server.dir() / "ledger.jsonl";
  auto c = kos_run({"--log-level", "warn", "driver", "--kubeconfig", server.kubeconfig().string(), "--node-prefix",
                    "sim", "--node-count", "3", "--vnis", "3", "--slots-top", "30", "--rate", "100", "--warmup", "1s",
                    "--count", "150", "--max-live", "40", "--cooldown", "10s", "--seed", "8", "--agent-endpoints", url,
                    "--security-groups", "2", "--ledger", ledger.string(),
                    "--json", churn_json.string(), "--no-progress"});
  ASSERT_EQ(c.exit_code, 0) << describe(c) << logs({&server.process(), cm.get(), &sim});
  std::cout << c.out;
  auto cj = api::parse_json(slurp(churn_json));
  ASSERT_TRUE(cj);
  const auto& cs = cj->as_object().at("stages").as_object();
  auto num = [&](const char* stage, const char* what) { return cs.at(stage).as_object().at(what).to_number<uint64_t>(); };
  EXPECT_EQ(num("create", "count"), 150u);
  EXPECT_GE(num("delete", "count"), 140u);  // one per measured create, once the cap is reached
  EXPECT_EQ(num("delete", "failures"), 0u);
  // The ledger: a line per create and delete call (warm-up and clean-up included), each
  // delete of an attachment whose create was acknowledged before it, and every attachment
  // created deleted by the end.
  {
    std::ifstream in(ledger);
    std::set<std::string> created, deleted;
    size_t creates = 0, deletes = 0;
    for (std::string line; std::getline(in, line);) {
      auto l = api::parse_json(line);
      ASSERT_TRUE(l) << line;
      const auto& lo = l->as_object();
      const std::string op(lo.at("op").as_string()), name(lo.at("name").as_string());
      EXPECT_TRUE(lo.at("ok").as_bool()) << line;
      EXPECT_GT(lo.at("t_ms").to_number<int64_t>(), 1700000000000) << line;
      if (op == "create") {
        ++creates;
        created.insert(name);
      } else {
        ASSERT_EQ(op, "delete") << line;
        ++deletes;
        deleted.insert(name);
        EXPECT_TRUE(created.count(name)) << "deleted before its create was acknowledged: " << line;
      }
    }
    EXPECT_GE(creates, num("create", "count"));
    EXPECT_GE(deletes, num("delete", "count"));
    EXPECT_EQ(created, deleted);
  }
  EXPECT_TRUE(std::regex_search(c.out, std::regex("create -> rules in force +[0-9]+"))) << c.out;
  EXPECT_TRUE(std::regex_search(c.out, std::regex("create -> member \\(all users\\) +[0-9]+"))) << c.out;
  for (const char* s : {"addressed", "ready", "implemented", "in-force", "member"}) {
    EXPECT_EQ(num(s, "count") + num(s, "cancelled"), 150u) << s;
    EXPECT_EQ(num(s, "failures"), 0u) << s;
  }

  // The agents' metrics add up over the three of them, and the drivers' clean-ups leave
  // nothing behind.
  std::string metrics;
  EXPECT_TRUE(poll_until(
      [&] {
        metrics = http_get(port, "/metrics").second;
        return sample(metrics, "kos_agent_local_attachments") == 0 && sample(metrics, "kos_agent_remote_attachments") == 0;
      },
      20s));
  EXPECT_GE(sample(metrics, "kos_agent_write_to_local_ifc_seconds_count"), 200 + 150) << metrics;
  double irrelevant = sample(metrics, "kos_agent_irrelevant_events_total");  // absent until counted
  EXPECT_TRUE(irrelevant == -1 || irrelevant == 0) << irrelevant;
  EXPECT_EQ(sample(metrics, "kos_agent_irrelevant_member_events_total"), 0) << metrics;
  EXPECT_EQ(testing::metric_sum(metrics, "kos_informer_out_of_order_events_total"), 0) << metrics;
  EXPECT_EQ(sample(metrics, "kos_agent_member_watches"), 0) << "every member watch stopped with its groups' users";
  // What each node has programmed (/debug/fabric): nothing left on any of the three.
  auto [fst, fbody] = http_get(port, "/debug/fabric");
  ASSERT_EQ(fst, 200u) << fbody;
  auto fj = api::parse_json(fbody);
  ASSERT_TRUE(fj) << fbody;
  const auto& fnodes = fj->as_object().at("nodes").as_array();
  ASSERT_EQ(fnodes.size(), 3u) << fbody;
  for (const auto& n : fnodes) {
    EXPECT_TRUE(n.as_object().at("node").as_string().starts_with("sim-")) << fbody;
    EXPECT_TRUE(n.as_object().at("locals").as_array().empty()) << fbody;
    EXPECT_TRUE(n.as_object().at("remotes").as_array().empty()) << fbody;
  }

  // A clean stop.
  int status = sim.stop(10s);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << logs({&sim});
  EXPECT_NE(slurp(sim.log()).find("simulate: stopped nodes=3"), std::string::npos);
  EXPECT_LT(seconds_since(t0), 60.0);
}

TEST(DriverRun, BadFlagsAreRefused) {
  auto help = kos_run({"driver", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* flag : {"--rate", "--arrivals", "--warmup", "--cruise", "--cooldown", "--count", "--max-live",
                           "--lifetime", "--nodes", "--node-prefix", "--node-selector", "--ping", "--ping-program",
                           "--agent-endpoints", "--report", "--json", "--keep", "--slots-top", "--slots-exponent",
                           "--vnis", "--namespace"})
    EXPECT_NE(help.out.find(flag), std::string::npos) << flag;

  struct Case {
    std::vector<std::string> args;
    std::string message;
  } cases[] = {
      {{"driver", "--kubeconfig", "/nonexistent", "--rate", "10"}, "name the nodes"},
      {{"driver", "--nodes", "a", "--rate", "0"}, "--rate"},
      {{"driver", "--nodes", "a", "--cruise", "ten"}, "--cruise"},
      {{"driver", "--nodes", "a", "--ping"}, "--ping needs --ping-program"},
      {{"driver", "--nodes", "a", "--agent-endpoints", "localhost:1"}, "expected http://HOST:PORT"},
      {{"driver", "--nodes", "a", "--node-prefix", "sim", "--node-count", "2"}, "exclude each other"},
      {{"driver", "--nodes", "a", "--vnis", "0"}, "--vnis"},
      {{"driver", "--nodes", "a", "--slots-exponent", "-1"}, "exponent"},
      {{"simulate", "--nodes", "0"}, "--nodes"},
      {{"simulate", "--nodes", "2", "--fake-latency", "fast"}, "--fake-latency"},
  };
  for (const auto& c : cases) {
    auto r = kos_run(c.args, 20s);
    EXPECT_EQ(r.exit_code, 2) << describe(r);
    EXPECT_NE(r.err.find(c.message), std::string::npos) << describe(r);
  }
  // Flags CLI11 itself refuses.
  auto both = kos_run({"driver", "--nodes", "a", "--count", "5", "--cruise", "5s"});
  EXPECT_NE(both.exit_code, 0);
  auto arrivals = kos_run({"driver", "--nodes", "a", "--arrivals", "bursty"});
  EXPECT_NE(arrivals.exit_code, 0);
}

}  // namespace
}  // namespace kos::ctltest
