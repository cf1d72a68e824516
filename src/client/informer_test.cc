// Informers against a real API server (in process, on the embedded store): consistency
// under random churn, forced connection drops and re-lists; no leaks.
#include "client/informer.h"

#include <algorithm>

#include <dirent.h>

#include <random>
#include <set>

#include <gtest/gtest.h>

#include "client/test_server.h"
#include "common/http_server.h"
#include "common/metrics.h"

namespace kos::client {
namespace {

using namespace std::chrono_literals;

size_t count_dir(const char* path) {
  size_t n = 0;
  if (DIR* d = opendir(path)) {
    while (auto* e = readdir(d))
      if (e->d_name[0] != '.') ++n;
    closedir(d);
  }
  return n;
}

class InformerTest : public testing::ApiServerTest {};

api::NetworkAttachment na(const std::string& name, const std::string& node) {
  api::NetworkAttachment a;
  a.metadata.name = name;
  a.metadata.namespace_ = "ns";
  a.spec.node = node;
  a.spec.subnet = "s1";
  return a;
}

int64_t rv_of(const ObjectPtr& o) { return std::stoll(api::meta(*o).resource_version); }

// What the handlers were told, checked for consistency as it goes.
struct Shadow {
  std::mutex mu;
  std::map<std::string, int64_t> objects;  // key -> resourceVersion
  std::vector<std::string> problems;
  void problem(std::string p) {
    if (problems.size() < 20) problems.push_back(std::move(p));
  }
  EventHandlers handlers() {
    return EventHandlers{
        [this](const ObjectPtr& o) {
          std::lock_guard lk(mu);
          auto k = object_key(*o);
          if (objects.count(k)) problem("add of a present key " + k);
          objects[k] = rv_of(o);
        },
        [this](const ObjectPtr& old_obj, const ObjectPtr& new_obj) {
          std::lock_guard lk(mu);
          auto k = object_key(*new_obj);
          auto it = objects.find(k);
          if (it == objects.end()) return problem("update of an absent key " + k);
          if (it->second != rv_of(old_obj)) problem("update whose old state was not the last seen: " + k);
          if (rv_of(new_obj) <= rv_of(old_obj)) problem("update going back in time: " + k);
          it->second = rv_of(new_obj);
        },
        [this](const ObjectPtr& o, bool) {
          std::lock_guard lk(mu);
          auto k = object_key(*o);
          if (!objects.erase(k)) problem("delete of an absent key " + k);
        }};
  }
};

TEST_F(InformerTest, CachesEqualAFreshListAfterChurnDropsAndRelists) {
  auto writer = client();
  auto reader = client();
  constexpr int kNodes = 4;
  std::vector<std::unique_ptr<Informer>> informers;
  std::vector<std::unique_ptr<Shadow>> shadows;
  // One informer per node (field selector), one on everything.
  for (int i = 0; i <= kNodes; ++i) {
    InformerOptions o;
    o.kind = api::Kind::kNetworkAttachment;
    if (i < kNodes) o.field_selector = "spec.node=n" + std::to_string(i);
    informers.push_back(std::make_unique<Informer>(reader, o));
    shadows.push_back(std::make_unique<Shadow>());
    informers.back()->add_handlers(shadows.back()->handlers());
    informers.back()->start();
  }
  for (auto& inf : informers) ASSERT_TRUE(inf->wait_for_sync(10s));

  std::mt19937 rng(42);
  std::map<std::string, int> live;  // name -> node
  constexpr int kOps = 10000;
  for (int op = 0; op < kOps; ++op) {
    if (op % 1000 == 500) {
      // Cut every connection of the readers, then write more than the server's watch
      // window holds before they can resume: some must re-list.
      reader->transport()->drop_connections();
    }
    if (op == kOps / 2) {
      auto rev = store_->current_revision();
      ASSERT_TRUE(rev.has_value());
      ASSERT_TRUE(store_->compact(*rev).has_value());
    }
    std::string name = "na" + std::to_string(rng() % 300);
    auto it = live.find(name);
    int action = static_cast<int>(rng() % 3);
    if (it == live.end()) {
      int node = static_cast<int>(rng() % kNodes);
      auto r = writer->create(na(name, "n" + std::to_string(node)));
      ASSERT_TRUE(r.has_value()) << r.error().message;
      live[name] = node;
    } else if (action == 0) {
      ASSERT_TRUE(writer->remove<api::NetworkAttachment>("ns", name).has_value());
      live.erase(it);
    } else {
      auto patch = api::parse_json(R"({"metadata":{"labels":{"op":")" + std::to_string(op) + R"("}}})");
      auto r = writer->patch(ResourceRef::of(api::Kind::kNetworkAttachment), "ns", name,
                             PatchType::kMerge, *patch);
      ASSERT_TRUE(r.has_value()) << r.error().message;
    }
  }

  // Every informer converges to a fresh list of what it selects.
  for (size_t i = 0; i < informers.size(); ++i) {
    ListOptions lo;
    if (i < kNodes) lo.field_selector = "spec.node=n" + std::to_string(i);
    std::string rv;
    auto fresh = writer->list<api::NetworkAttachment>("", lo, &rv);
    ASSERT_TRUE(fresh.has_value());
    std::map<std::string, std::string> want;
    for (auto& o : *fresh) want[object_key(o.metadata.namespace_, o.metadata.name)] = o.metadata.resource_version;
    auto deadline = std::chrono::steady_clock::now() + 20s;
    std::map<std::string, std::string> got;
    while (std::chrono::steady_clock::now() < deadline) {
      got.clear();
      for (auto& o : informers[i]->indexer().list())
        got[object_key(*o)] = api::meta(*o).resource_version;
      if (got == want) break;
      std::this_thread::sleep_for(20ms);  // polling for the informer to catch up
    }
    EXPECT_EQ(got, want) << "informer " << i;
    std::lock_guard lk(shadows[i]->mu);
    EXPECT_TRUE(shadows[i]->problems.empty()) << shadows[i]->problems.front();
    std::map<std::string, std::string> seen;
    for (auto& [k, v] : shadows[i]->objects) seen[k] = std::to_string(v);
    EXPECT_EQ(seen, want) << "the handlers' view of informer " << i;
  }
  uint64_t lists = 0, watches = 0;
  for (auto& inf : informers) {
    lists += inf->stats().lists;
    watches += inf->stats().watches;
  }
  EXPECT_GT(lists, informers.size()) << "no informer had to re-list";
  EXPECT_GT(watches, informers.size()) << "no watch was resumed";
  // Through drops, resumes and re-lists, every stream's revisions only went forward.
  for (auto& inf : informers) EXPECT_EQ(inf->stats().out_of_order, 0u);
  for (auto& inf : informers) inf->stop();
}

// A server that sends an event from the past (a duplicate, or a lagging server's after a
// resume) is noticed: counted in the informer's stats and in
// kos_informer_out_of_order_events_total.
TEST(InformerOrder, AnEventThatDoesNotAdvanceTheRevisionIsCounted) {
  auto event = [](const char* type, const char* name, int rv) {
    return std::make_shared<const std::string>(
        std::string(R"({"type":")") + type +
        R"(","object":{"apiVersion":"network.example.com/v1alpha1","kind":"NetworkAttachment","metadata":{"name":")" +
        name + R"(","namespace":"ns","resourceVersion":")" + std::to_string(rv) +
        R"("},"spec":{"node":"n","subnet":"s"}}})" + "\n");
  };
  http::ServerOptions so;
  so.port = 0;
  auto server = http::Server::start(so, [&](const http::Request& req, const http::Peer&) -> http::Reply {
    std::string target(req.target());
    if (target.find("watch=") == std::string::npos)
      return http::Response{200, "application/json",
                            R"({"kind":"NetworkAttachmentList","apiVersion":"network.example.com/v1alpha1",)"
                            R"("metadata":{"resourceVersion":"5"},"items":[]})",
                            {}};
    http::StreamStart st;
    st.attach = [&](std::shared_ptr<http::Stream> s) {
      s->write(event("ADDED", "a", 6));
      s->write(event("MODIFIED", "a", 8));
      s->write(event("MODIFIED", "a", 7));  // from the past
      s->write(event("ADDED", "b", 8));     // a duplicate revision
      s->write(event("DELETED", "a", 9));
    };
    return st;
  });
  ASSERT_TRUE(server) << server.error().message;
  RestConfig c;
  c.server = "http://127.0.0.1:" + std::to_string((*server)->port());
  c.host = "127.0.0.1";
  c.port = (*server)->port();
  auto rc = std::make_shared<RestClient>(*Transport::create(c));
  auto counted = [] {
    return metrics::Registry::global()
        .counter("kos_informer_out_of_order_events_total", "", {"resource"})
        .with({"networkattachments"})
        .value();
  };
  const double before = counted();
  InformerOptions o;
  o.watch_list = false;
  Informer inf(rc, o);
  inf.start();
  ASSERT_TRUE(inf.wait_for_sync(5s));
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (inf.stats().events < 5 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(inf.stats().events, 5u);
  EXPECT_EQ(inf.stats().out_of_order, 2u);
  EXPECT_EQ(counted() - before, 2.0);
  inf.stop();
  rc->transport()->shutdown();
  (*server)->stop();
}

TEST_F(InformerTest, StartingAndStoppingInformersLeavesNothingBehind) {
  for (bool http2 : {true, false}) {
  SCOPED_TRACE(http2 ? "HTTP/2" : "HTTP/1.1");
  size_t threads_before = count_dir("/proc/self/task");
  size_t fds_before = count_dir("/proc/self/fd");
  {
    TransportOptions to;
    to.http2 = http2;
    auto c = client(0, to);
    std::vector<std::unique_ptr<Informer>> informers;
    for (int i = 0; i < 100; ++i) {
      InformerOptions o;
      o.field_selector = "spec.node=node" + std::to_string(i);
      informers.push_back(std::make_unique<Informer>(c, o));
      informers.back()->start();
    }
    for (auto& inf : informers) ASSERT_TRUE(inf->wait_for_sync(10s));
    // The informers synced with a WatchList: their watches are open. HTTP/2 carries them
    // all on one connection; HTTP/1.1 needs one each.
    if (http2)
      EXPECT_EQ(c->transport()->open_connections(), 1u);
    else
      EXPECT_GE(c->transport()->open_connections(), 100u);
    for (auto& inf : informers) inf->stop();
    informers.clear();
    c->transport()->shutdown();
    EXPECT_EQ(c->transport()->open_connections(), 0u);
  }
  // The server closes its side asynchronously; its threads are pooled and not counted
  // as new. Only the client's threads and sockets are compared.
  EXPECT_EQ(count_dir("/proc/self/task"), threads_before);
  size_t fds_after = count_dir("/proc/self/fd");
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (fds_after > fds_before && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);  // the server's end of each socket closes after ours
    fds_after = count_dir("/proc/self/fd");
  }
  EXPECT_EQ(fds_after, fds_before);
  }
}

TEST_F(InformerTest, IndexesFollowUpdates) {
  auto c = client();
  InformerOptions o;
  Informer inf(c, o);
  inf.indexer().add_index("node", [](const api::AnyObject& obj) {
    return std::vector<std::string>{std::get<api::NetworkAttachment>(obj).spec.node};
  });
  inf.start();
  ASSERT_TRUE(inf.wait_for_sync(10s));
  ASSERT_TRUE(c->create(na("a", "n1")).has_value());
  ASSERT_TRUE(c->create(na("b", "n1")).has_value());
  ASSERT_TRUE(c->create(na("c", "n2")).has_value());
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (inf.indexer().size() < 3 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);  // polling for the watch events
  EXPECT_EQ(inf.indexer().by_index("node", "n1").size(), 2u);
  EXPECT_EQ(inf.indexer().by_index("node", "n2").size(), 1u);
  ASSERT_TRUE(c->remove<api::NetworkAttachment>("ns", "a").has_value());
  while (inf.indexer().size() > 2 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(inf.indexer().by_index("node", "n1").size(), 1u);
  auto values = [&] {
    auto v = inf.indexer().index_values("node");
    std::sort(v.begin(), v.end());
    return v;
  };
  EXPECT_EQ(values(), (std::vector<std::string>{"n1", "n2"}));
  ASSERT_TRUE(c->remove<api::NetworkAttachment>("ns", "c").has_value());
  while (inf.indexer().size() > 1 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(values(), (std::vector<std::string>{"n1"}));  // a value nobody has is gone
  EXPECT_TRUE(inf.indexer().index_values("no-such-index").empty());
  inf.stop();
}

double na_requests(const std::string& verb) {
  return metrics::Registry::global()
      .counter("kos_apiserver_requests_total", "API requests by verb, resource and HTTP code.",
               {"verb", "resource", "code"})
      .with({verb, "networkattachments", "200"})
      .value();
}

// An informer syncs with one WatchList request (no LIST): the objects already there reach
// the handlers as additions and the indexer, then the changes follow; with watch_list off,
// it lists and watches.
TEST_F(InformerTest, SyncsWithOneWatchListRequest) {
  auto c = client();
  ASSERT_TRUE(c->create(na("a", "n1")).has_value());
  ASSERT_TRUE(c->create(na("b", "n2")).has_value());
  for (bool watch_list : {true, false}) {
    SCOPED_TRACE(watch_list ? "WatchList" : "LIST and WATCH");
    const double lists0 = na_requests("list"), watches0 = na_requests("watch");
    InformerOptions o;
    o.watch_list = watch_list;
    Informer inf(c, o);
    Shadow shadow;
    inf.add_handlers(shadow.handlers());
    inf.start();
    ASSERT_TRUE(inf.wait_for_sync(10s));
    EXPECT_EQ(inf.indexer().size(), 2u);
    {
      std::lock_guard lk(shadow.mu);
      EXPECT_EQ(shadow.objects.size(), 2u);
    }
    EXPECT_EQ(na_requests("list") - lists0, watch_list ? 0 : 1);
    // The stream goes on with the changes after the state.
    const std::string name = watch_list ? "c" : "d";
    ASSERT_TRUE(c->create(na(name, "n1")).has_value());
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (inf.indexer().size() < 3 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(10ms);  // polling for the watch event
    EXPECT_NE(inf.indexer().get("ns/" + name), nullptr);
    EXPECT_EQ(na_requests("list") - lists0, watch_list ? 0 : 1);
    EXPECT_EQ(na_requests("watch") - watches0, 1);
    EXPECT_EQ(inf.stats().lists, 1u);
    EXPECT_EQ(inf.stats().watches, 1u);
    std::lock_guard lk(shadow.mu);
    EXPECT_TRUE(shadow.problems.empty()) << shadow.problems.front();
    inf.stop();
    ASSERT_TRUE(c->remove<api::NetworkAttachment>("ns", name).has_value());
  }
}

TEST_F(InformerTest, RestClientDecodesStatusErrors) {
  auto c = client();
  auto missing = c->get<api::Subnet>("ns", "nope");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, Errc::kNotFound);
  ASSERT_TRUE(c->create(na("x", "n1")).has_value());
  auto dup = c->create(na("x", "n1"));
  ASSERT_FALSE(dup.has_value());
  EXPECT_EQ(dup.error().code, Errc::kAlreadyExists);
  auto bad = na("y", "");
  auto invalid = c->create(bad);
  ASSERT_FALSE(invalid.has_value());
  EXPECT_EQ(invalid.error().code, Errc::kInvalid);
  ASSERT_FALSE(invalid.error().causes.empty());
  EXPECT_EQ(invalid.error().causes[0].field, "spec.node");
  auto cur = c->get<api::NetworkAttachment>("ns", "x");
  ASSERT_TRUE(cur.has_value());
  auto stale = *cur;
  cur->spec.post_delete_exec = {"true"};
  ASSERT_TRUE(c->update(*cur).has_value());
  stale.spec.post_delete_exec = {"false"};
  auto conflict = c->update(stale);
  ASSERT_FALSE(conflict.has_value());
  EXPECT_EQ(conflict.error().code, Errc::kConflict);
  DeleteOptions wrong;
  wrong.uid = "0000";
  auto pre = c->remove<api::NetworkAttachment>("ns", "x", wrong);
  ASSERT_FALSE(pre.has_value());
  EXPECT_EQ(pre.error().code, Errc::kConflict);
}

}  // namespace
}  // namespace kos::client
