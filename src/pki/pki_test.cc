#include "pki/pki.h"

#include <sys/stat.h>

#include <filesystem>

#include <gtest/gtest.h>

namespace kos::pki {
namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/kos-pki-test-XXXXXX";
    path = mkdtemp(t);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

TEST(PkiTest, IssuedClientCertificatesCarryUserAndGroups) {
  auto ca = make_ca("test-ca");
  ASSERT_TRUE(ca) << ca.error().message;
  IssueOptions o;
  o.subject = {"kos:node:n1", {"kos:nodes", "extra"}};
  auto c = issue(*ca, o);
  ASSERT_TRUE(c) << c.error().message;
  auto s = subject_of(c->cert_pem);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->common_name, "kos:node:n1");
  EXPECT_EQ(s->organizations, (std::vector<std::string>{"kos:nodes", "extra"}));
}

TEST(PkiTest, ServingCertificatesNameTheirHosts) {
  auto ca = make_ca("test-ca");
  ASSERT_TRUE(ca);
  IssueOptions o;
  o.subject = {"srv", {}};
  o.server = true;
  o.dns_names = {"localhost"};
  o.ip_addresses = {"127.0.0.1", "::1"};
  auto c = issue(*ca, o);
  ASSERT_TRUE(c) << c.error().message;
  auto sans = subject_alt_names(c->cert_pem);
  ASSERT_TRUE(sans);
  EXPECT_EQ(*sans, (std::vector<std::string>{"localhost", "127.0.0.1", "::1"}));
}

TEST(PkiTest, BadInputIsAnErrorNotACrash) {
  auto ca = make_ca("test-ca");
  ASSERT_TRUE(ca);
  IssueOptions o;
  o.subject = {"srv", {}};
  o.ip_addresses = {"not-an-ip"};
  auto c = issue(*ca, o);
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("not-an-ip"), std::string::npos);

  auto other = make_ca("other");
  ASSERT_TRUE(other);
  CertKey mixed{ca->cert_pem, other->key_pem};
  o.ip_addresses.clear();
  auto m = issue(mixed, o);
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message.find("does not match"), std::string::npos);

  EXPECT_FALSE(subject_of("garbage"));
  EXPECT_FALSE(issue(CertKey{"x", "y"}, o));
  o.subject.common_name.clear();
  EXPECT_FALSE(issue(*ca, o));
}

TEST(PkiTest, ClusterPkiIsCreatedOnceAndTheServingCertificateFollowsTheHosts) {
  TempDir d;
  auto p1 = ensure_cluster_pki(d.path, {"127.0.0.1"});
  ASSERT_TRUE(p1) << p1.error().message;
  struct stat st{};
  ASSERT_EQ(stat((d.path + "/ca.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto p2 = ensure_cluster_pki(d.path, {"127.0.0.1"});
  ASSERT_TRUE(p2);
  EXPECT_EQ(p1->ca.cert_pem, p2->ca.cert_pem);
  EXPECT_EQ(p1->serving.cert_pem, p2->serving.cert_pem);  // nothing new
  auto p3 = ensure_cluster_pki(d.path, {"10.9.8.7", "kos.example"});
  ASSERT_TRUE(p3);
  EXPECT_EQ(p1->ca.cert_pem, p3->ca.cert_pem);             // the CA stays
  EXPECT_NE(p1->serving.cert_pem, p3->serving.cert_pem);   // a new host: a new certificate
  auto sans = subject_alt_names(p3->serving.cert_pem);
  ASSERT_TRUE(sans);
  EXPECT_NE(std::find(sans->begin(), sans->end(), "10.9.8.7"), sans->end());
  EXPECT_NE(std::find(sans->begin(), sans->end(), "kos.example"), sans->end());
}

TEST(PkiTest, TokensAreRandom) {
  auto a = random_token(), b = random_token();
  EXPECT_EQ(a.size(), 64u);
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace kos::pki
