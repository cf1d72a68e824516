#include "client/kubeconfig.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

namespace kos::client {
namespace {

namespace fs = std::filesystem;

const std::string kCaPem = "-----BEGIN CERTIFICATE-----\nQ0EgY2VydA==\n-----END CERTIFICATE-----\n";
const std::string kCertPem =
    "-----BEGIN CERTIFICATE-----\nY2xpZW50IGNlcnQ=\n-----END CERTIFICATE-----\n";
const std::string kKeyPem = "-----BEGIN PRIVATE KEY-----\na2V5\n-----END PRIVATE KEY-----\n";

// Test-side encoder, to build *-data fields; `wrap` breaks lines as some tools do, each
// line starting with `indent`.
std::string base64(const std::string& in, size_t wrap = 0, const std::string& indent = "") {
  static const char* kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < in.size(); i += 3) {
    uint32_t n = uint32_t(static_cast<unsigned char>(in[i])) << 16;
    if (i + 1 < in.size()) n |= uint32_t(static_cast<unsigned char>(in[i + 1])) << 8;
    if (i + 2 < in.size()) n |= uint32_t(static_cast<unsigned char>(in[i + 2]));
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += i + 1 < in.size() ? kAlphabet[(n >> 6) & 63] : '=';
    out += i + 2 < in.size() ? kAlphabet[n & 63] : '=';
  }
  if (wrap == 0) return out;
  std::string wrapped;
  for (size_t i = 0; i < out.size(); i += wrap) wrapped += indent + out.substr(i, wrap) + "\n";
  return wrapped;
}

// Sets (or, with nullptr, unsets) an environment variable for one test.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = getenv(name)) old_ = old;
    if (value) setenv(name, value, 1);
    else unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_) setenv(name_, old_->c_str(), 1);
    else unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

class KubeconfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "kos-kubeconfig-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes `text` to dir/name and returns the path.
  std::string write(const std::string& name, const std::string& text) {
    fs::path p = fs::path(dir_) / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
    return p.string();
  }

  fs::path dir_;
};

// Exactly what `kos apiserver --write-kubeconfig` writes (src/cmd/apiserver_cmd.cc).
TEST_F(KubeconfigTest, ReadsTheApiserverKubeconfig) {
  auto path = write("kubeconfig",
                    "apiVersion: v1\nkind: Config\nclusters:\n- name: kos\n  cluster:\n    server: "
                    "http://127.0.0.1:34567"
                    "\ncontexts:\n- name: kos\n  context:\n    cluster: kos\n    user: kos\n"
                    "    namespace: default\ncurrent-context: kos\nusers:\n- name: kos\n"
                    "  user: {}\n");
  auto rc = load_kubeconfig(path);
  ASSERT_TRUE(rc) << rc.error().message;
  EXPECT_EQ(rc->server, "http://127.0.0.1:34567");
  EXPECT_EQ(rc->host, "127.0.0.1");
  EXPECT_EQ(rc->port, 34567);
  EXPECT_FALSE(rc->tls);
  EXPECT_EQ(rc->ns, "default");
  EXPECT_TRUE(rc->ca_pem.empty());
  EXPECT_TRUE(rc->cert_pem.empty());
  EXPECT_TRUE(rc->bearer_token.empty());
  EXPECT_FALSE(rc->insecure_skip_verify);
}

TEST_F(KubeconfigTest, ReadsTlsCredentialsFromDataAndRelativeFiles) {
  write("pki/client.crt", kCertPem);
  write("pki/client.key", kKeyPem);
  auto path = write("conf/../kubeconfig", R"(apiVersion: v1
kind: Config
current-context: admin
clusters:
- name: prod
  cluster:
    server: https://api.example.com:6443/
    certificate-authority-data: )" + base64(kCaPem) + R"(
contexts:
- name: admin
  context: {cluster: prod, user: admin, namespace: net}
users:
- name: admin
  user:
    client-certificate: pki/client.crt
    client-key: pki/client.key
    token: abc.def
)");
  auto rc = load_kubeconfig(path);
  ASSERT_TRUE(rc) << rc.error().message;
  EXPECT_EQ(rc->server, "https://api.example.com:6443");
  EXPECT_EQ(rc->host, "api.example.com");
  EXPECT_EQ(rc->port, 6443);
  EXPECT_TRUE(rc->tls);
  EXPECT_EQ(rc->ca_pem, kCaPem);
  EXPECT_EQ(rc->cert_pem, kCertPem);
  EXPECT_EQ(rc->key_pem, kKeyPem);
  EXPECT_EQ(rc->bearer_token, "abc.def");
  EXPECT_EQ(rc->ns, "net");
}

