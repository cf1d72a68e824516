#include "pki/pki.h"

#include "common/x509_subject.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace kos::pki {
namespace {

template <auto F>
struct Deleter {
  template <class T>
  void operator()(T* p) const { F(p); }
};
using PKey = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, Deleter<X509_free>>;
using Bio = std::unique_ptr<BIO, Deleter<BIO_free_all>>;

std::string openssl_error(const std::string& what) {
  unsigned long e = ERR_get_error();
  char buf[256] = "unknown error";
  if (e) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return what + ": " + buf;
}

Result<PKey> new_key() {
  PKey k(EVP_EC_gen("P-256"));
  if (!k) return fail(Errc::kInternal, openssl_error("generating a P-256 key"));
  return k;
}

Result<std::string> key_pem(EVP_PKEY* k) {
  Bio b(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_PrivateKey(b.get(), k, nullptr, nullptr, 0, nullptr, nullptr))
    return fail(Errc::kInternal, openssl_error("encoding a key"));
  char* data = nullptr;
  long n = BIO_get_mem_data(b.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

Result<std::string> cert_pem(X509* c) {
  Bio b(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_X509(b.get(), c)) return fail(Errc::kInternal, openssl_error("encoding a certificate"));
  char* data = nullptr;
  long n = BIO_get_mem_data(b.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

Result<Cert> parse_cert(const std::string& pem) {
  Bio b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  Cert c(PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr));
  if (!c) return fail(Errc::kBadRequest, openssl_error("not a PEM certificate"));
  return c;
}

Result<PKey> parse_key(const std::string& pem) {
  Bio b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PKey k(PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr));
  if (!k) return fail(Errc::kBadRequest, openssl_error("not a PEM private key"));
  return k;
}

bool add_ext(X509* issuer, X509* c, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, c, nullptr, nullptr, 0);
  X509_EXTENSION* ex = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ex) return false;
  bool ok = X509_add_ext(c, ex, -1) == 1;
  X509_EXTENSION_free(ex);
  return ok;
}

// A certificate for `key` with `subject`, valid from a minute ago for `validity`, with a
// random serial; signed later.
Result<Cert> new_cert(EVP_PKEY* key, const Subject& subject, std::chrono::hours validity) {
  Cert c(X509_new());
  X509_set_version(c.get(), 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;  // positive
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(c.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(c.get()), -60);
  X509_gmtime_adj(X509_getm_notAfter(c.get()), static_cast<long>(validity.count()) * 3600);
  X509_set_pubkey(c.get(), key);
  X509_NAME* name = X509_get_subject_name(c.get());
  for (const auto& o : subject.organizations)
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(o.c_str()), -1, -1, 0);
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(subject.common_name.c_str()),
                                 -1, -1, 0) != 1)
    return fail(Errc::kBadRequest, openssl_error("common name \"" + subject.common_name + "\""));
  return c;
}

bool is_ip(const std::string& s) {
  ASN1_OCTET_STRING* a = a2i_IPADDRESS(s.c_str());
  ERR_clear_error();
  if (!a) return false;
  ASN1_OCTET_STRING_free(a);
  return true;
}

// Equal names, or the same IP address however spelled ("::1" and "0:0:0:0:0:0:0:1").
bool same_host(const std::string& a, const std::string& b) {
  if (a == b) return true;
  ASN1_OCTET_STRING* x = a2i_IPADDRESS(a.c_str());
  ASN1_OCTET_STRING* y = a2i_IPADDRESS(b.c_str());
  bool same = x && y && ASN1_OCTET_STRING_cmp(x, y) == 0;
  ASN1_OCTET_STRING_free(x);
  ASN1_OCTET_STRING_free(y);
  ERR_clear_error();
  return same;
}

}  // namespace

