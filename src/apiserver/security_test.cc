// The request pipeline's authentication, authorization and admission, in process: requests
// go to ApiServer::handle() with the peer a TLS handshake would have verified (a client
// certificate's CN and O) or a bearer token, on a server configured for TLS.
#include <filesystem>
#include <fstream>

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include "apiserver/server.h"
#include "common/clock.h"
#include "pki/pki.h"
#include "store/sqlite/sqlite_store.h"
#include "test/support/process.h"

namespace kos::apiserver {
namespace {

using namespace std::chrono_literals;
namespace json = boost::json;
namespace bhttp = boost::beast::http;

constexpr char kNa[] = "/apis/network.example.com/v1alpha1/namespaces/";

http::Peer cert(const std::string& user, std::vector<std::string> groups) {
  http::Peer p;
  p.tls = true;
  p.has_cert = true;
  p.cert_common_name = user;
  p.cert_organizations = std::move(groups);
  return p;
}
http::Peer node(const std::string& name) { return cert("kos:node:" + name, {"kos:nodes"}); }
http::Peer admin() { return cert("root", {"kos:admins"}); }
http::Peer controller() { return cert("cm", {"kos:controllers"}); }
http::Peer tenant(const std::string& ns) { return cert("t-" + ns, {"kos:tenant:" + ns}); }
http::Peer viewer() { return cert("v", {"kos:viewers"}); }

std::string attachment(const std::string& name, const std::string& node_name) {
  return R"({"apiVersion":"network.example.com/v1alpha1","kind":"NetworkAttachment","metadata":{"name":")" +
         name + R"("},"spec":{"subnet":"s1","node":")" + node_name + R"("}})";
}

class SecurityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store::SqliteOptions so;
    so.path = (dir_.path() / "kos.db").string();
    so.compaction_interval = 0ms;
    store_ = std::move(*store::SqliteStore::open(so));
    auto pki = pki::ensure_cluster_pki((dir_.path() / "pki").string(), {});
    ASSERT_TRUE(pki) << pki.error().message;
    ServerOptions opts;
    opts.port = 0;
    opts.worker_threads = 4;
    opts.tls = http::TlsOptions{pki->serving.cert_pem, pki->serving.key_pem, pki->ca.cert_pem};
    token_file_ = (dir_.path() / "tokens.csv").string();
    std::ofstream(token_file_) << "tok-admin,tokadmin,1,\"kos:admins\"\ntok-n2,kos:node:n2,2,\"kos:nodes\"\n";
    opts.token_file = token_file_;
    audit_path_ = (dir_.path() / "audit.log").string();
    opts.audit.path = audit_path_;
    auto s = ApiServer::start(*store_, opts);
    ASSERT_TRUE(s) << s.error().message;
    server_ = std::move(*s);
  }
  void TearDown() override {
    if (server_) server_->stop();
  }

  http::Response call(const http::Peer& peer, bhttp::verb method, const std::string& target,
                      const std::string& body = "", const std::string& content_type = "application/json",
                      const std::string& token = "") {
    http::Request req{method, target, 11};
    if (!body.empty()) {
      req.set(bhttp::field::content_type, content_type);
      req.body() = body;
      req.prepare_payload();
    }
    if (!token.empty()) req.set(bhttp::field::authorization, "Bearer " + token);
    auto r = server_->handle(req, peer);
    return std::get<http::Response>(r);
  }
  // Creates the attachment `name` on `node_name` in ns1 as the admin.
  json::object make_na(const std::string& name, const std::string& node_name) {
    auto r = call(admin(), bhttp::verb::post, std::string(kNa) + "ns1/networkattachments", attachment(name, node_name));
    EXPECT_EQ(r.status, 201u) << r.body;
    return json::parse(r.body).as_object();
  }
  // The attachment `name` with its status replaced by `status` (JSON), as a PUT body.
  std::string with_status(const json::object& na, const std::string& status) {
    json::object o = na;
    o["status"] = json::parse(status);
    return json::serialize(o);
  }

  kos::testing::TempDir dir_{"kos-security-test"};
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<ApiServer> server_;
  std::string token_file_;
  std::string audit_path_;
};

std::vector<json::object> audit_lines(const std::string& path) {
  std::vector<json::object> out;
  std::ifstream in(path);
  for (std::string l; std::getline(in, l);) out.push_back(json::parse(l).as_object());
  return out;
}

