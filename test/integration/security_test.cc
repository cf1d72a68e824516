// Security end to end, with unmodified kubectl against `kos apiserver` processes: TLS
// (a kubeconfig trusting another CA is refused), per-role credentials from
// `kos credentials create` (kubectl auth whoami and can-i answer for each role; 403 and
// 401 where the rules say), the audit log, and the etcd backend over TLS with a client
// certificate against an etcd started with --client-cert-auth; a PKI made by `kos
// credentials init` for certificates given as files (the Kubernetes deployment's way).
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "test/integration/harness.h"
#include "test/integration/raw_http.h"

namespace kos::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kKubectl[] = "/usr/bin/kubectl";

// `kos credentials create ... --out DIR/NAME.kubeconfig` for `server`; its path.
std::filesystem::path credential(const ApiServerProcess& server, const std::string& name,
                                 std::vector<std::string> role_flags) {
  const auto out = server.dir() / (name + ".kubeconfig");
  std::vector<std::string> argv = {KOS_BINARY, "credentials", "create", "--data-dir",
                                   (server.dir() / "data").string(), "--server", server.url(),
                                   "--out", out.string()};
  argv.insert(argv.end(), role_flags.begin(), role_flags.end());
  auto r = run(argv);
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  return out;
}

TEST(Security, EachRoleGetsWhatItsRulesSayThroughKubectl) {
  ApiServerProcess server(Backend::kSqlite);
  ASSERT_EQ(server.start(), "");
  ASSERT_THAT(server.url(), HasSubstr("https://"));
  Kubectl admin(kKubectl, server.kubeconfig(), server.dir() / "home");
  ASSERT_EQ(admin({"apply", "-f", testdata("seed.yaml").string()}).exit_code, 0);

  struct Who {
    std::string name;
    std::vector<std::string> flags;
    std::string user, group;
  };
  const std::vector<Who> roles = {
      {"node-a", {"--node", "node-a"}, "kos:node:node-a", "kos:nodes"},
      {"tenant-ns1", {"--role", "tenant", "--namespace", "ns1", "--token"}, "tenant-ns1", "kos:tenant:ns1"},
      {"viewer", {"--role", "viewer"}, "kos-viewer", "kos:viewers"},
      {"controller", {"--role", "controller", "--token"}, "kos-controller-manager", "kos:controllers"},
  };
  std::map<std::string, Kubectl> k;
  for (const auto& w : roles) {
    k.emplace(w.name, Kubectl(kKubectl, credential(server, w.name, w.flags), server.dir() / ("home-" + w.name)));
    auto r = k.at(w.name)({"auth", "whoami", "-o", "json"});
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    EXPECT_EQ(str_at(parse_json(r.out), "status.userInfo.username"), w.user) << r.out;
    EXPECT_THAT(r.out, HasSubstr(w.group));
  }
  auto can = [&](const std::string& who, std::vector<std::string> args) {
    args.insert(args.begin(), {"auth", "can-i"});
    auto r = k.at(who)(args);
    return r.out.substr(0, r.out.find_first_of(" \n"));
  };
  EXPECT_EQ(can("node-a", {"create", "subnets", "-n", "ns1"}), "no");
  EXPECT_EQ(can("node-a", {"update", "networkattachments", "--subresource", "status", "-n", "ns1"}), "yes");
  EXPECT_EQ(can("node-a", {"get", "iplocks", "-n", "ns1"}), "no");
  EXPECT_EQ(can("tenant-ns1", {"create", "networkattachments", "-n", "ns1"}), "yes");
  EXPECT_EQ(can("tenant-ns1", {"create", "networkattachments", "-n", "ns2"}), "no");
  EXPECT_EQ(can("tenant-ns1", {"patch", "subnets", "--subresource", "status", "-n", "ns1"}), "no");
  EXPECT_EQ(can("viewer", {"list", "iplocks", "-A"}), "yes");
  EXPECT_EQ(can("viewer", {"delete", "subnets", "-n", "ns1"}), "no");
  EXPECT_EQ(can("controller", {"patch", "subnets", "--subresource", "status", "-n", "ns1"}), "yes");
  EXPECT_EQ(can("controller", {"create", "leases.coordination.k8s.io", "-n", "kube-system"}), "yes");
  EXPECT_EQ(admin({"auth", "can-i", "delete", "iplocks", "-A"}).out.substr(0, 3), "yes");

  // What can-i says is what the requests get.
  auto r = k.at("tenant-ns1")({"get", "subnets", "-n", "ns2"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("Forbidden"));
  EXPECT_THAT(r.err, HasSubstr("tenant ns1 may use namespace ns1 only"));
  r = k.at("node-a")({"delete", "subnet", "s1", "-n", "ns1"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("nodes may not change subnets"));
  r = k.at("viewer")({"get", "iplocks", "-A"});
  EXPECT_EQ(r.exit_code, 0) << describe(r);

  // The audit log has the denied requests and the admin's writes.
  std::ifstream audit(server.dir() / "data" / "audit.log");
  std::string all((std::istreambuf_iterator<char>(audit)), std::istreambuf_iterator<char>());
  EXPECT_THAT(all, HasSubstr(R"("user":"tenant-ns1")"));
  EXPECT_THAT(all, HasSubstr(R"("code":403)"));
  EXPECT_THAT(all, HasSubstr(R"("user":"kos-admin")"));
}

// The Kubernetes deployment's way (deploy/kubernetes): the PKI made by `kos credentials
// init`, the API server given its certificates as files, credentials issued from the PKI.
TEST(Security, APkiFromCredentialsInitServesCertificatesGivenAsFiles) {
  TempDir dir("kos-pki-init");
  const auto pki = dir.path() / "pki";
  auto r = run({KOS_BINARY, "credentials", "init", "--pki-dir", pki.string(), "--tls-san", "kos-api.example"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(r.out, HasSubstr("kos-api.example"));
  write_file(pki / "tokens.csv", "");
  const int port = free_loopback_port();
  ChildProcess server({KOS_BINARY, "--log-level", "warn", "apiserver", "--listen=127.0.0.1:" + std::to_string(port),
                       "--tls-cert-file=" + (pki / "apiserver.crt").string(),
                       "--tls-private-key-file=" + (pki / "apiserver.key").string(),
                       "--client-ca-file=" + (pki / "ca.crt").string(),
                       "--token-auth-file=" + (pki / "tokens.csv").string(),
                       "--data-dir=" + (dir.path() / "data").string(), "--audit-log-path=-"});
  const auto kc = dir.path() / "admin.kubeconfig";
  r = run({KOS_BINARY, "credentials", "create", "--pki-dir", pki.string(), "--role", "admin", "--server",
           "https://127.0.0.1:" + std::to_string(port), "--out", kc.string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  Kubectl admin(kKubectl, kc, dir.path() / "home");
  ASSERT_TRUE(eventually([&] { return admin({"get", "subnets", "-A"}).exit_code == 0; }, std::chrono::seconds(20)))
      << describe(admin({"get", "subnets", "-A"}));
  // Re-run with another name: the serving certificate is re-issued, the CA stays.
  const std::string ca = read_file(pki / "ca.crt");
  r = run({KOS_BINARY, "credentials", "init", "--pki-dir", pki.string(), "--tls-san", "kos-api.example",
           "--tls-san", "10.9.8.7"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(read_file(pki / "ca.crt"), ca);
  r = run({"openssl", "x509", "-in", (pki / "apiserver.crt").string(), "-noout", "-ext", "subjectAltName"});
  EXPECT_THAT(r.out, HasSubstr("kos-api.example"));
  EXPECT_THAT(r.out, HasSubstr("10.9.8.7"));
  // No --pki-dir: a clear error.
  r = run({KOS_BINARY, "credentials", "init"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err + r.out, HasSubstr("--pki-dir"));
}

TEST(Security, AnonymousRequestsGet401AndAnotherCaIsRefused) {
  ApiServerProcess server(Backend::kSqlite);
  ASSERT_EQ(server.start(), "");
  // The right CA and no credential: 401 (kubectl would prompt for a password, so a raw
  // request); a token the server never issued: 401 through kubectl.
  std::string text = read_file(server.kubeconfig());
  const auto anon = write_file(server.dir() / "anon.kubeconfig",
                               text.substr(0, text.find("users:")) + "users:\n- name: kos\n  user: {}\n");
  RawHttp raw(server.url(), "/apis/network.example.com/v1alpha1/subnets", {"GET", "", 0, anon.string()});
  ASSERT_TRUE(raw.read_until("\r\n\r\n", std::chrono::seconds(10)));
  EXPECT_THAT(raw.data().substr(0, 20), HasSubstr(" 401 "));
  const auto bogus = write_file(server.dir() / "bogus.kubeconfig",
                                text.substr(0, text.find("users:")) + "users:\n- name: kos\n  user: {token: bogus}\n");
  Kubectl bogus_token(kKubectl, bogus, server.dir() / "home-bogus");
  auto r = bogus_token({"get", "subnets", "-A"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("You must be logged in to the server"));  // kubectl's words for 401

  // The admin credential, but trusting another cluster's CA: the TLS handshake fails.
  ApiServerProcess other(Backend::kSqlite);
  ASSERT_EQ(other.start(), "");
  std::string mixed = read_file(server.kubeconfig());
  std::string other_text = read_file(other.kubeconfig());
  auto ca_line = [](const std::string& t) {
    auto b = t.find("certificate-authority-data: ");
    return t.substr(b, t.find('\n', b) - b);
  };
  mixed.replace(mixed.find(ca_line(mixed)), ca_line(mixed).size(), ca_line(other_text));
  const auto wrong = server.dir() / "wrong-ca.kubeconfig";
  write_file(wrong, mixed);
  Kubectl wrong_ca(kKubectl, wrong, server.dir() / "home-wrong");
  r = wrong_ca({"get", "subnets", "-A"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("certificate"));
}

TEST(Security, TheEtcdBackendSpeaksTlsWithAClientCertificate) {
  ApiServerProcess server(Backend::kEtcdTls);
  ASSERT_EQ(server.start(), "");
  ASSERT_THAT(server.store_url(), HasSubstr("etcd:https://"));
  Kubectl admin(kKubectl, server.kubeconfig(), server.dir() / "home");
  auto r = admin({"apply", "-f", testdata("seed.yaml").string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  r = admin({"get", "subnets", "-A"});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_THAT(r.out, HasSubstr("s1"));
  // Without the client certificate the server cannot reach that etcd.
  auto plain = run({KOS_BINARY, "apiserver", "--listen", "127.0.0.1:0", "--data-dir", (server.dir() / "d2").string(),
                    "--store", server.store_url(), "--etcd-cafile", server.etcd()->ca_file().string()},
                   RunOptions{.timeout = std::chrono::seconds(60)});
  EXPECT_NE(plain.exit_code, 0);
}

}  // namespace
}  // namespace kos::testing