Result<CertKey> make_ca(const std::string& common_name, std::chrono::hours validity) {
  auto key = new_key();
  if (!key) return fail(key.error());
  auto c = new_cert(key->get(), Subject{common_name, {}}, validity);
  if (!c) return fail(c.error());
  X509_set_issuer_name(c->get(), X509_get_subject_name(c->get()));
  if (!add_ext(c->get(), c->get(), NID_basic_constraints, "critical,CA:TRUE") ||
      !add_ext(c->get(), c->get(), NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature") ||
      !add_ext(c->get(), c->get(), NID_subject_key_identifier, "hash"))
    return fail(Errc::kInternal, openssl_error("CA extensions"));
  if (!X509_sign(c->get(), key->get(), EVP_sha256()))
    return fail(Errc::kInternal, openssl_error("signing the CA"));
  auto cp = cert_pem(c->get());
  if (!cp) return fail(cp.error());
  auto kp = key_pem(key->get());
  if (!kp) return fail(kp.error());
  return CertKey{*cp, *kp};
}

Result<CertKey> issue(const CertKey& ca, const IssueOptions& opts) {
  auto ca_cert = parse_cert(ca.cert_pem);
  if (!ca_cert) return fail(Errc::kBadRequest, "CA certificate: " + ca_cert.error().message);
  auto ca_key = parse_key(ca.key_pem);
  if (!ca_key) return fail(Errc::kBadRequest, "CA key: " + ca_key.error().message);
  if (X509_check_private_key(ca_cert->get(), ca_key->get()) != 1)
    return fail(Errc::kBadRequest, "the CA key does not match the CA certificate");
  if (opts.subject.common_name.empty())
    return fail(Errc::kBadRequest, "a certificate needs a common name");
  auto key = new_key();
  if (!key) return fail(key.error());
  auto c = new_cert(key->get(), opts.subject, opts.validity);
  if (!c) return fail(c.error());
  X509_set_issuer_name(c->get(), X509_get_subject_name(ca_cert->get()));
  bool ok = add_ext(ca_cert->get(), c->get(), NID_basic_constraints, "critical,CA:FALSE") &&
            add_ext(ca_cert->get(), c->get(), NID_key_usage, "critical,digitalSignature,keyEncipherment") &&
            add_ext(ca_cert->get(), c->get(), NID_ext_key_usage,
                    opts.server ? "serverAuth" : "clientAuth") &&
            add_ext(ca_cert->get(), c->get(), NID_authority_key_identifier, "keyid:always");
  if (!ok) return fail(Errc::kInternal, openssl_error("certificate extensions"));
  std::string san;
  for (const auto& d : opts.dns_names) san += (san.empty() ? "" : ",") + ("DNS:" + d);
  for (const auto& ip : opts.ip_addresses) {
    if (!is_ip(ip)) return fail(Errc::kBadRequest, "\"" + ip + "\" is not an IP address");
    san += (san.empty() ? "" : ",") + ("IP:" + ip);
  }
  if (!san.empty() && !add_ext(ca_cert->get(), c->get(), NID_subject_alt_name, san))
    return fail(Errc::kBadRequest, openssl_error("subject alternative names " + san));
  if (!X509_sign(c->get(), ca_key->get(), EVP_sha256()))
    return fail(Errc::kInternal, openssl_error("signing a certificate"));
  auto cp = cert_pem(c->get());
  if (!cp) return fail(cp.error());
  auto kp = key_pem(key->get());
  if (!kp) return fail(kp.error());
  return CertKey{*cp, *kp};
}

Result<Subject> subject_of(const std::string& pem) {
  auto c = parse_cert(pem);
  if (!c) return fail(c.error());
  auto x = x509_subject(c->get());
  return Subject{std::move(x.common_name), std::move(x.organizations)};
}

Result<std::vector<std::string>> subject_alt_names(const std::string& pem) {
  auto c = parse_cert(pem);
  if (!c) return fail(c.error());
  std::vector<std::string> out;
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(c->get(), NID_subject_alt_name, nullptr, nullptr));
  if (!names) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* g = sk_GENERAL_NAME_value(names, i);
    if (g->type == GEN_DNS) {
      out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(g->d.dNSName)),
                       static_cast<size_t>(ASN1_STRING_length(g->d.dNSName)));
    } else if (g->type == GEN_IPADD) {
      const int n = ASN1_STRING_length(g->d.iPAddress);
      char buf[INET6_ADDRSTRLEN] = "";
      if ((n == 4 || n == 16) &&
          inet_ntop(n == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(g->d.iPAddress), buf, sizeof buf))
        out.emplace_back(buf);
    }
  }
  GENERAL_NAMES_free(names);
  return out;
}

std::string random_token() {
  unsigned char b[32];
  RAND_bytes(b, sizeof b);
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (unsigned char c : b) {
    s += hex[c >> 4];
    s += hex[c & 15];
  }
  return s;
}