TEST_F(KubeconfigTest, ReadsCaFileCertDataAndTokenFile) {
  write("ca.pem", kCaPem);
  write("token", "  s3cr3t\n");
  auto path = write("kubeconfig", R"(clusters:
- name: c
  cluster:
    server: https://10.0.0.1
    certificate-authority: ca.pem
users:
- name: u
  user:
    client-certificate-data: |
)" + base64(kCertPem, 20, "      ") +
                                      R"(    client-key-data: )" + base64(kKeyPem) + R"(
    tokenFile: token
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
)");
  auto rc = load_kubeconfig(path);
  ASSERT_TRUE(rc) << rc.error().message;
  EXPECT_EQ(rc->server, "https://10.0.0.1:443");
  EXPECT_EQ(rc->port, 443);
  EXPECT_EQ(rc->ca_pem, kCaPem);
  EXPECT_EQ(rc->cert_pem, kCertPem);
  EXPECT_EQ(rc->key_pem, kKeyPem);
  EXPECT_EQ(rc->bearer_token, "s3cr3t");
  EXPECT_EQ(rc->ns, "default");
}

TEST_F(KubeconfigTest, DecodesEveryBase64PaddingLength) {
  for (std::string pem : {kCaPem, kCaPem + "x", kCaPem + "xy"}) {
    auto path = write("kubeconfig", "clusters:\n- name: c\n  cluster:\n    server: https://h\n"
                                    "    certificate-authority-data: " + base64(pem) +
                                        "\ncontexts:\n- name: x\n  context: {cluster: c}\n");
    auto rc = load_kubeconfig(path, "x");
    ASSERT_TRUE(rc) << rc.error().message;
    EXPECT_EQ(rc->ca_pem, pem);
  }
}

TEST_F(KubeconfigTest, SelectsTheContextAskedFor) {
  auto path = write("kubeconfig", R"(current-context: a
clusters:
- {name: one, cluster: {server: "http://one:8080"}}
- {name: two, cluster: {server: "https://[fd00::1]:6443", insecure-skip-tls-verify: true}}
contexts:
- {name: a, context: {cluster: one}}
- {name: b, context: {cluster: two, namespace: kube-system}}
)");
  auto a = load_kubeconfig(path);
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->server, "http://one:8080");
  auto b = load_kubeconfig(path, "b");
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_EQ(b->server, "https://[fd00::1]:6443");
  EXPECT_EQ(b->host, "fd00::1");
  EXPECT_EQ(b->port, 6443);
  EXPECT_TRUE(b->tls);
  EXPECT_TRUE(b->insecure_skip_verify);
  EXPECT_EQ(b->ns, "kube-system");
}

TEST_F(KubeconfigTest, ServerWithoutSchemeFollowsTheTlsSettings) {
  auto path = write("kubeconfig", R"(clusters:
- {name: plain, cluster: {server: "localhost:8080"}}
- {name: secure, cluster: {server: "localhost", insecure-skip-tls-verify: true}}
contexts:
- {name: plain, context: {cluster: plain}}
- {name: secure, context: {cluster: secure}}
)");
  auto plain = load_kubeconfig(path, "plain");
  ASSERT_TRUE(plain) << plain.error().message;
  EXPECT_EQ(plain->server, "http://localhost:8080");
  auto secure = load_kubeconfig(path, "secure");
  ASSERT_TRUE(secure) << secure.error().message;
  EXPECT_EQ(secure->server, "https://localhost:443");
}