TEST_F(SecurityTest, RequestsWithoutCredentialsGet401ExceptHealthAndVersion) {
  http::Peer anonymous;
  anonymous.tls = true;
  auto r = call(anonymous, bhttp::verb::get, std::string(kNa) + "ns1/networkattachments");
  EXPECT_EQ(r.status, 401u) << r.body;
  EXPECT_NE(r.body.find("\"reason\":\"Unauthorized\""), std::string::npos) << r.body;
  EXPECT_EQ(call(anonymous, bhttp::verb::get, "/apis").status, 401u);
  EXPECT_EQ(call(anonymous, bhttp::verb::get, "/metrics").status, 401u);
  for (const char* p : {"/healthz", "/livez", "/readyz", "/version"})
    EXPECT_EQ(call(anonymous, bhttp::verb::get, p).status, 200u) << p;
  // A token that is not in the file is refused, not treated as anonymous.
  EXPECT_EQ(call(anonymous, bhttp::verb::get, "/healthz", "", "", "wrong").status, 401u);
}

TEST_F(SecurityTest, BearerTokensFromTheFileAuthenticateAndNewLinesTakeEffect) {
  http::Peer anonymous;
  anonymous.tls = true;
  auto r = call(anonymous, bhttp::verb::post, "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                R"({"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"})", "application/json", "tok-admin");
  ASSERT_EQ(r.status, 201u) << r.body;
  auto v = json::parse(r.body);
  EXPECT_EQ(v.at("status").at("userInfo").at("username"), "tokadmin");
  EXPECT_EQ(v.at("status").at("userInfo").at("groups"), json::array{"kos:admins"});
  EXPECT_EQ(call(anonymous, bhttp::verb::get, "/apis", "", "", "tok-new").status, 401u);
  // A token added to the file works at once: a token not found makes the server look at
  // the file again.
  std::ofstream(token_file_, std::ios::app) << "tok-new,newbie,3,\"kos:viewers\"\n";
  EXPECT_EQ(call(anonymous, bhttp::verb::get, "/apis", "", "", "tok-new").status, 200u);
  EXPECT_EQ(call(anonymous, bhttp::verb::get, std::string(kNa) + "ns1/subnets", "", "", "tok-new").status, 200u);
  EXPECT_EQ(call(anonymous, bhttp::verb::post, std::string(kNa) + "ns1/subnets", "{}", "application/json", "tok-new").status,
            403u);
}

TEST_F(SecurityTest, ANodeWritesOnlyTheAgentStatusOfItsOwnAttachments) {
  auto mine = make_na("mine", "n1");
  auto theirs = make_na("theirs", "n2");
  const std::string base = std::string(kNa) + "ns1/networkattachments/";

  // Its own attachment's status: the agent's fields.
  auto ok = call(node("n1"), bhttp::verb::put, base + "mine/status",
                 with_status(mine, R"({"hostIP":"192.168.0.1","ifcName":"kos1","macAddress":"aa:bb:cc:dd:ee:ff"})"));
  EXPECT_EQ(ok.status, 200u) << ok.body;
  mine = json::parse(ok.body).as_object();

  // Another node's attachment: 403 naming the rule.
  auto other = call(node("n1"), bhttp::verb::put, base + "theirs/status", with_status(theirs, R"({"hostIP":"192.168.0.1"})"));
  EXPECT_EQ(other.status, 403u) << other.body;
  EXPECT_NE(other.body.find("may write only attachments whose spec.node is n1"), std::string::npos) << other.body;
  auto merge = call(node("n1"), bhttp::verb::patch, base + "theirs/status", R"({"status":{"hostIP":"192.168.0.9"}})",
                    "application/merge-patch+json");
  EXPECT_EQ(merge.status, 403u) << merge.body;

  // IPAM fields of its own attachment: 403.
  auto ipam = call(node("n1"), bhttp::verb::patch, base + "mine/status", R"({"status":{"ipv4":"10.0.0.9","addressVNI":7}})",
                   "application/merge-patch+json");
  EXPECT_EQ(ipam.status, 403u) << ipam.body;
  EXPECT_NE(ipam.body.find("not IPAM fields"), std::string::npos) << ipam.body;

  // The spec (even its own), deletecollection, IPLocks, Subnets: 403.
  EXPECT_EQ(call(node("n1"), bhttp::verb::put, base + "mine", json::serialize(mine)).status, 403u);
  EXPECT_EQ(call(node("n1"), bhttp::verb::delete_, std::string(kNa) + "ns1/networkattachments").status, 403u);
  EXPECT_EQ(call(node("n1"), bhttp::verb::get, std::string(kNa) + "ns1/iplocks").status, 403u);
  EXPECT_EQ(call(node("n1"), bhttp::verb::post, std::string(kNa) + "ns1/iplocks", "{}").status, 403u);
  EXPECT_EQ(call(node("n1"), bhttp::verb::post, std::string(kNa) + "ns1/subnets",
                 R"({"metadata":{"name":"s9"},"spec":{"vni":9,"ipv4":"10.9.0.0/16"}})").status,
            403u);
  auto validated = call(node("n1"), bhttp::verb::patch, std::string(kNa) + "ns1/subnets/s1/status",
                        R"({"status":{"validated":true}})", "application/merge-patch+json");
  EXPECT_EQ(validated.status, 403u) << validated.body;

  // The CNI path: create and delete its own attachments, not another node's.
  EXPECT_EQ(call(node("n1"), bhttp::verb::post, std::string(kNa) + "ns1/networkattachments", attachment("cni1", "n1")).status,
            201u);
  auto steal = call(node("n1"), bhttp::verb::post, std::string(kNa) + "ns1/networkattachments", attachment("cni2", "n2"));
  EXPECT_EQ(steal.status, 403u) << steal.body;
  EXPECT_EQ(call(node("n1"), bhttp::verb::delete_, base + "theirs").status, 403u);
  EXPECT_EQ(call(node("n1"), bhttp::verb::delete_, base + "cni1").status, 200u);
  // The other node's attachment is untouched.
  auto still = call(admin(), bhttp::verb::get, base + "theirs");
  EXPECT_EQ(still.status, 200u);
  EXPECT_EQ(json::parse(still.body).as_object().if_contains("status")->as_object().size(), 0u) << still.body;
}

TEST_F(SecurityTest, ANodeListsAndWatchesOnlyItsOwnAttachmentsAndTheVnisItHosts) {
  make_na("mine", "n1");
  // n1's attachment addressed on VNI 7 (the controller's write).
  auto addressed = call(controller(), bhttp::verb::patch, std::string(kNa) + "ns1/networkattachments/mine/status",
                        R"({"status":{"ipv4":"10.0.0.2","addressVNI":7,"routingVNI":70,"gateway":"10.0.0.1","prefixLength":24}})",
                        "application/merge-patch+json");
  ASSERT_EQ(addressed.status, 200u) << addressed.body;
  const std::string list = std::string("/apis/network.example.com/v1alpha1/networkattachments?fieldSelector=");
  EXPECT_EQ(call(node("n1"), bhttp::verb::get, list + "spec.node%3Dn1").status, 200u);
  EXPECT_EQ(call(node("n1"), bhttp::verb::get, list + "status.addressVNI%3D7,spec.node!%3Dn1").status, 200u);
  auto other_vni = call(node("n1"), bhttp::verb::get, list + "status.addressVNI%3D8");
  EXPECT_EQ(other_vni.status, 403u) << other_vni.body;
  EXPECT_NE(other_vni.body.find("hosts no attachment on VNI 8"), std::string::npos) << other_vni.body;
  // The attachments of the VPC it hosts (routing VNI 70), not of another.
  EXPECT_EQ(call(node("n1"), bhttp::verb::get, list + "status.routingVNI%3D70,spec.node!%3Dn1").status, 200u);
  auto other_vpc = call(node("n1"), bhttp::verb::get, list + "status.routingVNI%3D71");
  EXPECT_EQ(other_vpc.status, 403u) << other_vpc.body;
  EXPECT_NE(other_vpc.body.find("hosts no attachment in the VPC of routing VNI 71"), std::string::npos) << other_vpc.body;
  EXPECT_EQ(call(node("n1"), bhttp::verb::get, list + "spec.node%3Dn2").status, 403u);
  EXPECT_EQ(call(node("n1"), bhttp::verb::get, "/apis/network.example.com/v1alpha1/networkattachments").status, 403u);
  EXPECT_EQ(call(node("n1"), bhttp::verb::get, "/apis/network.example.com/v1alpha1/subnets").status, 200u);
}

TEST_F(SecurityTest, ATenantStaysInItsNamespaceAndNeverWritesStatusOrExecs) {
  const std::string a = std::string(kNa) + "ta/networkattachments";
  EXPECT_EQ(call(tenant("ta"), bhttp::verb::post, a, attachment("x", "n1")).status, 201u);
  EXPECT_EQ(call(tenant("ta"), bhttp::verb::get, a).status, 200u);
  auto cross = call(tenant("ta"), bhttp::verb::get, std::string(kNa) + "tb/networkattachments");
  EXPECT_EQ(cross.status, 403u);
  EXPECT_NE(cross.body.find("tenant ta may use namespace ta only"), std::string::npos) << cross.body;
  EXPECT_EQ(call(tenant("ta"), bhttp::verb::post, std::string(kNa) + "tb/networkattachments", attachment("y", "n1")).status,
            403u);
  EXPECT_EQ(call(tenant("ta"), bhttp::verb::get, "/apis/network.example.com/v1alpha1/networkattachments").status, 403u);
  EXPECT_EQ(call(tenant("ta"), bhttp::verb::patch, a + "/x/status", R"({"status":{"ipv4":"10.0.0.1"}})",
                 "application/merge-patch+json").status,
            403u);
  EXPECT_EQ(call(tenant("ta"), bhttp::verb::get, std::string(kNa) + "ta/iplocks").status, 200u);
  EXPECT_EQ(call(tenant("ta"), bhttp::verb::post, std::string(kNa) + "ta/iplocks", "{}").status, 403u);
  auto exec = call(tenant("ta"), bhttp::verb::post, a,
                   R"({"metadata":{"name":"e"},"spec":{"subnet":"s1","node":"n1","postCreateExec":["/bin/true"]}})");
  EXPECT_EQ(exec.status, 403u) << exec.body;
  EXPECT_NE(exec.body.find("postCreateExec"), std::string::npos) << exec.body;
  // The admin may; the node may for its own attachment.
  EXPECT_EQ(call(admin(), bhttp::verb::post, a,
                 R"({"metadata":{"name":"e1"},"spec":{"subnet":"s1","node":"n1","postCreateExec":["/bin/true"]}})").status,
            201u);
  EXPECT_EQ(call(node("n1"), bhttp::verb::post, a,
                 R"({"metadata":{"name":"e2"},"spec":{"subnet":"s1","node":"n1","postCreateExec":["/bin/true"]}})").status,
            201u);
  EXPECT_EQ(call(controller(), bhttp::verb::post, a,
                 R"({"metadata":{"name":"e3"},"spec":{"subnet":"s1","node":"n1","postCreateExec":["/bin/true"]}})").status,
            403u);
}

TEST_F(SecurityTest, ViewersReadAndUsersWithoutARoleDoNothing) {
  EXPECT_EQ(call(viewer(), bhttp::verb::get, "/apis/network.example.com/v1alpha1/iplocks").status, 200u);
  EXPECT_EQ(call(viewer(), bhttp::verb::get, "/metrics").status, 200u);
  EXPECT_EQ(call(viewer(), bhttp::verb::post, std::string(kNa) + "ns1/networkattachments", attachment("v", "n1")).status, 403u);
  auto nobody = cert("nobody", {"some-group"});
  EXPECT_EQ(call(nobody, bhttp::verb::get, "/apis").status, 200u);  // discovery
  auto r = call(nobody, bhttp::verb::get, "/apis/network.example.com/v1alpha1/subnets");
  EXPECT_EQ(r.status, 403u);
  EXPECT_NE(r.body.find("no KOS role"), std::string::npos) << r.body;
}

TEST_F(SecurityTest, SelfSubjectAccessReviewAnswersWhatTheRequestsGet) {
  auto review = [&](const http::Peer& p, const std::string& attrs) {
    auto r = call(p, bhttp::verb::post, "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                  R"({"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","spec":{"resourceAttributes":)" +
                      attrs + "}}");
    EXPECT_EQ(r.status, 201u) << r.body;
    return json::parse(r.body).at("status").at("allowed").as_bool();
  };
  EXPECT_TRUE(review(admin(), R"({"verb":"delete","group":"network.example.com","resource":"iplocks","namespace":"x"})"));
  EXPECT_FALSE(review(node("n1"), R"({"verb":"create","group":"network.example.com","resource":"subnets","namespace":"x"})"));
  EXPECT_TRUE(review(node("n1"), R"({"verb":"patch","group":"network.example.com","resource":"networkattachments","subresource":"status","namespace":"x"})"));
  EXPECT_TRUE(review(tenant("ta"), R"({"verb":"create","group":"network.example.com","resource":"subnets","namespace":"ta"})"));
  EXPECT_FALSE(review(tenant("ta"), R"({"verb":"create","group":"network.example.com","resource":"subnets","namespace":"tb"})"));
  EXPECT_TRUE(review(viewer(), R"({"verb":"list","group":"network.example.com","resource":"iplocks"})"));
  EXPECT_FALSE(review(viewer(), R"({"verb":"update","group":"network.example.com","resource":"iplocks","namespace":"x"})"));
  auto bad = call(admin(), bhttp::verb::post, "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                  R"({"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","spec":{}})");
  EXPECT_EQ(bad.status, 422u) << bad.body;
}

TEST_F(SecurityTest, ReviewsArriveAsProtobufFromKubectl) {
  // kubectl auth can-i's body: the "k8s\0" envelope around a SelfSubjectAccessReview with
  // resourceAttributes {namespace: "ta", verb: "create", group: "network.example.com",
  // resource: "subnets"}.
  auto field = [](int n, const std::string& v) {
    return std::string(1, static_cast<char>(n << 3 | 2)) + std::string(1, static_cast<char>(v.size())) + v;
  };
  std::string attrs = field(1, "ta") + field(2, "create") + field(3, "network.example.com") + field(5, "subnets");
  std::string raw = field(2, field(1, attrs));
  std::string type = field(1, "authorization.k8s.io/v1") + field(2, "SelfSubjectAccessReview");
  std::string body = std::string("k8s\0", 4) + field(1, type) + field(2, raw);
  auto r = call(tenant("ta"), bhttp::verb::post, "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body,
                "application/vnd.kubernetes.protobuf");
  ASSERT_EQ(r.status, 201u) << r.body;
  EXPECT_TRUE(json::parse(r.body).at("status").at("allowed").as_bool()) << r.body;
  auto garbage = call(tenant("ta"), bhttp::verb::post, "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                      std::string("k8s\0\x0a\xff", 6), "application/vnd.kubernetes.protobuf");
  EXPECT_EQ(garbage.status, 400u) << garbage.body;
}

TEST_F(SecurityTest, MutatingAndDeniedRequestsAreAudited) {
  make_na("audited", "n1");
  call(admin(), bhttp::verb::get, std::string(kNa) + "ns1/networkattachments/audited");  // a read: not audited
  call(node("n9"), bhttp::verb::delete_, std::string(kNa) + "ns1/networkattachments/audited");  // 403 (admission)
  call(tenant("ta"), bhttp::verb::get, std::string(kNa) + "tb/subnets");  // 403 (authorization)
  http::Peer anonymous;
  anonymous.tls = true;
  call(anonymous, bhttp::verb::get, "/apis");  // 401
  auto lines = audit_lines(audit_path_);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0].at("verb"), "create");
  EXPECT_EQ(lines[0].at("user"), "root");
  EXPECT_EQ(lines[0].at("groups"), json::array{"kos:admins"});
  EXPECT_EQ(lines[0].at("resource"), "networkattachments");
  EXPECT_EQ(lines[0].at("namespace"), "ns1");
  EXPECT_FALSE(lines[0].contains("name"));  // a create names no object in its URL
  EXPECT_EQ(lines[0].at("code"), 201);
  EXPECT_TRUE(lines[0].at("latencyMs").is_double());
  EXPECT_FALSE(lines[0].at("time").as_string().empty());
  EXPECT_EQ(lines[1].at("verb"), "delete");
  EXPECT_EQ(lines[1].at("user"), "kos:node:n9");
  EXPECT_EQ(lines[1].at("name"), "audited");
  EXPECT_EQ(lines[1].at("code"), 403);
  EXPECT_EQ(lines[2].at("verb"), "list");
  EXPECT_EQ(lines[2].at("namespace"), "tb");
  EXPECT_EQ(lines[2].at("code"), 403);
  EXPECT_EQ(lines[3].at("user"), "system:anonymous");
  EXPECT_EQ(lines[3].at("path"), "/apis");
  EXPECT_EQ(lines[3].at("code"), 401);
}

TEST(UserLimitsTest, ABucketPerUserRefillsWithTimeAndWatchesAreCounted) {
  FakeClock clock;
  UserLimits l({.requests_per_second = 10, .burst = 3, .watches = 2}, clock);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(l.take("a")) << i;
  auto retry = l.take("a");
  ASSERT_TRUE(retry);
  EXPECT_EQ(*retry, 1);
  EXPECT_FALSE(l.take("b"));  // another user has a bucket of its own
  clock.advance(200ms);        // two tokens back
  EXPECT_FALSE(l.take("a"));
  EXPECT_FALSE(l.take("a"));
  EXPECT_TRUE(l.take("a"));
  EXPECT_TRUE(l.start_watch("a"));
  EXPECT_TRUE(l.start_watch("a"));
  EXPECT_FALSE(l.start_watch("a"));
  EXPECT_TRUE(l.start_watch("b"));
  l.end_watch("a");
  EXPECT_TRUE(l.start_watch("a"));
  UserLimits off({}, clock);
  for (int i = 0; i < 1000; ++i) ASSERT_FALSE(off.take("a"));
}

TEST_F(SecurityTest, OverItsRateOrWatchesAUserGets429WithRetryAfterAndAdminsAndControllersAreExempt) {
  server_->stop();
  server_.reset();
  auto pki = pki::ensure_cluster_pki((dir_.path() / "pki").string(), {});
  ASSERT_TRUE(pki);
  ServerOptions opts;
  opts.port = 0;
  opts.tls = http::TlsOptions{pki->serving.cert_pem, pki->serving.key_pem, pki->ca.cert_pem};
  opts.limits = {.requests_per_second = 0.5, .burst = 3, .watches = 1};
  auto s = ApiServer::start(*store_, opts);
  ASSERT_TRUE(s) << s.error().message;
  server_ = std::move(*s);
  const std::string list = std::string(kNa) + "ta/subnets";
  for (int i = 0; i < 3; ++i) EXPECT_EQ(call(tenant("ta"), bhttp::verb::get, list).status, 200u);  // the burst
  auto r = call(tenant("ta"), bhttp::verb::get, list);
  EXPECT_EQ(r.status, 429u) << r.body;
  EXPECT_NE(r.body.find("\"reason\":\"TooManyRequests\""), std::string::npos) << r.body;
  bool has_retry = false;
  for (const auto& [k, v] : r.headers) has_retry = has_retry || (k == "Retry-After" && v == "2");
  EXPECT_TRUE(has_retry);
  EXPECT_EQ(call(tenant("tb"), bhttp::verb::get, std::string(kNa) + "tb/subnets").status, 200u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(call(admin(), bhttp::verb::get, list).status, 200u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(call(controller(), bhttp::verb::get, list).status, 200u);
  EXPECT_EQ(call(tenant("ta"), bhttp::verb::get, "/healthz").status, 200u);  // health is never throttled

  // Watches: the second concurrent one of a user is refused.
  http::Request w{bhttp::verb::get, std::string(kNa) + "tc/subnets?watch=1", 11};
  auto first = server_->handle(w, tenant("tc"));
  ASSERT_TRUE(std::holds_alternative<http::StreamStart>(first));
  auto second = server_->handle(w, tenant("tc"));
  ASSERT_TRUE(std::holds_alternative<http::Response>(second));
  EXPECT_EQ(std::get<http::Response>(second).status, 429u);
  std::get<http::StreamStart>(first).on_close();  // the first ends
  auto third = server_->handle(w, tenant("tc"));
  EXPECT_TRUE(std::holds_alternative<http::StreamStart>(third));
  std::get<http::StreamStart>(third).on_close();
}

TEST(AuditLogTest, RotatesBySizeKeepingTheNewestBackups) {
  kos::testing::TempDir dir{"kos-audit-test"};
  const std::string path = (dir.path() / "audit.log").string();
  auto log = AuditLog::open({path, 4096, 2});
  ASSERT_TRUE(log) << log.error().message;
  AuditEntry e;
  e.user = "u";
  e.verb = "create";
  e.resource = "subnets";
  e.code = 201;
  for (int i = 0; i < 200; ++i) {
    e.name = "s" + std::to_string(i);
    (*log)->record(e);
  }
  for (const auto& p : {path, path + ".1", path + ".2"}) {
    ASSERT_TRUE(std::filesystem::exists(p)) << p;
    EXPECT_LE(std::filesystem::file_size(p), 4096u) << p;
  }
  EXPECT_FALSE(std::filesystem::exists(path + ".3"));
  auto last = audit_lines(path);
  ASSERT_FALSE(last.empty());
  EXPECT_EQ(last.back().at("name"), "s199");  // the newest in the live file
  EXPECT_FALSE(AuditLog::open({path, 10, 1}));  // a cap too small to hold a line
}

}  // namespace
}  // namespace kos::apiserver