Result<std::string> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return fail(Errc::kNotFound, "cannot read " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Result<void> write_file(const std::string& path, const std::string& data, unsigned mode) {
  std::filesystem::path p(path);
  std::error_code ec;
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return fail(Errc::kInternal, "cannot write " + tmp + ": " + std::strerror(errno));
  ::fchmod(fd, mode);
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      return fail(Errc::kInternal, "cannot write " + tmp + ": " + std::strerror(errno));
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0)
    return fail(Errc::kInternal, "cannot write " + tmp + ": " + std::strerror(errno));
  std::filesystem::rename(tmp, path, ec);
  if (ec) return fail(Errc::kInternal, "cannot write " + path + ": " + ec.message());
  return {};
}

std::string tokens_file(const std::string& dir) { return dir + "/tokens.csv"; }

Result<std::string> add_token(const std::string& dir, const Subject& user) {
  if (user.common_name.empty() || user.common_name.find_first_of(",\"\n") != std::string::npos)
    return fail(Errc::kBadRequest, "a token's user name must be non-empty without commas, quotes or newlines");
  std::string groups;
  for (const auto& g : user.organizations) {
    if (g.find_first_of(",\"\n") != std::string::npos)
      return fail(Errc::kBadRequest, "group \"" + g + "\" has a comma, quote or newline");
    groups += (groups.empty() ? "" : ",") + g;
  }
  const std::string token = random_token();
  std::string content;
  if (auto old = read_file(tokens_file(dir))) content = *old;
  if (!content.empty() && content.back() != '\n') content += '\n';
  content += token + "," + user.common_name + "," + user.common_name + ",\"" + groups + "\"\n";
  if (auto w = write_file(tokens_file(dir), content, 0600); !w) return fail(w.error());
  return token;
}

Result<CertKey> load_ca(const std::string& dir) {
  auto c = read_file(dir + "/ca.crt");
  if (!c) return fail(Errc::kNotFound, "no CA in " + dir + " (ca.crt): start `kos apiserver` with this data dir first");
  auto k = read_file(dir + "/ca.key");
  if (!k) return fail(Errc::kNotFound, "no CA key in " + dir + " (ca.key)");
  return CertKey{*c, *k};
}

Result<ClusterPki> ensure_cluster_pki(const std::string& dir, const std::vector<std::string>& hosts) {
  ClusterPki p;
  p.dir = dir;
  if (auto ca = load_ca(dir)) {
    p.ca = *ca;
  } else {
    auto made = make_ca("kos-ca");
    if (!made) return fail(made.error());
    if (auto w = write_file(dir + "/ca.key", made->key_pem, 0600); !w) return fail(w.error());
    if (auto w = write_file(dir + "/ca.crt", made->cert_pem, 0644); !w) return fail(w.error());
    p.ca = *made;
  }
  std::vector<std::string> want{"localhost", "127.0.0.1", "::1"};
  for (const auto& h : hosts)
    if (!h.empty() && h != "0.0.0.0" && h != "::" && std::find(want.begin(), want.end(), h) == want.end())
      want.push_back(h);
  auto cert = read_file(dir + "/apiserver.crt");
  auto key = read_file(dir + "/apiserver.key");
  if (cert && key) {
    auto sans = subject_alt_names(*cert);
    bool covers = sans.has_value();
    if (covers)
      for (const auto& h : want)
        covers = covers && std::any_of(sans->begin(), sans->end(),
                                       [&](const std::string& s) { return same_host(s, h); });
    // Signed by this CA: a certificate left from an older CA is replaced.
    bool ours = false;
    if (covers) {
      auto c = parse_cert(*cert);
      auto ca = parse_cert(p.ca.cert_pem);
      if (c && ca) {
        PKey pub(X509_get_pubkey(ca->get()));
        ours = pub && X509_verify(c->get(), pub.get()) == 1;
      }
      ERR_clear_error();
    }
    if (covers && ours) {
      p.serving = CertKey{*cert, *key};
      return p;
    }
  }
  IssueOptions io;
  io.subject = Subject{"kos-apiserver", {}};
  io.server = true;
  for (const auto& h : want) (is_ip(h) ? io.ip_addresses : io.dns_names).push_back(h);
  auto serving = issue(p.ca, io);
  if (!serving) return fail(serving.error());
  if (auto w = write_file(dir + "/apiserver.key", serving->key_pem, 0600); !w) return fail(w.error());
  if (auto w = write_file(dir + "/apiserver.crt", serving->cert_pem, 0644); !w) return fail(w.error());
  p.serving = *serving;
  return p;
}

}  // namespace kos::pki