// Several API servers: the cluster's server first, then the extension's others in their
// order (the server repeated in the list is not a second endpoint); kubectl reads the
// same file and ignores the extension.
TEST_F(KubeconfigTest, ReadsSeveralServersFromTheExtension) {
  auto path = write("kubeconfig", R"(clusters:
- name: c
  cluster:
    server: https://10.0.0.2:6443
    insecure-skip-tls-verify: true
    extensions:
    - name: someone.else
      extension: {anything: [1, 2]}
    - name: servers.kos.network.example.com
      extension:
        servers: [https://10.0.0.1:6443, "https://10.0.0.2:6443", "[fd00::3]:6443"]
contexts:
- {name: x, context: {cluster: c}}
current-context: x
)");
  auto rc = load_kubeconfig(path);
  ASSERT_TRUE(rc) << rc.error().message;
  EXPECT_EQ(rc->server, "https://10.0.0.2:6443");
  ASSERT_EQ(rc->endpoints.size(), 3u);
  EXPECT_EQ(rc->endpoints[0], (Endpoint{"https://10.0.0.2:6443", "10.0.0.2", 6443}));
  EXPECT_EQ(rc->endpoints[1], (Endpoint{"https://10.0.0.1:6443", "10.0.0.1", 6443}));
  EXPECT_EQ(rc->endpoints[2], (Endpoint{"https://[fd00::3]:6443", "fd00::3", 6443}));
  EXPECT_EQ(rc->all_endpoints(), rc->endpoints);

  // One server (no extension, or an extension naming only it): no endpoint list.
  auto one = write("one", "clusters:\n- {name: c, cluster: {server: http://h:1, extensions: "
                          "[{name: servers.kos.network.example.com, extension: {servers: [http://h:1]}}]}}\n"
                          "contexts:\n- {name: x, context: {cluster: c}}\ncurrent-context: x\n");
  auto rc1 = load_kubeconfig(one);
  ASSERT_TRUE(rc1) << rc1.error().message;
  EXPECT_TRUE(rc1->endpoints.empty());
  EXPECT_EQ(rc1->all_endpoints(), (std::vector<Endpoint>{{"http://h:1", "h", 1}}));
}

TEST_F(KubeconfigTest, WritesSeveralServersThatItReadsBack) {
  KubeconfigContent c;
  c.server = "http://127.0.0.1:1000";
  c.more_servers = {"http://127.0.0.1:1001", "http://127.0.0.1:1002"};
  c.token = "t";
  auto path = (dir_ / "written").string();
  ASSERT_TRUE(write_kubeconfig(path, c));
  auto rc = load_kubeconfig(path);
  ASSERT_TRUE(rc) << rc.error().message;
  ASSERT_EQ(rc->endpoints.size(), 3u);
  EXPECT_EQ(rc->endpoints[0].port, 1000);
  EXPECT_EQ(rc->endpoints[1].port, 1001);
  EXPECT_EQ(rc->endpoints[2].port, 1002);
  EXPECT_EQ(rc->bearer_token, "t");
}

struct BadCase {
  const char* name;
  std::string yaml;  // the kubeconfig; context "x" is current unless the case says otherwise
  Errc code;
  std::string message;  // expected in the error, after "kubeconfig PATH: "
  std::string context = "";
};

// A valid cluster/context pair with the given cluster and user bodies.
std::string config(const std::string& cluster, const std::string& user = "") {
  std::string out = "current-context: x\nclusters:\n- name: c\n  cluster:\n" + cluster +
                    "contexts:\n- name: x\n  context:\n    cluster: c\n";
  if (!user.empty()) out += "    user: u\nusers:\n- name: u\n  user:\n" + user;
  return out;
}
const std::string kServer = "    server: https://h:6443\n";

class BadKubeconfigTest : public KubeconfigTest,
                          public ::testing::WithParamInterface<BadCase> {};

TEST_P(BadKubeconfigTest, IsRejectedWithAClearError) {
  const BadCase& c = GetParam();
  write("exists.pem", kCaPem);
  write("empty-token", "\n");
  auto path = write("kubeconfig", c.yaml);
  auto rc = load_kubeconfig(path, c.context);
  ASSERT_FALSE(rc) << "accepted: " << c.yaml;
  EXPECT_EQ(rc.error().code, c.code) << rc.error().message;
  EXPECT_EQ(rc.error().message.rfind("kubeconfig " + path + ": ", 0), 0u) << rc.error().message;
  EXPECT_NE(rc.error().message.find(c.message), std::string::npos) << rc.error().message;
}

INSTANTIATE_TEST_SUITE_P(
    Table, BadKubeconfigTest,
    ::testing::Values(
        BadCase{"InvalidYaml", "clusters: [\n", Errc::kBadRequest, "invalid YAML at line"},
        BadCase{"TopLevelList", "- a\n- b\n", Errc::kBadRequest,
                "expected a mapping at the top level"},
        BadCase{"WrongKind", "kind: Pod\n", Errc::kBadRequest, "kind is \"Pod\", expected Config"},
        BadCase{"WrongVersion", "apiVersion: v2\n", Errc::kBadRequest, "apiVersion is \"v2\""},
        BadCase{"Empty", "", Errc::kBadRequest, "current-context is not set"},
        BadCase{"ClustersNotAList", "clusters: {a: b}\n", Errc::kBadRequest,
                "clusters: expected a list"},
        BadCase{"ClusterWithoutName", "clusters:\n- cluster: {server: http://h}\n",
                Errc::kBadRequest, "clusters[0]: no name"},
        BadCase{"ClusterBodyNotAMap", "clusters:\n- {name: c, cluster: [1]}\n", Errc::kBadRequest,
                "clusters[0]: cluster: expected a mapping"},
        BadCase{"DuplicateCluster",
                "clusters:\n- {name: c, cluster: {server: http://a}}\n"
                "- {name: c, cluster: {server: http://b}}\n",
                Errc::kBadRequest, "duplicate cluster name \"c\""},
        BadCase{"CurrentContextMissing", "current-context: foo\n", Errc::kBadRequest,
                "context \"foo\" not found"},
        BadCase{"RequestedContextMissing", config(kServer), Errc::kNotFound,
                "context \"foo\" not found", "foo"},
        BadCase{"ContextWithoutCluster",
                "current-context: x\ncontexts:\n- {name: x, context: {}}\n", Errc::kBadRequest,
                "context \"x\" has no cluster"},
        BadCase{"ContextClusterMissing",
                "current-context: x\ncontexts:\n- {name: x, context: {cluster: nope}}\n",
                Errc::kBadRequest, "context \"x\": cluster \"nope\" not found"},
        BadCase{"ContextUserMissing",
                "current-context: x\nclusters:\n- {name: c, cluster: {server: http://h}}\n"
                "contexts:\n- {name: x, context: {cluster: c, user: nope}}\n",
                Errc::kBadRequest, "context \"x\": user \"nope\" not found"},
        BadCase{"NoServer", config("    insecure-skip-tls-verify: true\n"), Errc::kBadRequest,
                "cluster \"c\" has no server"},
        BadCase{"ServerNotAString", config("    server: {a: b}\n"), Errc::kBadRequest,
                "cluster \"c\": server: expected a string"},
        BadCase{"ServerBadScheme", config("    server: ftp://h\n"), Errc::kBadRequest,
                "invalid server URL \"ftp://h\": the scheme must be http or https"},
        BadCase{"ServerNoHost", config("    server: https://\n"), Errc::kBadRequest,
                "invalid server URL \"https://\": no host"},
        BadCase{"ServerPortTooBig", config("    server: https://h:99999\n"), Errc::kBadRequest,
                "invalid server URL \"https://h:99999\""},
        BadCase{"ServerPortNotANumber", config("    server: https://h:abc\n"), Errc::kBadRequest,
                "invalid port"},
        BadCase{"ServerEmptyPort", config("    server: 'https://h:'\n"), Errc::kBadRequest,
                "empty port"},
        BadCase{"ServerWithPath", config("    server: https://h/k8s/clusters/c1\n"),
                Errc::kBadRequest, "a path, query or fragment is not supported"},
        BadCase{"ServerUnbracketedIpv6", config("    server: https://fd00::1:6443\n"),
                Errc::kBadRequest, "an IPv6 address must be in brackets"},
        BadCase{"ServerUserInfo", config("    server: https://me@h\n"), Errc::kBadRequest,
                "user info is not supported"},
        BadCase{"ServerBadHost", config("    server: https://h st\n"), Errc::kBadRequest,
                "invalid host name"},
        BadCase{"ExtensionsNotAList", config(kServer + "    extensions: {a: b}\n"), Errc::kBadRequest,
                "cluster \"c\": extensions: expected a list"},
        BadCase{"ServersExtensionWithoutServers",
                config(kServer + "    extensions:\n    - name: servers.kos.network.example.com\n"
                                 "      extension: {servers: []}\n"),
                Errc::kBadRequest, "extension.servers: expected a list of server URLs"},
        BadCase{"ServersExtensionBadUrl",
                config(kServer + "    extensions:\n    - name: servers.kos.network.example.com\n"
                                 "      extension: {servers: [https://a:1, 'ftp://b']}\n"),
                Errc::kBadRequest, "extension.servers[1]: invalid server URL \"ftp://b\""},
        BadCase{"ServersExtensionMixedSchemes",
                config(kServer + "    extensions:\n    - name: servers.kos.network.example.com\n"
                                 "      extension: {servers: [http://b:1]}\n"),
                Errc::kBadRequest, "server \"http://b:1\" is http but server \"https://h:6443\" is https"},
        BadCase{"InsecureNotABool", config(kServer + "    insecure-skip-tls-verify: maybe\n"),
                Errc::kBadRequest, "insecure-skip-tls-verify: expected true or false"},
        BadCase{"CaDataNotBase64", config(kServer + "    certificate-authority-data: '***'\n"),
                Errc::kBadRequest, "certificate-authority-data: invalid base64"},
        BadCase{"CaDataTruncated", config(kServer + "    certificate-authority-data: QUJD\n" +
                                          "      RA\n"),
                Errc::kBadRequest, "invalid base64 (truncated)"},
        BadCase{"CaDataNotPem",
                config(kServer + "    certificate-authority-data: " + base64("DER bytes") + "\n"),
                Errc::kBadRequest, "certificate-authority-data: not PEM"},
        BadCase{"CaDataAndFile",
                config(kServer + "    certificate-authority-data: " + base64(kCaPem) +
                       "\n    certificate-authority: exists.pem\n"),
                Errc::kBadRequest,
                "both certificate-authority-data and certificate-authority are set"},
        BadCase{"CaFileMissing", config(kServer + "    certificate-authority: missing.pem\n"),
                Errc::kNotFound, "certificate-authority "},
        BadCase{"InsecureWithCa",
                config(kServer + "    certificate-authority: exists.pem\n"
                                 "    insecure-skip-tls-verify: true\n"),
                Errc::kBadRequest, "insecure-skip-tls-verify cannot be combined"},
        BadCase{"CertWithoutKey", config(kServer, "    client-certificate: exists.pem\n"),
                Errc::kBadRequest, "user \"u\": a client certificate without a key"},
        BadCase{"KeyWithoutCert",
                config(kServer, "    client-key-data: " + base64(kKeyPem) + "\n"),
                Errc::kBadRequest, "user \"u\": a client key without a certificate"},
        BadCase{"TokenFileMissing", config(kServer, "    tokenFile: no-token\n"), Errc::kNotFound,
                "user \"u\": tokenFile "},
        BadCase{"TokenFileEmpty", config(kServer, "    tokenFile: empty-token\n"),
                Errc::kBadRequest, "tokenFile empty-token is empty"},
        BadCase{"ExecPlugin",
                config(kServer, "    exec:\n      command: aws\n      apiVersion: v1\n"),
                Errc::kUnsupported, "user \"u\": exec: credential plugins are not supported"},
        BadCase{"BasicAuth", config(kServer, "    username: admin\n    password: pw\n"),
                Errc::kUnsupported, "basic authentication is not supported"}),
    [](const ::testing::TestParamInfo<BadCase>& info) { return std::string(info.param.name); });

TEST_F(KubeconfigTest, MissingFileIsNotFound) {
  std::string path = (dir_ / "nope").string();
  auto rc = load_kubeconfig(path);
  ASSERT_FALSE(rc);
  EXPECT_EQ(rc.error().code, Errc::kNotFound);
  EXPECT_EQ(rc.error().message, "kubeconfig " + path + ": no such file");
}

TEST_F(KubeconfigTest, DirectoryIsBadRequest) {
  auto rc = load_kubeconfig(dir_.string());
  ASSERT_FALSE(rc);
  EXPECT_EQ(rc.error().code, Errc::kBadRequest);
  EXPECT_NE(rc.error().message.find("is a directory"), std::string::npos);
}

// Only the selected context, cluster and user are checked beyond their structure.
TEST_F(KubeconfigTest, OtherEntriesAreNotValidated) {
  auto path = write("kubeconfig", R"(current-context: good
clusters:
- {name: good, cluster: {server: "http://h:1"}}
- {name: bad, cluster: {server: "ftp://nowhere", certificate-authority: missing.pem}}
users:
- {name: plugin, user: {exec: {command: x}}}
contexts:
- {name: good, context: {cluster: good}}
- {name: bad, context: {cluster: bad, user: plugin}}
)");
  EXPECT_TRUE(load_kubeconfig(path));
  EXPECT_FALSE(load_kubeconfig(path, "bad"));
}

TEST_F(KubeconfigTest, ConfigPathComesFromFlagThenEnvThenHome) {
  const std::string flag_file = write("flag", config("    server: http://flag:1\n"));
  const std::string env_file = write("env", config("    server: http://env:2\n"));
  write("home/.kube/config", config("    server: http://home:3\n"));
  const std::string home = (dir_ / "home").string();
  const std::string kubeconfig_list = ":" + env_file + ":" + flag_file;
  {
    ScopedEnv kc("KUBECONFIG", kubeconfig_list.c_str());
    ScopedEnv h("HOME", home.c_str());
    auto rc = config_from_env_or_file(flag_file);
    ASSERT_TRUE(rc) << rc.error().message;
    EXPECT_EQ(rc->server, "http://flag:1");
    rc = config_from_env_or_file("");
    ASSERT_TRUE(rc) << rc.error().message;
    EXPECT_EQ(rc->server, "http://env:2");  // the first (non-empty) entry of the list
  }
  {
    ScopedEnv kc("KUBECONFIG", nullptr);
    ScopedEnv h("HOME", home.c_str());
    auto rc = config_from_env_or_file("");
    ASSERT_TRUE(rc) << rc.error().message;
    EXPECT_EQ(rc->server, "http://home:3");
  }
  {
    ScopedEnv kc("KUBECONFIG", "");
    ScopedEnv h("HOME", nullptr);
    auto rc = config_from_env_or_file("");
    ASSERT_FALSE(rc);
    EXPECT_EQ(rc.error().code, Errc::kNotFound);
    EXPECT_NE(rc.error().message.find("$KUBECONFIG"), std::string::npos);
  }
  {
    ScopedEnv kc("KUBECONFIG", nullptr);
    ScopedEnv h("HOME", (dir_ / "nohome").c_str());
    auto rc = config_from_env_or_file("");
    ASSERT_FALSE(rc);
    EXPECT_EQ(rc.error().code, Errc::kNotFound);
    EXPECT_NE(rc.error().message.find("nohome/.kube/config"), std::string::npos);
  }
}

}  // namespace
}  // namespace kos::client
